"""Benchmark: TRC on the rocket landing, against the cone program it learns from.

    python benchmarks/landing.py [--num_samples 10000] [--test_samples 1000] [--epochs 100]
                                 [--model_size medium] [--terminal_weight 1e-4] [--skip_training]

Generates (or reuses) oracle labels with `trc generate --system rocket_landing`, trains TRC with
`trc train`, then on the test set: the network's answer, its answer after the correction step,
and its answer corrected only where its exact flight misses the pad by over 5 m or 1 m/s or
leaves the glide cone by over 1 m, in physical units (tasks/rocket_landing/evaluate.py), each in float32 and
with float16 weights; the time per problem of TRC at batch 1 (median and mean) and at batch
10,000, of one cone program at a fixed flight time, and of the full free-time oracle, in the same
run, with their ratios. Writes docs/results/landing.md and a figure. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from trc_lib.checkpoint import load_model
from trc_lib.data import read_dataset
from trc_lib.evaluate import time_inference
from trc_lib.interfaces.cli import main as trc
from trc_lib.tasks.rocket_landing.evaluate import checked_correction_name, evaluate_landing_model, format_landing_table
from trc_lib.tasks.rocket_landing.cone_program import LandingConeProgram, best_landing

from results_page import ROOT, write_page

OUT = ROOT / "outputs" / "benchmark" / "landing"


def labels(folder: Path, count: int, seed: int) -> float:
    """Generate the dataset unless a matching one is there; the seconds it took (0 when reused)."""
    path = folder / "lqr_dataset.npz"
    if path.exists():
        meta = read_dataset(path, verify_labels=False).metadata
        if meta["num_samples"] == count and meta["seed"] == seed:
            return 0.0
    started = time.perf_counter()
    if trc(["generate", "--system", "rocket_landing", "--num_samples", str(count), "--seed", str(seed),
            "--output_dir", str(folder)]) != 0:
        raise SystemExit("label generation failed")
    return time.perf_counter() - started


def oracle_times(test, count: int) -> dict:
    """Milliseconds per problem: one cone program at the label's flight time, and the free-time oracle."""
    program = LandingConeProgram(test.problem)
    fixed, free = [], []
    for i in range(count):
        x0, xt = test.initial_states[i], test.target_states[i]
        started = time.perf_counter()
        program.solve(x0, xt, test.time_horizons[i])
        fixed.append(time.perf_counter() - started)
        started = time.perf_counter()
        best_landing(program, x0, xt)
        free.append(time.perf_counter() - started)
    return {"fixed_time_ms": 1e3 * float(np.median(fixed)), "fixed_time_mean_ms": 1e3 * float(np.mean(fixed)),
            "free_time_ms": 1e3 * float(np.median(free))}


# Problems the model never saw: beyond the box's far corner, and a vehicle that has already burned fuel
UNSEEN = {"farther and higher: downrange 2500-3000 m, altitude 2000-2400 m":
          {"box": {"x": (2500.0, 3000.0), "altitude": (2000.0, 2400.0)}},
          "lighter: initial mass 1750 kg (155 kg of the 400 kg already burned)": {"initial_mass": 1750.0}}


def unseen_problems(landing, options: dict, count: int, seed: int):
    """(a ControlDataset of the oracle's landings for `count` problems drawn with sample_problems'
    options, the number without any landing, dropped)."""
    from trc_lib.data import ControlDataset
    from trc_lib.tasks.rocket_landing.cone_program import solve_landings
    from trc_lib.tasks.rocket_landing.problem import sample_problems
    x0, xt = sample_problems(np.random.default_rng(seed), count, landing, **options)
    solved = solve_landings(landing, x0, xt, progress=False)
    keep = solved.success
    dataset = ControlDataset(initial_states=x0[keep], target_states=xt[keep], control_sequences=solved.thrusts[keep],
                             state_trajectories=solved.states[keep], costs=solved.fuel[keep],
                             terminal_multipliers=np.zeros((int(keep.sum()), 7)),
                             metadata={"problem": landing.to_dict()}, time_horizons=solved.time_horizons[keep])
    return dataset, int((~keep).sum())


def generalization(model, landing, count: int) -> list[str]:
    """Markdown: the network and its correction on each UNSEEN set, scored against the oracle."""
    lines = ["## Outside the training distribution", ""]
    for seed, (name, options) in enumerate(UNSEEN.items(), start=100):
        dataset, dropped = unseen_problems(landing, options, count, seed)
        rows = evaluate_landing_model(model, dataset, timing_batches=())
        lines += [f"**{name}** ({len(dataset)} problems, seed {seed}; {dropped} without any landing dropped)", "",
                  format_landing_table(rows), ""]
    return lines


def zem_zev_row(test) -> dict:
    """The classical baseline (tasks/rocket_landing/guidance.py) scored and timed like TRC's rows."""
    from trc_lib.tasks.rocket_landing.guidance import FLIGHT_TIME_STEP, zem_zev_guidance
    from trc_lib.tasks.rocket_landing.evaluate import landing_metrics, score_landings
    guidance = lambda x0, xt: zem_zev_guidance(test.problem, x0, xt)
    row = {"controller": f"ZEM/ZEV guidance (the best flight time of a {FLIGHT_TIME_STEP:g} s grid)",
           **landing_metrics(score_landings(test, *guidance(test.initial_states, test.target_states)))}
    for batch in (1, 1000):
        row[f"us_per_problem_batch_{batch}"] = time_inference(guidance, test.initial_states, test.target_states,
                                                              min(batch, len(test)))["us_per_problem"]
    return row


