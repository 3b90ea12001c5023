"""Newton projection onto the terminal constraint: a cheap, exact polish for a network's answer.

A network's control sequence u [N, m] ends near the target, x_N(u) ~ x*, but on an unstable or
strongly nonlinear system "near" can still be a miss: at the pendulum's optimal swing-ups the
largest singular value of dx_N/du is about 135 (benchmarks/beyond.py prints it), so a control
error of norm 0.00074 in that direction moves the terminal state by 0.1. The classical remedy is the shooting
method's Newton step. With the residual r = x_N(u) - x* [n] and the sensitivity J = dx_N/du
[n, N m], the smallest change of u (in the Euclidean norm, which is the cost's own metric when
R = I) that cancels r to first order is

    delta_u = -J_f^T (J_f J_f^T)^-1 r,

where J_f keeps only the free controls. Controls must stay within their bounds: one the step would
push past the bound is moved onto the bound instead, and the free ones make up for it (an
active-set loop). A step that does not reduce |r| is retried with Levenberg-Marquardt damping
(J_f J_f^T + lambda I), which first gives up on the weakly controllable direction, where a
full step asks for large changes; so a poor start is never made worse. Newton converges
quadratically once the answer is in the basin, and finding the basin is the network's job: the
projection cannot, and it is not an optimizer. It fixes the terminal condition and moves the
cost only as much as that minimal correction does.

x_N(u) and J come from the compiled terminal map of the task's own integrator (RK4 with its
substeps, the oracle's and the scorer's; terminal_map.py, the one the model's feedback uses), in
float64, J by one reverse pass per state component from one forward pass; no gradient through the network is involved. Compare hybrid.py, which hands the answer to IPOPT (exact KKT, slower).
"""

from __future__ import annotations

import numpy as np

from ..task import Task
from ..terminal_map import terminal_map

ITERATIONS = 10  # Newton steps at most, by default (from a good start it stops after about three)
BOUND_MARGIN = 1e-9  # relative: a step may overshoot a bound by this much before its control is held


class TerminalProjection:
    """project(x0, x*, u) -> u with x_N(u) = x* to round-off, for any Task.

    iterations: Newton steps at most (each: one evaluation of x_N and J, plus one evaluation of
    x_N per damping tried); tolerance: stop once every |r| is below it; dampings: the
    Levenberg-Marquardt damping tried in turn, relative to the mean eigenvalue of J J^T (0 is
    the plain Gauss-Newton step) until the residual shrinks.
    """

    def __init__(self, problem: Task, iterations: int = ITERATIONS, tolerance: float = 1e-10,
                 dampings: tuple = (0.0, 1e-6, 1e-4, 1e-2, 1.0)):
        system = problem.system  # any system: a linear one's terminal map is affine, one step reaches x*
        if int(iterations) != iterations or iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {iterations}")
        self.problem, self.iterations = problem, int(iterations)
        self.tolerance, self.dampings = float(tolerance), tuple(dampings)
        self._terminal_map = terminal_map(system)
        N = problem.num_steps
        self._bounds = np.tile(problem.control_lower, N), np.tile(problem.control_upper, N)  # [N m] each
        slack = BOUND_MARGIN * np.maximum(np.abs(self._bounds[0]), np.abs(self._bounds[1]))
        self._held_beyond = self._bounds[0] - slack, self._bounds[1] + slack  # [N m] each
        self._eye = np.eye(system.state_dim)

    def terminal_states(self, initial_states: np.ndarray, controls: np.ndarray) -> np.ndarray:
        """x_N [B, n] for x_0 [B, n] and controls [B, N m] (float64)."""
        return self._terminal_map.terminal_states_array(initial_states, controls)

    def terminal_states_and_jacobian(self, initial_states: np.ndarray, controls: np.ndarray):
        """(x_N [B, n], J = dx_N/du [B, n, N m]) for x_0 [B, n] and controls [B, N m] (float64)."""
        return self._terminal_map.terminal_states_and_jacobian_array(initial_states, controls)

    def _step(self, J: np.ndarray, r: np.ndarray, u: np.ndarray, damping: np.ndarray) -> np.ndarray:
        """The minimum-norm (damped) Newton step [B, N m] that keeps the controls within their bounds
        (an active set).

        J [B, n, N m], r [B, n], u [B, N m], damping [B]. A control the step would push past its
        bound is moved onto the bound instead, and the step of the others is recomputed to make up
        for it (J_f delta_f = -r - J_h delta_h), until no free control leaves the box.
        """
        damping = damping[:, None, None] + 1e-12
        lower, upper = self._bounds
        below, above = self._held_beyond
        held = np.zeros(u.shape, dtype=bool)
        moved = np.zeros(u.shape)  # the held controls' step: onto the bound
        J_free, rhs = J, -r  # usually no bound is reached and this is the only pass
        for _ in range(8):
            M = J_free @ J_free.transpose(0, 2, 1) + damping * self._eye
            step = (J_free.transpose(0, 2, 1) @ np.linalg.solve(M, rhs[:, :, None]))[:, :, 0] + moved
            outside = ((u + step < below) | (u + step > above)) & ~held
            if not outside.any():
                break
            held |= outside
            moved = np.where(held, np.minimum(np.maximum(u + step, lower), upper) - u, 0.0)
            J_free = J * (~held)[:, None, :]
            rhs = -r - np.einsum("bij,bj->bi", J, moved)
        return step

    def project(self, initial_states, target_states, controls) -> np.ndarray:
        """controls [B, N, m] (or [B, N m]) -> projected controls [B, N, m], float64.

        After each call, `residuals` [B] holds |x_N - x*| of the returned controls and
        `steps_taken` the number of Newton steps run.
        """
        x0 = np.asarray(initial_states, dtype=np.float64)
        xt = np.asarray(target_states, dtype=np.float64)
        B = len(x0)
        lower, upper = self._bounds
        u = np.minimum(np.maximum(np.asarray(controls, dtype=np.float64).reshape(B, -1), lower), upper)
        r = self.terminal_states(x0, u) - xt
        norm = np.sqrt(np.einsum("bi,bi->b", r, r))
        self.steps_taken = 0
        for iteration in range(self.iterations):
            short = np.flatnonzero(norm > self.tolerance)
            if not len(short):
                break
            self.steps_taken = iteration + 1
            J = self._terminal_map.jacobian_array(x0[short], u[short])  # [len(short), n, N m]
            scale = np.einsum("bij,bij->b", J, J) / J.shape[1]
            # Gauss-Newton first; where the residual does not shrink, more and more damping
            todo = np.arange(len(short))  # positions in `short` still without a better answer
            for relative_damping in self.dampings:
                rows = short[todo]
                step = self._step(J[todo], r[rows], u[rows], relative_damping * scale[todo])
                trial = np.minimum(np.maximum(u[rows] + step, lower), upper)
                trial_r = self.terminal_states(x0[rows], trial) - xt[rows]
                trial_norm = np.sqrt(np.einsum("bi,bi->b", trial_r, trial_r))
                better = trial_norm < norm[rows]
                kept = rows[better]
                u[kept], r[kept], norm[kept] = trial[better], trial_r[better], trial_norm[better]
                todo = todo[~better]
                if not len(todo):
                    break
        self.residuals = norm
        system = self.problem.system
        return u.reshape(B, system.num_steps, system.control_dim)


