"""The `trc` command line: documented options, files where the guide puts them, and bad input
answered with exit status 2 and one line naming the file or option (never a traceback)."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trc_lib.interfaces.cli import build_parser, main
from trc_lib.data import DATASET_FILENAME, read_dataset

REPO = Path(__file__).resolve().parents[1]


def subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def fails_with(capsys, argv, *fragments):
    """main(argv) exits 2 (returned or raised by argparse) and stderr holds every fragment."""
    try:
        status = main(argv)
    except SystemExit as e:
        status = e.code
    err = capsys.readouterr().err
    assert status == 2, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


# ---------------------------------------------------------------------------------------------
# help
# ---------------------------------------------------------------------------------------------

def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    names = list(subcommands())
    assert names == ["check", "generate", "train", "evaluate", "compare", "prompts", "finetune", "export", "pipeline", "info"]
    for name in names:
        assert f"    {name}" in out


@pytest.mark.parametrize("command", list(subcommands()))
def test_subcommand_help_mentions_every_option(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    actions = subcommands()[command]._actions
    assert len(actions) >= 3 or command == "info"  # --help plus at least two options (info has none)
    for action in actions:
        assert action.help and action.help != argparse.SUPPRESS, action.dest
        for option in action.option_strings:
            assert option in out, option
        if not action.option_strings:  # positionals are listed by name, or by their choices
            shown = action.metavar or ("{" + ",".join(action.choices) + "}" if action.choices else action.dest)
            assert shown in out, shown


def test_no_command_is_an_error(capsys):
    fails_with(capsys, [], "required")


# ---------------------------------------------------------------------------------------------
# the guide's steps
# ---------------------------------------------------------------------------------------------

def test_generate_writes_the_dataset_where_the_guide_says(capsys, tmp_path):
    out_dir = tmp_path / "lqr_train"
    status = main(["generate", "--num_samples", "40", "--output_dir", str(out_dir), "--num_steps", "12",
                   "--time_horizon", "4.0", "--seed", "7"])
    assert status == 0
    path = out_dir / DATASET_FILENAME
    assert str(path) in capsys.readouterr().out
    dataset = read_dataset(path)
    assert len(dataset) == 40
    assert dataset.control_sequences.shape == (40, 12, 1)
    assert dataset.metadata["seed"] == 7
    assert dataset.metadata["problem"]["dt"] == 4.0 / 12
    assert os.listdir(out_dir) == [DATASET_FILENAME]


def test_generate_passes_problem_options_through(capsys, tmp_path):
    status = main(["generate", "--num_samples", "20", "--output_dir", str(tmp_path), "--controller", "lqr",
                   "--control_bound", "3", "--lqr_Q", "2", "0.5", "--lqr_R", "0.2", "--lqr_Qf", "10", "20",
                   "--state_range", "-1", "1", "--target_range", "0", "0.5"])
    assert status == 0, capsys.readouterr().err
    meta = read_dataset(tmp_path).metadata
    objective = meta["problem"]["objective"]
    assert objective["name"] == "lqr" and objective["terminal_constraint"] is False
    assert objective["Q"] == [[2.0, 0.0], [0.0, 0.5]]
    assert objective["R"] == [[0.2]]
    assert objective["Q_f"] == [[10.0, 0.0], [0.0, 20.0]]
    assert meta["problem"]["control_bounds"] == [[-3.0, 3.0]]
    assert meta["initial_box"] == [[-1.0, 1.0]] * 2 and meta["target_box"] == [[0.0, 0.5]] * 2


def test_evaluate_writes_json_results(capsys, tmp_path, trained_dir, test_path):
    output = tmp_path / "results" / "eval.json"
    status = main(["evaluate", "--checkpoint", str(trained_dir / "best_model.pt"), "--test_data", str(test_path),
                   "--output", str(output)])
    assert status == 0, capsys.readouterr().err
    result = json.loads(output.read_text())
    for key in ("success_rate", "terminal_error", "cost_gap", "inference_time"):
        assert key in result
    assert 0 <= result["success_rate"] <= 1
    assert set(result["inference_time"]) == {"batch_1", "batch_1000"}
    assert result["num_samples"] == 100
    assert "| TRC |" in capsys.readouterr().out


def test_evaluate_with_a_tolerance_halts_and_reports_the_refinements(capsys, tmp_path, trained_dir, test_path):
    output = tmp_path / "halting.json"
    args = ["evaluate", "--checkpoint", str(trained_dir / "best_model.pt"), "--test_data", str(test_path)]
    assert main(args + ["--output", str(output), "--tolerance", "1e9"]) == 0, capsys.readouterr().err
    result = json.loads(output.read_text())
    assert result["name"] == "TRC (halting at 1e+09)"
    assert result["refinements"]["max"] == 1  # every answer is within a huge tolerance after one step
    assert "| 1.00 |" in capsys.readouterr().out
    fails_with(capsys, args + ["--tolerance", "0"], "--tolerance", "positive")


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

def test_missing_training_data_is_named(capsys, tmp_path):
    missing = tmp_path / "no_such_dir" / "train.npz"
    fails_with(capsys, ["train", "--data", str(missing), "--output_dir", str(tmp_path / "out"), "--no_progress"],
               "trc train: error:", str(missing))


def test_missing_test_data_is_named(capsys, tmp_path, trained_dir):
    missing = tmp_path / "gone.npz"
    fails_with(capsys, ["evaluate", "--checkpoint", str(trained_dir / "best_model.pt"),
                        "--test_data", str(missing)], str(missing), "no such dataset file")


def test_corrupt_checkpoint_is_named(capsys, tmp_path, test_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    fails_with(capsys, ["evaluate", "--checkpoint", str(corrupt), "--test_data", str(test_path)],
               "trc evaluate: error:", str(corrupt), "not a readable checkpoint")


def test_a_torch_file_that_is_not_a_checkpoint_is_named(capsys, tmp_path, test_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    fails_with(capsys, ["evaluate", "--checkpoint", str(other), "--test_data", str(test_path)],
               str(other), "not a TinyRecursiveControl checkpoint")


def test_checkpoint_for_another_problem_is_refused(capsys, tmp_path, trained_dir):
    assert main(["generate", "--num_samples", "20", "--output_dir", str(tmp_path / "short"),
                 "--num_steps", "10", "--seed", "1"]) == 0
    capsys.readouterr()
    checkpoint = trained_dir / "best_model.pt"
    fails_with(capsys, ["evaluate", "--checkpoint", str(checkpoint),
                        "--test_data", str(tmp_path / "short" / DATASET_FILENAME)],
               "trc evaluate: error:", str(checkpoint), "was trained for another problem", "num_steps: 15 vs 10")


@pytest.mark.parametrize("argv, fragments", [
    (["train", "--lr", "nan"], ["--lr", "'nan' is not a positive number"]),
    (["train", "--lr", "0"], ["--lr", "'0' is not a positive number"]),
    (["train", "--epochs", "-1"], ["--epochs", "'-1' is not a positive integer"]),
    (["train", "--batch_size", "2.5"], ["--batch_size", "'2.5' is not a positive integer"]),
    (["train", "--val_fraction", "1"], ["--val_fraction"]),
    (["train", "--ema_decay", "1"], ["--ema_decay"]),
    (["train", "--scheduler", "bogus"], ["--scheduler", "invalid choice: 'bogus'"]),
    (["train", "--bogus_option", "3"], ["unrecognized arguments: --bogus_option"]),
    (["generate", "--num_samples", "0"], ["--num_samples"]),
    (["generate", "--state_range", "inf", "2"], ["--state_range", "'inf' is not a finite number"]),
    (["generate", "--controller", "pid"], ["--controller", "invalid choice"]),
    (["evaluate", "--success_threshold", "-0.1"], ["--success_threshold"]),
    (["evaluate", "--device", "tpu"], ["--device", "invalid choice"]),
    (["compare", "--newton_steps", "-1"], ["--newton_steps", "'-1' is not a non-negative integer"]),
    (["pipeline", "100", "-5"], ["epochs", "'-5' is not a positive integer"]),
])
def test_bad_option_values_exit_2_naming_the_option(capsys, argv, fragments):
    """argparse refuses these before anything runs (SystemExit 2 with usage and a message)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_external_without_equals_sign_is_refused(capsys, tmp_path):
    fails_with(capsys, ["compare", "--test_data", str(tmp_path / "x.npz"), "--external", "llm_controls.npz"],
               "trc compare: error:", "--external 'llm_controls.npz': expected NAME=FILE")


