"""Inputs that are not regular files, or too large, are refused before they are read; outputs that
exist and are not regular files are refused, never replaced (issue: hostile inputs)."""

import os

import numpy as np
import pytest

from trc_lib.errors import TRCError
from trc_lib.files import INPUT_LIMITS, atomic_path, check_input
from trc_lib.interfaces.cli import main


def test_a_fifo_or_a_device_is_never_read(tmp_path, capsys):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    for command in (["evaluate", "--checkpoint", str(fifo), "--test_data", str(fifo)],
                    ["prompts", "--test_data", str(fifo), "--output", str(tmp_path / "p.jsonl")],
                    ["prompts", "--test_data", "/dev/zero", "--output", str(tmp_path / "p.jsonl")]):
        assert main(command) == 2  # returns at once: a FIFO opened for reading would block here
        error = capsys.readouterr().err.strip()
        assert "not a regular file" in error and len(error.splitlines()) == 1


def test_a_template_that_is_a_device_or_too_large_is_refused(tmp_path, monkeypatch):
    from trc_lib.llm import read_template
    with pytest.raises(TRCError, match="/dev/zero: not a regular file"):
        read_template("/dev/zero")
    big = tmp_path / "big.txt"
    big.write_text("x" * 100)
    monkeypatch.setitem(INPUT_LIMITS, "template", 10)
    with pytest.raises(TRCError, match="100 bytes, more than a template may have"):
        read_template(big)
    assert check_input(tmp_path / "big.txt", "answers file") == big


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_an_output_that_is_not_a_regular_file_is_refused_not_replaced(tmp_path, kind):
    target = tmp_path / "kept.txt"
    target.write_text("someone else's")
    output = tmp_path / "out.json"
    if kind == "symlink":
        output.symlink_to(target)
    else:
        os.mkfifo(output)
    with pytest.raises(OSError, match="not a regular file"):
        with atomic_path(output) as tmp:
            tmp.write_text("{}")
    assert target.read_text() == "someone else's"
    assert output.is_symlink() if kind == "symlink" else not output.is_file()


def test_the_cli_refuses_such_an_output_before_any_work(tmp_path, capsys):
    output = tmp_path / "eval.json"
    output.symlink_to("/dev/null")
    data = tmp_path / "data"
    assert main(["generate", "--num_samples", "20", "--output_dir", str(data), "--no_progress"]) == 0
    capsys.readouterr()
    assert main(["compare", "--test_data", str(data), "--train_data", str(data), "--output", str(output)]) == 2
    error = capsys.readouterr().err.strip()
    assert "not a regular file" in error and str(output) in error and len(error.splitlines()) == 1
    assert output.is_symlink()
    np.testing.assert_equal(os.readlink(output), "/dev/null")


def test_a_second_command_writing_into_the_same_folder_is_refused_naming_the_first(tmp_path, capsys):
    import subprocess
    import sys
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".trc.lock").write_text(f"{holder.pid} trc train\n")
        assert main(["generate", "--num_samples", "5", "--output_dir", str(out), "--no_progress"]) == 2
        error = capsys.readouterr().err.strip()
        assert f"trc train (process {holder.pid}) is writing here" in error and len(error.splitlines()) == 1
        assert sorted(p.name for p in out.iterdir()) == [".trc.lock"]  # nothing written, the holder's lock kept
    finally:
        holder.kill()
        holder.wait()
    # its process gone, the lock is stale: taken over, and removed when the command ends
    assert main(["generate", "--num_samples", "5", "--output_dir", str(out), "--no_progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["lqr_dataset.npz"]


def test_a_command_refused_before_any_work_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "new"
    assert main(["train", "--data", str(tmp_path / "missing"), "--output_dir", str(out)]) == 2
    assert not out.exists()


def test_a_checkpoint_from_a_newer_version_is_refused_naming_both_versions(tmp_path):
    import torch

    from trc_lib import __version__, load_model
    from trc_lib.checkpoint import FORMAT_VERSION
    newer = tmp_path / "newer.pt"
    torch.save({"format": "trc-checkpoint", "format_version": FORMAT_VERSION + 1, "trc_lib_version": "9.0.0",
                "config": {}, "model_state": {}}, newer)
    with pytest.raises(TRCError, match=f"format {FORMAT_VERSION + 1} \\(written by trc_lib 9.0.0\\), this is "
                                       f"trc_lib {__version__}, which reads format {FORMAT_VERSION}"):
        load_model(newer)


def test_a_disk_that_fills_during_a_write_leaves_the_old_file_and_says_so_in_one_line(tmp_path):
    """A write that runs out of room (here the file-size limit RLIMIT_FSIZE, which fails a write
    as a full disk does, with SIGXFSZ ignored) stops `trc generate` with one line naming the
    output; the dataset already there is unchanged and no temporary file is left behind."""
    import resource
    import signal
    import subprocess
    import sys
    from pathlib import Path

    folder = tmp_path / "data"
    assert main(["generate", "--num_samples", "20", "--output_dir", str(folder), "--seed", "1"]) == 0
    dataset = folder / "lqr_dataset.npz"
    before = dataset.read_bytes()

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))  # bytes per file

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("TRC_DEBUG", None)
    result = subprocess.run([sys.executable, "-m", "trc_lib.interfaces.cli", "generate", "--num_samples", "500",
                             "--output_dir", str(folder), "--seed", "2"],
                            capture_output=True, text=True, env=env, timeout=300, preexec_fn=small_disk)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("trc generate: error:") and str(folder) in lines[0], lines[0]
    assert dataset.read_bytes() == before
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
