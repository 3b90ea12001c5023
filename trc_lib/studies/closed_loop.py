"""Receding-horizon (MPC-style) use of any planner, and how well it regulates in closed loop.

Everything else in this package scores a plan *open loop*: the controller proposes
u_0..u_{N-1} from x_0 and the exact model plays it. That is the right test of a planner, but
not of a controller. The Van der Pol origin is unstable (mu = 1: eigenvalues (1 +- i sqrt 3) / 2,
so errors grow like e^{t/2}), and open-loop playback of even the optimal sequence drifts off it
under any disturbance or model mismatch: nothing in the sequence reacts to where the state
actually is. Closing the loop is the standard remedy, and it is what a planner fast enough to
call at every step (TRC) is for.

Receding horizon. Every `replan_every` steps the planner is asked again, from the *measured*
state, for a full N-step plan (N = problem.num_steps, a moving horizon: the target is always N
steps ahead, never a shrinking "arrive at t = T"), and the plan's next control is applied,
clipped to the bound as the actuator would, for one step of dt on the plant. The plant is the
planner's own model by default, or another system instance for model mismatch (e.g.
`task.replace(mu=1.2)`). `replan_every=None` is open loop: plan once at t = 0,
play the N planned controls, then hold u = 0, since nothing more was planned (the same holds
between plans when replan_every > N).

Success. A run lasts K = 2N steps by default, so the state must be reached *and held*:
success means ||x_K - x*|| < threshold (0.1 by default) at the end of the run, and the summary
also reports the same test at step N, when an open-loop plan would have arrived.

Fairness. The disturbance, Gaussian N(0, disturbance_std^2) noise added to every state component
after every step, is drawn from `np.random.default_rng(seed)` up front, so it does not depend
on the planner: with the same seed every planner compared meets the very same disturbance
sequence (and a run reproduces exactly).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral

import numpy as np
from tqdm.auto import tqdm

from ..evaluate import summarize
from ..task import Task

CASES_PER_CHUNK = 8  # at most, per chunk on Dask workers (oracles/workers.py cuts fewer cases finer)
Planner = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (x [B, n], x* [B, n]) -> u [B, N, m]


@dataclass
class ClosedLoopResult:
    """One closed-loop run of B cases over K steps.

    states: [B, K+1, n] measured states (disturbance included); controls: [B, K, m] the controls
    applied (clipped to the bound); target_states: [B, n]; num_plans: planner calls (each one
    batched over all B cases); plan_time: seconds spent in those calls, in all; dt: step length
    in seconds; problem: the problem the planner solved (its horizon N and objective).
    """

    states: np.ndarray
    controls: np.ndarray
    target_states: np.ndarray
    num_plans: int
    plan_time: float
    dt: float
    problem: Task

    @property
    def num_steps(self) -> int:
        """K, the length of the run in steps."""
        return self.controls.shape[1]

    @property
    def horizon(self) -> int:
        """N, the planner's horizon in steps."""
        return self.problem.num_steps

    def terminal_error(self, at_step: int | None = None) -> np.ndarray:
        """||x_k - x*|| at step k (default: the last, K) for each case, [B]."""
        k = self.num_steps if at_step is None else at_step
        if not (isinstance(k, Integral) and 0 <= k <= self.num_steps):
            raise ValueError(f"at_step must be an integer in [0, {self.num_steps}], got {at_step}")
        return np.linalg.norm(self.states[:, k] - self.target_states, axis=1)

    def success(self, threshold: float = 0.1, at_step: int | None = None) -> np.ndarray:
        """Whether ||x_k - x*|| < threshold at step k (default: the last), [B] bool."""
        return self.terminal_error(at_step) < threshold

    def cost(self, problem: Task | None = None) -> np.ndarray:
        """dt * sum_{k<K} [(x_k - x*)' Q (x_k - x*) + u_k' R u_k] over the whole run, [B].

        Q, R: `problem`'s objective (default: the problem planned for). There is no terminal
        term: a run has no end the controller aims at, only a target to hold.
        """
        Q, R, _ = (problem or self.problem).objective.matrices()
        errors = self.states[:, :-1] - self.target_states[:, None, :]
        return self.dt * (np.einsum("bki,ij,bkj->b", errors, Q, errors)
                          + np.einsum("bki,ij,bkj->b", self.controls, R, self.controls))

    def summary(self, threshold: float = 0.1) -> dict:
        """JSON-ready: success rates and terminal errors at step N (or K, if the run is shorter)
        and at the end, cost, and time per planner call."""
        at_horizon = min(self.horizon, self.num_steps)
        return {"cases": len(self.states), "steps": self.num_steps, "horizon": self.horizon,
                "threshold": float(threshold),
                "success_rate_at_horizon": float(np.mean(self.success(threshold, at_horizon))),
                "success_rate_at_end": float(np.mean(self.success(threshold))),
                "terminal_error_at_horizon": summarize(self.terminal_error(at_horizon)),
                "terminal_error_at_end": summarize(self.terminal_error()),
                "cost": summarize(self.cost()),
                "num_plans": self.num_plans, "plan_time_s": float(self.plan_time),
                "ms_per_plan": 1e3 * self.plan_time / max(self.num_plans, 1)}


