"""ONNX export (the guide's Deploy step): ONNX Runtime reproduces PyTorch, and load_model runs it."""

import contextlib
import io
import json

import numpy as np
import pytest

from trc_lib import load_model
from trc_lib.interfaces.cli import main
from trc_lib.errors import TRCError
from trc_lib.export import OnnxController


@pytest.fixture(scope="module")
def exported(trained_dir, tmp_path_factory):
    """The tiny model exported once by `trc export` (an export takes tens of seconds): (path, what it printed)."""
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export", "--checkpoint", str(trained_dir / "best_model.pt"), "--output", str(path)])
    assert code == 0
    return path, printed.getvalue()


@pytest.fixture(scope="module")
def exported_path(exported):
    return exported[0]


def test_onnx_runtime_matches_pytorch_on_random_inputs(trained_dir, exported_path):
    model = load_model(trained_dir / "best_model.pt")
    rng = np.random.default_rng(1)
    for batch in (1, 3, 1000):  # the batch size is free in the exported graph
        x0, xt = rng.uniform(-3, 3, (2, batch, 2))
        expected = model.predict_refinements(x0, xt)
        got = load_model(exported_path).predict_refinements(x0, xt)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_load_model_on_onnx_gives_a_controller_with_the_same_contract(exported_path, test_set):
    model = load_model(exported_path)
    assert isinstance(model, OnnxController)
    controls = model.predict(test_set.initial_states[:5], test_set.target_states[:5])
    assert controls.shape == (5, 15, 1) and controls.dtype == np.float64
    assert model.config["problem"] == test_set.metadata["problem"]


def test_trc_export_and_evaluate_an_onnx_file(exported, test_path, capsys):
    onnx_path, printed = exported
    assert "matches PyTorch" in printed
    assert main(["evaluate", "--checkpoint", str(onnx_path), "--test_data", str(test_path)]) == 0
    assert "TRC (ONNX Runtime)" in capsys.readouterr().out


def test_export_needs_an_onnx_file_name(trained_dir, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(trained_dir / "best_model.pt"), "--output", str(tmp_path / "m.pt")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_file_that_is_not_onnx_is_refused_by_name(tmp_path):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_text("not a model")
    with pytest.raises(TRCError, match="bogus.onnx: not a readable ONNX model"):
        load_model(bogus)


def test_evaluate_in_bfloat16_and_its_errors(trained_dir, test_path, exported_path, tmp_path, capsys):
    output = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(trained_dir / "best_model.pt"), "--test_data", str(test_path),
                 "--precision", "bfloat16", "--output", str(output)]) == 0
    assert json.loads(output.read_text())["precision"] == "bfloat16"
    assert main(["evaluate", "--checkpoint", str(exported_path), "--test_data", str(test_path),
                 "--precision", "bfloat16"]) == 2
    err = capsys.readouterr().err
    assert "--precision bfloat16: an ONNX model runs in float32" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--precision", "float8"])
    assert exit_.value.code == 2 and "argument --precision: invalid choice" in capsys.readouterr().err
