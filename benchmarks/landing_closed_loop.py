"""Benchmark: the rocket landing in closed loop under gusts, TRC against the cone program.

    python benchmarks/landing_closed_loop.py [--problems 200] [--gust 0.05] [--timed_problems 5]
                                             [--workers K | --cluster ADDRESS]

Uses the model and the test set of benchmarks/landing.py (run that first). On the first
`--problems` test cases, each with its own gusts (tasks/rocket_landing/closed_loop.py: an acceleration
disturbance per interval and axis, seed 11), flies four controllers: TRC's corrected plan open
loop and re-planned by its correction step before every interval, the oracle's plan open loop and
re-planned by the cone program. Prints and writes docs/results/landing_closed_loop.md: landing
errors, the share within 1 m and 0.5 m/s, fuel against the oracle's (no-gust) optimum, the
largest glide-slope violation, and the time per re-plan (TRC batched over all problems and at
batch 1 on `--timed_problems` of them; the cone program one problem at a time, its landings
flown on Dask workers: a local cluster with a process per core, `--workers` of them, or the
scheduler at `--cluster`). Asserts nothing.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from trc_lib.checkpoint import load_model
from trc_lib.data import read_dataset
from trc_lib.tasks.rocket_landing.closed_loop import (GUST, closed_loop_scores, cone_program_closed_loop, draw_gusts,
                                         trc_closed_loop)
from trc_lib.oracles.workers import Workers

from results_page import ROOT, write_page

OUT = ROOT / "outputs" / "benchmark" / "landing"
WITHIN_POSITION, WITHIN_VELOCITY = 1.0, 0.5  # m, m/s: the closed-loop bar


def row(name, scores, optimal_fuel, flights, plan_ms) -> str:
    p, v = scores["position_error"], scores["velocity_error"]
    within = np.mean((p < WITHIN_POSITION) & (v < WITHIN_VELOCITY))
    gap = (scores["fuel"] - optimal_fuel) / optimal_fuel
    glide = scores.get("violation_glide_slope", np.zeros(1)).max()
    failed = int(flights.failed_plans.sum())
    return (f"| {name} | {within:.1%} | {np.median(p):.3f} / {np.percentile(p, 99):.3f} / {p.max():.3f} | "
            f"{np.median(v):.3f} / {np.percentile(v, 99):.3f} / {v.max():.3f} | {np.median(gap):.3%} / "
            f"{np.percentile(gap, 90):.3%} | {glide:.3g} | {plan_ms} | {failed} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=200, help="test cases flown (default 200)")
    parser.add_argument("--gust", type=float, default=GUST, help=f"gust standard deviation, m/s^2 (default {GUST})")
    parser.add_argument("--timed_problems", type=int, default=5, help="cases TRC re-plans at batch 1 for timing")
    parser.add_argument("--model_size", default="medium", choices=["small", "medium", "large"], help="model size to train")
    parser.add_argument("--workers", type=int, default=None,
                        help="Dask worker processes flying the cone program's landings (default: one per core)")
    parser.add_argument("--cluster", default=None, metavar="ADDRESS",
                        help="a Dask scheduler to fly them on instead (default: $TRC_CLUSTER, else a local cluster)")
    args = parser.parse_args()
    if args.workers is not None and args.workers < 1:
        raise SystemExit(f"--workers: must be a positive number of processes, got {args.workers}")
    checkpoint = OUT / f"run_{args.model_size}" / "best_model.pt"
    if not checkpoint.exists() or not (OUT / "test").exists():
        raise SystemExit(f"{checkpoint}: not found; run benchmarks/landing.py first")
    model = load_model(checkpoint)
    test = read_dataset(OUT / "test")
    landing, n = test.problem, min(args.problems, len(test))
    x0, xt = test.initial_states[:n], test.target_states[:n]
    gusts = draw_gusts(np.random.default_rng(11), n, landing, args.gust)
    rows = []
    for replan in (False, True):
        flights = trc_closed_loop(model, x0, xt, gusts, replan=replan)
        plan_ms = "-"
        if replan:
            single = [trc_closed_loop(model, x0[i:i + 1], xt[i:i + 1], gusts[i:i + 1]).plan_seconds
                      for i in range(min(args.timed_problems, n))]
            plan_ms = (f"{1e3 * np.median(flights.plan_seconds):.2f} (batch {n}) / "
                       f"{1e3 * np.median(np.concatenate(single)):.1f} (batch 1)")
        name = "TRC, re-planned by its correction step" if replan else "TRC's plan, open loop"
        rows.append(row(name, closed_loop_scores(landing, flights, xt), test.costs[:n], flights, plan_ms))
    for replan in (False, True):
        flights = cone_program_closed_loop(landing, x0, xt, gusts, test.control_sequences[:n], test.time_horizons[:n],
                                           replan=replan, progress=True,
                                           workers=Workers.of(args.workers, address=args.cluster))
        plan_ms = f"{1e3 * np.median(flights.plan_seconds):.1f}" if replan else "-"
        name = "cone program, re-planned" if replan else "the oracle's plan, open loop"
        rows.append(row(name, closed_loop_scores(landing, flights, xt), test.costs[:n], flights, plan_ms))
    body = [f"{n} test problems of benchmarks/landing.py (N = {landing.num_steps}, glide slope "
            f"{landing.glide_slope:g} degrees), model {args.model_size}. Gusts: an acceleration disturbance, "
            f"constant over each interval, normal with standard deviation {args.gust:g} m/s^2 per axis "
            "(seed 11); the state is measured exactly at every node. Re-planning keeps N intervals' "
            "grid: before interval k (1 <= k <= N - 2) the rest of the flight is planned again from the "
            "measured state at the same touchdown time (TRC: its correction step; the cone program: a "
            "fresh solve), the time stretched only where no landing exists at it "
            "(trc_lib/tasks/rocket_landing/closed_loop.py). The gusts of the last two intervals are never corrected. A re-plan "
            "without a landing: TRC's correction leaving the planned miss above 0.1 mm or 0.01 mm/s (the rest it "
            "found is flown), the cone program finding no solution at all (the previous plan is kept).", "",
            f"| controller | within {WITHIN_POSITION:g} m and {WITHIN_VELOCITY:g} m/s | position error median / "
            "p99 / max (m) | velocity error median / p99 / max (m/s) | fuel against the no-gust optimum, "
            "median / p90 | glide slope violation max (m) | time per re-plan (ms) | re-plans without a landing |",
            "|---|---|---|---|---|---|---|---|", *rows]
    print("\n".join(body))
    write_page("landing_closed_loop", "The rocket landing in closed loop under gusts", "\n".join(body))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