def simulate(problem: Task, plan: Planner, initial_states, target_states, num_steps: int | None = None,
             replan_every: int | None = 1, plant=None, disturbance_std: float = 0.0, seed: int = 0,
             progress: bool = False, workers=None) -> ClosedLoopResult:
    """Run `plan` in closed loop (see the module docstring) for B cases at once.

    plan: any controller's `predict`, (x [B, n], x* [B, n]) -> u [B, N, m] with N = problem.num_steps.
    initial_states, target_states: [B, n]. num_steps: K, the run's length (default 2N).
    replan_every: steps between plans (1: every step; None: open loop, plan once at t = 0 and hold
    u = 0 after the N planned steps). plant: the system that actually moves (default
    problem.system); it must share the problem's state and control sizes and dt.
    disturbance_std: standard deviation of the noise added to each state component after each step,
    drawn from np.random.default_rng(seed). progress: show a tqdm bar.
    workers: None runs every case here, each plan batched over all B. An oracles.workers.Workers
    (or a number of processes) splits the cases into chunks that run on Dask workers, each chunk's
    plans batched over its own cases; for a planner that solves problem after problem (IPOPT)
    the result is the same, array for array, since every case meets its own slice of the same
    noise. plan_time is then the sum over the chunks: what one process would have spent.
    """
    plant = problem.system if plant is None else plant
    x, x_target, K = _check_run(problem, plant, initial_states, target_states, num_steps, replan_every,
                                disturbance_std)
    # all the noise up front, so the sequence is the same whatever the planner does
    rng = np.random.default_rng(seed)
    noise = disturbance_std * rng.standard_normal((K, len(x), plant.state_dim))
    run = functools.partial(_run_cases, problem, plan, plant, replan_every)
    if workers is None:
        outputs = [run((x, x_target, noise), progress=progress)]
    else:
        from ..oracles.workers import Workers, chunk_slices, map_chunks
        parts = chunk_slices(len(x), CASES_PER_CHUNK)
        outputs = map_chunks(run, [(x[part], x_target[part], noise[:, part]) for part in parts], Workers.of(workers),
                             progress=progress, desc="closed loop", sizes=[len(x[part]) for part in parts])
    return ClosedLoopResult(states=np.concatenate([o[0] for o in outputs]),
                            controls=np.concatenate([o[1] for o in outputs]), target_states=x_target,
                            num_plans=int(outputs[0][3]), plan_time=float(sum(o[2] for o in outputs)),
                            dt=float(plant.dt), problem=problem)


def _run_cases(problem, plan, plant, replan_every, cases, progress: bool = False):
    """simulate's loop over the steps for cases = (x_0 [b, n], x* [b, n], noise [K, b, n]) ->
    (states [b, K+1, n], controls [b, K, m], plan seconds, number of plans): a chunk of cases,
    wherever it runs."""
    x, x_target, noise = cases
    m, N, K = plant.control_dim, problem.num_steps, len(noise)
    lower, upper = problem.control_lower, problem.control_upper
    states, controls = [x], []
    num_plans, plan_time = 0, 0.0
    planned, planned_at = None, 0  # the current plan [b, N, m] and the step it was made at
    for k in tqdm(range(K), desc="closed loop", unit="step", disable=not progress):
        if planned is None or (replan_every is not None and k - planned_at >= replan_every):
            start = time.perf_counter()
            planned = np.asarray(plan(x, x_target), dtype=np.float64)
            plan_time += time.perf_counter() - start
            num_plans, planned_at = num_plans + 1, k
            if planned.shape != (len(x), N, m):
                raise ValueError(f"the planner returned shape {list(planned.shape)}, expected {[len(x), N, m]}")
            if not np.isfinite(planned).all():
                raise ValueError(f"the planner returned NaN or inf controls at step {k}")
        age = k - planned_at
        # past the end of the plan nothing was planned: hold u = 0 (or the bound nearest it)
        u = np.clip(planned[:, age] if age < N else np.zeros((len(x), m)), lower, upper)
        x = plant.step(x, u) + noise[k]
        states.append(x)
        controls.append(u)
    return np.stack(states, axis=1), np.stack(controls, axis=1), np.array(plan_time), np.array(num_plans)


