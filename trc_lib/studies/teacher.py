"""A deliberately sub-optimal teacher: finite-horizon LQR on the linearization, clipped, played on the true system.

This mirrors how the upstream project labelled its nonlinear data (reported ~14% above the
true optimum on average), so we can ask whether a model trained on such labels can beat them.
For a problem whose target x* is an equilibrium under zero control:

1. linearize the continuous dynamics xdot = f(x, u) at (x*, 0):  A_c = df/dx, B_c = df/du
   (Van der Pol at the origin: A_c = [[0, 1], [-1, mu]], B_c = [[0], [1]]);
2. discretize exactly with a zero-order hold over dt:  expm(dt [[A_c, B_c], [0, 0]]) = [[A, B], [0, I]];
3. backward Riccati recursion with the problem's own weights, dt-weighted as in task.py
   (stage dt (e'Qe + u'Ru), terminal e'Q_f e):
       P_N = Q_f (+ terminal_weight I when the problem demands x_N = x*)
       K_k = (dt R + B'P_{k+1}B)^-1 B'P_{k+1}A,   P_k = dt Q + A'P_{k+1}(A - B K_k);
4. play u_k = clip(-K_k (x_k - x*), -u_max, u_max) on the TRUE nonlinear system (system.step).

LQR has no hard terminal constraint, so a large terminal weight stands in for x_N = x*
(TERMINAL_WEIGHT = 1e3: a miss of 0.03 then costs about as much as the whole transfer, so the
policy nearly reaches the target but is not forced to, exactly like a soft-constrained teacher).
The labels are feasible-ish (small terminal miss, within the bound by the clip) but not optimal:
the linearization is wrong away from x*, and clipping is not how an optimal controller
respects a bound. On a linear system with a huge bound, they are the exact LQR optimum.
"""

from __future__ import annotations

import numpy as np

from ..data import FORMAT_VERSION, ControlDataset
from ..model import check_states
from ..task import Task

TERMINAL_WEIGHT = 1e3  # stands in for x_N = x* (see the module docstring)
LABELS = "clipped linearized LQR (teacher, sub-optimal)"


def linearize(problem: Task, target_state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A [n, n], B [n, m]): the system's discrete-time dynamics linearized at (x*, u = 0)
    (task.py: exact for a linear task; Jacobians and expm for a nonlinear one)."""
    return problem.system.linearization(target_state)


def lqr_gains(problem: Task, A: np.ndarray, B: np.ndarray,
              terminal_weight: float = TERMINAL_WEIGHT) -> np.ndarray:
    """Time-varying gains K_k [N, m, n] of the finite-horizon LQR (backward Riccati recursion).

    Weights as in task.py: stage dt (e'Qe + u'Ru), terminal e'Q_f e; when the problem demands
    x_N = x*, terminal_weight * I is added to Q_f in its place.
    """
    Q, R, Q_f = problem.objective.matrices()
    P = Q_f + (terminal_weight * np.eye(len(Q)) if problem.objective.terminal_constraint else 0.0)
    gains = np.zeros((problem.num_steps, B.shape[1], A.shape[0]))
    for k in reversed(range(problem.num_steps)):
        K = np.linalg.solve(problem.dt * R + B.T @ P @ B, B.T @ P @ A)
        P = problem.dt * Q + A.T @ P @ (A - B @ K)
        P = (P + P.T) / 2  # keep it symmetric against round-off over many steps
        gains[k] = K
    return gains


def clipped_lqr_labels(problem: Task, initial_states, target_states, metadata: dict | None = None,
                       terminal_weight: float = TERMINAL_WEIGHT) -> ControlDataset:
    """The teacher's answers for B problems as a ControlDataset. initial_states, target_states: [B, n].

    control_sequences [B, N, m]: u_k = clip(-K_k (x_k - x*), +-u_max) along the true closed-loop
    rollout (state_trajectories [B, N+1, n]); costs [B]: J of them (problem.cost);
    terminal_multipliers: zeros (the teacher has none). metadata: a template (e.g. another
    dataset's) copied and updated with this problem, the sample count and
    metadata["labels"] = "clipped linearized LQR (teacher, sub-optimal)".

    The result is kept in memory: `data.read_dataset` would refuse these labels if saved,
    since it checks that stored labels are optimal (and they are not, by design).
    Each distinct target gets its own linearization and gains (one for the default tasks).
    Raises ValueError if a target is not an equilibrium under zero control: the LQR here
    regulates the deviation x - x* with u = 0 at the target.
    """
    system = problem.system
    x0, targets = check_states(initial_states, target_states, system.state_dim)
    drift = system.step(targets, np.zeros((len(targets), system.control_dim))) - targets
    stuck = np.abs(drift).max(axis=1) > 1e-9 * (1.0 + np.abs(targets).max(axis=1))
    if stuck.any():
        raise ValueError(f"the target {targets[stuck][0].tolist()} is not an equilibrium under zero control "
                         f"(it drifts by {drift[stuck][0].tolist()} in one step); the LQR teacher cannot hold it")
    unique_targets, which = np.unique(targets, axis=0, return_inverse=True)
    gains = np.stack([lqr_gains(problem, *linearize(problem, target), terminal_weight)
                      for target in unique_targets])[which.ravel()]           # [B, N, m, n]
    u_max = problem.control_bound
    states = [x0]
    controls = []
    for k in range(problem.num_steps):
        u = np.clip(-np.einsum("bij,bj->bi", gains[:, k], states[-1] - targets), -u_max, u_max)
        controls.append(u)
        states.append(system.step(states[-1], u))
    control_sequences = np.stack(controls, axis=1)
    state_trajectories = np.stack(states, axis=1)
    from ..version import __version__
    metadata = {**(metadata or {}), "format_version": FORMAT_VERSION, "trc_lib_version": __version__,
                "problem": problem.to_dict(), "controller": problem.objective.name, "oracle": LABELS,
                "labels": LABELS, "teacher_terminal_weight": float(terminal_weight), "num_samples": len(x0)}
    return ControlDataset(x0, targets, control_sequences, state_trajectories,
                          problem.cost(state_trajectories, control_sequences, targets),
                          np.zeros_like(x0), metadata)
