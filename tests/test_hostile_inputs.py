"""Property-based: random and adversarial inputs through the doors a user has (options, dataset,
checkpoint, answers and task files) give a result or one clear error, never a traceback, a hang
or a changed input file."""

import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trc_lib.errors import TRCError
from trc_lib.interfaces.cli import main

# a numpy overflow or invalid-value warning printed ahead of the one-line error is itself a failure
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
OPTION_VALUES = st.one_of(st.text(max_size=12), st.integers(-10**6, 10**6).map(str),
                          st.floats(allow_nan=True, allow_infinity=True).map(str))


@FEW
@given(epochs=OPTION_VALUES, lr=OPTION_VALUES, batch_size=OPTION_VALUES, latent_dim=OPTION_VALUES)
def test_any_training_option_values_end_in_one_line(capsys, epochs, lr, batch_size, latent_dim):
    """Whatever the values, `trc train` on data that does not exist stops with exit 2 and one line."""
    with tempfile.TemporaryDirectory() as folder:
        argv = ["train", "--data", f"{folder}/missing", "--output_dir", f"{folder}/out", "--epochs", epochs,
                "--lr", lr, "--batch_size", batch_size, "--latent_dim", latent_dim, "--no_progress"]
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own refusal of a value its type rejects: usage and one line
            code = e.code
        error = capsys.readouterr().err.strip()
        assert code == 2 and "Traceback" not in error
        assert error.splitlines()[-1].startswith(("trc train: error:", "trc: error:", "usage:")) or \
            "error:" in error.splitlines()[-1]
        assert not Path(folder, "out").exists()


def _write(path: Path, content: bytes) -> bytes:
    path.write_bytes(content)
    return content


@FEW
@given(content=st.binary(max_size=2000))
def test_random_bytes_as_a_dataset_or_a_checkpoint_are_refused_cleanly(content):
    from trc_lib import load_model, read_dataset
    with tempfile.TemporaryDirectory() as folder:
        for name, read in (("data.npz", read_dataset), ("model.pt", load_model)):
            path = Path(folder, name)
            written = _write(path, content)
            with pytest.raises(TRCError):
                read(path)
            assert path.read_bytes() == written  # never changed by reading


@FEW
@given(arrays=st.dictionaries(st.sampled_from(["initial_states", "target_states", "control_sequences", "costs",
                                               "metadata", "state_trajectories", "terminal_multipliers"]),
                              st.lists(st.floats(allow_nan=True), max_size=6), max_size=7))
def test_a_zip_of_arbitrary_arrays_is_not_a_dataset(arrays):
    from trc_lib import read_dataset
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "data.npz")
        np.savez(path, **{k: np.array(v) for k, v in arrays.items()})
        assert zipfile.is_zipfile(path)
        with pytest.raises(TRCError):
            read_dataset(path)


@FEW
@given(lines=st.lists(st.one_of(st.text(max_size=40),
                                st.builds(lambda i, a: f'{{"id": {i}, "answer": {a!r}}}'.replace("'", '"'),
                                          st.integers(-2, 120), st.text(max_size=30))), max_size=8))
def test_any_answers_file_is_read_or_refused_in_one_line(test_set, lines):
    from trc_lib.llm import TextAnswers
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "answers.jsonl")
        path.write_text("\n".join(lines))
        try:
            answers = TextAnswers("llm", path, test_set)
        except TRCError as e:
            assert "\n" not in str(e) and str(path) in str(e)
        else:
            assert answers.answered.sum() + len(answers.failures) == len(test_set)


@FEW
@given(body=st.one_of(st.text(max_size=200),
                      st.sampled_from(["import os\nclass T:\n    pass\n", "raise SystemExit(3)\n",
                                       "from trc_lib import Task\nclass T(Task):\n    state_names = ('x',)\n",
                                       "1/0\n", "def f(:\n"])))
def test_any_task_file_is_loaded_or_refused_in_one_line(body):
    from trc_lib.tasks import load_task
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "task.py")
        path.write_text(body)
        try:
            load_task(f"{path}:T")
        except TRCError as e:
            assert "\n" not in str(e).strip()
        except ValueError as e:  # a class that is a Task but declares too little: named by load_task's caller
            assert "T" in str(e)


def test_a_task_file_that_calls_exit_is_refused_naming_it(tmp_path):
    """Found by the search above: SystemExit is not an Exception, and once escaped the loader."""
    from trc_lib.tasks import load_task
    path = tmp_path / "quits.py"
    path.write_text("raise SystemExit(3)\n")
    with pytest.raises(TRCError, match=f"{path.name}: the task file failed to run \\(SystemExit: 3\\)"):
        load_task(f"{path}:T")