REACHED = 1e-6  # |x_N - x*| below which a projected start counts as having reached the target


class ProjectedController:
    """A controller followed by the Newton projection (name: '... + Newton projection (K steps)').

    When the controller also offers predict_refinements (TRC does: its answer after each
    supervision step), the refinements are fallback starts of a multi-start Newton method, as
    several starts serve the oracle, at no extra network cost: the final answer is projected
    first, and only the problems it leaves short of the target are projected again from the
    refinement before it, and so on. Each problem keeps the first projection that reaches the
    target (or, when none does, the one that comes closest). A problem the final answer solves,
    nearly all of them, costs one projection. every_refinement=False projects the final answer only.

    tolerance: a problem counts as reached once |x_N - x*| is below it; an answer that already
    is (a halting TRC's usually is) is kept as it is, at the price of one evaluation of x_N.
    """

    num_parameters = None
    memory_bytes = None

    def __init__(self, controller, problem: Task, iterations: int = ITERATIONS,
                 every_refinement: bool = True, tolerance: float = REACHED):
        if not (tolerance > 0 and np.isfinite(tolerance)):
            raise ValueError(f"tolerance must be a positive number, got {tolerance}")
        self.controller, self.problem, self.tolerance = controller, problem, float(tolerance)
        self.projection = TerminalProjection(problem, iterations, tolerance=self.tolerance)
        self.every_refinement = every_refinement and hasattr(controller, "predict_refinements")
        self.name = (f"{controller.name} + Newton projection ({iterations} step{'s' if iterations != 1 else ''}"
                     f"{', earlier refinements as fallback starts' if self.every_refinement else ''}"
                     f"{'' if tolerance == REACHED else f', where it misses by {tolerance:g} or more'})")

    def predict(self, initial_states, target_states) -> np.ndarray:
        x0 = np.asarray(initial_states, dtype=np.float64)
        xt = np.asarray(target_states, dtype=np.float64)
        if not self.every_refinement:
            u = self.projection.project(x0, xt, self.controller.predict(x0, xt))
            self.residuals = self.projection.residuals
            return u
        starts = list(self.controller.predict_refinements(x0, xt))
        u = self.projection.project(x0, xt, starts[-1])
        residuals = self.projection.residuals.copy()
        for start in reversed(starts[:-1]):
            short = np.flatnonzero(residuals >= self.tolerance)
            if not len(short):
                break
            retried = self.projection.project(x0[short], xt[short], np.asarray(start)[short])
            closer = self.projection.residuals < residuals[short]
            u[short[closer]] = retried[closer]
            residuals[short[closer]] = self.projection.residuals[closer]
        self.residuals = residuals
        return u
