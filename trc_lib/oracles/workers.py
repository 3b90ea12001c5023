"""Where the oracle's independent solves run: in this process, on a local Dask cluster, or on a
Dask scheduler at an address, with finished chunks kept on disk.

Labels are many problems that do not depend on each other (one IPOPT or cone-program solve
each), so the work is a list of chunks and a function that solves one chunk:

    map_chunks(solve_chunk, chunks, Workers(...))  ->  [solve_chunk(chunk) for chunk in chunks]

The answer does not depend on where a chunk ran: each problem is solved on its own, in float64,
by the same code. What `Workers` decides:

    processes  1: this process, without Dask; K: a LocalCluster of K worker processes with one
               thread each; default: one per core, or this process for fewer than
               LOCAL_CLUSTER_FROM problems (starting a cluster takes seconds)
    address    a running scheduler (`dask scheduler`, then `dask worker ADDRESS --nthreads 1` on
               each machine) instead of a LocalCluster; where the caller names neither
               processes nor address, the environment variable TRC_CLUSTER names it
    journal    a folder where each finished chunk is written (atomically) as it arrives: a run
               that is interrupted, or run again, loads those instead of solving them

A worker keeps what it builds (an NLP, its compiled C) in its process between chunks, so each
worker builds it once. A worker lost mid-run loses nothing: the scheduler runs its chunk again
elsewhere, and the chunks already finished are in the journal.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import hashlib
import os
import pickle
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

CLUSTER_VARIABLE = "TRC_CLUSTER"  # the scheduler's address, when no address is given
CONNECT_SECONDS = 10  # how long to wait for a scheduler's answer
MIN_CHUNKS = 64  # small batches are cut this fine, so that up to this many workers share them
LOCAL_CLUSTER_FROM = 64  # problems: fewer are solved in this process unless processes are asked for

# Dask settings of the local cluster (and, through docs/dask/labels.yaml, of workers started with
# `dask worker`; a test keeps the two equal). Glibc's own memory trimming: Dask's nanny sets
# MALLOC_TRIM_THRESHOLD_ in its workers, which makes IPOPT markedly slower
# (benchmarks/label_workers.py). Fewer interruptions of the solves, which share the cores with
# the scheduler and the nannies (in the trc process) and with each worker's event loop: no
# statistical profiler (it samples every thread 100 times a second, for a dashboard that is not
# running); the memory and system monitors and the event loops' health ticks every second
# instead of every 0.1, 0.5 and 0.02 s; no GIL monitor; no work stealing (a chunk waits at the
# scheduler until a worker is free, so there is nothing to steal); the cluster's widget text
# every 10 s. The last four halved the trc process's CPU time during labels (about 3.5% of a
# core before, measured with os.times() over 2,000 pendulum labels on two workers).
QUIET = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
         "distributed.worker.profile.enabled": False, "distributed.worker.memory.monitor-interval": "1s",
         "distributed.admin.system-monitor.interval": "1s", "distributed.admin.tick.interval": "1s",
         "distributed.admin.system-monitor.gil.enabled": False, "distributed.scheduler.work-stealing": False,
         "distributed.deploy.cluster-repr-interval": "10s"}


def problems_per_chunk(num_problems: int, largest: int) -> int:
    """Problems per chunk: `largest`, or fewer so there are at least MIN_CHUNKS chunks. It depends
    on the number of problems only (never on the workers), so a journal serves any cluster."""
    return max(1, min(largest, -(-num_problems // MIN_CHUNKS)))


def chunk_slices(num_problems: int, largest: int) -> list[slice]:
    """The problems of each chunk, in order: slices of problems_per_chunk(num_problems, largest)."""
    size = problems_per_chunk(num_problems, largest)
    return [slice(start, start + size) for start in range(0, num_problems, size)]


@dataclass(frozen=True)
class Workers:
    """Where the solves run (module docstring). processes: worker processes of a LocalCluster
    (default: every core; 1: this process, without Dask); address: a Dask scheduler, such as
    tcp://10.0.0.5:8786 (default: a LocalCluster); journal: the folder of finished chunks
    (default: none); source: what named the address, for errors."""

    processes: int | None = None
    address: str | None = None
    journal: Path | None = None
    source: str = "cluster"

    @classmethod
    def of(cls, workers=None, address: str | None = None, journal: Path | None = None) -> "Workers":
        """A Workers from what callers pass: `workers` None (the default), a number of processes
        or a Workers; an address, or when neither is given, $TRC_CLUSTER's."""
        if isinstance(workers, Workers):
            return workers
        if workers is not None and (int(workers) != workers or workers < 1):
            raise ValueError(f"workers must be a positive number of processes, got {workers}")
        if address is None and workers is None and os.environ.get(CLUSTER_VARIABLE):
            return cls(address=os.environ[CLUSTER_VARIABLE], journal=journal, source=f"${CLUSTER_VARIABLE}")
        return cls(processes=workers, address=address, journal=journal)

    def client(self):
        """The Dask client of the scheduler, or of this process's LocalCluster."""
        if self.address:
            return _client(self.address, self.source)
        return _local_client(self.processes)

    def count(self) -> int:
        """How many chunks can run at once: the cluster's workers, or the processes asked for."""
        if self.address:
            return max(1, len(self.client().nthreads()))
        return self.processes or os.cpu_count() or 1

    def here(self, num_problems: int, num_chunks: int) -> bool:
        """Whether to solve in this process: one process asked for, one chunk to solve, or (by
        default) too few problems to be worth starting a cluster."""
        if self.address:
            return False
        if self.processes is None:
            return num_chunks <= 1 or num_problems < LOCAL_CLUSTER_FROM or (os.cpu_count() or 1) == 1
        return self.processes == 1 or num_chunks <= 1


