"""Benchmark: IPOPT with the NLP interpreted by CasADi against the NLP compiled to C (CasADi's JIT).

    python benchmarks/ipopt_compiled.py [--num_problems 100] [--tasks vanderpol pendulum]

For each nonlinear task (its default problem, the task's own starts: one for Van der Pol, three
for the pendulum), on one process: seconds to build each optimizer, milliseconds per problem over
the same `--num_problems` problems (x_0 and x* drawn from the task's default boxes, seed 0), and
the largest difference between the two optimizers' controls. Label generation compiles from
labels.COMPILE_FROM_PROBLEMS_PER_PROCESS problems per process on; the oracle baseline
(baselines.OracleController) always runs compiled. Prints a markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from trc_lib.evaluate import hardware
from trc_lib.oracles.labels import make_optimizer
from trc_lib.tasks import make_problem

from results_page import write_page


def problems(system: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """x_0, x* [count, n] from the task's default boxes, as `trc generate` draws them."""
    return make_problem(system=system).draw_problems(np.random.default_rng(0), count)


def measure(system: str, count: int) -> dict:
    problem = make_problem(system=system)
    x0, xt = problems(system, count)
    starts = problem.label_starts()
    row, controls = {"system": system, "starts": len(starts)}, {}
    for mode in ("interpreted", "compiled"):
        started = time.perf_counter()
        optimizer = make_optimizer(problem, compiled=mode == "compiled")
        row[f"{mode}_build_s"] = time.perf_counter() - started
        if mode == "compiled" and not optimizer.compiled:
            raise SystemExit("no working C compiler: CasADi's JIT fell back to the interpreter")
        optimizer.solve(x0[0], xt[0], starts)  # warm-up
        started = time.perf_counter()
        batch = optimizer.solve_batch(x0, xt, starts)
        row[f"{mode}_ms_per_problem"] = 1e3 * (time.perf_counter() - started) / count
        row[f"{mode}_solved"] = float(batch.success.mean())
        controls[mode] = batch.controls
    row["max_abs_control_difference"] = float(np.abs(controls["compiled"] - controls["interpreted"]).max())
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_problems", type=int, default=100, help="problems per task (default 100)")
    parser.add_argument("--tasks", nargs="+", default=["vanderpol", "pendulum"], choices=["vanderpol", "pendulum"],
                        help="tasks whose NLP is timed interpreted and compiled")
    args = parser.parse_args()
    hw = hardware()
    lines = [f"Hardware: {hw['cpu']}, one process; {args.num_problems} problems per task", "",
             "| task | starts | build s, interpreted / compiled | ms per problem, interpreted / compiled | speed-up "
             "| solved | max abs control difference |", "|---|---|---|---|---|---|---|"]
    for system in args.tasks:
        r = measure(system, args.num_problems)
        lines.append(f"| {system} | {r['starts']} | {r['interpreted_build_s']:.1f} / {r['compiled_build_s']:.1f} "
                     f"| {r['interpreted_ms_per_problem']:.1f} / {r['compiled_ms_per_problem']:.1f} "
                     f"| {r['interpreted_ms_per_problem'] / r['compiled_ms_per_problem']:.2f}x "
                     f"| {100 * r['interpreted_solved']:.0f}% / {100 * r['compiled_solved']:.0f}% "
                     f"| {r['max_abs_control_difference']:.1e} |")
        print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))
    write_page("ipopt_compiled", "IPOPT on the interpreted and the compiled NLP", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
