"""`trc pipeline`: the guide's train.sh, as notebooks 01-04 run headless by papermill."""

import json

import pytest

from trc_lib.interfaces import notebook
from trc_lib.errors import TRCError
from trc_lib.interfaces.cli import main


def _images(path):
    nb = json.loads(path.read_text())
    return sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))


def test_pipeline_runs_the_notebooks_and_reuses_existing_data(tmp_path, capsys):
    argv = ["pipeline", "300", "1", "small", "--test_samples", "100", "--data_dir", str(tmp_path / "data"),
            "--output_dir", str(tmp_path / "out"), "--notebooks_dir", str(tmp_path / "nb"), "--no_progress",
            "--device", "cpu"]
    assert main(argv) == 0
    for name in ("best_model.pt", "last_model.pt", "training_stats.json", "training_curves.png",
                 "evaluation_results.json", "comparison_results.json"):
        assert (tmp_path / "out" / name).exists(), name
    for name in ("01_generate_data", "02_train", "03_evaluate", "04_compare_baselines"):
        assert _images(tmp_path / "nb" / f"{name}.ipynb") >= 1, f"{name} has no figure"
    comparison = json.loads((tmp_path / "out" / "comparison_results.json").read_text())
    names = [row["name"] for row in comparison["controllers"]]
    assert names[:3] == ["random", "zero", "least squares (linear)"] and names[-1] == "oracle (exact QP)"
    assert json.loads((tmp_path / "out" / "training_stats.json").read_text())["run"]["num_train"] == 270
    data = tmp_path / "data" / "lqr_train" / "lqr_dataset.npz"
    made = data.stat().st_mtime_ns

    # A second run keeps data made with the same settings and replaces data made with others.
    # Notebook 01 decides that by this call, with the pipeline's parameters (checked here directly:
    # two more pipeline runs would cost a minute of notebook start-up on two cores).
    ensure = lambda count: notebook.ensure_datasets(tmp_path / "data", count, 100, regenerate_if_different=True,
                                                    system="double_integrator", state_range=None, log=lambda *_: None)
    ensure(300)
    assert data.stat().st_mtime_ns == made, "existing data with the same settings was regenerated"
    ensure(400)
    assert data.stat().st_mtime_ns != made, "data with other settings was not regenerated"
    executed = json.loads((tmp_path / "nb" / "01_generate_data.ipynb").read_text())
    assert "regenerate_if_different=True" in "".join("".join(c["source"]) for c in executed["cells"])


def test_external_controllers_are_named_the_same_way_in_notebooks_and_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TRC_WORKSPACE", str(tmp_path))
    assert notebook.named_files(["my LLM=answers.jsonl"]) == [("my LLM", tmp_path / "answers.jsonl")]
    with pytest.raises(TRCError, match=r"external 'my_llm:answers.jsonl': expected NAME=FILE"):
        notebook.named_files("my_llm:answers.jsonl")


def test_the_site_refuses_an_unknown_notebook_before_any_work(tmp_path):
    from trc_lib.interfaces.site import build_site, main as site_main
    with pytest.raises(TRCError, match=r"notebooks: no such notebook \['99_nothing'\]"):
        build_site(tmp_path / "site", notebooks=["99_nothing"], log=lambda *_: None)
    assert site_main(["--output", str(tmp_path / "site"), "--notebooks", "99_nothing"]) == 2
    assert not (tmp_path / "site").exists() and not (tmp_path / "site-source").exists()


def test_the_landing_pipeline_runs_notebook_08_with_the_pipeline_parameters(tmp_path, monkeypatch):
    """`trc pipeline --system rocket_landing`: notebook 08 (its whole story, tested under nbval) with
    the pipeline's sizes; --state_range is refused before any work."""
    from trc_lib.interfaces import pipeline
    calls = []
    monkeypatch.setattr(pipeline, "run_notebook", lambda path, parameters, output, progress: calls.append(
        (path.name, parameters, output)) or output)
    assert main(["pipeline", "30", "2", "small", "--system", "rocket_landing", "--test_samples", "5",
                 "--data_dir", str(tmp_path / "d"), "--notebooks_dir", str(tmp_path / "nb"), "--no_progress"]) == 0
    (name, parameters, output), = calls
    assert name == "08_rocket_landing.ipynb" and output == tmp_path / "nb" / name
    assert parameters == {"data_dir": str(tmp_path / "d"), "output_dir": parameters["output_dir"], "num_samples": 30,
                          "test_samples": 5, "epochs": 2, "model_size": "small"}
    assert parameters["output_dir"].endswith("outputs/rocket_landing")
    assert set(parameters) <= set(pipeline.notebook_parameters(pipeline.NOTEBOOKS_DIR / name))  # all declared
    assert main(["pipeline", "--system", "rocket_landing", "--state_range", "-1", "1", "--no_progress"]) == 2
