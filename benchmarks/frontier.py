"""Benchmark: TRC's speed/accuracy frontier against the optimizer it replaces, in one run per task.

    python benchmarks/frontier.py [--tasks vanderpol] [--sizes small medium] [--tolerances 0.01 0.001]
                                  [--num_samples 10000 --epochs 100] [--large_batch 10000]

For each task (bounded_double_integrator: x'' = u on [-5, 5]^2 where the bound binds; vanderpol;
pendulum) it generates 10,000 training and 1,000 test problems (seeds 42 and 123; reused when
already there), trains a model of each size (reused when an earlier run finished training it,
unless --retrain; the pendulum's in two stages: imitation for --epochs, then 60 epochs with the
terminal loss and six supervision steps from that model, SECOND_STAGE), and scores every
configuration on the test set:

    path        "C": predict() as a user calls it (forward.c up to batch 16, PyTorch above);
                "PyTorch": the eager forward, timed at batch 1 only (at --large_batch it is the
                code the C row times); "bfloat16": predict() in bfloat16 as a user calls it:
                forward.c's AMX tiles where the CPU has them (timed at both batches), else
                PyTorch under autocast (timed at --large_batch only, where the CPU has bfloat16
                instructions: it never helps at batch 1)
    tolerance   "-": every refinement; t: halting once the simulated terminal error is below t
    Newton      nonlinear tasks, --newton_steps K > 0: "C + Newton (K, final)" projects the final
                answer onto the terminal constraint by K Gauss-Newton steps (projection.py);
                "C + Newton (K, fallback)" also projects the earlier refinements, latest first, for
                the problems still short of the target; with a tolerance t, TRC halts at t and only
                the problems it leaves missing by t or more are projected; timed with the network

Columns: success (||x_N - x*|| < 0.1), median and p90 cost gap to the oracle, mean refinements,
batch-1 latency (the smallest of three rounds' medians over calls, after warm-up) and time per
problem at --large_batch. The oracle is timed in the same run on the same problems, its time the
smallest of three rounds' medians too: one solve after another on one core
(IPOPT on the compiled NLP from every start of the task, keeping the best; the exact QP on the
linear task), and "on every core" as that time divided by the core count - perfect scaling, the
most favourable figure for the optimizer. Writes, per task, outputs/benchmark/frontier/TASK.json,
a success-versus-latency plot and the page docs/results/frontier_TASK_CLASS.md, CLASS the CPU's
class by its flags (amx, avx512, avx2, baseline): each class keeps its own page. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from results_page import cpu_class, write_page

from trc_lib import load_model, read_dataset

from trc_lib.interfaces import workflow
from trc_lib.baselines import OracleController
from trc_lib.compare import TRCController, format_percent
from trc_lib.evaluate import metrics, score_controls, time_inference
from trc_lib.fast.c_library import bfloat16_units
from trc_lib.fast.forward import FastForward, pytorch_only
from trc_lib.files import write_json
from trc_lib.model import ModelConfig
from trc_lib.interfaces.pipeline import TEST_SEED, TRAIN_SEED

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "benchmark" / "frontier"
TASKS = {
    "bounded_double_integrator": {"system": "double_integrator", "state_range": (-5.0, 5.0)},
    "vanderpol": {"system": "vanderpol"},
    "pendulum": {"system": "pendulum"},
}
# the bounded double integrator needs the terminal loss and six supervision steps (TRM's deep
# supervision, which halting then cuts short): its answers keep improving to the fifth, where three
# steps stopped at 98% success. The pendulum needs a lower lr, then a second stage from the first's
# model: imitation alone copies the labels to ~0.06 per control, which dx_N/du (singular values up
# to 260) turns into misses of radians (1.3% success); under the terminal loss, with six steps, each
# refinement learns to correct the miss it is fed. Both at once from the start stopped at 44%.
TRAINING = {"bounded_double_integrator": {"terminal_weight": 1.0, "num_supervision_steps": 6}, "pendulum": {"lr": 3e-4}}
SECOND_STAGE = {"pendulum": {"terminal_weight": 10.0, "num_supervision_steps": 6, "lr": 1e-4, "epochs": 60}}
LARGE_BATCH_REPEATS = 7  # calls timed at --large_batch (median); three left a 2x spread between identical paths
ORACLE_TIMED_PROBLEMS = 50  # one-core oracle solves timed per task (IPOPT: ~10 ms each on Van der Pol)


def has_bfloat16_instructions() -> bool:
    return bool(bfloat16_units())


def has_tiles(model) -> bool:
    """Whether predict in bfloat16 runs forward.c's AMX tiles here (fast at every batch)."""
    return FastForward.of(model, "bfloat16") is not None


