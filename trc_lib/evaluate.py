"""Honest metrics for any controller on a test set, scored against the exact optimum.

For each test case a controller proposes u [N, m]. The actuator saturates it at the bound
(the raw violation is reported separately), the exact dynamics play it open loop, and:

- terminal error  ||x_N - x*|| (on the components the task constrains, all when it constrains
                  none); success: terminal error < success_threshold (0.1 by default);
- violation       how far the answer leaves the control bounds (before saturation), and, for a
                  task with state bounds or path constraints, how far its trajectory breaks them;
- cost            J(u) on the dataset's own objective (task.py);
- cost gap        (J(u) + λ . (x_N - x*) - J*) / J*, where λ is the oracle's multiplier of the
                  terminal constraint (zero when the problem has none). The correction term is
                  what the missed target would have cost at the margin: by convexity and strong
                  duality J(u) + λ . (x_N - x*) >= J* for every u within the bound, so the gap is
                  never negative. A plain (J(u) - J*) / J* can be: missing the target by 0.1
                  saves up to a third of the energy on this problem, so a sloppy controller
                  would look "better than optimal". (`tests/test_evaluate.py` checks both facts.)

On the nonlinear tasks J* is IPOPT's optimum (the best of the task's starts) and λ its
multiplier, with the same formula. There J*(x*) is not convex, so the correction is the
first-order estimate of J*(x_N(u)) - J*(x*), not a guaranteed bound: the gap estimates how much
u overpays for the place it actually reached, and a small negative value is possible (as is a
negative gap from a controller that finds a better local optimum than IPOPT). Success is
therefore always reported next to it.
"""

from __future__ import annotations

import math
import os
import platform
import time

import numpy as np

from .oracles import OptimalSolution
from .data import ControlDataset
from .errors import TRCError


def summarize(values: np.ndarray) -> dict:
    """mean, median, p90 and max of the values that are not NaN (NaN marks an unanswered case);
    all NaN when no case was answered."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return {"mean": math.nan, "median": math.nan, "p90": math.nan, "max": math.nan}
    return {"mean": float(values.mean()), "median": float(np.median(values)),
            "p90": float(np.percentile(values, 90)), "max": float(values.max())}


def score_controls(test: ControlDataset, control_sequences: np.ndarray, success_threshold: float = 0.1,
                   solution: OptimalSolution | None = None, answered: np.ndarray | None = None) -> dict:
    """Per-sample arrays: terminal_error, success, cost, cost_gap, bound_violation (all [B]), and
    constraint_violation [B] for a task with state bounds or path constraints.

    control_sequences: [B, N, m]; solution: the oracle's answer for `test` (default: its labels).
    answered: [B] bool, for a controller that may give no answer (a text model whose reply could
    not be read): the unanswered cases fail, and their error, cost and gap are NaN, left out of
    the summaries (metrics reports how many there were).
    """
    problem = test.problem
    expected = (len(test), *test.control_sequences.shape[1:])
    control_sequences = np.asarray(control_sequences, dtype=np.float64)
    if control_sequences.shape != expected:
        raise TRCError(f"control sequences have shape {list(control_sequences.shape)}, expected {list(expected)}")
    if not np.isfinite(control_sequences).all():
        raise TRCError("control sequences contain NaN or inf")
    solution = solution or test.optimum()
    lower, upper = problem.control_lower, problem.control_upper
    violation = np.maximum(np.maximum(lower - control_sequences, control_sequences - upper), 0.0).max(axis=(1, 2))
    u = np.clip(control_sequences, lower, upper)
    states = problem.system.rollout(test.initial_states, u)
    miss = states[:, -1] - test.target_states
    terminal_error = problem.terminal_miss(states[:, -1], test.target_states)
    cost = problem.cost(states, u, test.target_states)
    lagrangian = cost + np.einsum("bi,bi->b", solution.terminal_multipliers, miss)
    # relative to J*; J* = 0 only when doing nothing is optimal (x* = A^N x_0), measure zero here
    cost_gap = (lagrangian - solution.costs) / np.maximum(solution.costs, 1e-12)
    scores = {"terminal_error": terminal_error, "success": terminal_error < success_threshold, "cost": cost,
              "cost_gap": cost_gap, "bound_violation": violation, "state_trajectories": states}
    if problem.state_limits is not None or problem.has_path_constraints:
        scores["constraint_violation"] = problem.constraint_violations(states, u)
    if answered is not None:
        answered = np.asarray(answered, dtype=bool)
        for key in [k for k in ("terminal_error", "cost", "cost_gap", "bound_violation", "constraint_violation")
                    if k in scores]:
            scores[key] = np.where(answered, scores[key], np.nan)
        scores["success"] = scores["success"] & answered
        scores["answered"] = answered
    return scores


def metrics(scores: dict, success_threshold: float = 0.1) -> dict:
    """Summary statistics of score_controls' output (JSON-ready)."""
    violation = scores["bound_violation"]
    summary = {"success_rate": float(np.mean(scores["success"])), "success_threshold": success_threshold,
               "terminal_error": summarize(scores["terminal_error"]), "cost": summarize(scores["cost"]),
               "cost_gap": summarize(scores["cost_gap"]),
               "bound_violation": {"max": summarize(violation)["max"], "fraction": float(np.mean(violation > 0))}}
    if "constraint_violation" in scores:
        broken = scores["constraint_violation"]
        summary["constraint_violation"] = {"max": summarize(broken)["max"], "fraction": float(np.mean(broken > 1e-6))}
    if "answered" in scores:
        summary["unanswered"] = int((~scores["answered"]).sum())
    return summary


def time_inference(predict, initial_states: np.ndarray, target_states: np.ndarray, batch_size: int,
                   repeats: int | None = None) -> dict:
    """Wall time of predict on batches of batch_size problems after warm-up: median and p90 over repeats.

    Call r times problems r b, ..., r b + b - 1 of the test set (cyclically): a controller whose
    work depends on the problem (halting, a Newton polish) is timed over the problems, not on one.
    Two warm-up calls (one if the first took over a second); repeats default to 200 at batch 1
    and 20 otherwise, fewer for slow controllers so that timing takes about ten seconds.

    Returns milliseconds per call (median, p90, mean) and microseconds per problem (of the median).
    """
    if repeats is not None and repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats}")
    count = len(initial_states)
    reps = -(-(batch_size + count) // count)
    x0_tiled, xt_tiled = np.tile(initial_states, (reps, 1)), np.tile(target_states, (reps, 1))

    def batch(r):
        start = (r * batch_size) % count
        return x0_tiled[start:start + batch_size], xt_tiled[start:start + batch_size]

    started = time.perf_counter()
    predict(*batch(0))
    first = time.perf_counter() - started
    if repeats is None:  # 200 (batch 1) or 20 calls, fewer for slow controllers (about 10 s in all)
        repeats = max(3, min(200 if batch_size == 1 else 20, int(10.0 / max(first, 1e-9))))
    if first < 1.0:
        predict(*batch(1))
    batches = [batch(r) for r in range(repeats)]
    times = []
    for x0, xt in batches:
        started = time.perf_counter()
        predict(x0, xt)
        times.append(time.perf_counter() - started)
    median, p90 = np.median(times), np.percentile(times, 90)
    return {"batch_size": batch_size, "repeats": repeats, "median_ms": 1e3 * median, "p90_ms": 1e3 * p90,
            "mean_ms": 1e3 * np.mean(times), "us_per_problem": 1e6 * median / batch_size}


def hardware() -> dict:
    """What the timings were measured on."""
    import torch  # imported here so numpy-only scoring does not pay for torch
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version()}