def _check_run(problem, plant, initial_states, target_states, num_steps, replan_every, disturbance_std):
    """Refuse a run that cannot be made; returns (x_0 [B, n], x* [B, n], K) in float64."""
    system = problem.system
    n, m, N = system.state_dim, system.control_dim, problem.num_steps
    x = np.array(initial_states, dtype=np.float64)
    x_target = np.array(target_states, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != n or len(x) == 0:
        raise ValueError(f"initial_states must have shape [B, {n}] with B >= 1, got {list(x.shape)}")
    if x_target.shape != x.shape:
        raise ValueError(f"target_states must have the shape of initial_states {list(x.shape)}, "
                         f"got {list(x_target.shape)}")
    K = 2 * N if num_steps is None else num_steps
    if not (isinstance(K, Integral) and K >= 1):
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}")
    if replan_every is not None and not (isinstance(replan_every, Integral) and replan_every >= 1):
        raise ValueError(f"replan_every must be a positive integer (or None for open loop), got {replan_every}")
    if not (np.isfinite(disturbance_std) and disturbance_std >= 0):
        raise ValueError(f"disturbance_std must be a non-negative number, got {disturbance_std}")
    if (plant.state_dim, plant.control_dim) != (n, m):
        raise ValueError(f"plant {plant.name} has state and control sizes {(plant.state_dim, plant.control_dim)}, "
                         f"the problem's system {system.name} has {(n, m)}")
    if not np.isclose(plant.dt, problem.dt):
        # a plan's controls are each held for the problem's dt; another step length is not a plant of this plan
        raise ValueError(f"plant dt {plant.dt} s differs from the problem's dt {problem.dt} s")
    return x, x_target, K


def compare_closed_loop(problem: Task, planners: dict, initial_states, target_states,
                        scenarios: dict, threshold: float = 0.1, workers=None, on_workers=()) -> list[dict]:
    """Every planner in every scenario, on the same cases; rows {planner, scenario, settings, **summary}.

    planners: {name: plan}; scenarios: {name: keyword arguments of `simulate`}, e.g.
    {"open loop": {"replan_every": None, "disturbance_std": 0.02}, "MPC": {"disturbance_std": 0.02}}.
    Within a scenario every planner gets the same seed, hence the same disturbance.
    on_workers: the names of the planners whose runs go to `workers` (simulate's; an optimizer
    such as IPOPT); the others run here, every plan batched over all the cases.
    """
    unknown = sorted(set(on_workers) - set(planners))
    if unknown:
        raise ValueError(f"on_workers names no planner: {unknown}; the planners are {sorted(planners)}")
    rows = []
    for scenario, settings in scenarios.items():
        for name, plan in planners.items():
            result = simulate(problem, plan, initial_states, target_states,
                              workers=workers if name in on_workers else None, **settings)
            described = {k: v.to_dict() if hasattr(v, "to_dict") else v for k, v in settings.items()}
            rows.append({"planner": name, "scenario": scenario, "settings": described,
                         **result.summary(threshold)})
    return rows


def format_closed_loop(rows: list[dict]) -> str:
    """A markdown table of compare_closed_loop's rows."""
    header = ("| planner | scenario | success at step N | success at end | terminal error median at end "
              "| cost median | ms per plan |")
    lines = [header, "|" + "---|" * 7]
    for r in rows:
        lines.append(f"| {r['planner']} | {r['scenario']} | {100 * r['success_rate_at_horizon']:.1f}% "
                     f"| {100 * r['success_rate_at_end']:.1f}% | {r['terminal_error_at_end']['median']:.2e} "
                     f"| {r['cost']['median']:.3g} | {r['ms_per_plan']:.2f} |")
    return "\n".join(lines)
