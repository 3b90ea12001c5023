"""Benchmark: does recursion help? The ablation of notebook 07 at full size.

    python benchmarks/ablation.py [--systems double_integrator vanderpol] [--num_samples 10000
                                   --epochs 30 --model_size small] [--workers K | --cluster ADDRESS]

For each system (the double integrator on [-5, 5]^2, where the bound binds; Van der Pol with
IPOPT labels) trains every variant of trc_lib/studies/ablation.py with the same data and budget, scores
them on 1,000 test problems against the oracle, runs the default model with 1-8 refinement
steps at inference, and writes outputs/benchmark/ablation/ablation.{json,md}. Data made by
benchmarks/beyond.py (same seeds and settings) are reused when present. Nothing is asserted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trc_lib import read_dataset

from trc_lib.interfaces import workflow
from trc_lib.studies.ablation import VARIANTS, format_steps, format_variants, score_variants, steps_at_inference, \
    train_variants
from trc_lib.evaluate import hardware
from trc_lib.files import atomic_path, write_json
from trc_lib.interfaces.pipeline import TEST_SEED, TRAIN_SEED
from trc_lib.oracles.workers import Workers

from results_page import write_page

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {"double_integrator": {"system": "double_integrator", "state_range": (-5.0, 5.0)},
           "vanderpol": {"system": "vanderpol"}}


def dataset(folder: Path, count: int, seed: int, options: dict) -> Path:
    path = folder / "lqr_dataset.npz"
    if not workflow.dataset_matches(path, num_samples=count, seed=seed, **options):
        workflow.generate(folder, num_samples=count, seed=seed, log=print, **options)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", nargs="+", default=list(OPTIONS), choices=list(OPTIONS),
                        help="systems to train the variants on")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT",
                        help=f"variants to train, of {list(VARIANTS)}")
    parser.add_argument("--num_samples", type=int, default=10000, help="training samples (default 10000)")
    parser.add_argument("--test_samples", type=int, default=1000, help="test samples (default 1000)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per variant (default 30)")
    parser.add_argument("--model_size", default="small", choices=["small", "medium", "large"], help="model size of every variant")
    parser.add_argument("--data_dir", default=str(ROOT / "outputs" / "benchmark" / "beyond"),
                        help="where SYSTEM data live (shared with benchmarks/beyond.py)")
    parser.add_argument("--output_dir", default=str(ROOT / "outputs" / "benchmark" / "ablation"),
                        help="where the data, models and results go")
    parser.add_argument("--workers", type=int, default=None,
                        help="train the variants side by side on a local Dask cluster of this many processes "
                             "(default: one after another in this process)")
    parser.add_argument("--cluster", default=None, metavar="ADDRESS",
                        help="train them on the Dask scheduler at ADDRESS instead (--output_dir must be shared)")
    args = parser.parse_args()
    workers = Workers(processes=args.workers, address=args.cluster) if args.workers or args.cluster else None
    out = Path(args.output_dir)
    hw = hardware()
    lines = [f"## Ablation: {args.num_samples} samples, {args.epochs} epochs per variant, {args.model_size} network",
             "", f"Hardware: {hw['cpu']}, {hw['cpu_count']} cores, torch {hw['torch']}", ""]
    results = {}
    for system in args.systems:
        folder = Path(args.data_dir) / ("bounded_double_integrator" if system == "double_integrator" else system)
        train_path = dataset(folder / "data" / "lqr_train", args.num_samples, TRAIN_SEED, OPTIONS[system])
        test_path = dataset(folder / "data" / "lqr_test", args.test_samples, TEST_SEED, OPTIONS[system])
        models = train_variants(train_path, out / system, args.variants, args.model_size, args.epochs, progress=True,
                                workers=workers)
        test = read_dataset(test_path)
        rows = score_variants(models, test)
        default = models.get("TRC, 3 steps (default)") or next(iter(models.values()))
        steps = steps_at_inference(default, test)
        results[system] = {"variants": rows, "steps_at_inference": steps}
        lines += [f"### {system} ({OPTIONS[system]})", "", format_variants(rows), "", format_steps(steps), ""]
        text = "\n".join(lines)
        print(text)
        write_json(out / "ablation.json", {"hardware": hw, "args": vars(args), "results": results})
        with atomic_path(out / "ablation.md") as tmp:
            tmp.write_text(text + "\n")
        write_page("ablation", "Does recursion help? The ablation", text)
    print(f"(written to {out / 'ablation.md'} and ablation.json)")


if __name__ == "__main__":
    main()
