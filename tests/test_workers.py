"""Labels on Dask: the same arrays from one process, a local cluster, or a scheduler started with
Dask's own command-line tools; nothing lost when a worker or the whole run is killed mid-way."""

import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

import trc_lib.oracles.labels as labels
import trc_lib.oracles.workers as workers_module
from trc_lib.data import generate_dataset, read_dataset
from trc_lib.interfaces.cli import main
from trc_lib.oracles.workers import Workers, local_cluster, map_chunks
from trc_lib.tasks import make_problem

ARRAYS = ("initial_states", "target_states", "control_sequences", "state_trajectories", "costs",
          "terminal_multipliers")
PROBLEM = make_problem(20, None, None, system="vanderpol")
GENERATE = ["generate", "--system", "vanderpol", "--num_steps", "20", "--num_samples", "40", "--seed", "7",
            "--no_progress"]
TRC = [sys.executable, "-m", "trc_lib.interfaces.cli"]

DASK_CONFIG = Path(__file__).resolve().parent.parent / "docs" / "dask"
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Dask workers cannot import this test file


def _assert_same_dataset(a, b):
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def _dataset(folder):
    return read_dataset(Path(folder) / "lqr_dataset.npz", verify_labels=False)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: GENERATE solved in this process, without Dask."""
    folder = tmp_path_factory.mktemp("one_process")
    assert main([*GENERATE, "--workers", "1", "--output_dir", str(folder)]) == 0
    return _dataset(folder)


def test_two_local_workers_give_the_labels_of_one_process():
    one = generate_dataset(PROBLEM, 24, seed=3, workers=1)
    two = generate_dataset(PROBLEM, 24, seed=3, workers=2)
    _assert_same_dataset(one, two)
    assert one.metadata == two.metadata


def _dies_once(marker, solve_chunk, chunk):
    """solve_chunk(chunk), except that the first process to get here dies on the spot (no clean-up)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return solve_chunk(chunk)
    os._exit(1)


def test_a_worker_killed_mid_run_loses_no_labels(tmp_path):
    x0 = np.random.default_rng(5).uniform(-1.5, 1.5, (12, 2))
    chunks = [(x0[i:i + 2], np.zeros((2, 2)), np.zeros((1, 20, 1))) for i in range(0, 12, 2)]
    solve = functools.partial(labels._solve_chunk, PROBLEM.to_dict())
    expected = [solve(chunk) for chunk in chunks]
    with local_cluster(2) as cluster:
        dying = functools.partial(_dies_once, str(tmp_path / "died"), solve)
        got = map_chunks(dying, chunks, Workers(address=cluster.scheduler_address), progress=False)
        workers_module._CLIENTS.pop(cluster.scheduler_address).close()  # before its scheduler stops
    assert (tmp_path / "died").exists()  # a worker did die, mid-chunk
    for want, have in zip(expected, got):
        for a, b in zip(want, have):
            np.testing.assert_array_equal(a, b)


def test_an_interrupted_run_continues_from_its_finished_chunks(tmp_path, one_process, monkeypatch):
    folder = tmp_path / "run"
    journal = folder / "lqr_dataset.npz.chunks"
    run = subprocess.Popen([*TRC, *GENERATE, "--workers", "2", "--output_dir", str(folder)],
                           start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # kill the run, its scheduler and its workers at once, as soon as a few chunks are on disk
        deadline = time.monotonic() + 120
        while len(_finished(journal)) < 3 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    finished = _finished(journal)
    assert 3 <= len(finished) < 40 and not (folder / "lqr_dataset.npz").exists()
    solved = []
    original = labels._solve_chunk

    @functools.wraps(original)  # the same name: the journal's keys name the function
    def counted(*args, **kwargs):
        solved.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(labels, "_solve_chunk", counted)
    assert main([*GENERATE, "--workers", "1", "--output_dir", str(folder)]) == 0
    assert len(solved) == 40 - len(finished)  # 40 problems, one per chunk: only the unfinished are solved
    _assert_same_dataset(_dataset(folder), one_process)
    assert not journal.exists()  # removed once the dataset is written


def _finished(journal: Path) -> dict:
    """{name: modification time} of the finished chunks (not the temporary files being written)."""
    return {path.name: path.stat().st_mtime_ns for path in journal.glob("*.npz") if not path.name.startswith(".")}


def test_finished_chunks_are_read_not_solved_again(tmp_path):
    x0 = np.random.default_rng(6).uniform(-1.5, 1.5, (4, 2))
    chunks = [(x0[i:i + 1], np.zeros((1, 2)), np.zeros((1, 20, 1))) for i in range(4)]
    solve = functools.partial(labels._solve_chunk, PROBLEM.to_dict())
    journal = Workers(processes=1, journal=tmp_path / "journal")
    first = map_chunks(solve, chunks[:2], journal, progress=False)
    written = _finished(tmp_path / "journal")
    again = map_chunks(solve, chunks, journal, progress=False)
    assert len(written) == 2 and all(_finished(tmp_path / "journal")[name] == t for name, t in written.items())
    for want, have in zip(first, again[:2]):
        for a, b in zip(want, have):
            np.testing.assert_array_equal(a, b)


def test_a_chunk_changed_in_place_is_solved_again_and_named(tmp_path, capsys):
    """A labelling chunk edited in place (values changed, shapes kept) was once taken on a rerun."""
    x0 = np.random.default_rng(6).uniform(-1.5, 1.5, (2, 2))
    chunks = [(x0[i:i + 1], np.zeros((1, 2)), np.zeros((1, 20, 1))) for i in range(2)]
    solve = functools.partial(labels._solve_chunk, PROBLEM.to_dict())
    journal = Workers(processes=1, journal=tmp_path / "journal")
    first = map_chunks(solve, chunks, journal, progress=False)
    path = sorted((tmp_path / "journal").glob("*.npz"))[0]
    with np.load(path) as stored:
        arrays = {k: stored[k] for k in stored.files}
    arrays["a0"] = arrays["a0"] + 1.0  # the controls moved, the shapes kept, the checksum left as it was
    np.savez(path, **arrays)
    capsys.readouterr()
    again = map_chunks(solve, chunks, journal, progress=False)
    said = capsys.readouterr().err
    assert f"1 chunks of {tmp_path / 'journal'} do not match their checksum" in said and path.stem in said
    for want, have in zip(first, again):
        for a, b in zip(want, have):
            np.testing.assert_array_equal(a, b)  # the altered chunk was solved again, not taken


def test_an_explicit_process_count_ignores_trc_cluster(monkeypatch):
    monkeypatch.setenv("TRC_CLUSTER", f"tcp://127.0.0.1:{_free_port()}")  # no scheduler there
    solution, ok = labels.solve_nonlinear(PROBLEM, np.array([[1.0, -0.5]]), np.zeros((1, 2)), workers=1,
                                          progress=False)
    assert ok.all()
    assert Workers.of(None).address == os.environ["TRC_CLUSTER"] and Workers.of(2).address is None


def _always_dies(chunk):
    os._exit(1)


def test_a_cluster_that_fails_mid_run_is_a_one_line_error(tmp_path):
    import dask
    import distributed  # noqa: F401  (its defaults must be in dask's config before the set below records
    # what to restore: else leaving the block drops the whole 'distributed' section for later tests)

    from trc_lib.errors import TRCError
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), local_cluster(1) as cluster:
        workers = Workers(address=cluster.scheduler_address, journal=tmp_path / "journal")
        with pytest.raises(TRCError, match=r"failed mid-run \(KilledWorker.*kept in .*journal: run it again"):
            map_chunks(_always_dies, [(1,), (2,)], workers, progress=False)
        workers_module._CLIENTS.pop(cluster.scheduler_address).close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("dask", path=os.path.dirname(sys.executable)) is None,
                    reason="Dask's command-line tools are not installed")