def dataset(folder: Path, count: int, seed: int, options: dict) -> Path:
    path = folder / "lqr_dataset.npz"
    if not workflow.dataset_matches(path, num_samples=count, seed=seed, **options):
        workflow.generate(folder, num_samples=count, seed=seed, progress=True, log=print, **options)
    return path


def trained(task: str, size: str, train_path: Path, args) -> Path:
    """The task's model of this size, trained here unless an earlier run finished training it; with
    a second stage, the first's model is in the subfolder first_stage and the second's is returned."""
    folder = OUT / task / size
    stages = [(folder, TRAINING.get(task, {}), None)]
    if task in SECOND_STAGE:
        stages = [(folder / "first_stage", TRAINING.get(task, {}), None),
                  (folder, SECOND_STAGE[task], folder / "first_stage" / "best_model.pt")]
    retrained = False
    for output_dir, options, start_from in stages:
        if retrained or args.retrain or not finished(output_dir, options, start_from):
            options = {"epochs": args.epochs, **options}
            workflow.train_model(train_path, output_dir=output_dir, model_size=size, seed=0, device="cpu",
                                 start_from=start_from, **options)
            retrained = True  # a new first stage makes the second's start another
    return folder / "best_model.pt"


def finished(folder: Path, options: dict, start_from: Path | None) -> bool:
    """Whether folder holds a finished training with these options (the ones that differ between stages)."""
    stats = folder / "training_stats.json"
    if not stats.exists():
        return False
    run = json.loads(stats.read_text())
    return (run["status"] in ("finished", "early_stopped")
            and run["run"]["model_config"]["num_supervision_steps"] == options.get("num_supervision_steps",
                                                                                   ModelConfig.num_supervision_steps)
            and run["run"]["terminal_weight"] == options.get("terminal_weight", 0.0)
            and run["run"]["lr"] == options.get("lr", 1e-3)
            and run["run"].get("start_from") == (None if start_from is None else str(start_from.resolve())))


def score_configuration(model, test, path: str, tolerance, large_batch: int) -> dict:
    model.set_inference_precision("bfloat16" if path == "bfloat16" else "float32")
    predict = (lambda x0, xt: model.predict(x0, xt, tolerance=tolerance)) if path != "PyTorch" else \
        pytorch_only(lambda x0, xt: model.predict(x0, xt, tolerance=tolerance))
    if tolerance is None:
        controls, used = predict(test.initial_states, test.target_states), model.config.num_supervision_steps
    else:
        answer = (model.predict_anytime if path != "PyTorch" else pytorch_only(model.predict_anytime))(
            test.initial_states, test.target_states, tolerance)
        controls, used = answer.controls, float(answer.refinements.mean())
    summary = metrics(score_controls(test, controls))
    row = {"path": path, "tolerance": tolerance, "success": summary["success_rate"],
           "gap_median": summary["cost_gap"]["median"], "gap_p90": summary["cost_gap"]["p90"],
           "refinements": float(used)}
    if path != "bfloat16" or has_tiles(model):  # bfloat16 under autocast never helps at batch 1
        row["batch_1_ms"] = batch_1_ms(predict, test)
    if path == "C" or (path == "bfloat16" and has_bfloat16_instructions()):
        row["large_us"] = time_inference(predict, test.initial_states, test.target_states, large_batch,
                                         repeats=LARGE_BATCH_REPEATS)["us_per_problem"]
    model.set_inference_precision("float32")
    return row


def score_newton(model, test, steps: int, every_refinement: bool, tolerance, path: str, large_batch: int) -> dict:
    """TRC's answer polished by `steps` Newton steps (projection.py). tolerance None: every answer
    is projected onto the target; a number t: TRC halts at t and only the problems it leaves
    missing by t or more are projected (until they miss by less)."""
    from trc_lib.studies.projection import REACHED, ProjectedController
    model.set_inference_precision("bfloat16" if path == "bfloat16" else "float32")
    polished = ProjectedController(TRCController(model, tolerance=tolerance), test.problem, steps,
                                   every_refinement=every_refinement, tolerance=tolerance or REACHED)
    summary = metrics(score_controls(test, polished.predict(test.initial_states, test.target_states)))
    used = polished.controller.refinements_used
    row = {"path": f"{path} + Newton ({steps}, {'fallback' if every_refinement else 'final'})",
           "tolerance": tolerance, "success": summary["success_rate"], "gap_median": summary["cost_gap"]["median"],
           "gap_p90": summary["cost_gap"]["p90"],
           "refinements": float(model.config.num_supervision_steps if used is None or every_refinement else used.mean())}
    if path != "bfloat16" or has_tiles(model):
        row["batch_1_ms"] = batch_1_ms(polished.predict, test)
    if path != "bfloat16" or has_bfloat16_instructions():
        row["large_us"] = time_inference(polished.predict, test.initial_states, test.target_states, large_batch,
                                         repeats=LARGE_BATCH_REPEATS)["us_per_problem"]
    model.set_inference_precision("float32")
    return row


