"""A general trajectory optimizer: direct multiple shooting on CasADi + IPOPT, with multiple starts.

For a continuous-time system xdot = f(x, u) (x: [n], u: [m]) on a horizon T split into N intervals
of dt = T / N seconds, with controls held constant over each interval, it solves

    minimize    sum_{k<N} l_k(x_k, u_k) + Phi(x_N)                    over u_0 .. u_{N-1}
    subject to  x_{k+1} = F(x_k, u_k)          (k = 0 .. N-1),  x_0 given,
                u_lower <= u_k <= u_upper       (per component),
                x_lower <= x_k <= x_upper       (at the nodes k = 1 .. N; x_0 is given),
                g(x_k, u_k) <= 0                (path constraints, k = 0 .. N-1, when given),
                x_N[i] = x*[i]                  (when terminal_constraint is set: every component
                                                 i, or those of terminal_components),

where F is `substeps` steps of classic RK4 over h = dt / substeps, and the interval cost is
l_k = L(x_k, u_k) dt (the rectangle rule, the default) or, with cost_quadrature="rk4", the integral
of L along the same RK4 steps (L integrated as an extra state, as CasADi's own examples do).

F is built once, as a CasADi Function of symbols. The NLP calls it on symbols, and `step`, `rollout`
and `cost` evaluate the very same Function on numpy arrays (vectorized with `.map(B)`), so the
integrator used to optimize is the integrator used to score: there is no second implementation
that could drift. Multiple shooting (the states at the nodes are NLP variables, tied together by
the defect constraints F(x_k, u_k) - x_{k+1} = 0) keeps the NLP well conditioned when the
dynamics are unstable or long horizons make single shooting's x_N(u) violently nonlinear.

The NLP is built once per problem structure (f, N, dt, costs, bounds); the initial state x_0 and
the target x* are its parameters, so one TrajectoryOptimizer solves many (x_0, x*) pairs without
rebuilding anything.

Success is not IPOPT's word alone. A start counts as solved only if IPOPT reports convergence
("Solve_Succeeded", or "Solved_To_Acceptable_Level" unless accept_acceptable=False) AND the
returned controls, played open loop from x_0 through the numpy integrator, satisfy every
constraint to `feasibility_tolerance`: the control bounds, the state bounds at the nodes, the
terminal condition, and IPOPT's own nodes agree with the integrator (the defects). The states
and the cost returned are those of that numpy rollout, not IPOPT's internal copies.

Terminal multipliers. IPOPT's Lagrangian is J + lam_g . g; the terminal constraint is written
g = x_N - x*, so lam = lam_g (its rows) is the multiplier of the project's cost gap
J(u) + lam . (x_N(u) - x*) - J*, and, by the envelope theorem, dJ*/dx* = -lam:

    J*(x* + eps) = J*(x*) - lam . eps + O(|eps|^2).

Accuracy: IPOPT's tolerance is 1e-8 (its `tol`; pass a smaller one in ipopt_options), and its
bounds are not relaxed (bound_relax_factor 0), so answers lie inside the box rather than up to
1e-8 outside it. It prints nothing: no banner, no iteration log, no warnings about NaN met in
trial points (IPOPT backs off from those by itself; a NaN it cannot avoid is a failed start).

Nonlinear problems have local optima; IPOPT finds one per start. `solve` runs every start
(given guesses, then random ones), keeps the best successful one, and reports every start's cost.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import casadi as ca
import numpy as np

from ..integrators import rk4

CONVERGED = ("Solve_Succeeded",)
ACCEPTABLE = ("Solved_To_Acceptable_Level",)
# options of CasADi's nlpsol itself; every other key of ipopt_options is IPOPT's
CASADI_OPTIONS = ("print_time", "error_on_fail", "show_eval_warnings", "verbose", "record_time", "calc_lam_p")


def _nlpsol(nlp: dict, options: dict, compiled: bool):
    """(IPOPT solver of `nlp`, whether its functions are compiled C). CasADi's JIT writes its C
    sources and objects into the working directory, so it runs in a temporary folder of its own,
    removed here once the library is loaded (CasADi's own clean-up is off: it would try again when
    the solver is destroyed)."""
    if compiled:
        folder, cwd = tempfile.mkdtemp(prefix="trc-casadi-jit-"), os.getcwd()
        jit = {"jit": True, "compiler": "shell", "jit_name": "trajectory", "jit_cleanup": False,
               "jit_options": {"flags": ["-O0"], "cleanup": False}}
        try:
            os.chdir(folder)
            return ca.nlpsol("trajectory", "ipopt", nlp, {**options, **jit}), True
        except RuntimeError:  # no C compiler, or it failed: CasADi's interpreter gives the same answers
            pass
        finally:
            os.chdir(cwd)
            shutil.rmtree(folder, ignore_errors=True)
    return ca.nlpsol("trajectory", "ipopt", nlp, options), False


def _takes_target(function: Callable, plain_arity: int) -> bool:
    """Whether a user cost function wants the target as an extra last argument.

    L may be L(x, u) or L(x, u, x_target); Phi may be Phi(x) or Phi(x, x_target) (tracking costs
    such as (x - x*)' Q (x - x*) need x*, which is an NLP parameter).
    """
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: call them the plain way
        return False
    kinds = [p.kind for p in parameters]
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return False
    positional = sum(k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                     for k in kinds)
    return positional > plain_arity


def _column(expression, size: int, what: str):
    """A user function's output as a CasADi column of `size` entries (lists and tuples are stacked)."""
    if isinstance(expression, (list, tuple)):
        expression = ca.vertcat(*expression)
    expression = ca.SX(expression) if not isinstance(expression, (ca.SX, ca.MX)) else expression
    if expression.numel() != size:
        raise ValueError(f"{what} must have {size} entries, got shape {expression.shape}")
    return ca.reshape(expression, size, 1)


def _bounds(value, size: int, default: float, what: str) -> np.ndarray:
    """Scalar, [size] or None (-> default) as a float array [size]."""
    if value is None:
        return np.full(size, default)
    array = np.broadcast_to(np.asarray(value, dtype=np.float64), (size,)).copy()
    if np.isnan(array).any():
        raise ValueError(f"{what} must not contain NaN, got {array}")
    return array


@dataclass
class TrajectoryResult:
    """The best start's solution of one problem, and what every start found.

    controls: [N, m] (clipped into the control bounds, against round-off); states: [N+1, n], the numpy rollout of `controls` from x_0; cost: J on that
    rollout; success: see the module docstring; status: IPOPT's return status of the returned start;
    iterations: IPOPT iterations of that start; solve_time: seconds for the whole call (all starts
    and checks); terminal_multipliers: lam [n], with J*(x* + eps) ~ J* - lam . eps, or None without a
    terminal constraint; constraint_violation: the largest scaled violation found by the check.
    start_costs [S], start_success [S], start_status [S], start_iterations [S], start_controls
    [S, N, m]: every start, in the order they were run (given guesses first, then random ones).
    """

    controls: np.ndarray
    states: np.ndarray
    cost: float
    success: bool
    status: str
    iterations: int
    solve_time: float
    terminal_multipliers: np.ndarray | None
    constraint_violation: float
    best_start: int
    start_costs: np.ndarray
    start_success: np.ndarray
    start_status: list
    start_iterations: np.ndarray
    start_controls: np.ndarray

    def local_optimum_costs(self, rtol: float = 1e-6) -> np.ndarray:
        """The distinct costs of the successful starts, ascending; costs within rtol are one optimum.

        Distinct by cost only: two mirror-image optima of equal cost count once.
        """
        costs = np.sort(self.start_costs[self.start_success])
        distinct = []
        for c in costs:
            if not distinct or abs(c - distinct[-1]) > rtol * max(1.0, abs(c)):
                distinct.append(c)
        return np.array(distinct)


@dataclass
class TrajectoryBatchResult:
    """`solve_batch` over B problems: the fields of TrajectoryResult stacked.

    controls [B, N, m]; states [B, N+1, n]; costs [B]; success [B] bool; iterations [B];
    solve_times [B] seconds; terminal_multipliers [B, n] (NaN without a terminal constraint);
    results: the B TrajectoryResult objects, with every start's costs.
    """

    controls: np.ndarray
    states: np.ndarray
    costs: np.ndarray
    success: np.ndarray
    iterations: np.ndarray
    solve_times: np.ndarray
    terminal_multipliers: np.ndarray
    results: list


def _check_sizes(time_horizon, state_dim, control_dim, num_steps, substeps, cost_quadrature) -> None:
    if not (time_horizon > 0 and np.isfinite(time_horizon)):
        raise ValueError(f"time_horizon must be a positive number, got {time_horizon}")
    for name, value in (("state_dim", state_dim), ("control_dim", control_dim),
                        ("num_steps", num_steps), ("substeps", substeps)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if cost_quadrature not in ("rectangle", "rk4"):
        raise ValueError(f"cost_quadrature must be 'rectangle' or 'rk4', got {cost_quadrature!r}")


class TrajectoryOptimizer:
    """Direct multiple shooting for one problem structure; `solve` it for any (x_0, x*).

    dynamics: f(x, u) -> xdot, a Python function of CasADi symbols x [n], u [m] (use casadi.sin
        and the like; arithmetic and indexing work as usual); may return a list of n entries.
    state_dim, control_dim: n, m.
    time_horizon: T in seconds; num_steps: N control intervals; dt = T / N.
    substeps: RK4 steps per interval (h = dt / substeps).
    stage_cost: L(x, u) or L(x, u, x_target) -> scalar, a rate per second; None for 0.
    terminal_cost: Phi(x_N) or Phi(x_N, x_target) -> scalar; None for 0.
    terminal_constraint: require x_N = x* (then `solve` needs x_target); terminal_components: the
        indices it applies to (default: all); the multipliers of the others are 0.
    path_constraints: g(x, u) -> a list of expressions, each <= 0 on every interval (None: none).
    control_lower, control_upper: bounds on u, scalars or [m] (None: unbounded).
    state_lower, state_upper: bounds on x at the nodes 1..N, scalars or [n], +-inf for none.
    cost_quadrature: "rectangle" (l_k = L(x_k, u_k) dt) or "rk4" (L integrated along the RK4 steps).
    feasibility_tolerance: what the numpy check allows, scaled by 1 + |reference| (the bound, or x*).
    accept_acceptable: whether IPOPT's "Solved_To_Acceptable_Level" can count as converged. It is
        on by default because the check on the integrator already guarantees feasibility; what it
        may give up is the last digits of optimality (IPOPT's acceptable_tol, 1e-6 by default).
    max_iterations: IPOPT's max_iter; ipopt_options: more options, "ipopt."-prefixed or not, or
        CasADi's own (CASADI_OPTIONS); they override the defaults (print_level 0, sb yes,
        bound_relax_factor 0, print_time and show_eval_warnings off).
    compiled: translate the NLP's functions (objective, constraints, their derivatives) to C and
        compile them with the system's C compiler (CasADi's JIT, `gcc -O0`) instead of running them
        in CasADi's interpreter. Building takes seconds longer; each solve is then faster, with the
        same answers to the last bit in the tests (benchmarks/ipopt_compiled.py measures both). Without a working compiler it falls back to the
        interpreter; `self.compiled` says which one runs.
    """

    def __init__(self, dynamics: Callable, state_dim: int, control_dim: int, time_horizon: float,
                 num_steps: int, substeps: int = 1, stage_cost: Callable | None = None,
                 terminal_cost: Callable | None = None, terminal_constraint: bool = True,
                 terminal_components=None, path_constraints: Callable | None = None, control_lower=None, control_upper=None, state_lower=None, state_upper=None,
                 cost_quadrature: str = "rectangle", feasibility_tolerance: float = 1e-6,
                 accept_acceptable: bool = True, max_iterations: int = 1000,
                 ipopt_options: dict | None = None, compiled: bool = False):
        _check_sizes(time_horizon, state_dim, control_dim, num_steps, substeps, cost_quadrature)
        n, m, N = int(state_dim), int(control_dim), int(num_steps)
        self.state_dim, self.control_dim, self.num_steps, self.substeps = n, m, N, int(substeps)
        self.time_horizon = float(time_horizon)
        self.dt = self.time_horizon / N
        self.terminal_constraint = bool(terminal_constraint)
        self.terminal_components = np.arange(n) if terminal_components is None else np.asarray(terminal_components, int)
        if self.terminal_constraint and len(self.terminal_components) == 0:
            self.terminal_constraint = False
        self._path_constraints = path_constraints
        self.cost_quadrature = cost_quadrature
        self.feasibility_tolerance = float(feasibility_tolerance)
        self.converged_statuses = CONVERGED + (ACCEPTABLE if accept_acceptable else ())
        self.control_lower = _bounds(control_lower, m, -np.inf, "control_lower")
        self.control_upper = _bounds(control_upper, m, np.inf, "control_upper")
        self.state_lower = _bounds(state_lower, n, -np.inf, "state_lower")
        self.state_upper = _bounds(state_upper, n, np.inf, "state_upper")
        if (self.control_lower > self.control_upper).any() or (self.state_lower > self.state_upper).any():
            raise ValueError("a lower bound is above its upper bound")
        self._build_functions(dynamics, stage_cost, terminal_cost)
        self._build_solver(max_iterations, ipopt_options, compiled)

    def _build_functions(self, dynamics, stage_cost, terminal_cost) -> None:
        """The interval map (x_k, u_k, x*) -> (x_(k+1), l_k), the terminal cost and their maps over N
        intervals, as CasADi Functions: the NLP and the numpy rollout both use them."""
        n, m, N = self.state_dim, self.control_dim, self.num_steps
        x, u, target = ca.SX.sym("x", n), ca.SX.sym("u", m), ca.SX.sym("x_target", n)
        f = lambda x_, u_: _column(dynamics(x_, u_), n, "dynamics(x, u)")
        L = (lambda x_, u_: _column(stage_cost(x_, u_, target) if _takes_target(stage_cost, 2)
                                    else stage_cost(x_, u_), 1, "stage_cost")) if stage_cost else None
        Phi = _column(0 if terminal_cost is None else
                      terminal_cost(x, target) if _takes_target(terminal_cost, 1) else terminal_cost(x),
                      1, "terminal_cost")

        # One interval: (x_k, u_k, x*) -> (x_{k+1}, l_k). Both the NLP and the numpy rollout use it.
        h = self.dt / self.substeps
        x_next, q = rk4(f, x, u, h, self.substeps, L if self.cost_quadrature == "rk4" else None)
        if L is not None and self.cost_quadrature == "rectangle":
            q = L(x, u) * self.dt
        self.F = ca.Function("F", [x, u], [x_next], ["x", "u"], ["x_next"])
        self._interval = ca.Function("interval", [x, u, target], [x_next, _column(q, 1, "stage cost")],
                                     ["x", "u", "x_target"], ["x_next", "l"])
        self._terminal_cost = ca.Function("Phi", [x, target], [Phi], ["x", "x_target"], ["Phi"])
        path = [] if self._path_constraints is None else list(self._path_constraints(x, u))
        self.num_path_constraints = len(path)
        self._path = ca.Function("g", [x, u], [ca.vertcat(*path) if path else ca.SX(0, 1)], ["x", "u"], ["g"])
        self._rollout = self._interval.mapaccum("rollout", N)  # (x0, U [m, N], X* [n, N]) -> X [n, N], l [1, N]
        self._mapped = {}

    def _build_solver(self, max_iterations, ipopt_options, compiled) -> None:
        """IPOPT on the multiple-shooting NLP (compiled to C when asked)."""
        n, m, N = self.state_dim, self.control_dim, self.num_steps
        target = ca.SX.sym("x_target", n)
        # The NLP: w = [u_0 .. u_{N-1}, x_1 .. x_N], parameters p = [x_0, x*].
        U, X = ca.SX.sym("U", m, N), ca.SX.sym("X", n, N)  # X[:, k] is x_{k+1}
        x0 = ca.SX.sym("x0", n)
        J, defects, path, x_k = 0, [], [], x0
        for k in range(N):
            x_end, l_k = self._interval(x_k, U[:, k], target)
            J += l_k
            defects.append(x_end - X[:, k])
            path.append(self._path(x_k, U[:, k]))
            x_k = X[:, k]
        J += self._terminal_cost(x_k, target)
        terminal = [(x_k - target)[self.terminal_components.tolist()]] if self.terminal_constraint else []
        # equality rows first (defects, then the terminal condition), the path inequalities last
        g = defects + terminal + path
        nlp = {"x": ca.vertcat(ca.vec(U), ca.vec(X)), "p": ca.vertcat(x0, target), "f": J, "g": ca.vertcat(*g)}
        # bound_relax_factor 0: IPOPT otherwise relaxes every bound by 1e-8 (relative), and its
        # answers then sit up to that far outside the box; an interior point stays inside instead.
        options = {"ipopt.print_level": 0, "print_time": False, "ipopt.sb": "yes",
                   "ipopt.max_iter": int(max_iterations), "ipopt.bound_relax_factor": 0.0,
                   "error_on_fail": False, "show_eval_warnings": False,  # NaN/inf during a solve: IPOPT copes
                   # the parameters' multipliers are never read; computed after a failed solve, they
                   # printed "Failed to calculate multipliers" ahead of the command's one-line error
                   "calc_lam_p": False}
        for key, value in (ipopt_options or {}).items():
            options[key if key.startswith("ipopt.") or key in CASADI_OPTIONS else "ipopt." + key] = value
        self._solver, self.compiled = _nlpsol(nlp, options, compiled)
        self._lbw = np.concatenate([np.tile(self.control_lower, N), np.tile(self.state_lower, N)])
        self._ubw = np.concatenate([np.tile(self.control_upper, N), np.tile(self.state_upper, N)])
        self._num_terminal = len(self.terminal_components) if self.terminal_constraint else 0
        self._num_equalities = n * N + self._num_terminal
        num_path = N * self.num_path_constraints
        self._lbg = np.concatenate([np.zeros(self._num_equalities), np.full(num_path, -np.inf)])
        self._ubg = np.zeros(self._num_equalities + num_path)

    # ------------------------------------------------------------------------------------------
    # the integrator on numpy arrays (the same CasADi Functions as the NLP)
    # ------------------------------------------------------------------------------------------

    def _map(self, function: ca.Function, B: int) -> ca.Function:
        key = (function.name(), B)
        if key not in self._mapped:
            self._mapped[key] = function.map(B)
        return self._mapped[key]

    def step(self, states: np.ndarray, controls: np.ndarray) -> np.ndarray:
        """x_{k+1} = F(x_k, u_k). states [B, n] (or [n]), controls [B, m] (or [m]) -> [B, n] (or [n])."""
        x = np.asarray(states, dtype=np.float64)
        u = np.asarray(controls, dtype=np.float64)
        single = x.ndim == 1
        x, u = np.atleast_2d(x), np.atleast_2d(u)
        out = self._map(self.F, len(x))(x.T, u.T).full().T
        return out[0] if single else out

    def _rollout_and_costs(self, x0: np.ndarray, u: np.ndarray, target: np.ndarray):
        """x0 [B, n], u [B, N, m], target [B, n] -> states [B, N+1, n], interval costs [B, N], Phi [B]."""
        B, N, n, m = len(x0), self.num_steps, self.state_dim, self.control_dim
        # mapaccum.map(B) lays the B problems side by side: column b*N + k is step k of problem b.
        X, l = self._map(self._rollout, B)(x0.T, u.reshape(B * N, m).T, np.repeat(target, N, axis=0).T)
        states = np.concatenate([x0[:, None, :], X.full().T.reshape(B, N, n)], axis=1)
        terminal = self._map(self._terminal_cost, B)(states[:, -1].T, target.T).full().reshape(B)
        return states, l.full().reshape(B, N), terminal

    def _as_batch(self, initial_states, controls, target_states):
        x0 = np.asarray(initial_states, dtype=np.float64)
        u = np.asarray(controls, dtype=np.float64)
        single = x0.ndim == 1
        x0 = np.atleast_2d(x0)
        u = u.reshape(len(x0), self.num_steps, self.control_dim)
        target = (np.zeros_like(x0) if target_states is None
                  else np.broadcast_to(np.asarray(target_states, dtype=np.float64), x0.shape))
        return x0, u, np.ascontiguousarray(target), single

    def rollout(self, initial_states: np.ndarray, controls: np.ndarray) -> np.ndarray:
        """Open-loop trajectories. initial_states [B, n], controls [B, N, m] -> [B, N+1, n] (unbatched: [n], [N, m] -> [N+1, n])."""
        x0, u, target, single = self._as_batch(initial_states, controls, None)
        states = self._rollout_and_costs(x0, u, target)[0]
        return states[0] if single else states

    def cost(self, initial_states: np.ndarray, controls: np.ndarray, target_states: np.ndarray | None = None):
        """J(u) = sum_k l_k + Phi(x_N) on the rollout. [B, n], [B, N, m], [B, n] -> [B] (unbatched: a float).

        Constraints are not part of J; see TrajectoryResult.terminal_multipliers for pricing a miss.
        """
        x0, u, target, single = self._as_batch(initial_states, controls, target_states)
        _, l, terminal = self._rollout_and_costs(x0, u, target)
        J = l.sum(axis=1) + terminal
        return float(J[0]) if single else J

    # ------------------------------------------------------------------------------------------
    # solving
    # ------------------------------------------------------------------------------------------

    def random_controls(self, rng: np.random.Generator) -> np.ndarray:
        """A random start [N, m]: uniform within finite bounds, standard normal (clipped) otherwise."""
        shape = (self.num_steps, self.control_dim)
        lower, upper = self.control_lower, self.control_upper
        finite = np.isfinite(lower) & np.isfinite(upper)
        uniform = rng.uniform(np.where(finite, lower, 0.0), np.where(finite, upper, 1.0), size=shape)
        normal = np.clip(rng.standard_normal(shape), lower, upper)
        return np.where(finite, uniform, normal)

    def _starts(self, initial_guesses, num_random_starts: int, rng) -> list:
        shape = (self.num_steps, self.control_dim)
        starts = []
        if initial_guesses is not None:
            guesses = [np.asarray(g, dtype=np.float64) for g in
                       ([initial_guesses] if np.ndim(initial_guesses) == 2 else initial_guesses)]
            for g in guesses:
                if g.size != shape[0] * shape[1] or not np.isfinite(g).all():
                    raise ValueError(f"an initial guess must be {shape} finite controls, got shape {g.shape}")
                starts.append(g.reshape(shape))
        starts += [self.random_controls(rng) for _ in range(int(num_random_starts))]
        if not starts:  # zero controls, or the nearest point of the box
            starts.append(np.broadcast_to(np.clip(0.0, self.control_lower, self.control_upper), shape).copy())
        return [np.clip(s, self.control_lower, self.control_upper) for s in starts]

    def _state_guess(self, x0, u, target) -> np.ndarray:
        """Node states x_1..x_N [N, n] for a start: the rollout of its controls, kept in the bounds.

        Where the rollout diverges (unstable dynamics, a wild guess: not finite, or a thousand times
        larger than x_0 and x*), a straight line from x_0 to x* stands in for it; a node at 1e172 is
        finite, but one more RK4 step from it is not, and IPOPT stops at a NaN in its first point.
        """
        states = self._rollout_and_costs(x0[None], u[None], target[None])[0][0, 1:]
        line = x0 + np.linspace(0, 1, self.num_steps + 1)[1:, None] * (target - x0)
        scale = 1.0 + max(np.abs(x0).max(), np.abs(target).max())
        with np.errstate(invalid="ignore"):
            sane = np.isfinite(states) & (np.abs(states) <= 1e3 * scale)
        states = np.where(sane, states, line)
        return np.clip(states, self.state_lower, self.state_upper)

    def _violation(self, x0, target, u_raw, nodes, states) -> float:
        """Largest scaled constraint violation of a solution, checked on the numpy integrator.

        Each violation is divided by 1 + |reference| (the bound it crosses, x* for the terminal
        condition, the node for a defect), so the tolerance is relative for large numbers and
        absolute near zero. Not finite anywhere: inf.
        """
        def excess(values, lower, upper):  # how far values lie outside [lower, upper], scaled
            below = (lower - values) / (1.0 + np.where(np.isfinite(lower), np.abs(lower), 0.0))
            above = (values - upper) / (1.0 + np.where(np.isfinite(upper), np.abs(upper), 0.0))
            return np.maximum(below, above)

        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf from a diverged rollout: caught below
            checks = [excess(u_raw, self.control_lower, self.control_upper),
                      excess(states, self.state_lower, self.state_upper),
                      # IPOPT's nodes against the integrator: each defect F(x_k, u_k) - x_{k+1}
                      np.abs(self.step(np.vstack([x0, nodes[:-1]]), u_raw) - nodes) / (1.0 + np.abs(nodes))]
            if self.terminal_constraint:
                i = self.terminal_components
                checks.append(np.abs(states[-1, i] - target[i]) / (1.0 + np.abs(target[i])))
            if self.num_path_constraints:
                # g(x_k, u_k) <= 0 on the rollout's states, as the evaluation checks it
                checks.append(self._map(self._path, len(u_raw))(states[:-1].T, u_raw.T).full().ravel())
        worst = max(float(np.max(c, initial=0.0)) for c in checks)
        finite = all(np.isfinite(a).all() for a in (u_raw, nodes, states))
        return worst if finite and np.isfinite(worst) else np.inf

    def _solve_from(self, x0, target, u_guess):
        """One IPOPT run. Returns (controls, states, cost, converged, violation, status, iterations, lam)."""
        N, n, m = self.num_steps, self.state_dim, self.control_dim
        w0 = np.concatenate([u_guess.ravel(), self._state_guess(x0, u_guess, target).ravel()])
        try:
            solution = self._solver(x0=w0, p=np.concatenate([x0, target]), lbx=self._lbw, ubx=self._ubw,
                                    lbg=self._lbg, ubg=self._ubg)
            stats = self._solver.stats()
            status, iterations = str(stats.get("return_status", "unknown")), int(stats.get("iter_count", -1))
        except RuntimeError as error:  # CasADi raises on evaluation errors in some versions
            return u_guess, None, np.inf, False, np.inf, f"error: {error}", -1, None
        w = solution["x"].full().ravel()
        u_raw, nodes = w[:N * m].reshape(N, m), w[N * m:].reshape(N, n)
        # round-off outside the box is clipped, as an actuator would; anything larger (say, with a
        # user's bound_relax_factor) is also caught by the check on u_raw below
        u = np.clip(u_raw, self.control_lower, self.control_upper)
        states, l, terminal = self._rollout_and_costs(x0[None], u[None], target[None])
        states, cost = states[0], float(l.sum() + terminal[0])
        violation = self._violation(x0, target, u_raw, nodes, states)
        lam = None
        if self.terminal_constraint:  # the terminal rows' multipliers, zero on the free components
            lam = np.zeros(n)
            lam[self.terminal_components] = solution["lam_g"].full().ravel()[n * N:self._num_equalities]
        converged = status in self.converged_statuses and np.isfinite(cost)
        return u, states, cost, converged, violation, status, iterations, lam

    def solve(self, x0: np.ndarray, x_target: np.ndarray | None = None, initial_guesses=None,
              num_random_starts: int = 0, seed=None) -> TrajectoryResult:
        """Solve from x0 [n] to x_target [n] (required with a terminal constraint; also passed to
        costs that take it). initial_guesses: controls [N, m], or a sequence / array [S, N, m] of
        them; num_random_starts more are drawn from `seed` (see random_controls). With neither,
        one start from zero controls (clipped into the bounds). Returns the best successful start
        (lowest cost), or, if none succeeded, the start with the smallest constraint violation,
        with success=False.
        """
        started = time.perf_counter()
        n = self.state_dim
        x0 = np.asarray(x0, dtype=np.float64).reshape(n)
        if x_target is None:
            if self.terminal_constraint:
                raise ValueError("this problem has a terminal constraint: solve needs x_target")
            target = np.zeros(n)
        else:
            target = np.asarray(x_target, dtype=np.float64).reshape(n)
        if not (np.isfinite(x0).all() and np.isfinite(target).all()):
            raise ValueError("x0 and x_target must be finite")
        starts = self._starts(initial_guesses, num_random_starts, np.random.default_rng(seed))
        runs = [self._solve_from(x0, target, u) for u in starts]
        success = np.array([r[3] and r[4] <= self.feasibility_tolerance for r in runs])
        costs = np.array([r[2] for r in runs])
        violations = np.array([r[4] for r in runs])
        best = (int(np.flatnonzero(success)[np.argmin(costs[success])]) if success.any()
                else int(np.lexsort((costs, violations))[0]))
        u, states, cost, _, violation, status, iterations, lam = runs[best]
        if states is None:  # every start raised: report the guess played out, marked as failed
            states = self.rollout(x0, u)
        return TrajectoryResult(
            controls=u, states=states, cost=cost, success=bool(success[best]), status=status,
            iterations=iterations, solve_time=time.perf_counter() - started, terminal_multipliers=lam,
            constraint_violation=violation, best_start=best, start_costs=costs, start_success=success,
            start_status=[r[5] for r in runs], start_iterations=np.array([r[6] for r in runs]),
            start_controls=np.stack([r[0] for r in runs]))

    def solve_batch(self, initial_states: np.ndarray, target_states: np.ndarray | None = None,
                    initial_guesses=None, num_random_starts: int = 0, seed=None) -> TrajectoryBatchResult:
        """`solve` for each of B problems, one after the other, reusing the one NLP.

        initial_states [B, n]; target_states [B, n] or None; initial_guesses: None, one set of
        starts for every problem ([N, m] or [S, N, m]), or one per problem ([B, S, N, m]); the
        random starts of all problems come from one generator seeded with `seed`, so a batch is
        reproducible. The loop is serial: IPOPT runs on one core. To use several cores, split the
        batch across processes, each building its own TrajectoryOptimizer (CasADi's solver objects
        are not shared between processes); results do not depend on the split when each problem
        gets its own seed.
        """
        x0 = np.atleast_2d(np.asarray(initial_states, dtype=np.float64))
        B = len(x0)
        targets = [None] * B if target_states is None else np.broadcast_to(
            np.asarray(target_states, dtype=np.float64), x0.shape)
        per_problem = initial_guesses is not None and np.ndim(initial_guesses) == 4
        rng = np.random.default_rng(seed)
        results = [self.solve(x0[b], targets[b], initial_guesses[b] if per_problem else initial_guesses,
                              num_random_starts, rng) for b in range(B)]
        nan_mu = np.full(self.state_dim, np.nan)
        return TrajectoryBatchResult(
            controls=np.stack([r.controls for r in results]), states=np.stack([r.states for r in results]),
            costs=np.array([r.cost for r in results]), success=np.array([r.success for r in results]),
            iterations=np.array([r.iterations for r in results]),
            solve_times=np.array([r.solve_time for r in results]),
            terminal_multipliers=np.stack([nan_mu if r.terminal_multipliers is None else r.terminal_multipliers
                                           for r in results]),
            results=results)