def figure(model, test, path: Path) -> Path:
    """Test case 0: the oracle's landing and TRC's (with its correction), landing_plots.plot_landings."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from trc_lib.tasks.rocket_landing.plots import plot_landings
    landing, x0 = test.problem, test.initial_states[:1]
    thrusts, time_horizons = model.predict_corrected(x0, test.target_states[:1])
    flights = [{"label": "optimum (cone program)", "states": test.state_trajectories[0],
                "thrusts": test.control_sequences[0], "final_time": test.time_horizons[0]},
               {"label": "TRC + correction", "states": landing.rollout(x0, thrusts, time_horizons)[0],
                "thrusts": thrusts[0], "final_time": time_horizons[0]}]
    fig = plot_landings(landing, flights)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_samples", type=int, default=10000, help="training labels (default 10000)")
    parser.add_argument("--test_samples", type=int, default=1000, help="test labels (default 1000)")
    parser.add_argument("--epochs", type=int, default=100, help="maximum epochs (default 100)")
    parser.add_argument("--model_size", default="medium", choices=["small", "medium", "large"], help="model size to train")
    parser.add_argument("--terminal_weight", type=float, default=1e-4,
                        help="weight of the landing-miss loss in training (default 1e-4)")
    parser.add_argument("--oracle_problems", type=int, default=50, help="test cases the oracle is timed on")
    parser.add_argument("--skip_training", action="store_true", help="score the model an earlier run trained")
    parser.add_argument("--unseen_problems", type=int, default=200,
                        help="problems in each set outside the training distribution (default 200; 0 skips them)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    seconds = {"train labels": labels(OUT / "train", args.num_samples, 42),
               "test labels": labels(OUT / "test", args.test_samples, 7)}
    run = OUT / f"run_{args.model_size}"
    if not args.skip_training:
        started = time.perf_counter()
        if trc(["train", "--system", "rocket_landing", "--data", str(OUT / "train"), "--output_dir", str(run),
                "--model_size", args.model_size, "--epochs", str(args.epochs),
                "--terminal_weight", str(args.terminal_weight)]) != 0:
            raise SystemExit("training failed")
        seconds["training"] = time.perf_counter() - started
    model = load_model(run / "best_model.pt")
    test = read_dataset(OUT / "test")
    rows = evaluate_landing_model(model, test)
    model.set_inference_precision("float16")  # the shared net's weights in half precision (forward.c at batch 1)
    half = evaluate_landing_model(model, test)
    for row in half:
        row["controller"] = row["controller"].replace("TRC", "TRC, float16 weights", 1)
    rows += half
    model.set_inference_precision("float32")
    rows.append(zem_zev_row(test))
    big = np.tile(test.initial_states, (-(-10000 // len(test)), 1))[:10000]
    big_targets = np.tile(test.target_states, (-(-10000 // len(test)), 1))[:10000]
    trc_big = time_inference(model.predict, big, big_targets, 10000, repeats=3)["us_per_problem"] / 1e3
    oracle = oracle_times(test, args.oracle_problems)
    stats = json.loads((run / "training_stats.json").read_text())
    if args.skip_training:  # the earlier run's own record of its epochs
        seconds["training (the earlier run's epochs)"] = sum(epoch["seconds"] for epoch in stats["history"])
    names = [row["controller"] for row in rows]
    batch_1 = lambda name, mean=False: rows[names.index(name)][f"us_per_problem_batch_1{'_mean' if mean else ''}"] / 1e3
    checked = checked_correction_name()
    trc_one, trc_half = batch_1("TRC"), batch_1("TRC, float16 weights")
    checked_half = batch_1(f"TRC, float16 weights{checked.removeprefix('TRC')}")
    checked_half_mean = batch_1(f"TRC, float16 weights{checked.removeprefix('TRC')}", mean=True)
    fixed, fixed_mean = oracle["fixed_time_ms"], oracle["fixed_time_mean_ms"]
    body = [f"Test set: {len(test)} problems from the task's box (seed 7), N = {test.problem.num_steps}, glide slope "
            f"{test.problem.glide_slope:g} degrees. Model: {args.model_size}, {model.num_parameters():,} parameters, "
            f"{stats['epoch']} epochs ({stats['status']}, best epoch {stats['best_epoch']}) on "
            f"{args.num_samples:,} labels, terminal_weight {args.terminal_weight:g}.", "",
            *[f"- {name}: {value / 60:.1f} min" for name, value in seconds.items() if value], "",
            format_landing_table(rows), "",
            "## Speed against the oracle, in this run", "",
            "| solver | ms per problem | TRC's speed-up |", "|---|---|---|",
            f"| one cone program at a fixed flight time (median / mean of {args.oracle_problems}) | "
            f"{fixed:.2f} / {fixed_mean:.2f} | {fixed / trc_one:.2f}x (TRC at batch 1); "
            f"{fixed / trc_half:.2f}x (float16 weights); {fixed / checked_half:.2f}x median, "
            f"{fixed_mean / checked_half_mean:.2f}x mean (float16 weights, corrected where it misses) |",
            f"| the free-time oracle (median of {args.oracle_problems}) | {oracle['free_time_ms']:.1f} | "
            f"{oracle['free_time_ms'] / trc_big:.0f}x (TRC at batch 10,000) |",
            f"| TRC at batch 1 | {trc_one:.3f} | |",
            f"| TRC at batch 1, float16 weights | {trc_half:.3f} | |",
            f"| TRC at batch 1, float16 weights, corrected where it misses (median / mean) | {checked_half:.3f} / "
            f"{checked_half_mean:.3f} | |",
            f"| TRC at batch 10,000 | {trc_big:.4f} | |", ""]
    if args.unseen_problems:
        body += generalization(model, test.problem, args.unseen_problems)
    print("\n".join(body))
    write_page("landing", "TRC on the rocket landing", "\n".join(body),
               {"trajectory": figure(model, test, OUT / "trajectory.png")})


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
