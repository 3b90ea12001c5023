"""The guide's `./train.sh NUM_SAMPLES EPOCHS SIZE`: notebooks 01-04 run headless by papermill
(or, for a task whose story is one notebook of its own, that notebook: Task.notebook).

Each notebook runs with the pipeline's parameters and an executed copy, outputs and figures
included, is written to outputs/notebooks/. Data generation is skipped when the data exists
with the same settings. A parameter name the notebook does not declare is an error (papermill
itself only warns), and a failing cell stops the pipeline with the notebook's name and the
cell's error.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import TRCError
from .notebook import REPO_ROOT, TEST_SEED, TRAIN_SEED  # noqa: F401  (the seeds: the pipeline's data)

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PIPELINE_NOTEBOOKS = ("01_generate_data.ipynb", "02_train.ipynb", "03_evaluate.ipynb", "04_compare_baselines.ipynb")


def folder_name(system: str) -> str:
    """A task's name as a folder: a built-in's name, or a task file's class name in snake case."""
    from ..tasks import is_task_file
    from ..task import snake_case
    return snake_case(system.rpartition(":")[2]) if is_task_file(system) else system


def notebook_parameters(notebook) -> dict:
    """{name: {'default', 'inferred_type_name', 'help'}} declared in a notebook's `parameters` cell."""
    import papermill
    return papermill.inspect_notebook(str(notebook))


def run_notebook(notebook, parameters: dict, output_path, progress=True, cell_timeout=None) -> Path:
    """Execute `notebook` with `parameters`, writing the executed copy to `output_path`.
    cell_timeout: seconds a cell may run before the run fails (default: no limit)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError
    notebook, output_path = Path(notebook), Path(output_path)
    declared = notebook_parameters(notebook)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise TRCError(f"{notebook.name}: unknown parameter(s) {unknown}; it declares {sorted(declared)}")
    from .kernels import PatientKernelManager
    output_path.parent.mkdir(parents=True, exist_ok=True)  # papermill does not create it
    try:
        papermill.execute_notebook(str(notebook), str(output_path), parameters=parameters, kernel_name="python3",
                                   progress_bar=progress, cwd=str(notebook.parent), execution_timeout=cell_timeout,
                                   kernel_manager_class=PatientKernelManager)  # kernels.py: no lost replies
    except PapermillExecutionError as e:
        raise TRCError(f"{notebook.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue} "
                       f"(executed copy: {output_path})") from None
    return output_path


def run_pipeline(num_samples=10000, epochs=100, model_size="medium", *, test_samples=1000, data_dir=None,
                 output_dir=None, notebooks_dir=None, batch_size=64, lr=1e-3,
                 patience=20, device="auto", seed=0, system="double_integrator", state_range=None, progress=True,
                 log=print) -> list[Path]:
    """Run notebooks 01-04; returns the executed copies. Relative paths are taken from the cwd.

    data_dir, output_dir, notebooks_dir default to data, outputs/supervised, outputs/notebooks
    for the double integrator and to data/SYSTEM, outputs/SYSTEM, outputs/SYSTEM/notebooks for
    the others, so one system's run never replaces another's files.
    """
    default = system == "double_integrator"
    label = folder_name(system)
    data_dir = data_dir or ("data" if default else f"data/{label}")
    output_dir = output_dir or ("outputs/supervised" if default else f"outputs/{label}")
    notebooks_dir = notebooks_dir or ("outputs/notebooks" if default else f"outputs/{label}/notebooks")
    data_dir, output_dir = str(Path(data_dir).resolve()), str(Path(output_dir).resolve())
    from ..tasks import task_class
    task = task_class(system)
    if task.draws_its_own_problems and state_range:
        raise TRCError(f"--state_range is not for {system} (its problems come from the task's own box)")
    if task.notebook is not None:  # a task whose story is one notebook of its own (Task.notebook)
        parameters = {"data_dir": data_dir, "output_dir": output_dir, "num_samples": num_samples,
                      "test_samples": test_samples, "epochs": epochs, "model_size": model_size}
        output_path = Path(notebooks_dir).resolve() / task.notebook
        log(f"[{task.notebook}] running; executed copy -> {output_path}")
        return [run_notebook(NOTEBOOKS_DIR / task.notebook, parameters, output_path, progress)]
    shared = {"data_dir": data_dir, "output_dir": output_dir, "system": system}
    parameters = {
        "01_generate_data.ipynb": {"data_dir": data_dir, "num_samples": num_samples, "test_samples": test_samples,
                                   "system": system, "state_range": list(state_range or [])},
        "02_train.ipynb": {**shared, "model_size": model_size, "epochs": epochs, "batch_size": batch_size,
                           "lr": lr, "patience": patience, "device": device, "seed": seed},
        "03_evaluate.ipynb": shared,
        "04_compare_baselines.ipynb": shared,
    }
    executed = []
    for name in PIPELINE_NOTEBOOKS:
        output_path = Path(notebooks_dir).resolve() / name
        log(f"[{name}] running; executed copy -> {output_path}")
        executed.append(run_notebook(NOTEBOOKS_DIR / name, parameters[name], output_path, progress))
    comparison = Path(output_dir) / "comparison_results.json"
    if comparison.exists():
        from ..compare import format_table
        log(format_table(json.loads(comparison.read_text())["controllers"]))
    return executed
