"""Experiment: can a model trained on a sub-optimal teacher beat it by fine-tuning on the true objective?

    python benchmarks/finetune_teacher.py [--num_samples 2000 --epochs 30 --finetune_epochs 20 --model_size small]

On the default Van der Pol task (T = 5 s, N = 50, |u| <= 2, regulate x_0 in [-2, 2]^2 to the
origin exactly at t = T, minimizing dt sum(|x|^2 + u^2)):

1. teacher labels (teacher.py: clipped finite-horizon LQR on the linearization at the origin,
   played on the true system) for num_samples problems, 10% of them held out for validation;
2. imitation training of a TinyRecursiveControl on those labels (training.train);
3. fine-tuning on the true objective through the differentiable simulator (finetune.py),
   which uses the problems but not the labels; and, from the same imitation model, the reward
   route (reward_finetune.py, what `trc finetune --reward` runs) on the same objective handed over
   as a black box, with the number of calls each route made;
4. the teacher, the imitation-only model and the fine-tuned model scored on a test set labelled
   by IPOPT (the true optimum; seed 123): success rate (terminal error < 0.1), terminal error,
   and the cost gap to the optimum (evaluate.py: J(u) + λ . (x_N - x*) - J*, over J*).

Writes finetune_teacher.json and finetune_teacher.md (and the imitation run's files under
imitation/, the fine-tuned weights as finetuned_model.pt) to --output_dir, and prints the table.
The defaults are a quick run (a few minutes on 2 cores); nothing is asserted.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch

from trc_lib.checkpoint import save_checkpoint
from trc_lib.data import create_data_loaders, generate_dataset
from trc_lib.evaluate import hardware, metrics, score_controls
from trc_lib.files import atomic_path, write_json
from trc_lib.reward import Reward
from trc_lib.studies.finetune import finetune
from trc_lib.studies.reward_finetune import reward_finetune
from trc_lib.model import TinyRecursiveControl
from trc_lib.tasks import make_problem
from trc_lib.studies.teacher import clipped_lqr_labels
from trc_lib.training import train

from results_page import write_page

ROOT = Path(__file__).resolve().parents[1]
TEST_SEED = 123


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_samples", type=int, default=2000, help="teacher-labelled problems (default 2000)")
    parser.add_argument("--test_samples", type=int, default=200, help="IPOPT-labelled test problems (default 200)")
    parser.add_argument("--epochs", type=int, default=30, help="imitation epochs (default 30)")
    parser.add_argument("--finetune_epochs", type=int, default=20, help="fine-tuning epochs (default 20)")
    parser.add_argument("--finetune_lr", type=float, default=1e-4, help="fine-tuning learning rate (default 1e-4)")
    parser.add_argument("--finetune_batch_size", type=int, default=64, help="fine-tuning batch size (default 64)")
    parser.add_argument("--reward_epochs", type=int, default=20,
                        help="epochs of the reward route on the same objective (default 20)")
    parser.add_argument("--terminal_penalty", type=float, default=10.0,
                        help="fine-tuning's weight on ||x_N - x*||^2 (default 10; finetune.py explains why not 100)")
    parser.add_argument("--model_size", default="small", choices=["small", "medium", "large"], help="model size to train")
    parser.add_argument("--seed", type=int, default=0, help="training problems, weights, shuffling (default 0)")
    parser.add_argument("--workers", type=int, default=2, help="IPOPT processes for the test labels (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where to train (auto: the GPU if any)")
    parser.add_argument("--output_dir", default=str(ROOT / "outputs" / "benchmark" / "finetune_teacher"),
                        help="where the data, models and results go")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    times = {}
    problem = make_problem(system="vanderpol")

    t = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    initial_states = rng.uniform(-2.0, 2.0, size=(args.num_samples, 2))
    teacher_set = clipped_lqr_labels(problem, initial_states, np.zeros_like(initial_states),
                                     {"num_samples": args.num_samples, "seed": args.seed, "state_range": [-2.0, 2.0],
                                      "target_range": [0.0, 0.0]})
    num_val = max(1, args.num_samples // 10)
    train_set = teacher_set.subset(np.arange(num_val, len(teacher_set)))
    val_set = teacher_set.subset(np.arange(num_val))
    times["teacher labels"] = time.perf_counter() - t
    t = time.perf_counter()
    test = generate_dataset(problem, args.test_samples, seed=TEST_SEED, state_range=(-2.0, 2.0),
                            target_range=(0.0, 0.0), workers=args.workers)
    times["IPOPT test labels"] = time.perf_counter() - t

    t = time.perf_counter()
    torch.manual_seed(args.seed)
    model = TinyRecursiveControl.create(args.model_size, problem=problem)
    train_loader, val_loader = create_data_loaders(train_set, val_set, batch_size=64, seed=args.seed)
    model = train(model, train_loader, val_loader, epochs=args.epochs, lr=1e-3, device=args.device,
                  output_dir=out / "imitation", patience=0, log=print)
    times["imitation training"] = time.perf_counter() - t

    teacher_controls = clipped_lqr_labels(problem, test.initial_states, test.target_states).control_sequences
    imitation_controls = model.predict(test.initial_states, test.target_states)

    rewarded = copy.deepcopy(model)  # the reward route starts from the same imitation model
    t = time.perf_counter()
    history = finetune(model, train_set, val_set, epochs=args.finetune_epochs, lr=args.finetune_lr,
                       batch_size=args.finetune_batch_size, terminal_penalty=args.terminal_penalty,
                       device=args.device, seed=args.seed)
    times["fine-tuning"] = time.perf_counter() - t
    save_checkpoint(out / "finetuned_model.pt", model, model.state_dict())
    finetuned_controls = model.predict(test.initial_states, test.target_states)
    gradient_steps = args.finetune_epochs * -(-len(train_set) // args.finetune_batch_size)

    # the reward route on the same objective, as a black box: what the gradient route descends, negated
    cost_scale, penalty = history["cost_scale"], args.terminal_penalty

    def true_objective(initial_states, target_states, controls, task, **kwargs):
        states = task.rollout(initial_states, controls)
        miss = states[:, -1] - target_states
        return -(task.cost(states, controls, target_states) / cost_scale + penalty * np.square(miss).sum(1))

    t = time.perf_counter()
    reward_history = reward_finetune(rewarded, Reward(true_objective, "true_objective"), train_set, val_set,
                                     epochs=args.reward_epochs, seed=args.seed, device=args.device)
    times["reward fine-tuning"] = time.perf_counter() - t
    rewarded_controls = rewarded.predict(test.initial_states, test.target_states)

    results = {}
    for name, controls in (("IPOPT (true optimum)", test.control_sequences),
                           ("teacher (clipped LQR)", teacher_controls),
                           ("TRC, imitation only", imitation_controls),
                           ("TRC, + fine-tuning", finetuned_controls),
                           ("TRC, + reward fine-tuning (black box)", rewarded_controls)):
        scores = score_controls(test, controls)
        results[name] = metrics(scores) | {"cost_ratio": {"mean": float(np.mean(scores["cost"] / test.costs)),
                                                          "median": float(np.median(scores["cost"] / test.costs))}}

    setup = (f"{len(train_set)} teacher-labelled training problems ({len(val_set)} validation), {args.epochs} "
             f"imitation epochs, {args.finetune_epochs} fine-tuning epochs (lr {args.finetune_lr:g}, batch "
             f"{args.finetune_batch_size}, terminal penalty {args.terminal_penalty:g}); {len(test)} IPOPT-labelled "
             f"test problems (seed {TEST_SEED}). Cost gap: (J + λ.(x_N - x*) - J*) / J*.")
    header = ("| controller | success (err < 0.1) | mean terminal error | median cost gap | mean cost gap "
              "| mean J / J* |")
    lines = [f"## Fine-tuning past a sub-optimal teacher: Van der Pol, {args.model_size} TRC", "", setup, "",
             header, "|---|---|---|---|---|---|"]
    for name, m in results.items():
        lines.append(f"| {name} | {100 * m['success_rate']:.1f}% | {m['terminal_error']['mean']:.2e} | "
                     f"{100 * m['cost_gap']['median']:.2f}% | {100 * m['cost_gap']['mean']:.2f}% | "
                     f"{m['cost_ratio']['mean']:.4f} |")
    lines += ["", f"What each route asked of the objective: fine-tuning through the simulator, {gradient_steps:,} "
                  f"gradient steps on batches of {args.finetune_batch_size} (each a differentiable rollout); reward "
                  f"fine-tuning (`trc finetune --reward`, its defaults, {args.reward_epochs} epochs), "
                  f"{reward_history['reward_calls']:,} calls of the objective as a black box, scoring "
                  f"{reward_history['answers_scored']:,} answers."]
    hw = hardware()
    lines += ["", "| step | wall time |", "|---|---|"] + [f"| {k} | {v:.0f} s |" for k, v in times.items()]
    machine = f"Hardware: {hw['cpu']}, torch {hw['torch']} with {hw['torch_threads']} threads, device {args.device}."
    lines += ["", machine]
    report = "\n".join(lines)
    print("\n" + report)
    write_json(out / "finetune_teacher.json", {"args": vars(args), "results": results, "finetune_history": history,
                                               "seconds": times, "hardware": hw})
    with atomic_path(out / "finetune_teacher.md") as tmp:
        tmp.write_text(report + "\n")
    write_page("finetune_teacher", "Fine-tuning past a sub-optimal teacher", report)
    print(f"\n(written to {out})")


if __name__ == "__main__":
    main()