def map_chunks(solve_chunk, chunks: list, workers: Workers, progress: bool = True, desc: str = "",
               sizes: list[int] | None = None) -> list[tuple[np.ndarray, ...]]:
    """[solve_chunk(chunk) for chunk in chunks], each a tuple of arrays, in the chunks' order.

    solve_chunk: a picklable function (a module-level function, or a functools.partial of one)
    of one chunk (a picklable tuple, usually of arrays) returning a tuple of numpy arrays. The
    keywords of a partial say how to solve (such as compiling first), not what: they must not
    change the answer, and a journal ignores them.
    sizes: problems per chunk, for the progress bar (default: one per chunk).
    """
    sizes = sizes or [1] * len(chunks)
    keys = [_key(solve_chunk, chunk) for chunk in chunks] if workers.journal else None
    outputs: list = [None] * len(chunks)
    if keys:
        for i, key in enumerate(keys):
            outputs[i] = _read(workers.journal, key)
    altered = [keys[i] for i, output in enumerate(outputs) if output is ALTERED]
    outputs = [None if output is ALTERED else output for output in outputs]
    todo = [i for i, output in enumerate(outputs) if output is None]
    found = len(chunks) - len(todo)
    local = workers.here(sum(sizes[i] for i in todo), len(todo))
    where = ("this process" if local else f"Dask at {workers.address}" if workers.address
             else f"{workers.processes or os.cpu_count()} Dask worker processes")
    bar = tqdm(total=sum(sizes), initial=sum(sizes) - sum(sizes[i] for i in todo),
               desc=f"{desc} ({where})" if desc else where, disable=not progress, unit="problem")
    if found and progress:
        bar.write(f"{found} of {len(chunks)} chunks already solved in {workers.journal}")
    if altered:  # said even without a progress bar: someone changed the journal
        tqdm.write(f"{len(altered)} chunks of {workers.journal} do not match their checksum (changed since they "
                   f"were written), solved again: {', '.join(altered[:3])}{' ...' if len(altered) > 3 else ''}",
                   file=sys.stderr)

    def keep(i, output):
        outputs[i] = tuple(np.asarray(a) for a in output)
        if keys:
            _write(workers.journal, keys[i], outputs[i])
        bar.update(sizes[i])

    try:
        if local:
            for i in todo:
                keep(i, solve_chunk(chunks[i]))
        elif todo:
            _on_dask(solve_chunk, chunks, todo, workers, keep)
    finally:
        bar.close()
    return outputs