def test_a_scheduler_and_workers_started_by_the_dask_tools_give_the_same_dataset(tmp_path, one_process):
    dask = os.path.join(os.path.dirname(sys.executable), "dask")
    address = f"tcp://127.0.0.1:{_free_port()}"
    # started as docs/cluster.md says: DASK_CONFIG=docs/dask
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
             "env": {**os.environ, "DASK_CONFIG": str(DASK_CONFIG)}}
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                                  "--no-dashboard"], **quiet)
    workers = subprocess.Popen([dask, "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard"],
                               **quiet)
    try:
        result = subprocess.run([*TRC, *GENERATE, "--cluster", address, "--output_dir", str(tmp_path)],
                                capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stderr
        assert f"Dask cluster at {address}" in result.stdout
    finally:
        for process in (workers, scheduler):
            process.terminate()
            process.wait(timeout=30)
    _assert_same_dataset(_dataset(tmp_path), one_process)


def test_the_dask_tools_configuration_is_the_local_clusters():
    """docs/dask/labels.yaml (for `dask scheduler` and `dask worker`) holds QUIET, nothing else."""
    import yaml

    def flat(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value
    assert dict(flat(yaml.safe_load((DASK_CONFIG / "labels.yaml").read_text()))) == workers_module.QUIET


def test_no_scheduler_at_the_address_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("trc_lib.oracles.workers.CONNECT_SECONDS", 1)
    address = f"tcp://127.0.0.1:{_free_port()}"
    assert main([*GENERATE, "--cluster", address, "--output_dir", str(tmp_path / "out")]) != 0
    error = capsys.readouterr().err.strip()
    assert error.startswith("trc generate: error: --cluster: no Dask scheduler answers at") and "\n" not in error
    assert not (tmp_path / "out").exists()


def test_a_scheduler_without_workers_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    from distributed import LocalCluster
    monkeypatch.setattr("trc_lib.oracles.workers.CONNECT_SECONDS", 1)
    with LocalCluster(n_workers=0, dashboard_address=":0", silence_logs=50) as cluster:
        monkeypatch.setenv("TRC_CLUSTER", cluster.scheduler_address)
        assert main([*GENERATE, "--output_dir", str(tmp_path / "out")]) != 0
    error = capsys.readouterr().err.strip()
    assert error == (f"trc generate: error: $TRC_CLUSTER: the Dask scheduler at {cluster.scheduler_address} has "
                     f"no workers; start them with `dask worker {cluster.scheduler_address}`")
    assert not (tmp_path / "out").exists()


def test_ablation_variants_trained_on_dask_workers_match_those_trained_here(tmp_path):
    import torch

    from trc_lib.data import save_dataset
    from trc_lib.studies.ablation import _slug, train_variants
    problem = make_problem(15, None, None, system="double_integrator")
    path = save_dataset(generate_dataset(problem, 128, seed=1), tmp_path / "data" / "lqr_dataset.npz")
    names = ["MLP (no recursion)", "TRC, 1 step"]
    here = train_variants(path, tmp_path / "here", names, epochs=2, log=lambda *_: None)
    there = train_variants(path, tmp_path / "there", names, epochs=2, log=lambda *_: None, workers=Workers(processes=2))
    for name in names:
        assert (tmp_path / "there" / _slug(name) / "best_model.pt").exists()  # written by a worker
        for a, b in zip(here[name].state_dict().values(), there[name].state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # one thread there, two here
