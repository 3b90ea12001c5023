"""Benchmark: IPOPT labels on a Dask LocalCluster against a process pool, and from one to two workers.

    python benchmarks/label_workers.py [--num_samples 10000] [--scaling_samples 10000]

Two tables, each measured in this one run on this machine:

1. `--num_samples` pendulum problems (the task's default boxes and three starts): the process
   pool that label generation used before Dask (multiprocessing, forked workers, the NLP compiled
   once before the fork) against the Dask LocalCluster that `trc generate` starts now, both with
   one process per core. The Dask time includes starting the cluster (its workers import the
   library and each compiles its own NLP).
2. `--scaling_samples` Van der Pol problems on Dask LocalClusters of one and of two workers.

Every row solves the same problems; the labels must be identical, array for array (the script
stops otherwise). A third table times one chunk of pendulum problems in this process and on a Dask
worker with and without Dask's MALLOC_TRIM_THRESHOLD_ (which workers.local_cluster leaves unset).
Prints markdown tables; writes docs/results/label_workers.md.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import sys
import time

import numpy as np

import trc_lib.oracles.labels as labels
from trc_lib.oracles.workers import Workers, close_clusters, local_cluster
from trc_lib.tasks import make_problem

from results_page import write_page


def problems(system: str, count: int):
    """x_0, x* [count, n] from the task's default boxes, as `trc generate` draws them (seed 0)."""
    return make_problem(system=system).draw_problems(np.random.default_rng(0), count)


def process_pool(problem, x0, xt, starts, processes: int, chunk_size: int = 50) -> np.ndarray:
    """The controls [B, N, m] as label generation solved them before Dask: a forked
    multiprocessing pool over chunks of `chunk_size`, the NLP built (and compiled, from
    labels.COMPILE_FROM_PROBLEMS_PER_PROCESS problems per process on) once here, before the fork."""
    compiled = len(x0) >= labels.COMPILE_FROM_PROBLEMS_PER_PROCESS * processes
    labels._init_worker(problem.to_dict(), compiled)  # forked workers inherit it
    chunks = [(x0[i:i + chunk_size], xt[i:i + chunk_size], starts) for i in range(0, len(x0), chunk_size)]
    solve = functools.partial(labels._solve_chunk, problem.to_dict(), compiled=compiled)
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        outputs = pool.map(solve, chunks)
    return np.concatenate([output[0] for output in outputs])


def on_dask(problem, x0, xt, starts, processes: int) -> np.ndarray:
    """The controls [B, N, m] from `trc generate`'s solver on a new LocalCluster of `processes`
    worker processes (as `trc generate --workers` starts it; with one, still a Dask worker)."""
    if processes > 1:
        workers = Workers(processes=processes)
    else:  # Workers(processes=1) solves in this process: ask for a one-worker cluster by its address
        cluster = local_cluster(1)
        workers = Workers(address=cluster.scheduler_address)
    solution, _ = labels.solve_nonlinear(problem, x0, xt, starts, workers=workers, progress=False)
    close_clusters()  # the next row starts its own cluster
    if processes == 1:
        cluster.close()
    return solution.control_sequences


def _solve_timed(problem_dict, chunk) -> float:
    """Seconds to solve one chunk with the compiled NLP, built (and compiled) beforehand."""
    labels._init_worker(problem_dict, True)
    started = time.perf_counter()
    labels._solve_chunk(problem_dict, chunk, compiled=True)
    return time.perf_counter() - started


