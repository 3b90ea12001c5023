"""The notebooks: committed clean, parameters typed and documented and named like the CLI's
options, and run headless by the papermill pipeline. (nbval runs every notebook itself.)"""

import json

import pytest

from trc_lib.interfaces.cli import build_parser
from trc_lib.errors import TRCError
from trc_lib.interfaces.pipeline import NOTEBOOKS_DIR, PIPELINE_NOTEBOOKS, notebook_parameters, run_notebook

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def test_the_numbered_notebooks_exist():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_", "06_", "07_", "08_", "09_", "10_"]
    assert set(PIPELINE_NOTEBOOKS) <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_clean(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), "outputs are committed"
    assert sum("parameters" in c["metadata"].get("tags", []) for c in code) == 1
    assert "papermill" not in nb["metadata"]


def test_notebook_09_writes_the_task_file_the_repository_ships():
    """The quadrotor's task file is written by a cell of notebook 09; notebooks/planar_quadrotor.py,
    which the tests and benchmarks/your_system.py load, is that cell's text."""
    cells = json.loads((NOTEBOOKS_DIR / "09_your_system.ipynb").read_text())["cells"]
    written = next("".join(c["source"]) for c in cells if "".join(c["source"]).startswith("%%writefile"))
    assert written.split("\n", 1)[1] == (NOTEBOOKS_DIR / "planar_quadrotor.py").read_text().rstrip("\n")


# the studies of notebooks 06 and 07 have no `trc` command (benchmarks/ablation.py takes --variants)
NOTEBOOK_ONLY = {"studies", "variants", "gust",  # gust: the landing's closed loop (notebook 08, benchmarks)
                 "curve_samples", "curve_steps",  # notebook 02's quick runs that show how to read curves
                 "finetune_epochs", "reward_epochs"}  # notebook 10: imitation epochs, then these (trc finetune's --epochs)


def _cli_option_names():
    names = set()
    for sub in build_parser()._subparsers._group_actions[0].choices.values():
        names |= {a.dest for a in sub._actions}
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_are_typed_documented_and_named_like_cli_options(path):
    parameters = notebook_parameters(path)
    cell = next(c for c in json.loads(path.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
    lines = [line for line in "".join(cell["source"]).splitlines() if line.strip()]
    assert len(parameters) == len(lines), "papermill could not parse every line of the parameters cell"
    for name, p in parameters.items():
        assert p["inferred_type_name"] not in ("None", None), f"{name} has no type annotation"
        assert p["help"], f"{name} has no help comment"
        assert name in _cli_option_names() | NOTEBOOK_ONLY, f"{name} is not a `trc` option name"


def test_unknown_parameter_is_an_error_not_a_warning(tmp_path):
    with pytest.raises(TRCError, match=r"01_generate_data.ipynb: unknown parameter\(s\) \['num_sample'\]"):
        run_notebook(NOTEBOOKS_DIR / "01_generate_data.ipynb", {"num_sample": 10}, tmp_path / "out.ipynb")


def test_failing_cell_names_the_notebook_and_the_error(tmp_path):
    with pytest.raises(TRCError, match=r"01_generate_data.ipynb failed in cell \d+: TRCError: parameter num_samples: "
                       r"must be a positive integer, got -5"):
        run_notebook(NOTEBOOKS_DIR / "01_generate_data.ipynb",
                     {"num_samples": -5, "data_dir": str(tmp_path / "data")}, tmp_path / "out.ipynb", progress=False)
    assert (tmp_path / "out.ipynb").exists()  # the executed copy shows where it failed


def test_a_second_run_all_in_the_same_kernel_is_not_an_unknown_parameter():
    """On a kernel's first run a name the parameters cell does not declare is refused (papermill's
    misspelled -p); on a second Run All, the names the notebook's own cells defined are not."""
    from trc_lib.interfaces.parameters import check_namespace
    namespace = {"__annotations__": {"epochs": int}, "epochs": 3, "typo_epochs": 5}
    with pytest.raises(TRCError, match="unknown parameter typo_epochs"):
        check_namespace(namespace)
    namespace = {"__annotations__": {"epochs": int}, "epochs": 3}
    check_namespace(namespace)
    namespace["train_losses"] = [0.5, 0.25]  # what a later cell left behind
    check_namespace(namespace)
    namespace["epochs"] = "three"  # declared parameters are still checked every time
    with pytest.raises(TRCError, match="parameter epochs: must be int"):
        check_namespace(namespace)
