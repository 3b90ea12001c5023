"""Interruptions and unwritable outputs: a clear line, a non-zero exit, nothing left half-written."""

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trc_lib.interfaces.cli import main
from trc_lib.files import remove_stale_temporaries, write_json

REPO = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    """A process id that no process has now."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    stale = tmp_path / f".last_model.pt.trc-{dead_pid()}.abcd1234.tmp"
    stale.write_bytes(b"half a checkpoint")
    running = tmp_path / f".best_model.pt.trc-{os.getppid()}.efgh5678.tmp"  # its writer is alive
    running.write_bytes(b"being written")
    unrelated = tmp_path / ".notes.tmp"
    theirs = tmp_path / f".draft.{dead_pid()}.abcd1234.tmp"  # another program's, of the same shape
    theirs.write_text("not ours")
    unrelated.write_text("not ours")
    write_json(tmp_path / "training_stats.json", {"status": "running"})
    assert not stale.exists() and running.exists() and unrelated.exists() and theirs.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, unrelated.name, theirs.name,
                                                                 "training_stats.json"])
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
    process = subprocess.Popen([sys.executable, "-m", "trc_lib.interfaces.cli", "train", "--data", str(train_path),
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

    from trc_lib.interfaces.pipeline import NOTEBOOKS_DIR
    monkeypatch.setenv("TRC_WORKSPACE", str(tmp_path))
    with pytest.raises(PapermillExecutionError) as failure:
        papermill.execute_notebook(str(NOTEBOOKS_DIR / "02_train.ipynb"), str(tmp_path / "executed.ipynb"),
                                   parameters=parameters, kernel_name="python3", progress_bar=False,
                                   cwd=str(NOTEBOOKS_DIR))
    assert message in failure.value.evalue
    assert failure.value.traceback == [f"TRCError: {failure.value.evalue}"]  # one line, no frames
    assert not (tmp_path / "data").exists()  # nothing generated, nothing trained


def _train_command(data, out, *extra):
    return [sys.executable, "-m", "trc_lib.interfaces.cli", "train", "--data", str(data), "--output_dir", str(out),
            "--model_size", "small", "--latent_dim", "16", "--epochs", "5", "--patience", "0", "--seed", "3",
            "--no_progress", *extra]


def test_sigkill_at_random_times_then_resume_finishes_as_if_never_killed(tmp_path, train_path):
    """SIGKILL (no handler runs) at seeded random moments after the first epoch, then --resume:
    no temporary file is left and the result equals an uninterrupted run's."""
    import random

    import torch
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_train_command(train_path, straight), check=True, capture_output=True)
    delays = random.Random(0)
    for attempt in range(2):
        process = subprocess.Popen(_train_command(train_path, killed, *(["--resume"] if attempt else [])),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while not (killed / "last_model.pt").exists() and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        time.sleep(delays.uniform(0.0, 0.5))  # somewhere inside a later epoch, or inside a write
        process.kill()
        process.wait()
    subprocess.run(_train_command(train_path, killed, "--resume"), check=True, capture_output=True)
    assert not [p.name for p in killed.iterdir() if p.name.endswith(".tmp")]
    for name in ("best_model.pt", "last_model.pt"):
        a = torch.load(straight / name, weights_only=True)["model_state"]
        b = torch.load(killed / name, weights_only=True)["model_state"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    history = [json.loads((run / "training_stats.json").read_text())["history"] for run in (straight, killed)]
    strip = [[{k: v for k, v in epoch.items() if k != "seconds"} for epoch in h] for h in history]
    assert strip[0] == strip[1] and len(strip[0]) == 5


def test_library_train_refuses_zero_epochs_and_never_writes_infinity(tmp_path, train_path):
    from trc_lib import create_data_loaders, load_dataset, train
    from trc_lib.errors import TRCError
    from trc_lib.model import TinyRecursiveControl
    train_set, val_set = load_dataset(train_path)
    model = TinyRecursiveControl.create("small", problem=train_set.problem, latent_dim=16)
    with pytest.raises(TRCError, match="epochs must be a positive integer, got 0"):
        train(model, *create_data_loaders(train_set, val_set), epochs=0, output_dir=tmp_path / "e0", progress=False)
    assert not (tmp_path / "e0").exists()
    write_json(tmp_path / "s.json", {"best_val_loss": float("inf"), "history": [{"loss": float("nan")}]})
    assert json.loads((tmp_path / "s.json").read_text(), parse_constant=lambda c: pytest.fail(c)) == \
        {"best_val_loss": None, "history": [{"loss": None}]}


def test_resume_with_nothing_to_resume_leaves_no_folder(capsys, tmp_path, train_path):
    out = tmp_path / "nothing"
    assert main(["train", "--data", str(train_path), "--output_dir", str(out), "--resume", "--epochs", "1",
                 "--no_progress"]) == 2
    assert "nothing to resume" in capsys.readouterr().err and not out.exists()


def test_training_again_into_the_same_folder_says_it_replaces_the_earlier_run(capsys, tmp_path, train_path):
    arguments = ["train", "--data", str(train_path), "--output_dir", str(tmp_path / "r"), "--model_size", "small",
                 "--latent_dim", "16", "--epochs", "1", "--no_progress"]
    assert main(arguments) == 0
    assert "replacing" not in capsys.readouterr().out
    assert main(arguments) == 0
    assert f"replacing the earlier run in {tmp_path / 'r'}" in capsys.readouterr().out


def test_a_dataset_larger_than_memory_is_refused_naming_the_option(capsys, tmp_path):
    assert main(["generate", "--num_samples", str(10**12), "--output_dir", str(tmp_path / "d"), "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert "num_samples: 1000000000000 problems need about" in err and "GiB of memory" in err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("contents, message", [
    ({"control_sequences": "OPTIMAL", "initial_states": [["a", "b"]]}, "'initial_states' must hold numbers only"),
    ({"control_sequences": [["1.5"]]}, "'control_sequences' must hold numbers only (found str '1.5')"),
    ({"control_sequences": [[True]]}, "'control_sequences' must hold numbers only (found bool True)"),
    ({"control_sequences": [[1.0], [True, 2.0]]}, "'control_sequences' must hold numbers only (found bool True)"),
    ({"control_sequences": [[1.0], [1.0, 2.0]]}, "'control_sequences' is ragged"),
])
def test_external_controls_must_be_numbers(tmp_path, test_set, contents, message):
    from trc_lib.baselines import read_external_controls
    from trc_lib.errors import TRCError
    if contents["control_sequences"] == "OPTIMAL":  # right controls, states given as text
        contents = {**contents, "control_sequences": test_set.control_sequences.tolist()}
    path = tmp_path / "answers.json"
    path.write_text(json.dumps(contents))
    with pytest.raises(TRCError) as failure:
        read_external_controls(path, test_set)
    assert message in str(failure.value) and str(path) in str(failure.value)


@pytest.mark.parametrize("value, message", [
    ([2, -2], "parameter state_range: must have LOW < HIGH, got [2, -2]"),
    (["a", "b"], "parameter state_range: must hold two finite numbers"),
    ([1, 2, 3], "parameter state_range: must be [] or [LOW, HIGH]"),
])
def test_notebook_01s_state_range_is_checked_as_the_cli_checks_it(value, message):
    """It once accepted an inverted or non-numeric range under papermill."""
    from trc_lib.errors import TRCError
    from trc_lib.interfaces.parameters import check
    with pytest.raises(TRCError, match=re.escape(message)):
        check("state_range", value)
    assert check("state_range", []) == [] and check("state_range", [-5, 5]) == [-5, 5]


def test_a_box_where_ipopt_fails_everywhere_gives_only_the_one_line(tmp_path):
    """Van der Pol from states up to 1e6 (an exponent argparse once took for an option): every
    IPOPT solve fails and its controls blow up in the rollout. The command still prints one line:
    no numpy RuntimeWarning, no CasADi warning ahead of it (the stderr of the whole process)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TRC_DEBUG", None)
    result = subprocess.run([sys.executable, "-m", "trc_lib.interfaces.cli", "generate", "--system", "vanderpol",
                             "--num_samples", "10", "--state_range", "-1e6", "1e6", "--output_dir",
                             str(tmp_path / "data")], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip() and "%|" not in line]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("trc generate: error: almost no target") and "1000000.0" in lines[0]
    assert not (tmp_path / "data" / "lqr_dataset.npz").exists()


@pytest.mark.parametrize("value", ["-1e3", "-2.5E+2", "-.5e1"])
def test_a_negative_number_with_an_exponent_is_a_value_not_an_option(value):
    from trc_lib.interfaces.cli import build_parser
    args = build_parser().parse_args(["generate", "--state_range", value, "1e3"])
    assert args.state_range[0] == float(value)
