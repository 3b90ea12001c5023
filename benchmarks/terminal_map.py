"""Benchmark: the compiled terminal map, LANES problems side by side against one at a time.

    python benchmarks/terminal_map.py [--batches 1 64 10000] [--rounds 5]

For each task (the built-ins that integrate an ODE and notebook 09's planar quadrotor), the
terminal map is compiled twice: 16 lanes (problems integrated side by side, the lane loops
vectorized) and 1 (one problem at a time). On the same random problems (seed 0), on one thread:
microseconds per problem for x_N, for one vector-Jacobian product and for the whole Jacobian
dx_N/du (one forward pass, n reverse passes), the smallest of `--rounds` timings. The last
column is the width compiled_rollout.py chooses (1 where the interval calls the math library).
The two widths must give the same numbers; the run stops if they do not. Asserts nothing else.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from trc_lib.fast.compiled_rollout import LANES, CompiledTerminalMap, calls_math_library, interval_functions
from trc_lib.tasks import load_task, make_problem

from results_page import describe_hardware, write_page

QUADROTOR = f"{Path(__file__).resolve().parents[1] / 'notebooks' / 'planar_quadrotor.py'}:PlanarQuadrotor"
TASKS = {"vanderpol": lambda: make_problem(system="vanderpol"), "pendulum": lambda: make_problem(system="pendulum"),
         "planar_quadrotor": lambda: load_task(QUADROTOR)}


def timed_us(call, batch: int, rounds: int) -> float:
    """Microseconds per problem: the smallest of `rounds` timings of enough calls for ~50 ms."""
    call()
    started = time.perf_counter()
    call()
    repeats = max(1, int(0.05 / max(time.perf_counter() - started, 1e-7)))
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeats):
            call()
        best = min(best, (time.perf_counter() - started) / repeats)
    return 1e6 * best / batch


def measure(name: str, task, batches, rounds: int) -> list[dict]:
    system = task.system
    maps = {lanes: CompiledTerminalMap(system, lanes) for lanes in (LANES, 1)}
    if not all(m.compiled for m in maps.values()):
        raise SystemExit("terminal_map.py: no working C compiler")
    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        x0, xt = task.draw_problems(rng, batch)
        u = rng.uniform(task.control_lower, task.control_upper, (batch, system.num_steps, system.control_dim))
        seed = rng.normal(size=(batch, system.state_dim))
        x0_t, u_t, seed_t = torch.from_numpy(x0), torch.from_numpy(u), torch.from_numpy(seed)
        answers, row = {}, {"task": name, "batch": batch}
        for lanes, mapped in maps.items():
            answers[lanes] = (mapped.terminal_states(x0_t, u_t), mapped.vjp(x0_t, u_t, seed_t)[1], mapped.jacobian(x0_t, u_t))
            row[f"x_N_{lanes}"] = timed_us(lambda: mapped.terminal_states(x0_t, u_t), batch, rounds)
            row[f"vjp_{lanes}"] = timed_us(lambda: mapped.vjp(x0_t, u_t, seed_t), batch, rounds)
            row[f"jacobian_{lanes}"] = timed_us(lambda: mapped.jacobian(x0_t, u_t), batch, rounds)
        if not all(torch.equal(a, b) for a, b in zip(answers[LANES], answers[1])):
            raise SystemExit(f"terminal_map.py: {name}: {LANES} lanes and 1 give different numbers")
        row["chosen"] = 1 if calls_math_library(interval_functions(system)[1]) else LANES
        rows.append(row)
        print(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 10000], help="problems per call")
    parser.add_argument("--rounds", type=int, default=5, help="timings per entry; the smallest is kept")
    args = parser.parse_args()
    if min(args.batches) < 1 or args.rounds < 1:
        parser.error("--batches and --rounds must be positive")
    torch.set_num_threads(1)
    rows = [row for name, make in TASKS.items() for row in measure(name, make(), args.batches, args.rounds)]
    lines = [f"Hardware: {describe_hardware()}; timed on one thread.", "",
             "Microseconds per problem; 'x' columns: one at a time over 16 lanes (above 1: the lanes are slower).", "",
             "| task | batch | x_N, 16 lanes | x_N, 1 | x | VJP, 16 lanes | VJP, 1 | x | Jacobian, 16 lanes | Jacobian, 1 | x "
             "| width chosen |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = []
        for what in ("x_N", "vjp", "jacobian"):
            cells += [f"{r[f'{what}_{LANES}']:.2f}", f"{r[f'{what}_1']:.2f}", f"{r[f'{what}_{LANES}'] / r[f'{what}_1']:.2f}"]
        lines.append(f"| {r['task']} | {r['batch']:,} | " + " | ".join(cells) + f" | {r['chosen']} |")
    body = "\n".join(lines)
    print(body)
    write_page("terminal_map", "The compiled terminal map: problems side by side or one at a time", body)


if __name__ == "__main__":
    main()
