"""The rocket landing's oracle: lossless convexification, a cone program per flight time.

For a fixed flight time t_f (dt = t_f / N) the minimum-fuel landing of problem.py is
written in the variables of Açıkmeşe & Ploen (2007): the acceleration u_k = T/m held over
interval k, a slack sigma_k >= |u_k| and the log-mass z_k = ln m_k. The dynamics become linear,

    r_{k+1} = r_k + dt v_k + dt^2/2 (u_k + g),  v_{k+1} = v_k + dt (u_k + g),  z_{k+1} = z_k - alpha dt sigma_k,

and the constraints, with the interval semantics of problem.py (thrust at the start of
an interval <= rho_2, at its end >= rho_1):

    |u_k| <= sigma_k                                  second-order cone (the relaxation: lossless,
                                                      sigma_k = |u_k| at the optimum, checked)
    sigma_k >= rho_1 exp(-z_{k+1})                    exponential cone: exact
    sigma_k <= rho_2 exp(-zhat_k) (1 - (z_k - zhat_k)) the upper bound rho_2 exp(-z_k), concave in
                                                      z, replaced by its tangent at zhat_k: never
                                                      looser, exact where z_k = zhat_k
    |(r_x, r_y)| tan(gamma) <= r_z at the nodes       second-order cone (glide slope)
    u_z >= cos(theta) sigma_k                         pointing cone (optional)
    z_N >= ln m_dry,  r_0, v_0, z_0 given,  r_N = v_N = 0;      minimize -z_N (the fuel used).

The tangent point zhat starts at the lightest mass the vehicle can have at t_k (the usual
choice) and is then moved to the answer's own z until the fuel stops changing, so the answer
satisfies the exact bounds and, with the tangent at the answer, is a stationary point of the
exact (non-convex) discrete problem. nlp_check.py checks it against IPOPT on the
original non-convex problem in the original variables.

The free flight time: fuel(t_f) is scanned on a coarse grid from the shortest feasible time,
then minimized by a bounded scalar search around the best grid point (scipy, Brent).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import clarabel
import numpy as np
import scipy.optimize
import scipy.sparse

from .problem import RocketLanding
from ...oracles.workers import Workers, chunk_slices, map_chunks

SOLVED = {clarabel.SolverStatus.Solved, clarabel.SolverStatus.AlmostSolved}
RELINEARIZE_TOLERANCE = 1e-9  # fuel change (relative) below which the tangent point has settled
MAX_RELINEARIZATIONS = 6
# Both thrust bounds are tightened by this much (relative): more than the solver's constraint
# violations (up to about 1e-8 relative, though it reports Solved at tolerance 1e-10), so the labels
# never cross the true bounds; the fuel it costs is of the same relative order, far below any
# gap this project reports.
BOUND_MARGIN = 1e-6
INFEASIBLE_FUEL = 1e9  # kg: stands for 'no landing' inside the flight-time search


class _Rows:
    """Rows of A x + s = b collected one at a time, each block of them closed into a cone."""

    def __init__(self):
        self.rows, self.cols, self.vals, self.rhs, self.cones = [], [], [], [], []
        self.count = self.opened = 0

    def add(self, entries, rhs):
        for col, val in entries:
            self.rows.append(self.count), self.cols.append(col), self.vals.append(val)
        self.rhs.append(rhs)
        self.count += 1

    def close(self, cone):
        """The rows added since the last close form one cone(size)."""
        self.cones.append(cone(self.count - self.opened))
        self.opened = self.count

    def matrix(self, num_variables):
        return scipy.sparse.csr_matrix((self.vals, (self.rows, self.cols)), shape=(self.count, num_variables))


@dataclass
class ConeSolution:
    """One landing at one flight time: accelerations [N, 3] (m/s^2), slacks [N], log_masses [N+1],
    fuel (kg, from the cone program's own z), solve_seconds."""

    final_time: float
    accelerations: np.ndarray
    slacks: np.ndarray
    log_masses: np.ndarray
    fuel: float
    solve_seconds: float
    iterations: int


class LandingConeProgram:
    """The cone program of one landing problem, one Clarabel solve per (x_0, t_f, tangent point).

    The sparsity pattern is laid out once; a solve fills in the numbers (a fraction of a
    millisecond) and calls Clarabel."""

    def __init__(self, landing: RocketLanding, tolerance: float = 1e-10):
        self.landing = landing
        self.tolerance = float(tolerance)
        N = landing.num_steps
        self.num_variables = 7 * (N + 1) + 4 * N
        offsets = np.cumsum([0, 3 * (N + 1), 3 * (N + 1), N + 1, 3 * N])
        self._r, self._v, self._z, self._u, self._s = offsets  # where each block of variables starts
        length, time = 1000.0, 10.0  # m, s
        self.variable_scale = np.concatenate([np.full(3 * (N + 1), length), np.full(3 * (N + 1), length / time),
                                              np.ones(N + 1), np.full(4 * N, length / time ** 2)])

    # variable indices ------------------------------------------------------------------------
    def r(self, k, i): return self._r + 3 * k + i
    def v(self, k, i): return self._v + 3 * k + i
    def z(self, k): return self._z + k
    def u(self, k, i): return self._u + 3 * k + i
    def s(self, k): return self._s + k

    def _build(self, initial_state, target_state, final_time, tangent_log_masses):
        """(A, b, cones) of Clarabel's  A x + s = b, s in cones.

        The log-mass variables hold ln(m_k / m_0), not ln m_k: the exponential cones then see
        numbers of order one (with ln m_k they hold exp(-7.5) and fail to converge)."""
        rows = _Rows()
        dt = final_time / self.landing.num_steps
        self._equalities(rows, initial_state, target_state, dt)
        rows.close(clarabel.ZeroConeT)
        self._inequalities(rows, initial_state[6], tangent_log_masses - np.log(initial_state[6]))
        rows.close(clarabel.NonnegativeConeT)
        num_linear_rows = rows.count
        self._cones(rows, initial_state[6])
        # Variables in units of 1 km and 10 s (x = D x_scaled), and each linear row divided by its
        # largest entry: the cone blocks are then homogeneous and of order one, and Clarabel
        # converges in about 25 iterations instead of stalling.
        A = rows.matrix(self.num_variables) @ scipy.sparse.diags(self.variable_scale)
        row_scale = np.ones(rows.count)
        row_scale[:num_linear_rows] = 1.0 / abs(A[:num_linear_rows]).max(axis=1).toarray().ravel()
        return (scipy.sparse.csc_matrix(scipy.sparse.diags(row_scale) @ A), row_scale * np.array(rows.rhs),
                rows.cones)

    def _equalities(self, rows, initial_state, target_state, dt):
        """Initial state, the exact interval dynamics, the landing."""
        vehicle, N = self.landing.vehicle, self.landing.num_steps
        for i in range(3):
            rows.add([(self.r(0, i), 1.0)], initial_state[i])
            rows.add([(self.v(0, i), 1.0)], initial_state[3 + i])
        rows.add([(self.z(0), 1.0)], 0.0)
        for k in range(N):
            for i in range(3):
                gravity = -vehicle.gravity if i == 2 else 0.0
                rows.add([(self.r(k + 1, i), 1.0), (self.r(k, i), -1.0), (self.v(k, i), -dt),
                          (self.u(k, i), -dt ** 2 / 2)], dt ** 2 / 2 * gravity)
                rows.add([(self.v(k + 1, i), 1.0), (self.v(k, i), -1.0), (self.u(k, i), -dt)], dt * gravity)
            rows.add([(self.z(k + 1), 1.0), (self.z(k), -1.0), (self.s(k), vehicle.fuel_rate * dt)], 0.0)
        for i in range(3):
            rows.add([(self.r(N, i), 1.0)], target_state[i])
            rows.add([(self.v(N, i), 1.0)], target_state[3 + i])

    def _inequalities(self, rows, mass, tangent):
        """The upper thrust bound's tangent (at ln(m/m_0) = tangent [N]), dry mass, pointing cone,
        and the ground (altitude >= 0) when there is no glide slope."""
        landing, vehicle, N = self.landing, self.landing.vehicle, self.landing.num_steps
        for k in range(N):
            scale = vehicle.thrust_max * (1 - BOUND_MARGIN) / mass * np.exp(-tangent[k])
            rows.add([(self.s(k), 1.0), (self.z(k), scale)], scale * (1.0 + tangent[k]))
        rows.add([(self.z(N), -1.0)], -np.log(vehicle.dry_mass / mass))
        if landing.pointing_angle is not None:
            cosine = np.cos(np.radians(landing.pointing_angle))
            for k in range(N):
                rows.add([(self.s(k), cosine), (self.u(k, 2), -1.0)], 0.0)
        if landing.glide_slope == 0:
            for k in range(1, N):
                rows.add([(self.r(k, 2), -1.0)], 0.0)

    def _cones(self, rows, mass):
        """|u_k| <= sigma_k; the glide slope at the inner nodes; rho_1 exp(-z_{k+1}) <= sigma_k."""
        landing, vehicle, N = self.landing, self.landing.vehicle, self.landing.num_steps
        for k in range(N):
            rows.add([(self.s(k), -1.0)], 0.0)
            for i in range(3):
                rows.add([(self.u(k, i), -1.0)], 0.0)
            rows.close(clarabel.SecondOrderConeT)
        if landing.glide_slope > 0:
            slope = landing.glide_slope_tangent
            for k in range(1, N):
                rows.add([(self.r(k, 2), -1.0)], 0.0)
                rows.add([(self.r(k, 0), -slope)], 0.0)
                rows.add([(self.r(k, 1), -slope)], 0.0)
                rows.close(clarabel.SecondOrderConeT)
        for k in range(N):
            rows.add([(self.z(k + 1), 1.0)], 0.0)  # -z_{k+1}
            rows.add([], 1.0)
            rows.add([(self.s(k), -mass / (vehicle.thrust_min * (1 + BOUND_MARGIN)))], 0.0)  # sigma_k m_0 / rho_1
            rows.close(lambda size: clarabel.ExponentialConeT())

    def solve(self, initial_state, target_state, final_time: float, tangent_log_masses=None):
        """The minimum-fuel landing at flight time final_time (s), or None when none exists.

        initial_state [7] (r m, v m/s, mass kg), target_state [>= 6] (r, v; the rest unused),
        tangent_log_masses [N]: where the upper thrust bound is linearized (default: the lightest
        mass possible at each t_k)."""
        import time
        landing, N = self.landing, self.landing.num_steps
        if tangent_log_masses is None:
            tangent_log_masses = landing.log_mass_floor(initial_state[6], np.arange(N) * final_time / N)
        A, b, cones = self._build(np.asarray(initial_state, float), np.asarray(target_state, float),
                                  float(final_time), np.asarray(tangent_log_masses, float))
        q = np.zeros(self.num_variables)
        q[self.z(N)] = -1.0
        settings = clarabel.DefaultSettings()
        settings.verbose = False
        settings.tol_feas = settings.tol_gap_abs = settings.tol_gap_rel = self.tolerance
        started = time.perf_counter()
        solver = clarabel.DefaultSolver(scipy.sparse.csc_matrix((self.num_variables, self.num_variables)),
                                        q, A, b, cones, settings)
        result = solver.solve()
        seconds = time.perf_counter() - started
        if result.status not in SOLVED:
            return None
        x = self.variable_scale * np.asarray(result.x)
        z = x[self._z:self._z + N + 1] + np.log(initial_state[6])
        accelerations = land_exactly(self.landing, x[self._u:self._s].reshape(N, 3), initial_state, target_state,
                                     final_time)
        return ConeSolution(final_time=float(final_time), accelerations=accelerations,
                            slacks=x[self._s:self._s + N].copy(), log_masses=z,
                            fuel=float(initial_state[6] * (1 - np.exp(z[-1] - z[0]))),
                            solve_seconds=seconds, iterations=int(result.iterations))

    def solve_exact(self, initial_state, target_state, final_time: float, tangent_log_masses=None):
        """solve() (at tangent_log_masses [N] when given), then the tangent point moved to the
        answer's own log-mass until the fuel settles (see the module docstring). Returns
        (ConeSolution or None, number of solves)."""
        solution = self.solve(initial_state, target_state, final_time, tangent_log_masses)
        solves = 1
        while solution is not None and solves <= MAX_RELINEARIZATIONS:
            again = self.solve(initial_state, target_state, final_time, solution.log_masses[:-1])
            solves += 1
            if again is None:
                break
            settled = abs(again.fuel - solution.fuel) <= RELINEARIZE_TOLERANCE * max(solution.fuel, 1.0)
            solution = again
            if settled:
                break
        return solution, solves


def land_exactly(landing: RocketLanding, accelerations, initial_state, target_state, final_time):
    """The accelerations [N, 3] moved by the least change that lands them exactly on r*, v*.

    The solver meets the landing equalities only to its tolerance (up to about 1e-4 m on some
    problems); r_N and v_N are linear in the accelerations,
        v_N = v_0 + dt sum_k (u_k + g),   r_N = r_0 + N dt v_0 + dt^2 sum_k (N - k - 1/2)(u_k + g),
    so the least-norm change that zeroes the miss is one small solve per axis. It moves the
    thrusts by far less than the bounds' margin (BOUND_MARGIN), which therefore still hold."""
    N, dt = landing.num_steps, final_time / landing.num_steps
    u = np.asarray(accelerations, np.float64)
    a = u + landing.vehicle.gravity_vector
    weights = N - np.arange(N) - 0.5
    x0, xt = np.asarray(initial_state, np.float64), np.asarray(target_state, np.float64)
    miss_r = x0[:3] + N * dt * x0[3:6] + dt ** 2 * weights @ a - xt[:3]
    miss_v = x0[3:6] + dt * a.sum(axis=0) - xt[3:6]
    G = np.stack([dt ** 2 * weights, np.full(N, dt)])  # [2, N]: d(r_N, v_N) / du for each axis
    change = -G.T @ np.linalg.solve(G @ G.T, np.stack([miss_r, miss_v]))  # [N, 3]
    return u + change


@dataclass
class FlightTimeSearch:
    """How the best flight time was found: the grid scanned, the fuel at each point (inf where
    no landing exists) and the number of cone programs solved."""

    grid: np.ndarray
    grid_fuel: np.ndarray
    solves: int


MAX_GRID_POINTS = 1000  # flight times scanned at most: 5,000 s at the default step, far past any fuel minimum


def best_landing(program: LandingConeProgram, initial_state, target_state, grid_step: float = 5.0,
                 time_tolerance: float = 0.02):
    """The minimum-fuel landing over the flight time: (ConeSolution or None, FlightTimeSearch).

    Scans t_f on a grid of grid_step seconds from a lower bound (RocketLanding.shortest_descent)
    up to the longest possible flight,
    stopping once fuel has risen past its minimum (fuel(t_f) falls, then rises, over the
    feasible times); then a bounded Brent search to time_tolerance s between the best grid
    point's neighbours; the answer is re-solved with the tangent at itself (solve_exact)."""
    landing = program.landing
    longest = landing.max_flight_time(initial_state[6])
    grid, fuels = [], []
    solves = 0

    def fuel_at(final_time):
        nonlocal solves
        solves += 1
        solution = program.solve(initial_state, target_state, final_time)
        return np.inf if solution is None else solution.fuel

    def finite_fuel_at(final_time):  # Brent's parabolas need finite values
        return min(fuel_at(final_time), INFEASIBLE_FUEL)

    t = max(grid_step * np.floor(landing.shortest_descent(initial_state) / grid_step), grid_step)
    while t <= longest and len(grid) < MAX_GRID_POINTS:
        grid.append(t), fuels.append(fuel_at(t))
        if len(fuels) >= 2 and np.isfinite(fuels[-2]) and fuels[-1] > fuels[-2]:
            break
        t += grid_step
    grid, fuels = np.array(grid), np.array(fuels)
    if not np.isfinite(fuels).any():
        return None, FlightTimeSearch(grid, fuels, solves)
    best = int(np.argmin(fuels))
    low = grid[best - 1] if best > 0 else grid[best] / 2
    high = grid[best + 1] if best + 1 < len(grid) else min(grid[best] + grid_step, longest)
    found = scipy.optimize.minimize_scalar(finite_fuel_at, bounds=(low, high), method="bounded",
                                           options={"xatol": time_tolerance})
    final_time = float(found.x) if found.fun <= fuels[best] else float(grid[best])
    solution, exact_solves = program.solve_exact(initial_state, target_state, final_time)
    return solution, FlightTimeSearch(grid, fuels, solves + exact_solves)


# ---- many landings, in parallel over cores ------------------------------------------------------

@dataclass
class LandingLabels:
    """The oracle's answers for B problems (rows where success is False hold zeros):

    thrusts [B, N, 3] (N, each interval's start), time_horizons [B] (s), states [B, N+1, 7] (the exact
    rollout of the thrusts), fuel [B] (kg, m_0 - m_N of that rollout), success [B] bool,
    solves [B] (cone programs solved for each), max_slack [B] (max_k sigma_k - |u_k|: zero when the
    relaxation is lossless)."""

    thrusts: np.ndarray
    time_horizons: np.ndarray
    states: np.ndarray
    fuel: np.ndarray
    success: np.ndarray
    solves: np.ndarray
    max_slack: np.ndarray


_worker_program = None  # one per worker process


def _init_worker(landing: RocketLanding):
    global _worker_program
    if _worker_program is None or _worker_program.landing != landing:
        _worker_program = LandingConeProgram(landing)


def _solve_chunk(landing: RocketLanding, chunk):
    """One chunk's (accelerations [c, N, 3], time_horizons [c], success [c], solves [c], slack [c])."""
    _init_worker(landing)
    initial_states, target_states = chunk
    N = landing.num_steps
    rows = []
    for x0, xt in zip(initial_states, target_states):
        solution, search = best_landing(_worker_program, x0, xt)
        if solution is None:
            rows.append((np.zeros((N, 3)), 0.0, False, search.solves, 0.0))
        else:
            slack = float(np.max(solution.slacks - np.linalg.norm(solution.accelerations, axis=1)))
            rows.append((solution.accelerations, solution.final_time, True, search.solves, slack))
    return tuple(np.array(column) for column in zip(*rows))


def solve_landings(landing: RocketLanding, initial_states, target_states, workers=None,
                   chunk_size: int = 10, progress: bool = True) -> LandingLabels:
    """The minimum-fuel landing (best flight time) of each problem. initial_states, target_states
    [B, 7]. workers: where the solves run (workers.Workers, or a number of processes; default: a
    Dask LocalCluster with a process per core). The answers do not depend on the workers: each
    problem is solved on its own, in float64."""
    x0 = np.asarray(initial_states, np.float64)
    xt = np.asarray(target_states, np.float64)
    workers = Workers.of(workers)
    chunks = [(x0[part], xt[part]) for part in chunk_slices(len(x0), chunk_size)]
    outputs = map_chunks(functools.partial(_solve_chunk, landing), chunks, workers, progress=progress,
                         desc="cone-program labels", sizes=[len(chunk[0]) for chunk in chunks])
    accelerations, time_horizons, success, solves, slack = (np.concatenate(parts) for parts in zip(*outputs))
    thrusts, _ = landing.accelerations_to_thrusts(x0[:, 6], accelerations, np.where(success, time_horizons, 1.0))
    states = landing.rollout(x0, thrusts, np.where(success, time_horizons, 1.0))
    return LandingLabels(thrusts, time_horizons, states, np.where(success, landing.fuel(states), 0.0),
                         success.astype(bool), solves.astype(np.int64), slack)


NUM_SPOT_CHECKS = 3  # labels solved again when a dataset is read


class ConeProgramOracle:
    """The rocket landing's oracle (this module) behind the interface every oracle offers."""

    name = "cone program"
    method = "lossless convexification (Clarabel), best flight time by a scan and Brent's method"
    failure = "infeasible"
    exact_and_fast = False
    one_problem_at_a_time = True
    solves_on_workers = True  # chunks of problems on workers.Workers (Dask)

    def screen(self, landing: RocketLanding, initial_states, target_states) -> np.ndarray:
        """[B] bool: whether a landing exists is known only by solving, so every problem is tried."""
        return np.ones(len(initial_states), bool)

    def optimum(self, landing: RocketLanding, initial_states, target_states, workers=None, progress=False):
        """(OptimalSolution [B] with time_horizons, success [B] bool)."""
        from ...oracles.closed_form import OptimalSolution
        labels = solve_landings(landing, initial_states, target_states, workers=workers, progress=progress)
        vehicle = landing.vehicle
        magnitude = np.linalg.norm(labels.thrusts, axis=-1)
        at_a_bound = (np.isclose(magnitude, vehicle.thrust_max, rtol=1e-5)
                      | np.isclose(magnitude * labels.states[:, 1:, 6] / labels.states[:, :-1, 6],
                                   vehicle.thrust_min, rtol=1e-5)).any(axis=1)
        solution = OptimalSolution(labels.thrusts, labels.states, labels.fuel,
                                   np.zeros((len(labels.fuel), landing.state_dim)), at_a_bound, labels.time_horizons)
        return solution, labels.success

    def verify(self, dataset, num_spot_checks: int = NUM_SPOT_CHECKS) -> None:
        """Refuse labels that are inconsistent or not optimal (TRCError naming the file): every
        trajectory is the exact rollout of its thrusts and lands (1e-6 m, m/s), every constraint
        holds, the costs are its fuel; a seeded handful is solved again and must not improve."""
        from ...errors import TRCError
        landing = dataset.problem
        problems = landing_inconsistencies(landing, dataset)
        if not problems:
            picks = np.random.default_rng(len(dataset)).choice(len(dataset), min(num_spot_checks, len(dataset)),
                                                               replace=False)
            again = solve_landings(landing, dataset.initial_states[picks], dataset.target_states[picks],
                                   workers=1, progress=False)
            better = ~again.success | (again.fuel < dataset.costs[picks] * (1 - 1e-6))
            if better.any():
                problems.append(f"the cone program finds less fuel for samples {sorted(picks[better].tolist())}: "
                                f"the stored labels are not optimal")
        if problems:
            raise TRCError(f"{dataset.path}: {'; '.join(problems)} (a corrupt file, or labels from another problem)")


def landing_inconsistencies(landing: RocketLanding, dataset) -> list[str]:
    """What is wrong with a landing dataset that needs no solve."""
    states = landing.rollout(dataset.initial_states, dataset.control_sequences, dataset.time_horizons)
    problems = []
    if not np.allclose(states, dataset.state_trajectories, rtol=1e-10, atol=1e-8):
        problems.append("'state_trajectories' are not the rollout of 'control_sequences' over 'time_horizons'")
    if not np.allclose(landing.fuel(states), dataset.costs, rtol=1e-10, atol=1e-8):
        problems.append("'costs' are not the fuel used")
    miss = np.abs(states[:, -1, :6] - dataset.target_states[:, :6]).max()
    if miss > 1e-6:
        problems.append(f"the trajectories miss the landing site (by up to {miss:.2g} m or m/s)")
    violations = landing.constraint_violations(states, dataset.control_sequences, dataset.time_horizons)
    limits = {"thrust_max": 0.0, "thrust_min": 0.0, "glide_slope": 1e-6, "dry_mass": 0.0, "pointing": 1e-6}
    for name, worst in violations.items():
        if worst.max() > limits[name]:
            problems.append(f"the labels violate the {name} constraint (by up to {worst.max():.2g})")
    return problems
