"""The rocket landing in closed loop: re-planning from the measured state under random gusts.

The plant is the task's own exact interval dynamics (problem.py) plus a gust: an
acceleration disturbance w_k (m/s^2), constant over each interval, drawn independently per
interval and axis from a normal distribution of standard deviation `gust` (GUST: 0.05 m/s^2, ten
times the drag of a 10 m/s gust on a lander of this size in Mars's thin air). A constant w_k adds
w_k dt^2 / 2 to the position and w_k dt to the velocity of the interval, exactly; the mass does
not feel it. The state is measured exactly at every node.

Both planners re-plan with a shrinking horizon and a fixed touchdown time: the first plan picks
the flight time t_f and N intervals of dt = t_f / N; before interval k (k >= 1) the n = N - k
intervals left are re-planned from the measured state to land at t_f, while at least LAST_REPLAN
are left (one interval has too few unknowns for the 6 landing equations). The gusts of the last
two intervals are therefore never corrected: w dt^2 / 2 and w dt each, the error no re-plan on
this grid can remove.

- TRC: the network's answer after its correction step plans the flight; each re-plan is the
  correction step alone (LandingRecursiveControl.correct_rest), started from the rest of the
  previous plan with every thrust magnitude pulled off its bound a little (REPLAN_REACH: a thrust
  at a bound cannot move in the linearization), so it stays inside the thrust annulus by
  construction; it keeps the touchdown time unless no landing is found at it.
- Cone program: the free-time oracle plans the flight; each re-plan is the fixed-time cone program
  over the n intervals left (replan_by_cone_program: where a gust leaves no landing at the
  touchdown time, the time changed the least that finds one; the glide slope dropped last, as
  TRC's correction does). When it finds no landing at all the previous plan is kept and the
  failure counted.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from .problem import RocketLanding

GUST = 0.05  # m/s^2, standard deviation per axis and interval
STRETCHES = (1.001, 0.999, 1.01, 0.99, 1.03, 0.97, 1.1, 0.9, 1.3, 0.75, 1.6, 0.5)  # of the touchdown time, least first
LANDINGS_PER_CHUNK = 4  # at most, per chunk on Dask workers (a landing re-plans 48 times)
LAST_REPLAN = 2  # re-plan while at least this many intervals are left (9 unknowns for 6 equations)


@dataclass
class ClosedLoopFlights:
    """Flights flown under gusts: states [B, N+1, 7] at the nodes, thrusts [B, N, 3] (N) applied,
    time_horizons [B] (s), plan_seconds (seconds of every re-plan, per problem), failed_plans [B]
    (re-plans that found no landing and kept the previous plan)."""
    states: np.ndarray
    thrusts: np.ndarray
    time_horizons: np.ndarray
    plan_seconds: np.ndarray
    failed_plans: np.ndarray


def draw_gusts(rng: np.random.Generator, count: int, landing: RocketLanding, gust: float = GUST) -> np.ndarray:
    """[count, N, 3] gust accelerations (m/s^2), one per interval and axis."""
    if not gust >= 0:
        raise ValueError(f"gust must be a non-negative number (m/s^2), got {gust}")
    return rng.normal(0.0, gust, size=(count, landing.num_steps, 3))


def fly_interval(landing: RocketLanding, states, thrusts, dt, gusts) -> np.ndarray:
    """The states [B, 7] one interval later: thrusts [B, 3] (N) held as thrust per unit mass over dt
    [B] s (the task's interval semantics), plus the gusts [B, 3] (m/s^2)."""
    dt = np.asarray(dt, np.float64)
    after = landing.step(np.asarray(states, np.float64), thrusts, dt)
    after[:, 0:3] += 0.5 * dt[:, None] ** 2 * gusts
    after[:, 3:6] += dt[:, None] * gusts
    return after


def trc_closed_loop(model, initial_states, target_states, gusts, replan: bool = True) -> ClosedLoopFlights:
    """TRC flies B landings together (numpy [B, 7] states, gusts [B, N, 3]): the network's corrected
    plan, then correct_rest from the measured state before every interval but the last
    (replan=False: the first plan flown open loop)."""
    landing, N = model.problem, model.problem.num_steps
    targets = torch.as_tensor(target_states, dtype=torch.float64)
    x = np.array(initial_states, np.float64)
    y = model.corrected_answer(initial_states, target_states)  # [B, 4N+1]
    with torch.no_grad():
        time_horizons = model.landing_of(y, torch.as_tensor(x))[0][:, -1]
    dt = time_horizons / N
    raw = y[:, :-1].reshape(len(x), N, 4)
    states, thrusts, seconds, flown = [x], [], [], []
    failed = np.zeros(len(x), int)  # re-plans that found no landing (their least-squares rest is flown)
    for k in range(N):
        measured = torch.as_tensor(x)
        if replan and 1 <= k <= N - LAST_REPLAN:
            started = time.perf_counter()
            rest, dt, landed = model.correct_rest(raw[:, k:], dt, measured, targets)
            failed += ~landed
            raw = torch.cat([raw[:, :k], rest], dim=1)
            seconds.append((time.perf_counter() - started) / len(x))
        with torch.no_grad():  # interval k's thrust from the measured mass (its lower bound depends on it)
            thrust = model.fly(measured, raw[:, k:k + 1], dt)[0][:, 0].numpy()
        x = fly_interval(landing, x, thrust, dt.numpy(), gusts[:, k])
        states.append(x), thrusts.append(thrust), flown.append(dt.numpy())
    return ClosedLoopFlights(states=np.stack(states, 1), thrusts=np.stack(thrusts, 1),
                             time_horizons=np.sum(flown, axis=0), plan_seconds=np.array(seconds),
                             failed_plans=failed)


def cone_program_closed_loop(landing: RocketLanding, initial_states, target_states, gusts, thrusts,
                             time_horizons, replan: bool = True, progress: bool = False,
                             workers=None) -> ClosedLoopFlights:
    """The cone program flies B landings one by one: the free-time oracle's plan (its labels:
    thrusts [B, N, 3] in N, time_horizons [B] in s), then the fixed-time cone program over the
    intervals left before every interval but the last. workers: where the landings fly
    (oracles.workers.Workers, or a number of processes; None: here, one after another); each is
    flown on its own, so the flights do not depend on where."""
    from ...oracles.workers import Workers, chunk_slices, map_chunks
    fly = functools.partial(_cone_program_flights, landing, replan)
    x0, xt = np.asarray(initial_states, np.float64), np.asarray(target_states, np.float64)
    chunks = [(x0[p], xt[p], np.asarray(gusts[p], np.float64), np.asarray(thrusts[p], np.float64),
               np.asarray(time_horizons[p], np.float64)) for p in chunk_slices(len(x0), LANDINGS_PER_CHUNK)]
    outputs = map_chunks(fly, chunks, Workers.of(1 if workers is None else workers), progress=progress,
                         desc="cone-program closed loop", sizes=[len(chunk[0]) for chunk in chunks])
    states, flown_thrusts, flown, seconds, failed = (np.concatenate([o[i] for o in outputs]) for i in range(5))
    return ClosedLoopFlights(states=states, thrusts=flown_thrusts, time_horizons=flown, plan_seconds=seconds.ravel(),
                             failed_plans=failed)


def _cone_program_flights(landing: RocketLanding, replan: bool, chunk):
    """cone_program_closed_loop's landings for chunk = (x_0 [b, 7], x* [b, 7], gusts [b, N, 3], the
    oracle's thrusts [b, N, 3] and time_horizons [b]) -> (states [b, N+1, 7], thrusts [b, N, 3],
    flight times [b], seconds of each re-plan [b, N - LAST_REPLAN] (or [b, 0]), failed re-plans [b])."""
    initial_states, target_states, gusts, thrusts, time_horizons = chunk
    N = landing.num_steps
    masses = landing.rollout(initial_states, thrusts, time_horizons)[:, :-1, 6]
    accelerations = thrusts / masses[..., None]  # the plan: thrust per unit mass
    flights, seconds, failed, flown = [], [], [], np.zeros(len(initial_states))
    for b in range(len(initial_states)):
        x, xt = np.array(initial_states[b]), target_states[b]
        plan, dt = np.array(accelerations[b]), float(time_horizons[b]) / N
        states, applied, failures, times = [x], [], 0, []
        for k in range(N):
            n = N - k
            if replan and 1 <= k <= N - LAST_REPLAN:
                started = time.perf_counter()
                solution = replan_by_cone_program(landing, x, xt, plan[k:], dt)
                times.append(time.perf_counter() - started)
                if solution is None:
                    failures += 1
                else:
                    plan[k:], dt = solution.accelerations, solution.final_time / n
            thrust = plan[k] * x[6]  # thrust per unit mass times the measured mass
            x = fly_interval(landing, x[None], thrust[None], np.array([dt]), gusts[b:b + 1, k])[0]
            states.append(x), applied.append(thrust)
            flown[b] += dt
        flights.append((np.stack(states), np.stack(applied)))
        seconds.append(times), failed.append(failures)
    return (np.stack([f[0] for f in flights]), np.stack([f[1] for f in flights]), flown,
            np.array(seconds, np.float64).reshape(len(initial_states), -1), np.array(failed))


@functools.lru_cache(maxsize=None)
def landing_cone_program(landing: RocketLanding, intervals: int, glide: bool):
    """The cone program of the last `intervals` intervals of a landing (with or without its glide
    slope), laid out once per process: a worker keeps it for every chunk it flies."""
    from .cone_program import LandingConeProgram
    return LandingConeProgram(replace(landing, num_steps=intervals, glide_slope=landing.glide_slope if glide else 0.0))


def replan_by_cone_program(landing: RocketLanding, state, target_state, accelerations, dt: float):
    """The cone program's re-plan of the n intervals left from state [7], given the rest of the
    previous plan (accelerations [n, 3], intervals of dt s), on landing_cone_program's programs.
    A ConeSolution, or None.

    The upper thrust bound is linearized at the previous plan's own log-masses (a plan that rides
    the bound is infeasible against a tangent taken elsewhere). Where no landing exists at the
    touchdown time, it is stretched or shrunk by STRETCHES in turn, the least change first; then the
    full flight-time search; then, landing first as in TRC's correction, the same without the glide
    slope (the ground only)."""
    from .cone_program import best_landing
    n = len(accelerations)
    program = functools.partial(landing_cone_program, landing, n)
    burns = landing.vehicle.fuel_rate * np.linalg.norm(accelerations, axis=-1) * dt  # ln(m_k / m_{k+1}), the plan's
    tangent = np.log(state[6]) - np.concatenate([[0.0], np.cumsum(burns)[:-1]])
    for glide in (True, False):
        for stretch in (1.0, *STRETCHES):
            solution, _ = program(glide).solve_exact(state, target_state, n * dt * stretch, tangent)
            if solution is not None:
                return solution
        if glide:
            solution = best_landing(program(glide), state, target_state)[0]
            if solution is not None:
                return solution
    return None


def closed_loop_scores(landing: RocketLanding, flights: ClosedLoopFlights, target_states) -> dict:
    """Per problem [B]: position_error (m), velocity_error (m/s), fuel (kg), and the largest
    violation of each constraint, of the flights as flown."""
    error = flights.states[:, -1, :6] - np.asarray(target_states)[:, :6]
    violations = landing.constraint_violations(flights.states, flights.thrusts, flights.time_horizons)
    return {"position_error": np.linalg.norm(error[:, :3], axis=-1),
            "velocity_error": np.linalg.norm(error[:, 3:], axis=-1),
            "fuel": landing.fuel(flights.states),
            **{f"violation_{name}": value for name, value in violations.items()}}
