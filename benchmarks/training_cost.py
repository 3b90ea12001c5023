"""Benchmark: what the exact error feedback costs in training, in one run.

    python benchmarks/training_cost.py [--sizes small medium] [--epochs 2] [--rounds 2]

Trains each model size on the frontier's 10,000 Van der Pol problems (benchmarks/frontier.py
makes them, seed 42; reused when there) for --epochs epochs with and without the error feedback,
and with and without the terminal loss (the gradient through the compiled rollout,
terminal_map.py), and prints seconds per epoch and the ratio to the same size without feedback
and without the terminal loss. The configurations take turns, --rounds times, and each keeps
its fastest round: on a shared machine the same run varies by a third from one minute to the
next, and that noise only ever adds time. Writes docs/results/training_cost.md. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from frontier import OUT, TASKS, TRAIN_SEED, dataset
from results_page import write_page
from trc_lib.interfaces import workflow

CONFIGURATIONS = [("no feedback", False, 0.0), ("feedback", True, 0.0),
                  ("no feedback, terminal loss", False, 1.0), ("feedback, terminal loss", True, 1.0)]


def seconds_per_epoch(data, size: str, feedback: bool, terminal_weight: float, epochs: int) -> float:
    with tempfile.TemporaryDirectory(prefix="trc-training-cost-") as folder:
        started = time.perf_counter()
        workflow.train_model(data, output_dir=folder, model_size=size, epochs=epochs, patience=0, device="cpu", seed=0,
                             error_feedback=feedback, terminal_weight=terminal_weight, progress=False,
                             log=lambda *_: None)
        return (time.perf_counter() - started) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "medium"], choices=["small", "medium", "large"],
                        help="model sizes whose epochs are timed")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timed training (at least 1)")
    parser.add_argument("--rounds", type=int, default=2, help="turns each configuration takes (at least 1)")
    parser.add_argument("--num_samples", type=int, default=10000, help="training problems (the frontier's)")
    args = parser.parse_args()
    for name in ("epochs", "rounds", "num_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    data = dataset(OUT / "vanderpol" / "train", args.num_samples, TRAIN_SEED, TASKS["vanderpol"])
    best = {}
    for round_ in range(args.rounds):
        for size in args.sizes:
            for label, feedback, terminal_weight in CONFIGURATIONS:
                seconds = seconds_per_epoch(data, size, feedback, terminal_weight, args.epochs)
                best[size, label] = min(seconds, best.get((size, label), float("inf")))
                print(f"round {round_ + 1}: {size}, {label}: {seconds:.2f} s per epoch", flush=True)
    lines = [f"Van der Pol, {args.num_samples:,} problems, batch 64, {args.epochs} epochs per training, "
             f"fastest of {args.rounds} rounds.", "",
             "| size | configuration | seconds per epoch | x the same size without feedback |", "|---|---|---|---|"]
    for size in args.sizes:
        for label, _, _ in CONFIGURATIONS:
            ratio = best[size, label] / best[size, "no feedback"]
            lines.append(f"| {size} | {label} | {best[size, label]:.2f} | {ratio:.2f} |")
    body = "\n".join(lines)
    print(body)
    write_page("training_cost", "What the exact error feedback costs in training", body)


if __name__ == "__main__":
    main()
