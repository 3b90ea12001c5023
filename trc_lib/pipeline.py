"""The guide's `./train.sh NUM_SAMPLES EPOCHS SIZE`: data (if missing), training, evaluation,
comparison, with every file where the guide puts it."""

from __future__ import annotations

from pathlib import Path

from . import workflow

TRAIN_SEED, TEST_SEED = 42, 123  # the guide's seeds


def run_pipeline(num_samples=10000, epochs=100, model_size="medium", test_samples=1000, data_dir="data",
                 output_dir="outputs/supervised", batch_size=64, lr=1e-3, patience=20, device="auto", seed=0,
                 progress=True, log=print) -> dict:
    """Run every step; returns the paths of what it wrote."""
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    problem = dict(num_steps=15, time_horizon=5.0, control_bound=4.0, controller="min_energy")
    paths = {}
    for name, count, data_seed in (("train", num_samples, TRAIN_SEED), ("test", test_samples, TEST_SEED)):
        path = data_dir / f"lqr_{name}" / workflow.DATASET_FILENAME
        if workflow.dataset_matches(path, num_samples=count, seed=data_seed, state_range=(-2.0, 2.0), **problem):
            log(f"[{name} data] {path} exists with these settings; not regenerated")
        else:
            log(f"[{name} data] generating {count} samples")
            workflow.generate(path.parent, count, seed=data_seed, log=log, **problem)
        paths[f"{name}_data"] = path
    log(f"[train] {model_size} model, {epochs} epochs")
    workflow.train_model(paths["train_data"], output_dir, model_size, epochs, batch_size, lr, patience,
                         device=device, seed=seed, progress=progress, log=log)
    paths["checkpoint"] = output_dir / "best_model.pt"
    log("[evaluate]")
    paths["evaluation"] = output_dir / "evaluation_results.json"
    workflow.evaluate_checkpoint(paths["checkpoint"], paths["test_data"], paths["evaluation"], log=log)
    log("[compare]")
    paths["comparison"] = output_dir / "comparison_results.json"
    workflow.compare(paths["test_data"], paths["checkpoint"], paths["comparison"], log=log)
    return paths
