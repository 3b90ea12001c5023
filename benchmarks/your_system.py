"""Benchmark: a task the package does not know, at full size: notebook 09's planar quadrotor.

    python benchmarks/your_system.py [--num_samples 10000 --test_samples 1000 --epochs 100]
                                     [--sizes small medium] [--large_batch 10000] [--newton_steps 1 10]

The task is the file notebooks/planar_quadrotor.py (six states, two rotor thrusts in [0, 10] N),
run through the same steps as every built-in task: IPOPT labels (10,000 training and 1,000
held-out problems, seeds 42 and 123), a model trained on them, and benchmarks/frontier.py's
scoring: success (||x_N - x*|| < 0.1) and the cost gap against IPOPT's labels on the held-out
problems, the network alone, halting, and its answer polished by at most --newton_steps Gauss-Newton
steps (each number a row, for the trained model and for the first stage's, imitation alone) onto the terminal constraint (trc_lib/studies/projection.py, the correction any task has),
timed at batch 1 and per problem at --large_batch against IPOPT solving the same problems one
after another on one core. Writes
outputs/benchmark/frontier/planar_quadrotor.json and docs/results/your_system.md. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import frontier
from results_page import write_page

from trc_lib import load_model, read_dataset
from trc_lib.files import write_json
from trc_lib.interfaces.pipeline import TEST_SEED, TRAIN_SEED

ROOT = Path(__file__).resolve().parents[1]
TASK = "planar_quadrotor"
SYSTEM = f"{ROOT / 'notebooks' / 'planar_quadrotor.py'}:PlanarQuadrotor"
# the pendulum's two stages (frontier.TRAINING and SECOND_STAGE): imitation first, then the terminal loss
# with six supervision steps from that model. Trained with the terminal loss from the start (weight 1,
# six steps, 100 epochs: the bounded double integrator's recipe) it imitated the labels to 0.38 N RMS and
# landed 5.8% of the held-out problems: dx_N/du amplifies small thrust errors, as on the pendulum.
TRAINING = {"lr": 3e-4}
SECOND_STAGE = {"terminal_weight": 10.0, "num_supervision_steps": 6, "lr": 1e-4, "epochs": 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "medium"], choices=["small", "medium", "large"],
                        help="model sizes to train and score")
    parser.add_argument("--tolerances", nargs="+", type=float, default=[0.01],
                        help="halting tolerances on the terminal error ||x_N - x*||")
    parser.add_argument("--num_samples", type=int, default=10000, help="training problems")
    parser.add_argument("--test_samples", type=int, default=1000, help="held-out problems, labelled by IPOPT")
    parser.add_argument("--epochs", type=int, default=100, help="training epochs")
    parser.add_argument("--large_batch", type=int, default=10000, help="the large batch timed per problem")
    parser.add_argument("--newton_steps", type=int, nargs="*", default=[1, 10],
                        help="Gauss-Newton steps at most of each correction row of the trained model (none: no "
                             "correction rows)")
    parser.add_argument("--imitation_newton_steps", type=int, nargs="*", default=[1, 2, 3],
                        help="the same for the model of the first stage, imitation alone (none: no rows for it)")
    parser.add_argument("--retrain", action="store_true", help="train again even where a checkpoint exists")
    parser.add_argument("--prepare_only", action="store_true",
                        help="generate the data and train, then stop: the timed scoring can then run alone on a "
                             "quiet machine")
    args = parser.parse_args()
    frontier.TRAINING[TASK], frontier.SECOND_STAGE[TASK] = TRAINING, SECOND_STAGE
    options = {"system": SYSTEM}
    train_path = frontier.dataset(frontier.OUT / TASK / "train", args.num_samples, TRAIN_SEED, options)
    test = read_dataset(frontier.dataset(frontier.OUT / TASK / "test", args.test_samples, TEST_SEED, options))
    if args.prepare_only:
        for size in args.sizes:
            frontier.trained(TASK, size, train_path, args)
        return
    oracle = frontier.oracle_times(test)
    rows = []
    for size in args.sizes:
        trained = frontier.trained(TASK, size, train_path, args)
        if args.imitation_newton_steps:  # the first stage's model: close to the labels, short of the target
            model = load_model(trained.parent / "first_stage" / "best_model.pt")
            rows.append({"size": size, **frontier.score_configuration(model, test, "C", None, args.large_batch)})
            for steps in args.imitation_newton_steps:
                rows.append({"size": size, **frontier.score_newton(model, test, steps, False, None, "C",
                                                                   args.large_batch)})
            for row in rows[-1 - len(args.imitation_newton_steps):]:
                row["path"] = f"imitation stage: {row['path']}"
                print(json.dumps(row))
        model = load_model(trained)
        for tolerance in [None, *args.tolerances]:
            rows.append({"size": size, **frontier.score_configuration(model, test, "C", tolerance, args.large_batch)})
            print(json.dumps(rows[-1]))
        for steps in args.newton_steps:
            rows.append({"size": size, **frontier.score_newton(model, test, steps, False, None, "C",
                                                               args.large_batch)})
            print(json.dumps(rows[-1]))
    write_json(frontier.OUT / f"{TASK}.json", {"task": TASK, "oracle": oracle, "rows": rows, "args": vars(args)})
    task = test.problem
    intro = (f"The task file `notebooks/planar_quadrotor.py` (written by notebook 09): {task.state_dim} states "
             f"{list(task.state_names)}, {task.control_dim} controls {list(task.control_names)} within "
             f"{task.control_limits.tolist()}, T = {task.time_horizon:g} s in N = {task.num_steps} intervals. "
             f"Trained on {args.num_samples:,} IPOPT labels in two stages ({TRAINING}, then {SECOND_STAGE}), "
             f"scored on {len(test):,} held-out "
             f"problems: the network alone ('C'), halting at the tolerance, and the network's answer projected "
             f"onto the terminal constraint by at most K Gauss-Newton steps ('C + Newton (K, final)', stopping once "
             f"it misses by less than 1e-6). Rows marked 'imitation stage' score the first stage's model, trained on "
             f"the labels alone: close to the optimum's controls, short of the target until projected. The "
             f"cost gap is against IPOPT's label, the best local optimum from the task's start (hover thrust).")
    section = intro + "\n\n" + frontier.format_rows(TASK, rows, oracle, args.large_batch)
    print(section)
    write_page("your_system", "Your own system: the planar quadrotor of notebook 09 at full size", section,
               {"latency": frontier.plot_frontier(TASK, rows, oracle, frontier.OUT / f"frontier_{TASK}.png")})


if __name__ == "__main__":
    main()
