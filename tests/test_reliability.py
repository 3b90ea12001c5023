"""Interruptions and unwritable outputs: a clear line, a non-zero exit, nothing left half-written."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from trc_lib.cli import main
from trc_lib.files import remove_stale_temporaries, write_json


def dead_pid() -> int:
    """A process id that no process has now."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    stale = tmp_path / f".last_model.pt.{dead_pid()}.abcd1234.tmp"
    stale.write_bytes(b"half a checkpoint")
    running = tmp_path / f".best_model.pt.{os.getppid()}.efgh5678.tmp"  # its writer is alive
    running.write_bytes(b"being written")
    unrelated = tmp_path / ".notes.tmp"
    unrelated.write_text("not ours")
    write_json(tmp_path / "training_stats.json", {"status": "running"})
    assert not stale.exists() and running.exists() and unrelated.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, unrelated.name, "training_stats.json"])
    assert remove_stale_temporaries(tmp_path) == []


def test_finetune_refuses_a_file_as_its_output_folder_before_any_work(capsys, tmp_path, test_path):
    target = tmp_path / "f"
    target.write_text("x")
    # the checkpoint does not exist either: the output folder is checked first, before loading anything
    status = main(["finetune", "--checkpoint", str(tmp_path / "missing.pt"), "--data", str(test_path),
                   "--epochs", "50", "--output_dir", str(target), "--no_progress"])
    err = capsys.readouterr().err
    assert status == 2 and "output_dir: is a file, not a folder" in err and str(target) in err
    assert "Traceback" not in err and target.read_text() == "x"


def test_train_refuses_a_file_as_its_output_folder_in_the_same_words(capsys, tmp_path, train_path):
    target = tmp_path / "t"
    target.write_text("x")
    assert main(["train", "--data", str(train_path), "--output_dir", str(target), "--epochs", "1",
                 "--no_progress"]) == 2
    assert "output_dir: is a file, not a folder" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_train_refuses_a_read_only_folder_before_training(capsys, tmp_path, train_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert main(["train", "--data", str(train_path), "--output_dir", str(folder), "--epochs", "1",
                     "--no_progress"]) == 2
        assert "output_dir: permission denied" in capsys.readouterr().err
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_sigterm_stops_training_like_ctrl_c(tmp_path, train_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "trc_lib.cli", "train", "--data", str(train_path),
                                "--output_dir", str(out), "--model_size", "small", "--latent_dim", "16",
                                "--epochs", "100000", "--patience", "0", "--no_progress"],
                               stderr=subprocess.PIPE, text=True, env=env)
    stats = out / "training_stats.json"
    deadline = time.time() + 120
    while not stats.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert stats.exists(), "no epoch finished"
    process.send_signal(signal.SIGTERM)
    err = process.communicate(timeout=60)[1]
    assert process.returncode == 143, err
    assert "trc train: terminated (SIGTERM) (continue with --resume)" in err and "Traceback" not in err
    assert json.loads(stats.read_text())["status"] == "interrupted"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("parameters, message", [
    ({"epochs": 0}, "parameter epochs: must be a positive integer, got 0"),
    ({"epochs": -3}, "parameter epochs: must be a positive integer, got -3"),
    ({"epochs": "abc"}, "parameter epochs: must be int, got 'abc'"),
    ({"model_size": "huge"}, "parameter model_size: must be one of small, medium, large, got 'huge'"),
    ({"no_such_param": 1}, "unknown parameter no_such_param; this notebook's parameters are data_dir, output_dir"),
])
def test_bad_notebook_parameters_stop_it_in_one_line_before_any_work(tmp_path, monkeypatch, parameters, message):
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from trc_lib.pipeline import NOTEBOOKS_DIR
    monkeypatch.setenv("TRC_WORKSPACE", str(tmp_path))
    with pytest.raises(PapermillExecutionError) as failure:
        papermill.execute_notebook(str(NOTEBOOKS_DIR / "02_train.ipynb"), str(tmp_path / "executed.ipynb"),
                                   parameters=parameters, kernel_name="python3", progress_bar=False,
                                   cwd=str(NOTEBOOKS_DIR))
    assert message in failure.value.evalue
    assert failure.value.traceback == [f"TRCError: {failure.value.evalue}"]  # one line, no frames
    assert not (tmp_path / "data").exists()  # nothing generated, nothing trained
