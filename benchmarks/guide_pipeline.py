"""Benchmark: the training guide's full run, timed, with the accuracy bars checked.

    python benchmarks/guide_pipeline.py [--num_samples 10000 --epochs 100 --model_size medium]

Runs `trc pipeline` (generate 10,000 + 1,000 samples, train medium for 100 epochs at batch 64,
evaluate, compare) into outputs/benchmark/guide_pipeline/, then prints a markdown table of wall times, the
comparison table, the guide's own Performance Targets and the project's stricter bars, each with
the measured value. Nothing is asserted:
the numbers are printed as measured, on the hardware named in the output.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from trc_lib.interfaces import workflow
from trc_lib.compare import format_table
from trc_lib.evaluate import hardware
from trc_lib.files import atomic_path
from trc_lib.interfaces.pipeline import TEST_SEED, TRAIN_SEED

from results_page import write_page

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_samples", type=int, default=10000, help="training samples (default 10000)")
    parser.add_argument("--epochs", type=int, default=100, help="epochs (default 100)")
    parser.add_argument("--model_size", default="medium", choices=["small", "medium", "large"], help="model size to train")
    parser.add_argument("--batch_size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train (auto: the GPU if any)")
    parser.add_argument("--output_dir", default=str(ROOT / "outputs" / "benchmark" / "guide_pipeline"),
                        help="emptied, then filled with the run's data, model and report")
    args = parser.parse_args()

    out = Path(args.output_dir)
    shutil.rmtree(out, ignore_errors=True)  # a benchmark measures everything from scratch
    quiet = lambda *_: None
    times = {}
    started = time.perf_counter()
    t = time.perf_counter()
    workflow.generate(out / "data" / "lqr_train", num_samples=args.num_samples, seed=TRAIN_SEED, log=quiet)
    workflow.generate(out / "data" / "lqr_test", num_samples=1000, seed=TEST_SEED, log=quiet)
    times["generate train + test data"] = time.perf_counter() - t
    t = time.perf_counter()
    workflow.train_model(out / "data" / "lqr_train", output_dir=out / "supervised", model_size=args.model_size,
                         epochs=args.epochs, batch_size=args.batch_size, device=args.device, progress=True, log=print)
    times["train"] = time.perf_counter() - t
    t = time.perf_counter()
    evaluation = workflow.evaluate_checkpoint(out / "supervised" / "best_model.pt", out / "data" / "lqr_test",
                                              output=out / "supervised" / "evaluation_results.json", log=quiet)
    times["evaluate"] = time.perf_counter() - t
    t = time.perf_counter()
    rows = workflow.compare(out / "data" / "lqr_test", trc_checkpoint=out / "supervised" / "best_model.pt",
                            output=out / "supervised" / "comparison_results.json", log=quiet)
    times["compare"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - started

    stats = json.loads((out / "supervised" / "training_stats.json").read_text())
    hw = hardware()
    device = stats["run"]["device"]
    lines = [f"## Guide pipeline: {args.num_samples} samples, {args.epochs} epochs, {args.model_size}, "
             f"batch {args.batch_size}",
             "",
             f"Hardware: {hw['cpu']}, {hw['cpu_count']} cores, torch {hw['torch']} with {hw['torch_threads']} "
             f"threads; training device: {device}" + (f" ({hw['gpu']})" if hw["gpu"] and device != "cpu" else ""),
             f"Training: {stats['epoch']} epochs run ({stats['status']}), best epoch {stats['best_epoch']}, "
             f"{stats['run']['num_parameters']:,} parameters",
             "",
             "| step | wall time |", "|---|---|"]
    lines += [f"| {k} | {v / 60:.1f} min ({v:.0f} s) |" for k, v in times.items()]
    m = evaluation
    trc = next(r for r in rows if r["name"] == "TRC")
    latency = trc["inference_time"]["batch_1"]["median_ms"]
    # the training guide's "Performance Targets" table, as it states them (its gap is against the optimum: LQR)
    guide = [("mean error < 0.5", m["terminal_error"]["mean"], "", m["terminal_error"]["mean"] < 0.5),
             ("success rate > 50%", 100 * m["success_rate"], "%", m["success_rate"] > 0.5),
             ("gap from the optimum < 30% (median)", 100 * m["cost_gap"]["median"], "%", m["cost_gap"]["median"] < 0.3),
             ("inference time < 10 ms (batch 1, median)", latency, " ms", latency < 10)]
    # this project's own, stricter bars (not the guide's)
    own = [("total wall time <= 15 min", times["total"] / 60, " min", times["total"] <= 15 * 60),
           ("success rate >= 99.5%", 100 * m["success_rate"], "%", m["success_rate"] >= 0.995),
           ("mean terminal error <= 0.01", m["terminal_error"]["mean"], "", m["terminal_error"]["mean"] <= 0.01),
           ("median cost gap <= 0.5%", 100 * m["cost_gap"]["median"], "%", m["cost_gap"]["median"] <= 0.005)]
    for title, bars in (("the guide's target (its Performance Targets)", guide), ("the project's own bar", own)):
        lines += ["", f"| {title} | measured | met |", "|---|---|---|"]
        lines += [f"| {name} | {value:.4g}{unit} | {'yes' if ok else 'NO'} |" for name, value, unit, ok in bars]
    lines += ["", f"Comparison on the 1,000 test cases (seed {TEST_SEED}); times on CPU:", "", format_table(rows)]
    report = "\n".join(lines)
    print("\n" + report)
    with atomic_path(out / "guide_pipeline.md") as tmp:
        tmp.write_text(report + "\n")
    write_page("guide_pipeline", "The training guide's full run", report)
    print(f"\n(written to {out / 'guide_pipeline.md'})")


if __name__ == "__main__":
    main()