def malloc_trimming(count: int = 60) -> list[str]:
    """Table rows: one chunk of `count` pendulum problems (compiled NLP) solved in this process, on
    a worker of trc's local cluster, and on a worker that keeps Dask's MALLOC_TRIM_THRESHOLD_."""
    import dask
    from distributed import Client, LocalCluster
    problem = make_problem(system="pendulum")
    x0, xt = problems("pendulum", count)
    chunk, problem_dict = (x0, xt, problem.label_starts()), problem.to_dict()
    _solve_timed(problem_dict, chunk)  # builds it here
    here = _solve_timed(problem_dict, chunk)
    rows = [f"| this process | {here:.2f} | 1.00 |"]
    environment = dict(os.environ)
    for name, config in (("a worker of trc's local cluster", None), ("a worker with Dask's MALLOC_TRIM_THRESHOLD_", {})):
        with dask.config.set(config or {}):
            cluster = local_cluster(1) if config is None else LocalCluster(
                n_workers=1, threads_per_worker=1, dashboard_address=":0", silence_logs=40)
        os.environ.clear()
        os.environ.update(environment)
        with Client(cluster) as client:
            client.submit(_solve_timed, problem_dict, chunk, pure=False).result()  # builds it there
            seconds = client.submit(_solve_timed, problem_dict, chunk, pure=False).result()
        cluster.close()
        rows.append(f"| {name} | {seconds:.2f} | {seconds / here:.2f} |")
    return [f"One chunk of {count} pendulum problems, the compiled NLP built beforehand, one process", "",
            "| where | seconds | time / this process's |", "|---|---|---|", *rows, ""]


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_samples", type=int, default=10000, help="pendulum problems (default 10000)")
    parser.add_argument("--scaling_samples", type=int, default=10000, help="Van der Pol problems (default 10000)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    lines = []

    problem = make_problem(system="pendulum")
    x0, xt = problems("pendulum", args.num_samples)
    starts = problem.label_starts()
    # Dask first, then the pool (whichever runs second meets a machine that has run for minutes);
    # on_dask closes its cluster, so the pool does not fork a process running a Dask client's threads
    dask_s, dask_controls = timed(on_dask, problem, x0, xt, starts, cores)
    print(f"Dask: {dask_s:.1f} s", flush=True)
    pool_s, pool_controls = timed(process_pool, problem, x0, xt, starts, cores)
    print(f"process pool: {pool_s:.1f} s", flush=True)
    if not np.array_equal(pool_controls, dask_controls):
        raise SystemExit("the process pool and Dask gave different labels")
    lines += [f"{args.num_samples:,} pendulum labels (three starts each), {cores} processes; Dask ran first", "",
              "| solver | seconds | labels per second | time / process pool's |", "|---|---|---|---|",
              f"| process pool (forked, NLP compiled before the fork) | {pool_s:.1f} | {args.num_samples / pool_s:.1f} "
              f"| 1.00 |",
              f"| Dask LocalCluster (started in the run) | {dask_s:.1f} | {args.num_samples / dask_s:.1f} "
              f"| {dask_s / pool_s:.2f} |", "", "The labels are identical, array for array.", ""]

    lines += malloc_trimming()

    problem = make_problem(system="vanderpol")
    x0, xt = problems("vanderpol", args.scaling_samples)
    starts = problem.label_starts()
    rows, reference = [], None
    for processes in (1, 2):
        seconds, controls = timed(on_dask, problem, x0, xt, starts, processes)
        print(f"Dask, {processes} worker(s): {seconds:.1f} s", flush=True)
        if reference is None:
            reference = (seconds, controls)
        elif not np.array_equal(controls, reference[1]):
            raise SystemExit("one and two workers gave different labels")
        rows.append(f"| {processes} | {seconds:.1f} | {args.scaling_samples / seconds:.1f} "
                    f"| {reference[0] / seconds:.2f}x |")
    lines += [f"{args.scaling_samples:,} Van der Pol labels on a Dask LocalCluster (one thread per worker)", "",
              "| workers | seconds | labels per second | speed-up over one worker |", "|---|---|---|---|", *rows, "",
              "The labels are identical, array for array."]
    body = "\n".join(lines)
    print("\n" + body)
    write_page("label_workers", "IPOPT labels on Dask: against the process pool, one and two workers", body)


if __name__ == "__main__":
    sys.exit(main())
