"""Benchmark: how far from its training data each trained model works, as tables.

    python benchmarks/generalization.py [--model CHECKPOINT TRAIN_DATA]... [--num_samples 500]

The generalization notebook (06) headless, for several systems at once: for each model, every
study that applies to its system (wider boxes of initial states, other horizons, other
targets on the double integrator, another mu on Van der Pol), each point on fresh problems
solved by the oracle of the *new* problem (exact QP, or IPOPT), for TRC and for the
least-squares policy fitted on the same training set. Default models: those the other
benchmarks trained, where present (`guide_pipeline.py`: double integrator; `beyond.py`:
bounded double integrator, Van der Pol, pendulum). Writes
outputs/benchmark/generalization.{json,md}. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trc_lib import load_model, read_dataset
from trc_lib.baselines import LeastSquaresController
from trc_lib.compare import format_percent
from trc_lib.evaluate import hardware
from trc_lib.files import atomic_path, write_json
from trc_lib.studies.generalization import STUDIES, studies_for, study_values, sweep

from results_page import write_page

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "benchmark"
BENCH = OUT / "beyond"
DEFAULT_MODELS = [(OUT / "guide_pipeline" / "supervised" / "best_model.pt",
                   OUT / "guide_pipeline" / "data" / "lqr_train" / "lqr_dataset.npz")] + [
    (BENCH / task / "model" / "best_model.pt", BENCH / task / "data" / "lqr_train" / "lqr_dataset.npz")
    for task in ("bounded_double_integrator", "vanderpol", "pendulum")]


def study_table(rows: list[dict], study: str, trained_at) -> str:
    """Markdown: one line per value of the study, success and median gap per controller."""
    names = [n for n in dict.fromkeys(r["controller"] for r in rows) if n != "oracle"]  # the oracle: 100%, 0 by definition
    lines = [f"| {STUDIES[study]} | " + " | ".join(f"{n}: success / median gap" for n in names) + " |",
             "|---" * (len(names) + 1) + "|"]
    for value in dict.fromkeys(r["value"] for r in rows):
        cells = []
        for name in names:
            r = next(r for r in rows if r["value"] == value and r["controller"] == name)
            cells.append(f"{100 * r['success_rate']:.1f}% / {format_percent(r['cost_gap_median'])}")
        mark = " (trained)" if trained_at is not None and abs(value - trained_at) < 1e-9 else ""
        lines.append(f"| {value:g}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs=2, action="append", metavar=("CHECKPOINT", "TRAIN_DATA"),
                        help="a trained model and its training set (repeatable; default: the benchmarks' models "
                             "that exist)")
    parser.add_argument("--num_samples", type=int, default=500, help="fresh problems per point (default 500)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the fresh problems (default 7)")
    args = parser.parse_args()
    pairs = [tuple(map(Path, pair)) for pair in args.model] if args.model else \
        [pair for pair in DEFAULT_MODELS if pair[0].is_file() and pair[1].is_file()]
    if not pairs:
        sys.exit("no trained models: run benchmarks/guide_pipeline.py or benchmarks/beyond.py first, or pass --model")
    report = {"hardware": hardware(), "num_samples": args.num_samples, "models": []}
    lines = [f"Hardware: {report['hardware']['cpu']}, {report['hardware']['cpu_count']} cores; "
             f"{args.num_samples} fresh problems per point (seed {args.seed})", ""]
    for checkpoint, train_path in pairs:
        model, train = load_model(checkpoint), read_dataset(train_path)
        controllers = {"TRC": model.predict,
                       "least squares": LeastSquaresController(train.problem).fit(train).predict}
        values, trained_at = study_values(train)
        entry = {"checkpoint": str(checkpoint), "system": train.problem.system.name,
                 "initial_box": train.metadata["initial_box"], "studies": {}}
        lines += [f"#### {train.problem.system.name}, trained on x0 in {train.metadata['initial_box']} "
                  f"(`{checkpoint.relative_to(ROOT) if checkpoint.is_relative_to(ROOT) else checkpoint}`)", ""]
        for study in studies_for(train.problem):
            print(f"{checkpoint}: {study}", flush=True)
            rows = sweep(controllers, study, values[study], args.num_samples, args.seed, train=train)
            entry["studies"][study] = rows
            lines += [study_table(rows, study, trained_at[study]), ""]
        report["models"].append(entry)
    write_json(OUT / "generalization.json", report)
    markdown = "\n".join(lines)
    with atomic_path(OUT / "generalization.md") as tmp:
        tmp.write_text(markdown + "\n")
    write_page("generalization", "Generalization beyond the training boxes", markdown)
    print("\n" + markdown)


if __name__ == "__main__":
    sys.exit(main())
