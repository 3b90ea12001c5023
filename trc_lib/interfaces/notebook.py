"""What a notebook needs to run top to bottom from a fresh clone, in any order.

Paths in notebooks are relative to the workspace: the repository root, or the folder named by
the environment variable TRC_WORKSPACE (the tests point it at a temporary folder so they never
touch your data/ and outputs/). Each notebook makes what it needs if it is missing: quick
defaults, so the first run of a later notebook takes seconds, not the guide's full run.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from . import workflow
from ..data import DATASET_FILENAME
from ..device import describe_device, resolve_device

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_SEED, TEST_SEED = 42, 123  # the guide's seeds
QUICK_SAMPLES, QUICK_TEST_SAMPLES, QUICK_EPOCHS, QUICK_SIZE = 2000, 1000, 10, "small"


def workspace() -> Path:
    """Where data/ and outputs/ live: $TRC_WORKSPACE if set, else the repository root."""
    return Path(os.environ.get("TRC_WORKSPACE", REPO_ROOT)).resolve()


def check_parameters(namespace: dict) -> None:
    """Call as check_parameters(globals()) first thing after the parameters cell: an unknown
    name, a value of the wrong type or a bad value stops the notebook in one line before any
    work (parameters.py, the checks the command line uses)."""
    from .parameters import check_namespace
    check_namespace(namespace)


def results_figures(pattern: str) -> list[Path]:
    """The figures the benchmarks wrote under docs/results/ of the repository that match the glob
    `pattern` (none in an installed copy without the repository)."""
    return sorted((REPO_ROOT / "docs" / "results").glob(pattern))


def resolve(path) -> Path:
    """A notebook path: absolute as given, otherwise relative to the workspace (not the cwd)."""
    path = Path(path)
    return path if path.is_absolute() else workspace() / path


def named_files(items) -> list[tuple[str, Path]]:
    """["NAME=FILE", ...] -> [(name, path resolved against the workspace)] (parameters.named_files)."""
    from .parameters import named_files
    return [(name, resolve(path)) for name, path in named_files(items)]


def ensure_datasets(data_dir="data", num_samples=QUICK_SAMPLES, test_samples=QUICK_TEST_SAMPLES,
                    regenerate_if_different=False, log=print, **problem_options) -> tuple[Path, Path]:
    """Paths of data_dir/lqr_train and data_dir/lqr_test datasets, generating what is missing.

    problem_options: workflow.generate's (system, state_range, control_bound, ...; absent: the
    task's defaults). With regenerate_if_different, an existing file made with other settings
    (sample count, seeds 42 and 123, problem, boxes) is replaced; otherwise any valid file for the
    same system is used as it is (one for another is refused, naming both).
    """
    paths = []
    for name, count, seed in (("train", num_samples, TRAIN_SEED), ("test", test_samples, TEST_SEED)):
        path = resolve(data_dir) / f"lqr_{name}" / DATASET_FILENAME
        exists = path.exists() and (not regenerate_if_different
                                    or workflow.dataset_matches(path, num_samples=count, seed=seed, **problem_options))
        if exists:
            if "system" in problem_options:
                workflow.check_system(path, problem_options["system"], "data_dir")
            log(f"using {path}")
        else:
            workflow.generate(path.parent, num_samples=count, seed=seed, log=log, **problem_options)
        paths.append(path)
    return tuple(paths)


def ensure_checkpoint(output_dir="outputs/supervised", data_dir="data", system="double_integrator", log=print) -> Path:
    """Path of output_dir/best_model.pt, training a quick small model of `system` first if there is none."""
    checkpoint = resolve(output_dir) / "best_model.pt"
    if checkpoint.exists():
        log(f"using {checkpoint}")
        return checkpoint
    train_path, _ = ensure_datasets(data_dir, log=log, system=system)
    log(f"no model at {checkpoint}: training a quick {QUICK_SIZE} one ({QUICK_EPOCHS} epochs)")
    workflow.train_model(train_path, output_dir=checkpoint.parent, model_size=QUICK_SIZE, epochs=QUICK_EPOCHS,
                         log=log)
    return checkpoint


def device_report(device="auto") -> torch.device:
    """Resolve 'auto' to the GPU when there is one, and say which device is used."""
    resolved = resolve_device(device)
    print(f"computing on {describe_device(resolved)}")
    return resolved
