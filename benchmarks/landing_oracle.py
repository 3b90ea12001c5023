"""Benchmark: the rocket landing's oracle, checked against the literature and against IPOPT.

    python benchmarks/landing_oracle.py [--num_problems 100] [--fine_steps 200]

1. Açıkmeşe & Ploen's example (r_0 = (2000, 0, 1500) m, v_0 = (100, 0, -75) m/s, full tank,
   staying above the ground without a glide slope) at the task's N = 50 and at --fine_steps:
   the best flight time and its fuel, beside the literature's about 75 s and 390.5 kg.
2. --num_problems problems of the task (its box, 4 degree glide slope, N = 50, seed 0), labelled
   by the cone program: landing errors of the thrusts rolled out through the exact dynamics,
   the largest violation of each constraint, the relaxation's slack.
3. IPOPT on the original non-convex problem, warm-started from each label (LandingNlp's warm:
   barrier 1e-6, the start kept within 1e-9 of its bounds): converged, fuel and flight time
   differences. From a cold start (hover thrust, t_f = 60 s): how often it converges to the
   same fuel (within 0.1%), to a worse local optimum, or not at all.
4. Time per problem: one cone program at a fixed flight time, the free-time oracle, IPOPT
   (--skip_timing leaves it out).

Writes docs/results/landing_oracle.md. Asserts nothing: the numbers are printed as measured.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from trc_lib.tasks.rocket_landing.cone_program import LandingConeProgram, best_landing, solve_landings
from trc_lib.tasks.rocket_landing.nlp_check import LandingNlp
from trc_lib.tasks.rocket_landing.problem import RocketLanding, published_example, sample_problems

from results_page import write_page

SAME_FUEL = 1e-3  # relative: "the same optimum"


def example_rows(fine_steps: int) -> list[str]:
    x0, xt = published_example()
    rows = ["| N | best flight time (s) | fuel (kg) | fuel vs 390.5 kg | cone programs solved | seconds |",
            "|---|---|---|---|---|---|"]
    for steps in (50, fine_steps):
        started = time.perf_counter()
        solution, search = best_landing(LandingConeProgram(RocketLanding(num_steps=steps, glide_slope=0.0)), x0, xt)
        rows.append(f"| {steps} | {solution.final_time:.2f} | {solution.fuel:.2f} | "
                    f"{100 * (solution.fuel / 390.5 - 1):+.2f}% | {search.solves} | {time.perf_counter() - started:.1f} |")
    return rows


def label_rows(landing, x0, xt, labels, seconds) -> list[str]:
    errors = np.abs(labels.states[:, -1, :6] - xt[:, :6])
    violations = landing.constraint_violations(labels.states, labels.thrusts, labels.time_horizons)
    return [f"{len(x0)} problems, {labels.success.mean():.0%} solved; {seconds:.1f} s on every core "
            f"({labels.solves.mean():.1f} cone programs per problem on average).", "",
            "| quantity | largest over the problems |", "|---|---|",
            f"| landing position error (m) | {errors[:, :3].max():.2e} |",
            f"| landing velocity error (m/s) | {errors[:, 3:].max():.2e} |",
            *[f"| {name} violation ({unit}) | {violations[name].max():.2e} |" for name, unit in
              (("thrust_max", "N"), ("thrust_min", "N"), ("glide_slope", "m"), ("dry_mass", "kg"))],
            f"| relaxation slack max_k sigma_k - abs(u_k) (m/s^2) | {labels.max_slack.max():.2e} |",
            f"| flight time (s): min / median / max | {labels.time_horizons.min():.1f} / "
            f"{np.median(labels.time_horizons):.1f} / {labels.time_horizons.max():.1f} |",
            f"| fuel (kg): min / median / max | {labels.fuel.min():.1f} / {np.median(labels.fuel):.1f} / "
            f"{labels.fuel.max():.1f} |"]


def ipopt_rows(landing, x0, xt, labels) -> tuple[list[str], dict]:
    nlp, warm_nlp = LandingNlp(landing), LandingNlp(landing, warm=True)
    warm, cold, times = [], [], {"warm": [], "cold": []}
    for i in range(len(x0)):
        started = time.perf_counter()
        warm.append(warm_nlp.solve(x0[i], xt[i], labels.thrusts[i], labels.time_horizons[i]))
        times["warm"].append(time.perf_counter() - started)
        started = time.perf_counter()
        cold.append(nlp.solve(x0[i], xt[i], *nlp.cold_start(x0[i])))
        times["cold"].append(time.perf_counter() - started)
    relative = lambda answer, i: (answer.fuel - labels.fuel[i]) / labels.fuel[i]
    # over the converged runs only: an unconverged IPOPT stops at an infeasible point, whose "fuel" means nothing
    warm_converged = np.array([a.converged for a in warm])
    warm_gap = np.array([relative(a, i) for i, a in enumerate(warm) if a.converged])
    warm_time = np.array([abs(a.final_time - labels.time_horizons[i]) for i, a in enumerate(warm) if a.converged])
    converged = np.array([a.converged for a in cold])
    cold_gap = np.array([relative(a, i) for i, a in enumerate(cold)])
    same = converged & (np.abs(cold_gap) <= SAME_FUEL)
    rows = ["| IPOPT start | converged | fuel vs the cone program, converged runs: largest abs. relative difference | "
            "flight time: largest abs. difference (s) |", "|---|---|---|---|",
            f"| the cone program's answer, as a warm start (barrier 1e-6, bounds pushed 1e-9) | {warm_converged.mean():.0%} | "
            f"{np.abs(warm_gap).max():.1e} (max {warm_gap.max():+.1e}, min {warm_gap.min():+.1e}) | "
            f"{warm_time.max():.3f} |", "",
            f"From a cold start (hover thrust straight up, t_f = 60 s): {same.mean():.0%} converge to the "
            f"cone program's fuel (within {SAME_FUEL:.1%}), {(converged & (cold_gap > SAME_FUEL)).mean():.0%} "
            f"to a worse local optimum, {(converged & (cold_gap < -SAME_FUEL)).mean():.0%} to a better one, "
            f"{(~converged).mean():.0%} do not converge (1,000 iterations)."]
    return rows, times


def timing_rows(landing, x0, xt, labels, ipopt_times) -> list[str]:
    program = LandingConeProgram(landing)
    fixed, free, solves = [], [], []
    for i in range(len(x0)):
        started = time.perf_counter()
        program.solve(x0[i], xt[i], labels.time_horizons[i])
        fixed.append(time.perf_counter() - started)
        started = time.perf_counter()
        _, search = best_landing(program, x0[i], xt[i])
        free.append(time.perf_counter() - started)
        solves.append(search.solves)
    ms = lambda values: f"{1e3 * np.median(values):.1f}"
    return ["One process, one problem after another; medians over the problems.", "",
            "| solver | ms per problem |", "|---|---|",
            f"| one cone program at a fixed flight time (Clarabel, with building its matrices) | {ms(fixed)} |",
            f"| the free-time oracle ({np.mean(solves):.1f} cone programs on average) | {ms(free)} |",
            f"| IPOPT, non-convex NLP, started from the oracle's answer | {ms(ipopt_times['warm'])} |",
            f"| IPOPT, non-convex NLP, cold start | {ms(ipopt_times['cold'])} |"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_problems", type=int, default=100, help="random problems (default 100)")
    parser.add_argument("--fine_steps", type=int, default=200, help="N of the fine example (default 200)")
    parser.add_argument("--skip_timing", action="store_true",
                        help="leave out the time per problem (for a run that shares the cores with other work; "
                             "benchmarks/landing.py times the oracle beside TRC)")
    args = parser.parse_args()
    landing = RocketLanding()
    body = ["## Açıkmeşe & Ploen's example", "",
            "Staying above the ground (altitude >= 0 at the nodes), no glide slope; the literature "
            "quotes about 390.5 kg at about 75 s.", "", *example_rows(args.fine_steps), ""]
    print("\n".join(body))
    x0, xt = sample_problems(np.random.default_rng(0), args.num_problems, landing)
    started = time.perf_counter()
    labels = solve_landings(landing, x0, xt, progress=True)
    rows = label_rows(landing, x0, xt, labels, time.perf_counter() - started)
    if args.skip_timing:
        rows[0] = rows[0].split(";")[0] + f" ({labels.solves.mean():.1f} cone programs per problem on average)."
    body += [f"## The oracle's labels (N = {landing.num_steps}, glide slope {landing.glide_slope:g} degrees)", "",
             *rows, ""]
    ok = labels.success
    ipopt, ipopt_times = ipopt_rows(landing, x0[ok], xt[ok], _subset(labels, ok))
    body += ["## IPOPT on the original non-convex problem", "", *ipopt, ""]
    if not args.skip_timing:
        body += ["## Time per problem", "", *timing_rows(landing, x0[ok], xt[ok], _subset(labels, ok), ipopt_times)]
    print("\n".join(body[-20:]))
    write_page("landing_oracle", "The rocket landing's oracle: the literature and IPOPT", "\n".join(body))


def _subset(labels, keep):
    from dataclasses import fields, replace
    return replace(labels, **{f.name: getattr(labels, f.name)[keep] for f in fields(labels)})


if __name__ == "__main__":
    main()
