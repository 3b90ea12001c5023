"""`trc train` under torchrun: two gloo processes train like one process with the same batch_size.

The dataset has 357 problems: 36 validate, 321 train, so with batch_size 32 the last global batch
has one row: rank 0 takes it with weight 2 (ranks.share_weight) and rank 1 steps on an empty
share. Measured on a 2-core CPU (torch 2.13): the two runs' weights differ by at most 3e-8 and
their losses by about 1e-7 relative (summation order: the ranks' gradients are added by
DistributedDataParallel, the validation sums by an all-reduce); dropping the weight of that last
batch changes the weights by 2e-3 and the losses by 2e-2, so the tolerances below catch it.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from trc_lib.interfaces import workflow

WEIGHT_ATOL = 1e-6   # measured 3e-8
LOSS_RTOL = 1e-5     # measured 1e-7
OPTIONS = {"model_size": "small", "latent_dim": 16, "epochs": 2, "batch_size": 32, "patience": 0,
           "device": "cpu"}
REPOSITORY = Path(__file__).resolve().parents[1]


def torchrun(*args, cwd) -> subprocess.CompletedProcess:
    """Two gloo processes on this machine, one thread each."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR",
                                                           "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPOSITORY), env.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def trc_train(data, output_dir, *extra, cwd):
    flags = [f"--{k}={v}" for k, v in OPTIONS.items()]
    return torchrun("-m", "trc_lib.interfaces.cli", "train", "--data", data, "--output_dir", output_dir, *flags,
                    "--no_progress", *extra, cwd=cwd)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same training as one process, and as two processes under torchrun (the `trc train` command)."""
    root = tmp_path_factory.mktemp("torchrun")
    workflow.generate(root / "data", num_samples=357, seed=7, log=lambda *_: None)
    data = root / "data" / "lqr_dataset.npz"
    workflow.train_model(data, output_dir=root / "single", progress=False, log=lambda *_: None, **OPTIONS)
    done = trc_train(data, root / "two", cwd=root)
    return {"root": root, "data": data, "single": root / "single", "two": root / "two", "output": done.stdout}


def states(folder):
    last = torch.load(folder / "last_model.pt", weights_only=True)
    best = torch.load(folder / "best_model.pt", weights_only=True)
    return {"best": best["model_state"], "last": last["model_state"],
            "raw": last["training_state"]["raw_model_state"]}


def losses(folder):
    history = json.loads((folder / "training_stats.json").read_text())["history"]
    return torch.tensor([[h["train_loss"], h["val_loss"], h["val_terminal_error"]] for h in history],
                        dtype=torch.float64)


def assert_same_training(a, b, atol=WEIGHT_ATOL, rtol=LOSS_RTOL):
    for kind, (x, y) in {k: (states(a)[k], states(b)[k]) for k in ("best", "last", "raw")}.items():
        assert x.keys() == y.keys()
        for name in x:
            torch.testing.assert_close(x[name], y[name], rtol=0, atol=atol, msg=f"{kind} {name}")
    torch.testing.assert_close(losses(a), losses(b), rtol=rtol, atol=0)


def test_two_processes_train_like_one_with_the_same_batch_size(runs):
    assert losses(runs["two"]).shape == (2, 3)
    assert_same_training(runs["two"], runs["single"])


def test_only_rank_0_logs_and_writes_the_files(runs):
    assert sorted(p.name for p in runs["two"].iterdir()) == ["best_model.pt", "last_model.pt",
                                                             "training_curves.png", "training_stats.json"]
    stats = json.loads((runs["two"] / "training_stats.json").read_text())
    assert stats["status"] == "finished" and stats["epoch"] == 2
    assert stats["run"]["world_size"] == 2 and stats["run"]["batch_size"] == 32
    assert "world_size" not in json.loads((runs["single"] / "training_stats.json").read_text())["run"]
    assert runs["output"].count("training on 2 processes (torchrun)") == 1
    assert runs["output"].count("best validation loss") == 1


def test_resume_under_torchrun_continues_the_run(runs, tmp_path):
    """Interrupted in its second epoch (as Ctrl-C would), then `trc train --resume`: the same run as
    two epochs straight. The interrupted run records which rank wrote which file."""
    script = tmp_path / "interrupted.py"
    script.write_text(textwrap.dedent(f"""
        import os
        from pathlib import Path
        import trc_lib.training as training

        writes = Path({str(tmp_path)!r}) / f"writes_of_rank_{{os.environ['RANK']}}.txt"

        def recorded(write):
            def record(path, *args, **kwargs):
                with open(writes, "a") as fh:
                    fh.write(Path(path).name + "\\n")
                return write(path, *args, **kwargs)
            return record

        training.write_json, training.save_checkpoint = map(recorded, (training.write_json, training.save_checkpoint))
        epoch, calls = training._train_epoch, []

        def interrupted_in_second_epoch(*args):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return epoch(*args)

        training._train_epoch = interrupted_in_second_epoch
        try:
            training.train_model({str(runs["data"])!r}, output_dir={str(tmp_path / "resumed")!r}, progress=False,
                                 **{OPTIONS!r})
        except KeyboardInterrupt:  # every rank stops here (ranks.end closes the group together at exit)
            pass
    """))
    torchrun(script, cwd=tmp_path)
    assert not (tmp_path / "writes_of_rank_1.txt").exists()
    assert (tmp_path / "writes_of_rank_0.txt").read_text().split() == [
        "best_model.pt", "last_model.pt", "training_stats.json", "training_stats.json"]
    stats = json.loads((tmp_path / "resumed" / "training_stats.json").read_text())
    assert stats["status"] == "interrupted" and stats["epoch"] == 1
    done = trc_train(runs["data"], tmp_path / "resumed", "--resume", cwd=tmp_path)
    assert done.stdout.count("resuming after epoch 1") == 1
    assert json.loads((tmp_path / "resumed" / "training_stats.json").read_text())["status"] == "finished"
    # exactly: the same two-process arithmetic, from the same saved state (weights, optimizer, EMA, shuffling)
    assert_same_training(tmp_path / "resumed", runs["two"], atol=0, rtol=0)