def test_state_range_low_must_be_below_high(capsys, tmp_path):
    fails_with(capsys, ["generate", "--num_samples", "10", "--output_dir", str(tmp_path), "--state_range", "2", "-2"],
               "trc generate: error:", "state_range", "LOW < HIGH")
    assert not (tmp_path / DATASET_FILENAME).exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_refused(capsys, trained_dir, test_path):
    fails_with(capsys, ["evaluate", "--checkpoint", str(trained_dir / "best_model.pt"),
                        "--test_data", str(test_path), "--device", "cuda"], "--device cuda", "no CUDA GPU")


def test_bad_input_in_a_real_process_gives_one_line_and_no_traceback(tmp_path):
    missing = tmp_path / "missing_model.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TRC_DEBUG", None)
    result = subprocess.run([sys.executable, "-m", "trc_lib.interfaces.cli", "evaluate", "--checkpoint", str(missing),
                             "--test_data", str(tmp_path / "test.npz")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("trc evaluate: error:") and str(missing) in lines[0]


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--lr", "nan"], "trc train: error: argument --lr: 'nan' is not a positive number"),
    (["generate", "--num_step", "3"], "unrecognized arguments: --num_step"),  # no silent abbreviation
    (["generate", "--num_steps", "100000"], "argument --num_steps"),
    (["generate", "--time_horizon", "1e300"], "argument --time_horizon"),
    (["train", "--seed", "-1"], "argument --seed"),
])
def test_a_bad_option_is_reported_in_one_line(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1, err


def test_unwritable_output_is_refused_before_the_work_naming_the_path(capsys, tmp_path, trained_dir, test_path):
    a_file = tmp_path / "plain"
    a_file.write_text("")
    target = a_file / "results.json"
    assert main(["evaluate", "--checkpoint", str(trained_dir / "best_model.pt"), "--test_data", str(test_path),
                 "--output", str(target)]) == 2
    err = capsys.readouterr().err
    assert str(target) in err and "is a file, not a folder" in err and ".tmp" not in err


def test_train_from_a_missing_checkpoint_is_refused_naming_it(capsys, tmp_path, train_path):
    missing = tmp_path / "nowhere.pt"
    assert main(["train", "--data", str(train_path), "--start_from", str(missing),
                 "--output_dir", str(tmp_path / "out"), "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "no such checkpoint file" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_written_files_follow_the_umask_not_mkstemps_private_mode(tmp_path):
    from trc_lib.files import write_json
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644


def test_external_names_may_not_shadow_built_in_controllers(capsys, tmp_path, trained_dir, test_path, test_set):
    path = tmp_path / "ext.npz"
    np.savez(path, control_sequences=test_set.control_sequences)
    assert main(["compare", "--test_data", str(test_path), "--trc_checkpoint", str(trained_dir / "best_model.pt"),
                 "--external", f"zero={path}"]) == 2
    assert "must be unique and differ from the built-in controllers" in capsys.readouterr().err


def test_newton_steps_are_refused_on_a_linear_task_and_without_a_model(capsys, trained_dir, test_path):
    fails_with(capsys, ["compare", "--test_data", str(test_path), "--trc_checkpoint",
                        str(trained_dir / "best_model.pt"), "--newton_steps", "2"],
               "trc compare: error:", "--newton_steps is for the nonlinear systems", str(test_path))
    fails_with(capsys, ["compare", "--test_data", str(test_path), "--newton_steps", "2"],
               "trc compare: error:", "--newton_steps polishes TRC's answer: pass --trc_checkpoint")


def test_library_errors_name_parameters_and_the_cli_gives_them_their_dashes():
    from argparse import Namespace

    from trc_lib.interfaces.cli import _as_flags
    args = Namespace(command="train", data="d", output_dir="o", model_size="s", latent_dim=1, lr=1.0, resume=True)
    assert _as_flags("resume: /tmp/data/output_dir/last_model.pt does not exist (nothing to resume in this "
                     "output_dir)", args) == ("--resume: /tmp/data/output_dir/last_model.pt does not exist "
                                              "(nothing to resume in this --output_dir)")
    assert _as_flags("training diverged at epoch 3; try a lower lr", args).endswith("try a lower --lr")
    assert _as_flags("use the same model_size and latent_dim", args) == "use the same --model_size and --latent_dim"
    assert _as_flags("/x/data.npz: the data's problem differs", args) == "/x/data.npz: the data's problem differs"