def _on_dask(solve_chunk, chunks, todo, workers: Workers, keep) -> None:
    """Submit chunks[todo] to the workers and keep(i, output) each as it finishes. A cluster lost
    mid-run is a one-line error (TRCError); what finished is in the journal."""
    from distributed import as_completed

    from ..errors import TRCError
    client = workers.client()
    # pure=False: a chunk lost with its worker is run again, never taken from a cache of results
    futures = {client.submit(solve_chunk, chunks[i], pure=False): i for i in todo}
    try:
        with _environment_kept():  # a worker restarted after a crash passes Dask's variables through this process
            for future in as_completed(futures):
                keep(futures[future], future.result())
                future.release()
    except lost_cluster_errors() as error:
        kept = f"; the finished chunks are kept in {workers.journal}: run it again" if workers.journal else ""
        raise TRCError(f"{workers.source if workers.address else 'workers'}: the Dask cluster "
                       f"{workers.address or '(local)'} failed mid-run ({type(error).__name__}: {error}){kept}") from None
    finally:
        client.cancel(list(futures))


def lost_cluster_errors() -> tuple:
    """What Dask raises when its scheduler or workers go away: a scheduler lost (cancelled
    futures, closed connections), or a chunk whose workers keep dying (KilledWorker)."""
    from distributed import CancelledError
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker
    return CancelledError, asyncio.CancelledError, CommClosedError, KilledWorker


def _key(solve_chunk, chunk) -> str:
    """The name of a chunk's file: a hash of the function, its bound positional arguments, the
    chunk and the library's code, so a journal never hands back the answer of another question
    (nor of another version of the solver)."""
    function, arguments = ((solve_chunk.func, solve_chunk.args) if isinstance(solve_chunk, functools.partial)
                           else (solve_chunk, ()))
    what = (_code_fingerprint(), f"{function.__module__}.{function.__qualname__}", arguments, chunk)
    return hashlib.sha256(pickle.dumps(what, protocol=4)).hexdigest()[:32]


