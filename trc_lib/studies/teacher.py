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
4. play u_k = clip(-K_k (x_k - x*), -u_max, u_max) on the TRUE nonlinear system (system.step)
   (baselines.LQRController, where the control that holds x* is u = 0).

LQR has no hard terminal constraint, so a large terminal weight stands in for x_N = x*
(TERMINAL_WEIGHT = 1e3: a miss of 0.03 then costs about as much as the whole transfer, so the
policy nearly reaches the target but is not forced to, exactly like a soft-constrained teacher).
The labels are feasible-ish (small terminal miss, within the bound by the clip) but not optimal:
the linearization is wrong away from x*, and clipping is not how an optimal controller
respects a bound. On a linear system with a huge bound, they are the exact LQR optimum.
"""

from __future__ import annotations

import numpy as np

from ..baselines import TERMINAL_WEIGHT, LQRController
from ..data import FORMAT_VERSION, ControlDataset
from ..inference import check_states
from ..task import Task

LABELS = "clipped linearized LQR (teacher, sub-optimal)"


def linearize(problem: Task, target_state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A [n, n], B [n, m]): the system's discrete-time dynamics linearized at (x*, u = 0)
    (task.py: exact for a linear task; Jacobians and expm for a nonlinear one)."""
    return problem.system.linearization(target_state)


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
    Each distinct target gets its own linearization and gains (baselines.LQRController, which
    plays them). Raises ValueError where a target is not an equilibrium some control holds.
    """
    system = problem.system
    x0, targets = check_states(initial_states, target_states, problem)
    teacher = LQRController(problem, terminal_weight)
    if not teacher.applies(targets):
        raise ValueError("a target is not an equilibrium that some control within the bounds holds, or its "
                         "linearization is not controllable: the LQR teacher cannot hold it")
    control_sequences = teacher.predict(x0, targets)
    state_trajectories = system.rollout(x0, control_sequences)
    from ..version import __version__
    metadata = {**(metadata or {}), "format_version": FORMAT_VERSION, "trc_lib_version": __version__,
                "problem": problem.to_dict(), "controller": problem.objective.name, "oracle": LABELS,
                "labels": LABELS, "teacher_terminal_weight": float(terminal_weight), "num_samples": len(x0)}
    return ControlDataset(x0, targets, control_sequences, state_trajectories,
                          problem.cost(state_trajectories, control_sequences, targets),
                          np.zeros_like(x0), metadata)