BATCH_1_ROUNDS = 3  # timings of the same code differed by up to 1.7x between runs on a 2-core VM


def batch_1_ms(predict, test) -> float:
    """predict's time at batch 1 over the test problems: the smallest of BATCH_1_ROUNDS medians."""
    return min(time_inference(predict, test.initial_states, test.target_states, 1)["median_ms"]
               for _ in range(BATCH_1_ROUNDS))


def oracle_times(test) -> dict:
    """The oracle's time per problem on one core and on every core: the smallest of BATCH_1_ROUNDS
    medians over ORACLE_TIMED_PROBLEMS solves each, as TRC's batch-1 times are taken."""
    oracle = OracleController(test.problem)
    oracle.predict(test.initial_states[:1], test.target_states[:1])  # builds (and compiles) the solver
    medians = []
    for _ in range(BATCH_1_ROUNDS):
        times = []
        for i in range(min(ORACLE_TIMED_PROBLEMS, len(test))):
            started = time.perf_counter()
            oracle.predict(test.initial_states[i:i + 1], test.target_states[i:i + 1])
            times.append(time.perf_counter() - started)
        medians.append(float(np.median(times)))
    one_core_ms = 1e3 * min(medians)
    return {"name": oracle.name, "one_core_ms": one_core_ms, "every_core_us": 1e3 * one_core_ms / os.cpu_count()}