@functools.lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    """SHA-256 of the library's Python and C sources: any edit makes new journal keys."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".c")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _checksum(key: str, output: tuple) -> str:
    """SHA-256 of the chunk's key (its question and the code) and its arrays' shapes, types and bytes."""
    digest = hashlib.sha256(key.encode())
    for array in output:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


ALTERED = "altered"  # _read's answer for a chunk whose checksum does not match what it holds


def _read(journal: Path, key: str):
    """A finished chunk's arrays; None when it is not there or cannot be read, ALTERED when its
    arrays do not match the checksum written with them (both are solved again)."""
    path = Path(journal) / f"{key}.npz"
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            output = tuple(stored[f"a{j}"] for j in range(len(stored.files) - 1))
            checksum = str(stored["checksum"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    return output if checksum == _checksum(key, output) else ALTERED


def _write(journal: Path, key: str, output: tuple) -> None:
    """Temporary file, then rename: a run killed while writing leaves no half chunk behind."""
    journal = Path(journal)
    journal.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=journal, prefix=f".{key}.", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **{f"a{j}": a for j, a in enumerate(output)}, checksum=np.array(_checksum(key, output)))
        os.replace(temporary, journal / f"{key}.npz")
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def clear_journal(journal: Path | None) -> None:
    """Remove a journal once what it was for is saved."""
    if journal is None or not Path(journal).exists():
        return
    for path in Path(journal).iterdir():
        if path.suffix == ".npz":
            path.unlink()
    try:
        Path(journal).rmdir()
    except OSError:  # something else lives there: leave it
        pass


_CLIENTS: dict = {}  # one Dask client per scheduler address (or LocalCluster size) in this process


def _client(address: str, source: str):
    """A client of the scheduler at `address` (given by `source`, for errors), made once per
    process, once it has a worker running this version of the library."""
    if address not in _CLIENTS:
        from distributed import Client

        from ..errors import TRCError
        try:
            client = Client(address, timeout=f"{CONNECT_SECONDS}s")
        except (OSError, TimeoutError, asyncio.TimeoutError) as error:
            raise TRCError(f"{source}: no Dask scheduler answers at {address} ({error}); start one with "
                           f"`dask scheduler` and workers with `dask worker {address}`") from None
        try:
            client.wait_for_workers(1, timeout=CONNECT_SECONDS)
            versions = client.run(_library_version)
        except (OSError, TimeoutError, asyncio.TimeoutError):
            client.close()
            raise TRCError(f"{source}: the Dask scheduler at {address} has no workers; start them with "
                           f"`dask worker {address}`") from None
        except Exception as error:  # noqa: BLE001 - what a worker raised comes back as is
            client.close()
            raise TRCError(f"{source}: a worker of {address} cannot import trc_lib ({type(error).__name__}: "
                           f"{error}); install this repository on every worker (pip install -e .)") from None
        threaded = {worker: n for worker, n in client.nthreads().items() if n > 1}
        if threaded:
            client.close()
            worker, n = next(iter(threaded.items()))
            raise TRCError(f"{source}: {len(threaded)} worker(s) of {address} run several threads ({n} at {worker}); "
                           f"a worker keeps one optimizer, so start them with `dask worker {address} --nthreads 1` "
                           f"(and --nworkers for more processes)")
        wrong = {worker: version for worker, version in versions.items() if version != _library_version()}
        if wrong:
            client.close()
            worker, version = next(iter(wrong.items()))
            raise TRCError(f"{source}: {len(wrong)} worker(s) of {address} run another trc_lib (version {version} "
                           f"at {worker}, {_library_version()} here); install the same version everywhere")
        _CLIENTS[address] = client
    return _CLIENTS[address]


def _library_version() -> str:
    from ..version import __version__
    return __version__


def _local_client(processes: int | None):
    """A client of a local_cluster of `processes` worker processes (default: every core), started
    once per process and reused (starting one takes seconds: each worker imports the library)."""
    processes = processes or os.cpu_count() or 1
    name = f"local:{processes}"
    if name not in _CLIENTS:
        from distributed import Client
        _CLIENTS[name] = Client(local_cluster(processes))
    return _CLIENTS[name]


def local_cluster(processes: int):
    """A Dask LocalCluster of `processes` worker processes with one thread each.

    Started with the settings QUIET (glibc's own memory trimming, fewer interruptions of the
    solves). Dask sets its workers' variables in this process's environment to pass them on;
    they are taken back here once the workers have started.
    """
    import dask
    from distributed import LocalCluster
    with _environment_kept(), dask.config.set(QUIET):
        return LocalCluster(n_workers=processes, threads_per_worker=1, processes=True, dashboard_address=":0",
                            silence_logs=40)


@contextlib.contextmanager
def _environment_kept():
    """This process's environment as it was before, whatever Dask's nannies set in it to pass
    on to the worker processes they start."""
    environment = dict(os.environ)
    try:
        yield
    finally:
        if dict(os.environ) != environment:
            os.environ.clear()
            os.environ.update(environment)


@atexit.register
def close_clusters() -> None:
    """Close this process's Dask clients and the LocalClusters it started (at exit, or to free
    the worker processes sooner, e.g. in a notebook)."""
    for client in _CLIENTS.values():
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
    _CLIENTS.clear()
