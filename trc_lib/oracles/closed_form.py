"""The exact oracle: the optimum of the stated discrete-time problem, not an approximation.

For a linear system the trajectory is affine in the stacked controls u ([N*m]):
x_k = Phi_k x_0 + Gamma_k u, so the objective of `task.py` is a convex quadratic
program in u,

    minimize 1/2 u^T H u + f^T u   subject to  E u = c   (x_N = x*, when required)
                                              -u_max <= u <= u_max,

with H shared by every sample and f, c depending on (x_0, x*). When no bound is active
the solution is one linear solve for the whole batch (for the minimum-energy problem this
is u = G^T (G G^T)^-1 (x* - A^N x_0)). Samples whose unconstrained solution leaves the box
are solved exactly by a primal-dual active-set method (Hintermueller, Ito & Kunisch 2002):
once the active bounds are known, the optimum is one linear solve. Every answer is checked
against the KKT conditions.

The multiplier lam (λ) of the terminal constraint is kept: by convexity and strong duality,
J(u) + lam . (x_N(u) - x*) >= J* for every u inside the bounds, which is what makes the
evaluator's cost gap impossible to game by missing the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..task import Task


@dataclass
class OptimalSolution:
    """Exact optimum for a batch of B problems.

    control_sequences: [B, N, m]; state_trajectories: [B, N+1, n]; costs: [B] (J*);
    terminal_multipliers: [B, n] (lam, zero without a terminal constraint);
    bound_active: [B] bool, whether any control is at a bound at the optimum (as the task's
    oracle defines its bounds); time_horizons: [B] s, only for a task whose final time is free
    (Task.free_final_time), else None.
    """

    control_sequences: np.ndarray
    state_trajectories: np.ndarray
    costs: np.ndarray
    terminal_multipliers: np.ndarray
    bound_active: np.ndarray
    time_horizons: np.ndarray | None = None


def quadratic_program(problem: Task, initial_states: np.ndarray, target_states: np.ndarray):
    """The QP in the stacked controls u = [u_0, ..., u_{N-1}] ([N*m]).

    Returns H [p, p], f [B, p], E [n, p] or None, c [B, n] or None, constant [B], with
    J(u) = 1/2 u^T H u + f^T u + constant and the terminal constraint E u = c.
    """
    system, dt = problem.system, problem.dt
    Q, R, Q_f = problem.objective.matrices()
    Phi, Gamma = system.transition_matrices
    N = system.num_steps
    # offsets d_k = Phi_k x_0 - x*: the state error with zero controls, [B, N+1, n]
    offsets = np.einsum("kij,bj->bki", Phi, initial_states) - target_states[:, None, :]
    H = 2.0 * (dt * np.einsum("kip,ij,kjq->pq", Gamma[:N], Q, Gamma[:N])
               + dt * np.kron(np.eye(N), R)
               + Gamma[N].T @ Q_f @ Gamma[N])
    f = 2.0 * (dt * np.einsum("kip,ij,bkj->bp", Gamma[:N], Q, offsets[:, :N])
               + offsets[:, N] @ Q_f @ Gamma[N])
    constant = dt * np.einsum("bki,ij,bkj->b", offsets[:, :N], Q, offsets[:, :N]) \
        + np.einsum("bi,ij,bj->b", offsets[:, N], Q_f, offsets[:, N])
    if problem.objective.terminal_constraint:
        return H, f, Gamma[N], -offsets[:, N], constant
    return H, f, None, None, constant


def reachability_margin(problem: Task, initial_states: np.ndarray, target_states: np.ndarray) -> np.ndarray:
    """How far inside the reachable set each target lies, [B]; > 0 means reachable within the bound.

    The states reachable at t = T form a zonotope {A^N x_0 + G u : |u| <= u_max}. In two
    dimensions its facets are normal to the rotated generators g_j^perp, so x* is reachable
    iff |g_j^perp . (x* - A^N x_0)| <= u_max sum_i |g_j^perp . g_i| for every j. The margin is
    the smallest relative slack, 1 - |g^perp . b| / support(g^perp).
    """
    if problem.system.state_dim != 2:
        raise NotImplementedError("the exact reachability test is written for two-dimensional states")
    Phi, Gamma = problem.system.transition_matrices
    G = Gamma[-1]
    b = target_states - initial_states @ Phi[-1].T
    normals = np.stack([-G[1], G[0]], axis=1)                            # [p, 2]
    support = problem.control_bound * np.abs(normals @ G).sum(axis=1)   # [p]
    return np.min(1.0 - np.abs(b @ normals.T) / support, axis=1)


def _solve_kkt(H, f, E, c, at_upper, at_lower, lower, upper):
    """Exact solution for given active bounds: (u [B, p], lam [B, q], bound multipliers [B, p]).

    Active controls are fixed at their bound; the rest satisfy H u + f + E^T lam = 0, E u = c.
    """
    B, p = f.shape
    q = 0 if E is None else E.shape[0]
    K = np.zeros((p + q, p + q))
    K[:p, :p] = H
    if q:
        K[:p, p:] = E.T
        K[p:, :p] = E
    active = at_upper | at_lower
    K_batch = np.broadcast_to(K, (B, p + q, p + q)).copy()
    K_batch[:, :p] = np.where(active[:, :, None], np.eye(p, p + q), K[:p])
    rhs = np.concatenate([-f, c], axis=1) if q else -f.copy()
    rhs[:, :p] = np.where(at_upper, upper, np.where(at_lower, lower, rhs[:, :p]))
    try:
        solution = np.linalg.solve(K_batch, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:  # a guess with fewer free controls than constraints
        solution = (np.linalg.pinv(K_batch) @ rhs[..., None])[..., 0]
    u, lam = solution[:, :p], solution[:, p:]
    bound_multipliers = -(u @ H + f + (lam @ E if q else 0.0))
    bound_multipliers[~active] = 0.0
    return u, lam, bound_multipliers


def _kkt_holds(H, f, E, c, u, lam, at_upper, at_lower, bound_multipliers, lower, upper):
    """[B] bool: stationarity on the free controls, feasibility and multiplier signs, to round-off."""
    scale = (1.0 + np.abs(f).max(axis=1) + np.abs(H).max())[:, None]
    gradient = u @ H + f + (lam @ E if E is not None else 0.0) + bound_multipliers
    ok = (np.abs(gradient) <= 1e-9 * scale * (1.0 + np.abs(u))).all(axis=1)
    ok &= ((u <= upper + 1e-9) & (u >= lower - 1e-9)).all(axis=1)
    ok &= (np.where(at_upper, -bound_multipliers, 0.0) <= 1e-9 * scale).all(axis=1)
    ok &= (np.where(at_lower, bound_multipliers, 0.0) <= 1e-9 * scale).all(axis=1)
    if E is not None:
        ok &= np.abs(u @ E.T - c).max(axis=1) <= 1e-9 * (1.0 + np.abs(c).max(axis=1))
    return ok


def _active_set_from_slsqp(H, f, E, c, lower, upper):
    """Active bounds of one sample ([p] bool each) found by a general-purpose solver."""
    from scipy.optimize import minimize
    constraints = [] if E is None else [{"type": "eq", "fun": lambda u: E @ u - c, "jac": lambda u: E}]
    result = minimize(lambda u: 0.5 * u @ H @ u + f @ u, np.clip(np.linalg.solve(H, -f), lower, upper),
                      jac=lambda u: H @ u + f, method="SLSQP", bounds=[(lower, upper)] * len(f),
                      constraints=constraints, options={"ftol": 1e-15, "maxiter": 1000})
    tolerance = 1e-7 * (upper - lower)
    return result.x >= upper - tolerance, result.x <= lower + tolerance


def solve_box_qp(H, f, E, c, lower, upper, max_iterations: int = 50):
    """Exact solution of min 1/2 u'Hu + f'u s.t. Eu = c, lower <= u <= upper, batched.

    H: [p, p] positive definite; f: [B, p]; E: [q, p] or None; c: [B, q] or None;
    lower, upper: scalars. Returns (u [B, p], lam [B, q], bound_multipliers [B, p]).
    Primal-dual active set: guess the active bounds, solve the KKT system exactly for that
    guess, update the guess from the primal and dual residuals; stop when it repeats. The
    method can cycle when H is not diagonal (it does on some bounded LQR problems); those
    samples take their active set from SLSQP instead and are then solved exactly the same way.
    Every answer is checked against the KKT conditions; RuntimeError if one fails.
    """
    B, p = f.shape
    kappa = float(np.mean(np.diag(H)))  # puts primal and dual residuals on one scale
    at_upper = np.zeros((B, p), bool)
    at_lower = np.zeros((B, p), bool)
    for _ in range(max_iterations):
        u, lam, bound_multipliers = _solve_kkt(H, f, E, c, at_upper, at_lower, lower, upper)
        new_upper = bound_multipliers + kappa * (u - upper) > 0
        new_lower = bound_multipliers + kappa * (u - lower) < 0
        settled = (new_upper == at_upper).all(axis=1) & (new_lower == at_lower).all(axis=1)
        at_upper, at_lower = new_upper, new_lower
        if settled.all():
            break
    ok = settled & _kkt_holds(H, f, E, c, u, lam, at_upper, at_lower, bound_multipliers, lower, upper)
    for i in np.flatnonzero(~ok):
        at_upper[i], at_lower[i] = _active_set_from_slsqp(H, f[i], E, None if E is None else c[i], lower, upper)
    if not ok.all():
        rows = ~ok
        u[rows], lam[rows], bound_multipliers[rows] = _solve_kkt(H, f[rows], E, None if E is None else c[rows],
                                                                at_upper[rows], at_lower[rows], lower, upper)
        ok = _kkt_holds(H, f, E, c, u, lam, at_upper, at_lower, bound_multipliers, lower, upper)
    if not ok.all():
        raise RuntimeError(f"the QP solution failed its KKT check for {np.sum(~ok)} of {B} samples")
    return u, lam, bound_multipliers


def solve(problem: Task, initial_states: np.ndarray, target_states: np.ndarray) -> OptimalSolution:
    """Exact optimum for each (x_0, x*). initial_states, target_states: [B, n].

    Raises ValueError if a target is not reachable within the bound (see reachability_margin).
    """
    x0 = np.asarray(initial_states, dtype=np.float64)
    target = np.asarray(target_states, dtype=np.float64)
    system, u_max = problem.system, problem.control_bound
    N, m, n = system.num_steps, system.control_dim, system.state_dim
    if problem.objective.terminal_constraint:
        unreachable = reachability_margin(problem, x0, target) <= 0
        if unreachable.any():
            raise ValueError(f"{unreachable.sum()} targets are not reachable with |u| <= {u_max}")
    H, f, E, c, constant = quadratic_program(problem, x0, target)
    p, q = H.shape[0], 0 if E is None else E.shape[0]

    # Unconstrained optimum for the whole batch: one KKT matrix, many right-hand sides.
    K = np.block([[H, E.T], [E, np.zeros((q, q))]]) if q else H
    rhs = np.concatenate([-f, c], axis=1) if q else -f
    solution = np.linalg.solve(K, rhs.T).T
    u, lam = solution[:, :p], solution[:, p:]

    bound_active = np.abs(u).max(axis=1) > u_max
    if bound_active.any():
        idx = np.flatnonzero(bound_active)
        u[idx], lam[idx], _ = solve_box_qp(H, f[idx], E, None if E is None else c[idx], -u_max, u_max)
        bound_active[idx] = np.isclose(np.abs(u[idx]), u_max, rtol=0, atol=1e-12).any(axis=1)

    control_sequences = u.reshape(-1, N, m)
    states = system.rollout(x0, control_sequences)
    costs = problem.cost(states, control_sequences, target)
    multipliers = lam if q else np.zeros((len(x0), n))
    return OptimalSolution(control_sequences, states, costs, multipliers, bound_active)


class ClosedFormOracle:
    """The oracle of a linear system: the QP solved exactly (`solve`), the global optimum.

    With a terminal constraint, a target that cannot be reached within the bound, or lies within
    `margin` of the edge of the reachable set (reachability_margin), is a failure.
    """

    name = "exact QP"
    method = "exact QP"  # as datasets record it
    failure = "unreachable"  # what a failed problem is called in messages
    exact_and_fast = True  # nothing a Newton correction or an IPOPT polish of a learned answer could add
    one_problem_at_a_time = False  # a batch is one computation: time it at every batch size
    solves_on_workers = False  # one computation in this process: `workers` is ignored
    margin = 1e-6

    def screen(self, problem: Task, initial_states, target_states) -> np.ndarray:
        """[B] bool: the problems that can be solved (cheap: no solve)."""
        if not problem.objective.terminal_constraint:
            return np.ones(len(initial_states), bool)
        return reachability_margin(problem, initial_states, target_states) > self.margin

    def optimum(self, problem: Task, initial_states, target_states, workers=None, progress=False):
        """(OptimalSolution [B], success [B] bool); the rows of failures are NaN."""
        x0, xt = (np.asarray(a, dtype=np.float64) for a in (initial_states, target_states))
        success = self.screen(problem, x0, xt)
        if not success.any():
            n, N, m = problem.system.state_dim, problem.num_steps, problem.system.control_dim
            nan = lambda *shape: np.full((len(x0), *shape), np.nan)
            return OptimalSolution(nan(N, m), nan(N + 1, n), nan(), nan(n), np.zeros(len(x0), bool)), success
        solved = solve(problem, x0[success], xt[success])
        rows = []
        for part in (solved.control_sequences, solved.state_trajectories, solved.costs,
                     solved.terminal_multipliers, solved.bound_active):
            full = np.full((len(x0), *part.shape[1:]), False if part.dtype == bool else np.nan, part.dtype)
            full[success] = part
            rows.append(full)
        return OptimalSolution(*rows), success

    def controls(self, problem: Task, initial_states, target_states) -> np.ndarray:
        """The optimal controls [B, N, m] and nothing else: what a user waiting for them would run."""
        return solve(problem, initial_states, target_states).control_sequences

    def verify(self, dataset) -> None:
        """Refuse labels that are not the exact optimum of the problem the dataset states
        (TRCError naming the file): all of them are solved again, in milliseconds."""
        from ..errors import TRCError
        try:
            solution = solve(dataset.problem, dataset.initial_states, dataset.target_states)
        except ValueError as e:
            raise TRCError(f"{dataset.path}: {e}") from None
        scale = 1.0 + np.abs(solution.control_sequences).max()
        if (not np.allclose(solution.control_sequences, dataset.control_sequences, rtol=0, atol=1e-6 * scale)
                or not np.allclose(solution.costs, dataset.costs, rtol=1e-6, atol=1e-9)
                or not np.allclose(solution.terminal_multipliers, dataset.terminal_multipliers, rtol=1e-5,
                                   atol=1e-6 * (1.0 + np.abs(solution.terminal_multipliers).max()))):
            raise TRCError(f"{dataset.path}: 'control_sequences'/'costs'/'terminal_multipliers' are not the exact "
                           f"optimum of the problem stated in its metadata (a corrupt file, or labels from "
                           f"another problem)")