def halting_check_cost(model, test, large_batch: int) -> dict:
    """What the exact halting check costs (one rollout of the answer, per problem and refinement)
    against one refinement of the model (its C row at large_batch, divided by N_sup): a learned
    halting head, TRM's alternative, could save at most that share."""
    import torch

    from trc_lib.terminal_map import terminal_map
    rollout = terminal_map(test.problem.system)
    u = np.zeros((len(test), *model.control_shape))
    check = lambda x0, xt: rollout.terminal_states(torch.from_numpy(x0), torch.from_numpy(u[:len(x0)].copy()))
    reps = -(-large_batch // len(test))
    u = np.tile(u, (reps, 1, 1))
    return {"batch_1_us": 1e3 * float(time_inference(check, test.initial_states, test.target_states, 1)["median_ms"]),
            "large_us": float(time_inference(check, test.initial_states, test.target_states, large_batch,
                                             repeats=LARGE_BATCH_REPEATS)["us_per_problem"])}


def format_halting_check(task_rows: list[dict], check: dict, large_batch: int) -> str:
    refinement = next(r["large_us"] / r["refinements"] for r in task_rows if r["path"] == "C" and r["tolerance"] is None)
    return (f"The exact halting check, one rollout of the answer through the task's integrator: "
            f"{check['batch_1_us']:.1f} us at batch 1 (with Python's call overhead; forward.c calls it directly), "
            f"{check['large_us']:.2f} us per problem at batch {large_batch:,}, against {refinement:.1f} us per "
            f"problem for one refinement of the {task_rows[0]['size']} model at that batch: a learned halting head "
            f"could save at most {100 * check['large_us'] / refinement:.1f}% of a refinement, and it can be wrong.")


def format_rows(task: str, rows: list[dict], oracle: dict, large_batch: int) -> str:
    lines = [f"## {task}", "",
             f"{oracle['name']}: {oracle['one_core_ms']:.3f} ms per problem on one core (the smallest of {BATCH_1_ROUNDS} medians of "
             f"{ORACLE_TIMED_PROBLEMS} solves); {oracle['every_core_us']:.1f} us per problem on all "
             f"{os.cpu_count()} cores at perfect scaling.", "",
             f"| size | path | tolerance | success | median gap | p90 gap | refinements | batch 1 (ms) "
             f"| x faster than the oracle at batch 1 | batch {large_batch:,} (us/problem) "
             f"| x faster than the oracle on every core |", "|" + "---|" * 11]
    for r in rows:
        t1 = f"{r['batch_1_ms']:.3f}" if "batch_1_ms" in r else "-"
        x1 = f"{oracle['one_core_ms'] / r['batch_1_ms']:.1f}" if "batch_1_ms" in r else "-"
        tl = f"{r['large_us']:.2f}" if "large_us" in r else "-"
        xl = f"{oracle['every_core_us'] / r['large_us']:.1f}" if "large_us" in r else "-"
        tol = "-" if r["tolerance"] is None else f"{r['tolerance']:g}"
        lines.append(f"| {r['size']} | {r['path']} | {tol} | {100 * r['success']:.1f}% | "
                     f"{format_percent(r['gap_median'])} | {format_percent(r['gap_p90'])} | {r['refinements']:.2f} "
                     f"| {t1} | {x1} | {tl} | {xl} |")
    return "\n".join(lines)


def plot_frontier(task: str, rows: list[dict], oracle: dict, path: Path) -> Path:
    """Success against batch-1 latency: a marker per model size, a colour per configuration, the
    Pareto front (no other point both faster and more successful) as a line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    timed = [r for r in rows if "batch_1_ms" in r]
    configurations = sorted({(r["path"], r["tolerance"] or 0.0) for r in timed}, key=str)
    colours = plt.cm.tab10(np.linspace(0, 1, 10))
    markers = {"small": "o", "medium": "s", "large": "^"}
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for r in timed:
        index = configurations.index((r["path"], r["tolerance"] or 0.0))
        label = f"{r['size']}, {r['path']}" + ("" if r["tolerance"] is None else f", halt {r['tolerance']:g}")
        ax.scatter(r["batch_1_ms"], 100 * r["success"], marker=markers[r["size"]], color=colours[index % 10],
                   s=45, label=label)
    front, best = [], -1.0
    for r in sorted(timed, key=lambda r: r["batch_1_ms"]):
        if r["success"] > best:
            front.append(r)
            best = r["success"]
    ax.plot([r["batch_1_ms"] for r in front], [100 * r["success"] for r in front], color="grey", lw=1,
            zorder=0, label="Pareto front")
    ax.axvline(oracle["one_core_ms"], color="k", ls="--", label=f"{oracle['name']} (one core)")
    ax.set(xscale="log", xlabel="batch-1 latency (ms)", ylabel="success (%)", title=f"{task}: success vs latency")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), help="tasks to score, a page each")
    parser.add_argument("--sizes", nargs="+", default=["small", "medium"], choices=["small", "medium", "large"],
                        help="model sizes to train and score")
    parser.add_argument("--tolerances", nargs="+", type=float, default=[0.01],
                        help="halting tolerances on the terminal error ||x_N - x*|| (state units)")
    parser.add_argument("--num_samples", type=int, default=10000, help="training problems per task")
    parser.add_argument("--test_samples", type=int, default=1000, help="test problems per task, solved by the oracle")
    parser.add_argument("--epochs", type=int, default=100,
                        help="training epochs (the pendulum's first stage; its second takes SECOND_STAGE's 60)")
    parser.add_argument("--large_batch", type=int, default=10000, help="the large batch timed per problem")
    parser.add_argument("--newton_steps", type=int, default=10, help="nonlinear tasks: Gauss-Newton steps of the "
                                                                     "polished rows (0: none)")
    parser.add_argument("--retrain", action="store_true", help="train again even where a checkpoint exists")
    parser.add_argument("--prepare_only", action="store_true",
                        help="generate the data and train the models, then stop: the timed scoring can then run "
                             "alone on a quiet machine")
    args = parser.parse_args()
    paths = ["C", "PyTorch", "bfloat16"]
    for task in args.tasks:
        options = TASKS[task]
        train_path = dataset(OUT / task / "train", args.num_samples, TRAIN_SEED, options)
        test = read_dataset(dataset(OUT / task / "test", args.test_samples, TEST_SEED, options))
        if args.prepare_only:
            for size in args.sizes:
                trained(task, size, train_path, args)
            continue
        oracle = oracle_times(test)
        rows = []
        for size in args.sizes:
            model = load_model(trained(task, size, train_path, args))
            for path in paths:
                for tolerance in [None, *args.tolerances]:
                    rows.append({"size": size, **score_configuration(model, test, path, tolerance, args.large_batch)})
                    print(json.dumps(rows[-1]))
            if args.newton_steps and not test.problem.system.is_linear:
                polished = [(False, None, "C"), (True, None, "C")]
                polished += [(False, t, path) for t in args.tolerances for path in ("C", "bfloat16")]
                for every_refinement, tolerance, path in polished:
                    rows.append({"size": size, **score_newton(model, test, args.newton_steps, every_refinement,
                                                              tolerance, path, args.large_batch)})
                    print(json.dumps(rows[-1]))
        check = None if test.problem.system.is_linear else halting_check_cost(model, test, args.large_batch)
        write_json(OUT / f"{task}.json", {"task": task, "oracle": oracle, "rows": rows, "halting_check": check,
                                          "args": vars(args)})
        section = format_rows(task, rows, oracle, args.large_batch)
        if check is not None:
            section += "\n\n" + format_halting_check([r for r in rows if r["size"] == args.sizes[0]], check,
                                                     args.large_batch)
        print(section)
        # one page per task and CPU class (results_page.cpu_class): the classes' pages side by side
        cls = cpu_class()
        write_page(f"frontier_{task}_{cls}", f"Speed/accuracy frontier on {task}, {cls} CPU: TRC "
                   "against the optimizer it replaces", section,
                   {"latency": plot_frontier(task, rows, oracle, OUT / f"frontier_{task}.png")})


if __name__ == "__main__":
    main()
