"""Where the oracle's independent solves run: in this process, on a local Dask cluster, or on a
Dask scheduler at an address, with finished chunks kept on disk.

Labels are many problems that do not depend on each other (one IPOPT or cone-program solve
each), so the work is a list of chunks and a function that solves one chunk:

    map_chunks(solve_chunk, chunks, Workers(...))  ->  [solve_chunk(chunk) for chunk in chunks]

The answer does not depend on where a chunk ran: each problem is solved on its own, in float64,
by the same code. What `Workers` decides:

    processes  one process (this one, no Dask) or a LocalCluster of that many worker processes
               with one thread each (default: one per core)
    address    a running scheduler (`dask scheduler`, then `dask worker ADDRESS` on each machine)
               instead of a LocalCluster; the environment variable TRC_CLUSTER sets it too
    journal    a folder where each finished chunk is written (atomically) as it arrives: a run
               that is interrupted, or run again, loads those instead of solving them

A worker keeps what it builds (an NLP, its compiled C) in its process between chunks, so each
worker builds it once. A worker lost mid-run loses nothing: the scheduler runs its chunk again
elsewhere, and the chunks already finished are in the journal.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

CLUSTER_VARIABLE = "TRC_CLUSTER"  # the scheduler's address, when no address is given
CONNECT_SECONDS = 10  # how long to wait for a scheduler's answer
MIN_CHUNKS = 64  # small batches are cut this fine, so that up to this many workers share them


def problems_per_chunk(num_problems: int, largest: int) -> int:
    """Problems per chunk: `largest`, or fewer so there are at least MIN_CHUNKS chunks. It depends
    on the number of problems only (never on the workers), so a journal serves any cluster."""
    return max(1, min(largest, -(-num_problems // MIN_CHUNKS)))


@dataclass(frozen=True)
class Workers:
    """Where the solves run (module docstring). processes: worker processes of a LocalCluster
    (default: every core; 1: this process, without Dask); address: a Dask scheduler, such as
    tcp://10.0.0.5:8786 (default: $TRC_CLUSTER, else a LocalCluster); journal: the folder of
    finished chunks (default: none)."""

    processes: int | None = None
    address: str | None = None
    journal: Path | None = None

    @classmethod
    def of(cls, workers) -> "Workers":
        """A Workers from what callers pass as `workers`: None (every core), a number of
        processes, or a Workers."""
        if isinstance(workers, Workers):
            return workers
        if workers is not None and (int(workers) != workers or workers < 1):
            raise ValueError(f"workers must be a positive number of processes, got {workers}")
        return cls(processes=workers)

    @property
    def scheduler(self) -> str | None:
        """The scheduler's address, from the option or the environment; None: a LocalCluster."""
        return self.address or os.environ.get(CLUSTER_VARIABLE) or None

    def client(self):
        """The Dask client of the scheduler, or of this process's LocalCluster."""
        if self.scheduler:
            return _client(self.scheduler, "cluster" if self.address else f"${CLUSTER_VARIABLE}")
        return _local_client(self.processes)

    def count(self) -> int:
        """How many chunks can run at once: the cluster's threads, or the processes asked for."""
        if self.scheduler:
            return max(1, sum(self.client().nthreads().values()))
        return self.processes or os.cpu_count() or 1


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
    todo = [i for i, output in enumerate(outputs) if output is None]
    found = len(chunks) - len(todo)
    local = not workers.scheduler and (min(workers.processes or os.cpu_count() or 1, len(todo)) <= 1)
    where = ("this process" if local else f"Dask at {workers.scheduler}" if workers.scheduler
             else f"{workers.processes or os.cpu_count()} Dask worker processes")
    bar = tqdm(total=sum(sizes), initial=sum(sizes) - sum(sizes[i] for i in todo),
               desc=f"{desc} ({where})" if desc else where, disable=not progress, unit="problem")
    if found and progress:
        bar.write(f"{found} of {len(chunks)} chunks already solved in {workers.journal}")

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
            from distributed import as_completed
            client = workers.client()
            # pure=False: a chunk lost with its worker is run again, never taken from a cache of results
            futures = {client.submit(solve_chunk, chunks[i], pure=False): i for i in todo}
            for future in as_completed(futures):
                keep(futures[future], future.result())
                future.release()
    finally:
        bar.close()
    return outputs


def _key(solve_chunk, chunk) -> str:
    """The name of a chunk's file: a hash of the function, its bound positional arguments, the
    chunk and the library's version, so a journal never hands back the answer of another question."""
    from ..version import __version__
    function, arguments = ((solve_chunk.func, solve_chunk.args) if isinstance(solve_chunk, functools.partial)
                           else (solve_chunk, ()))
    what = (__version__, f"{function.__module__}.{function.__qualname__}", arguments, chunk)
    return hashlib.sha256(pickle.dumps(what, protocol=4)).hexdigest()[:32]


def _read(journal: Path, key: str):
    """A finished chunk's arrays, or None when it is not there (or cannot be read: solved again)."""
    path = Path(journal) / f"{key}.npz"
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            return tuple(stored[f"a{j}"] for j in range(len(stored.files)))
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def _write(journal: Path, key: str, output: tuple) -> None:
    """Temporary file, then rename: a run killed while writing leaves no half chunk behind."""
    journal = Path(journal)
    journal.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=journal, prefix=f".{key}.", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **{f"a{j}": a for j, a in enumerate(output)})
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
        except (OSError, TimeoutError) as error:
            raise TRCError(f"{source}: no Dask scheduler answers at {address} ({error}); start one with "
                           f"`dask scheduler` and workers with `dask worker {address}`") from None
        try:
            client.wait_for_workers(1, timeout=CONNECT_SECONDS)
            versions = client.run(_library_version)
        except (OSError, TimeoutError):
            client.close()
            raise TRCError(f"{source}: the Dask scheduler at {address} has no workers; start them with "
                           f"`dask worker {address}`") from None
        except Exception as error:  # noqa: BLE001 - what a worker raised comes back as is
            client.close()
            raise TRCError(f"{source}: a worker of {address} cannot import trc_lib ({type(error).__name__}: "
                           f"{error}); install this repository on every worker (pip install -e .)") from None
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

    Its workers keep glibc's own memory trimming: Dask sets MALLOC_TRIM_THRESHOLD_ in them, which
    makes IPOPT markedly slower (benchmarks/label_workers.py measures it). Dask sets its workers'
    variables in this process's environment to pass them on; they are taken back here once the
    workers have started.
    """
    import dask
    from distributed import LocalCluster
    environment = dict(os.environ)
    try:
        # no statistical profiler either: it samples every worker thread 100 times a second, for a
        # dashboard that is not running
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                              "distributed.worker.profile.enabled": False}):
            return LocalCluster(n_workers=processes, threads_per_worker=1, processes=True, dashboard_address=":0",
                                silence_logs=40)
    finally:
        os.environ.clear()
        os.environ.update(environment)


@atexit.register
def _close_clients() -> None:
    for client in _CLIENTS.values():
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
    _CLIENTS.clear()
