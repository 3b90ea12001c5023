"""The `trc` command: the training guide's steps as subcommands.

    trc check      validate a task file (--system FILE.py:ClassName) before anything long runs
    trc generate   make a dataset of exact optimal solutions   (guide: src/data/lqr_generator.py)
    trc train      train a model                               (guide: src/training/supervised_trainer.py)
    trc evaluate   score a checkpoint on a test set            (guide: src/evaluation/evaluator.py)
    trc compare    compare with baselines and the oracle       (guide: comparison_experiment.py)
    trc finetune   train further on the true objective         (guide: "optional RL fine-tuning")
    trc export     export to ONNX                              (guide: "Deploy: export to ONNX")
    trc pipeline   all of the above                            (guide: ./train.sh NUM_SAMPLES EPOCHS SIZE)

Errors in the input (a missing or corrupt file, a bad option value) print one line naming
the file or option and exit with status 2; set TRC_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
import threading

import numpy as np

from ..errors import TRCError
from ..model import MODEL_SIZES
from ..oracles.workers import CLUSTER_VARIABLE
from .parameters import DEVICES, SCHEDULERS, named_files
from ..tasks import SYSTEM_NAMES, is_task_file


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (usage is one `--help` away)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # --num_step must not silently mean --num_steps
        super().__init__(*args, **kwargs)
        # argparse takes "-1e3" for an option (its pattern of negative numbers has no exponent), so
        # `--state_range -1e3 1e3` was refused as "expected 2 arguments"
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind, condition, description):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {description}") from None
        if isinstance(value, float) and not math.isfinite(value) or not condition(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {description}")
        return value
    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer")
nonnegative_int = _number(int, lambda v: v >= 0, "a non-negative integer")
seed_int = _number(int, lambda v: 0 <= v < 2**32, "a seed: an integer from 0 to 2**32 - 1")
step_count = _number(int, lambda v: 0 < v <= 1000, "a number of steps from 1 to 1000")
horizon = _number(float, lambda v: 1e-3 <= v <= 1e4, "a horizon from 0.001 to 10000 seconds")
positive_float = _number(float, lambda v: v > 0, "a positive number")
nonnegative_float = _number(float, lambda v: v >= 0, "a non-negative number")
finite_float = _number(float, lambda v: True, "a finite number")
unit_interval = _number(float, lambda v: 0 < v < 1, "a number strictly between 0 and 1")
ema_decay = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def cluster_address(text):
    """A Dask scheduler's address: [tcp://|tls://]HOST:PORT."""
    if not re.fullmatch(r"((tcp|tls|inproc|ucx)://)?[\w.\-\[\]:]+:\d+", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Dask scheduler address such as tcp://127.0.0.1:8786")
    return text


def system_spec(text):
    """A built-in task's name or a task file, FILE.py:ClassName (loaded, and checked, when used)."""
    if text in SYSTEM_NAMES or is_task_file(text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is neither a built-in task ({', '.join(SYSTEM_NAMES)}) nor a task "
                                     f"file FILE.py:ClassName")


def _built_in_tasks() -> str:
    """The built-in tasks, each with the first line of its module's docstring."""
    from ..tasks import BUILT_IN
    return "; ".join(f"{name}: {sys.modules[cls.__module__].__doc__.strip().splitlines()[0].rstrip('.')}"
                     for name, cls in BUILT_IN.items()).replace("%", "%%")


def _add_problem_options(p):
    g = p.add_argument_group("problem (defaults depend on --system; see `trc_lib/tasks/`)")
    g.add_argument("--system", default="double_integrator", type=system_spec, metavar="TASK",
                   help="a task file of your own, FILE.py:ClassName (docs/your_system.md), or a built-in task "
                        f"(trc_lib/tasks/): {_built_in_tasks()} (default: %(default)s)")
    g.add_argument("--parameter", nargs="+", default=None, metavar="NAME=VALUE",
                   help="any number the task declares, e.g. --parameter mass=2.0 substeps=8: num_steps, substeps, "
                        "a physical parameter of a task file or a built-in task (an unknown name is refused with "
                        "the task's list)")
    g.add_argument("--num_steps", type=step_count, default=None,
                   help="control steps N (default: 15 for the double integrator, 50 otherwise)")
    g.add_argument("--time_horizon", type=horizon, default=None,
                   help="horizon T in seconds; dt = T / N exactly (default: 5)")
    g.add_argument("--control_bound", type=positive_float, default=None,
                   help="actuator limit |u_k| <= bound (default: 4 double integrator, 2 vanderpol, 3 pendulum)")
    g.add_argument("--controller", default=None, choices=["min_energy", "lqr", "quadratic"],
                   help="the objective the optimal labels minimize. Double integrator: 'min_energy' (default) "
                        "reaches the target exactly at t = T with minimum sum u^2 dt; 'lqr' is finite-horizon "
                        "LQR tracking with weights --lqr_Q/--lqr_R/--lqr_Qf. Nonlinear systems: 'quadratic' "
                        "(the only one): dt sum(|x - x*|^2 + u^2) with x_N = x*")
    g.add_argument("--lqr_Q", type=nonnegative_float, nargs=2, default=[1.0, 1.0], metavar=("Q_POS", "Q_VEL"),
                   help="LQR state weight, diagonal; only with --controller lqr (default: 1 1)")
    g.add_argument("--lqr_R", type=positive_float, default=0.1, help="LQR control weight; only with --controller lqr (default: %(default)s)")
    g.add_argument("--lqr_Qf", type=nonnegative_float, nargs=2, default=[100.0, 100.0], metavar=("QF_POS", "QF_VEL"),
                   help="LQR terminal weight, diagonal; only with --controller lqr (default: 100 100)")
    g.add_argument("--mu", type=nonnegative_float, default=None,
                   help="Van der Pol damping parameter mu; only with --system vanderpol (default: 1)")


def _add_system_check(p):
    p.add_argument("--system", default=None, type=system_spec, metavar="TASK",
                   help="the system the data must be for (the problem itself is read from the data file, "
                        "made by `trc generate --system ...`); a mismatch is an error (default: any)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="trc", description="TinyRecursiveControl: tiny recursive networks for optimal control, "
                                "trained on and scored against the exact optimum.",
        epilog="Run `trc COMMAND --help` for the options of each command.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_check(sub)
    _add_generate(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_compare(sub)
    _add_prompts(sub)
    _add_finetune(sub)
    _add_export(sub)
    _add_pipeline(sub)
    sub.add_parser("info", help="what this machine runs: the CPU's flags, the compiled paths, the device",
                   description="Print the CPU and the flags that choose a path (AVX2, FMA, F16C, AVX-512, "
                               "AVX512_BF16, AMX), what the C is compiled for ($TRC_MARCH, default native), "
                               "which path predict takes in each precision and at which batches, and "
                               "PyTorch's threads and devices. Writes nothing.")
    return parser


def _add_check(sub) -> None:
    p = sub.add_parser("check", help="validate a task before anything long runs",
                       description="Load a task (a file of yours: --system FILE.py:ClassName), check its fields and "
                                   "its vector field, check that numpy, torch, CasADi and the compiled C agree on "
                                   "x_N, and solve a handful of problems with its oracle. Writes nothing.")
    p.add_argument("--system", required=True, type=system_spec, metavar="TASK",
                   help="FILE.py:ClassName, or a built-in task's name")
    p.add_argument("--parameter", nargs="+", default=None, metavar="NAME=VALUE",
                   help="override numbers the task declares, as in `trc generate` (default: none)")
    p.add_argument("--num_labels", type=positive_int, default=4,
                   help="problems to solve with the task's oracle (default: %(default)s)")


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate a dataset of exact optimal solutions",
                       description="Draw initial and target states uniformly from boxes, solve each problem "
                                   "exactly, write OUTPUT_DIR/lqr_dataset.npz.")
    p.add_argument("--num_samples", type=positive_int, default=10000, help="number of problems (default: %(default)s)")
    p.add_argument("--output_dir", default="data/lqr_train", help="folder for lqr_dataset.npz (default: %(default)s)")
    p.add_argument("--seed", type=seed_int, default=42, help="random seed; the same seed gives identical arrays "
                                                        "(default: %(default)s)")
    p.add_argument("--state_range", type=finite_float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="box for every component of the initial state (default: -2 2; pendulum -0.5 0.5, "
                        "around hanging)")
    p.add_argument("--target_range", type=finite_float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="box for every component of the target state around the task's target (the origin; "
                        "upright (pi, 0) for the pendulum); LOW = HIGH fixes it (default: --state_range for the "
                        "double integrator, 0 0 otherwise)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="worker processes of the local Dask cluster solving IPOPT or cone-program labels "
                        "(default: every core, or this process for fewer than 64 problems; 1: this process)")
    p.add_argument("--cluster", default=None, metavar="ADDRESS", type=cluster_address,
                   help="a running Dask scheduler to solve the labels on instead, such as tcp://10.0.0.5:8786 "
                        "(start it with `dask scheduler`, and workers with `dask worker ADDRESS`; "
                        f"default, without --workers: ${CLUSTER_VARIABLE}, else a local cluster)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    _add_problem_options(p)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model on a dataset",
                       description="Train TinyRecursiveControl by imitation of the exact optimum with deep "
                                   "supervision. Writes best_model.pt, last_model.pt, training_stats.json "
                                   "(rewritten every epoch) and training_curves.png to OUTPUT_DIR.")
    p.add_argument("--data", default="data/lqr_train/lqr_dataset.npz",
                   help="training dataset (.npz from `trc generate`); --val_fraction of it is held out for "
                        "validation (default: %(default)s)")
    p.add_argument("--model_size", default=None, choices=list(MODEL_SIZES),
                   help="small ~114K, medium ~527K, large ~2.6M parameters (default: medium, or --start_from's)")
    p.add_argument("--latent_dim", type=positive_int, default=None,
                   help="custom width of the latent z and the shared net (overrides --model_size's)")
    p.add_argument("--start_from", default=None, metavar="CHECKPOINT",
                   help="start from this trained model's weights instead of a new model (a second stage, e.g. "
                        "--terminal_weight after imitation); its widths stay, the N_out/N_in/N_sup options may "
                        "change them")
    p.add_argument("--num_outer_cycles", type=positive_int, default=None,
                   help="N_out: recursions per supervision step, all but the last without gradient (default 2)")
    p.add_argument("--num_inner_cycles", type=positive_int, default=None,
                   help="N_in: latent updates per recursion (default 3)")
    p.add_argument("--num_supervision_steps", type=positive_int, default=None,
                   help="N_sup: deep-supervision steps, each with its own loss on the answer, carry detached "
                        "in between (default 3)")
    p.add_argument("--no_error_feedback", action="store_true",
                   help="do not feed the simulated terminal miss x_N(u) - x* back into each recursion (on the "
                        "nonlinear systems the feedback costs an RK4 rollout per recursion)")
    p.add_argument("--epochs", type=positive_int, default=100, help="maximum epochs (default: %(default)s)")
    p.add_argument("--batch_size", type=positive_int, default=64, help="mini-batch size (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate of AdamW (default: %(default)s)")
    p.add_argument("--weight_decay", type=nonnegative_float, default=0.0, help="AdamW weight decay (default: %(default)s)")
    p.add_argument("--ema_decay", type=ema_decay, default=0.999,
                   help="decay of the weights' moving average that is validated and saved; 0 disables "
                        "(default: %(default)s)")
    p.add_argument("--terminal_weight", type=nonnegative_float, default=0.0,
                   help="add this weight times the terminal miss m = ||x_N - x*|| through the exact dynamics to "
                        "the imitation loss, as 0.01 log(1 + m^2/0.01) in units of the state scale: m^2 for a miss "
                        "well under 0.1, logarithmic beyond (a task's own model: its own miss) (default: %(default)s)")
    p.add_argument("--scheduler", default="cosine", choices=list(SCHEDULERS),
                   help="learning-rate schedule: cosine annealing to 0, step (x0.1 every third of the epochs), "
                        "plateau (x0.5 after max(1, patience/4) epochs without improvement), none "
                        "(default: %(default)s)")
    p.add_argument("--patience", type=nonnegative_int, default=20,
                   help="stop after this many epochs without a better validation loss; 0 never stops "
                        "early (default: %(default)s)")
    p.add_argument("--val_fraction", type=unit_interval, default=0.1,
                   help="share of the data held out for validation (default: %(default)s)")
    p.add_argument("--output_dir", default="outputs/supervised", help="where the files go (default: %(default)s)")
    p.add_argument("--device", default="auto", choices=list(DEVICES),
                   help="auto picks the GPU when there is one (default: %(default)s)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed for initialization, split and shuffling "
                                                       "(default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUTPUT_DIR/last_model.pt after an interruption")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    _add_system_check(p)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a trained model on a test set",
                       description="Terminal error, success rate, cost and cost gap to the exact optimum, "
                                   "bound violation and inference time (median after warm-up at batch 1 and "
                                   "1000); prints a table and writes JSON.")
    p.add_argument("--checkpoint", default="outputs/supervised/best_model.pt",
                   help="model: a .pt checkpoint or a .onnx file from `trc export` (default: %(default)s)")
    p.add_argument("--test_data", default="data/lqr_test/lqr_dataset.npz", help="test set (default: %(default)s)")
    p.add_argument("--output", default=None, help="JSON file for the results (default: print only)")
    p.add_argument("--success_threshold", type=positive_float, default=0.1,
                   help="a case succeeds when ||x_N - x*|| is below this (default: %(default)s)")
    p.add_argument("--device", default="cpu", choices=list(DEVICES),
                   help="where inference runs and is timed (default: %(default)s)")
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="arithmetic of the matrix products at inference; bfloat16 is faster at large batches "
                        "on CPUs with AMX and on recent GPUs, slower elsewhere; float16 stores the shared net's "
                        "weights in half precision, faster at batch 1 on a CPU (.pt only; default: %(default)s)")
    p.add_argument("--tolerance", type=positive_float, default=None,
                   help="halting: stop refining each problem once its simulated terminal error ||x_N - x*|| is "
                        "below this, and report the refinements used (.pt only; default: run every refinement)")
    _add_system_check(p)


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="compare TRC with baselines and the oracle",
                       description="On the same test cases and metrics: random controls, zero controls, a "
                                   "least-squares linear policy, TRC after each refinement step, any external "
                                   "controllers, and the exact oracle. Prints a table and writes JSON.")
    p.add_argument("--test_data", default="data/lqr_test/lqr_dataset.npz", help="test set (default: %(default)s)")
    p.add_argument("--trc_checkpoint", default=None,
                   help="trained model to include, .pt or .onnx (default: none)")
    p.add_argument("--train_data", default=None,
                   help="training set for the least-squares baseline (default: the checkpoint's)")
    p.add_argument("--external", action="append", default=[], metavar="NAME=FILE",
                   help="controls computed elsewhere for the same test cases: an LLM's answers to `trc prompts` "
                        "(.jsonl: id, answer text, optional latency_ms, memory_bytes, num_parameters; unreadable "
                        "answers count as failures), or control sequences (.npz with key control_sequences "
                        "[B, N, m], or JSON); repeatable")
    p.add_argument("--output", default=None, help="JSON file for the results (default: print only)")
    p.add_argument("--success_threshold", type=positive_float, default=0.1,
                   help="a case succeeds when ||x_N - x*|| is below this (default: %(default)s)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the random-controls baseline (default: %(default)s)")
    p.add_argument("--device", default="cpu", choices=list(DEVICES),
                   help="where TRC runs and is timed (default: %(default)s)")
    p.add_argument("--newton_steps", type=nonnegative_int, default=0, metavar="K",
                   help="nonlinear systems: also score TRC's answer after K Newton steps onto the terminal "
                        "constraint (the shooting method's correction on the exact integrator; 0: off, "
                        "default: %(default)s)")
    p.add_argument("--tolerance", type=positive_float, default=None,
                   help="halting: stop refining each problem once its simulated terminal error ||x_N - x*|| is "
                        "below this, as an extra TRC row with the refinements it used (.pt only; default: run every refinement)")
    _add_system_check(p)


def _add_prompts(sub) -> None:
    p = sub.add_parser("prompts", help="write the test cases as prompts for an LLM (compare its answers after)",
                       description="One JSON line per test case: id, prompt (the problem in words and numbers and "
                                   "the answer format), x0, x*, N and m. Run the prompts through any LLM, save its "
                                   "raw answers as JSON lines {\"id\", \"answer\"} (plus latency_ms, memory_bytes, "
                                   "num_parameters when measured), and score them with `trc compare --external "
                                   "NAME=answers.jsonl`. docs/llm.md has the default template and the fields.")
    p.add_argument("--test_data", default="data/lqr_test/lqr_dataset.npz", help="test set (default: %(default)s)")
    p.add_argument("--output", default="outputs/prompts.jsonl", help="JSON-lines file to write (default: %(default)s)")
    p.add_argument("--template", default=None, metavar="FILE",
                   help="your own prompt text with {placeholders} (docs/llm.md lists them; default: the built-in "
                        "template)")


def _add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a trained model on the task's true objective, or on your reward",
                       description="The guide's optional fine-tuning beyond imitation: train a checkpoint on the "
                                   "task's own cost J(u) / J_ref + TERMINAL_PENALTY ||x_N - x*||^2 through the "
                                   "differentiable simulator, using the problems of --data but not its labels "
                                   "(so the model can end up cheaper than whatever labelled them). Writes "
                                   "OUTPUT_DIR/finetuned_model.pt and finetune_stats.json. With --reward: raise "
                                   "your own reward instead, a function of text answers (TRL's convention) or of "
                                   "arrays, by group-relative policy optimization (docs/reward_finetune.md); "
                                   "writes OUTPUT_DIR/finetuned_model.pt, reward_finetune_stats.json and "
                                   "reward_curves.png. A reward file is code: it runs with your rights.")
    p.add_argument("--checkpoint", default="outputs/supervised/best_model.pt", help="model to start from "
                                                                                    "(default: %(default)s)")
    p.add_argument("--data", default="data/lqr_train/lqr_dataset.npz",
                   help="problems to fine-tune on; --val_fraction held out (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: 20; 10 with --reward)")
    p.add_argument("--lr", type=positive_float, default=1e-4, help="learning rate of AdamW (default: %(default)s)")
    p.add_argument("--batch_size", type=positive_int, default=None,
                   help="mini-batch size, in problems (default: 64; 32 with --reward)")
    p.add_argument("--terminal_penalty", type=nonnegative_float, default=10.0,
                   help="weight of the squared terminal miss, standing in for x_N = x* (default: %(default)s; "
                        "not with --reward, whose reward says what matters)")
    p.add_argument("--reward", default=None, metavar="FILE.py:FUNCTION",
                   help="your reward: reward(prompts, completions, **kwargs) -> [float] (text, as TRL calls it) "
                        "or reward(initial_states, target_states, controls, **kwargs) -> [B] (numpy arrays); "
                        "larger is better (default: none, the task's own cost)")
    p.add_argument("--template", default=None, metavar="FILE",
                   help="with a text reward: the prompt template, as for `trc prompts` (default: the built-in one)")
    p.add_argument("--conversational", action="store_true",
                   help="with a text reward: prompts and completions as lists of {role, content} messages")
    p.add_argument("--group_size", type=positive_int, default=8,
                   help="with --reward: answers sampled per problem, in mirrored pairs (even; default: %(default)s)")
    p.add_argument("--sigma", type=positive_float, nargs=2, default=(0.01, 0.005), metavar=("START", "END"),
                   help="with --reward: the sampling spread, a fraction of each control's half-range, at the first "
                        "and the last epoch (default: 0.01 0.005)")
    p.add_argument("--kl_coefficient", type=nonnegative_float, default=0.01,
                   help="with --reward: weight of the KL divergence from the starting model's policy "
                        "(default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="with --reward: continue the run kept in OUTPUT_DIR after its last finished epoch")
    p.add_argument("--val_fraction", type=unit_interval, default=0.1,
                   help="share of the data held out for validation (default: %(default)s)")
    p.add_argument("--output_dir", default="outputs/finetuned", help="where the files go (default: %(default)s)")
    p.add_argument("--device", default="auto", choices=list(DEVICES),
                   help="auto picks the GPU when there is one (default: %(default)s)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed for the split and shuffling (default: %(default)s)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a trained model to ONNX (the guide's Deploy step)",
                       description="Write the model as ONNX (batch size free) and check that ONNX Runtime "
                                   "reproduces PyTorch to 1e-5 x max(1, control bound) on random inputs; load it with "
                                   "trc_lib.load_model('model.onnx') or evaluate it with `trc evaluate "
                                   "--checkpoint model.onnx`.")
    p.add_argument("--checkpoint", default="outputs/supervised/best_model.pt", help="model (default: %(default)s)")
    p.add_argument("--output", default="outputs/supervised/model.onnx", help="ONNX file (default: %(default)s)")


def _add_pipeline(sub) -> None:
    p = sub.add_parser("pipeline", help="generate, train, evaluate and compare in one go (the guide's train.sh)",
                       description="The guide's ./train.sh: runs notebooks 01-04 headless (papermill) with these "
                                   "parameters: generate the training set (NUM_SAMPLES, seed 42) and test set "
                                   "(1000, seed 123) unless they already exist with these settings, train, "
                                   "evaluate, compare (or the one notebook of a task that has its own). Executed copies "
                                   "with outputs go to --notebooks_dir.")
    p.add_argument("num_samples", type=positive_int, nargs="?", default=10000,
                   help="training samples (default: %(default)s)")
    p.add_argument("epochs", type=positive_int, nargs="?", default=100, help="epochs (default: %(default)s)")
    p.add_argument("model_size", nargs="?", default="medium", choices=list(MODEL_SIZES),
                   help="model size (default: %(default)s)")
    p.add_argument("--test_samples", type=positive_int, default=1000, help="test cases (default: %(default)s)")
    p.add_argument("--system", default="double_integrator", type=system_spec, metavar="TASK",
                   help="the task (see `trc generate --help`); the others' files go to their own folders "
                        "(default: %(default)s)")
    p.add_argument("--state_range", type=finite_float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="box for every component of the initial state (default: the system's, -2 2 for the "
                        "double integrator)")
    p.add_argument("--data_dir", default=None,
                   help="holds lqr_train/ and lqr_test/ (default: data, or data/SYSTEM for the other systems)")
    p.add_argument("--output_dir", default=None,
                   help="training outputs (default: outputs/supervised, or outputs/SYSTEM)")
    p.add_argument("--notebooks_dir", default=None,
                   help="where the executed notebooks, with outputs and figures, go (default: outputs/notebooks, "
                        "or outputs/SYSTEM/notebooks)")
    p.add_argument("--batch_size", type=positive_int, default=64, help="mini-batch size (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate (default: %(default)s)")
    p.add_argument("--patience", type=nonnegative_int, default=20, help="early-stopping patience (default: %(default)s)")
    p.add_argument("--device", default="auto", choices=list(DEVICES),
                   help="training device (default: %(default)s)")
    p.add_argument("--seed", type=seed_int, default=0, help="training seed (default: %(default)s)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")


def _check_outputs(args) -> None:
    """Refuse an unwritable --output before any long work."""
    from ..files import check_writable
    if getattr(args, "output", None) is not None:
        if not args.output:
            raise TRCError("--output: empty file name")
        check_writable(args.output)


def _task_parameters(pairs, system) -> dict:
    """--parameter NAME=VALUE ... as {name: number} (an integer where the text is one)."""
    if not pairs:
        return {}
    parameters = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        if not name.isidentifier() or not text:
            raise TRCError(f"--parameter {pair!r}: write NAME=VALUE, e.g. --parameter mass=2.0")
        try:
            value = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
        except ValueError:
            raise TRCError(f"--parameter {pair}: {text!r} is not a number") from None
        if not np.isfinite(value):
            raise TRCError(f"--parameter {pair}: {text!r} is not a finite number")
        parameters[name] = value
    return parameters


def _system_parameters(args) -> dict:
    """The options that are one system's own parameters (refused for the others), and --parameter."""
    if args.mu is not None and args.system != "vanderpol":
        raise TRCError(f"--mu is a parameter of --system vanderpol; it does not apply to --system {args.system}")
    return {**({} if args.mu is None else {"mu": args.mu}), **_task_parameters(args.parameter, args.system)}


def run(args) -> None:
    from . import workflow
    _check_outputs(args)
    if args.command == "check":
        from ..tasks.check import check_task
        check_task(args.system, num_labels=args.num_labels, **_task_parameters(args.parameter, args.system))
        return
    if args.command == "generate":
        workflow.generate(args.output_dir, num_samples=args.num_samples, seed=args.seed,
                          state_range=tuple(args.state_range) if args.state_range else None,
                          target_range=tuple(args.target_range) if args.target_range else None,
                          num_steps=args.num_steps, time_horizon=args.time_horizon,
                          control_bound=args.control_bound, controller=args.controller, system=args.system,
                          lqr_Q=tuple(args.lqr_Q), lqr_R=(args.lqr_R,), lqr_Qf=tuple(args.lqr_Qf),
                          workers=args.workers, cluster=args.cluster, progress=not args.no_progress,
                          **_system_parameters(args))
    elif args.command in ("train", "evaluate", "compare") and args.system:
        data = {"train": "data", "evaluate": "test_data", "compare": "test_data"}[args.command]
        workflow.check_system(getattr(args, data), args.system, f"--{data}")
    if args.command == "train":
        workflow.train_model(args.data, **_options(args, "output_dir", "model_size", "epochs", "batch_size", "lr",
                                                   "patience", "scheduler", "latent_dim", "num_outer_cycles",
                                                   "num_inner_cycles", "num_supervision_steps", "device", "seed",
                                                   "resume", "val_fraction", "ema_decay", "weight_decay",
                                                   "terminal_weight", "start_from"),
                             error_feedback=False if args.no_error_feedback else None, progress=not args.no_progress)
    elif args.command == "evaluate":
        workflow.evaluate_checkpoint(args.checkpoint, args.test_data,
                                     **_options(args, "output", "success_threshold", "device", "precision",
                                                "tolerance"))
    elif args.command == "compare":
        workflow.compare(args.test_data, external=named_files(args.external, "--external"),
                         **_options(args, "trc_checkpoint", "output", "train_data", "success_threshold", "seed",
                                    "device", "newton_steps", "tolerance"))
    elif args.command == "prompts":
        workflow.prompts(args.test_data, args.output, template=args.template)
    elif args.command == "finetune":
        _finetune(args, workflow)
    elif args.command == "export":
        workflow.export(args.checkpoint, args.output)
    elif args.command == "info":
        _print_info()
    elif args.command == "pipeline":
        from .pipeline import run_pipeline
        run_pipeline(args.num_samples, args.epochs, args.model_size, progress=not args.no_progress,
                     **_options(args, "test_samples", "data_dir", "output_dir", "notebooks_dir", "batch_size", "lr",
                                "patience", "device", "seed", "system", "state_range"))


def _finetune(args, workflow) -> None:
    """`trc finetune`: through the simulator on the task's own cost, or (--reward) on the user's reward."""
    if args.reward is None:
        extra = [f"--{name}" for name in ("template", "conversational", "resume") if getattr(args, name)]
        if extra:
            raise TRCError(f"{extra[0]} is an option of the reward route; add --reward FILE.py:FUNCTION")
        workflow.finetune_checkpoint(args.checkpoint, args.data, progress=not args.no_progress,
                                     epochs=args.epochs or 20, batch_size=args.batch_size or 64,
                                     **_options(args, "output_dir", "lr", "terminal_penalty", "val_fraction",
                                                "device", "seed"))
        return
    workflow.reward_finetune_checkpoint(args.checkpoint, args.data, args.reward, progress=not args.no_progress,
                                        epochs=args.epochs or 10, batch_size=args.batch_size or 32,
                                        sigma_start=args.sigma[0], sigma_end=args.sigma[1],
                                        **_options(args, "output_dir", "lr", "template", "conversational",
                                                   "group_size", "kl_coefficient", "resume", "val_fraction",
                                                   "device", "seed"))


def _print_info() -> None:
    """`trc info`: the fast paths on this CPU (fast/forward.py's paths) and PyTorch's side."""
    import torch
    from ..fast.forward import paths
    rows = dict(paths())
    rows["pytorch"] = (f"{torch.__version__}, {torch.get_num_threads()} threads, kernels for "
                       f"{torch.backends.cpu.get_cpu_capability()}")
    rows["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (the CPU is used)"
    width = max(map(len, rows))
    for name, value in rows.items():
        print(f"{name:<{width}}  {value}")


def _as_flags(message: str, args) -> str:
    """The library names its parameters (`resume: ...`, `try a lower lr`); on the command line they
    are options. Given their two dashes: a name the message starts with, a name with an underscore
    (an identifier, never an English word) anywhere, and the name after "a lower"."""
    options = sorted((name for name in vars(args) if name != "command"), key=len, reverse=True)
    if not options or message.startswith("-"):
        return message
    names = "|".join(options)
    message = re.sub(rf"^({names})(?=[\s:])", r"--\1", message)
    message = re.sub(rf"(?<![\w/.-])({'|'.join(o for o in options if '_' in o) or '$^'})(?![\w/.-])", r"--\1",
                     message)
    return re.sub(rf"(?<=a lower )({names})\b", r"--\1", message)


def _options(args, *names) -> dict:
    """The named options, as keyword arguments of the library function of the same names."""
    return {name: getattr(args, name) for name in names}


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `kill` and batch schedulers send), handled like Ctrl-C: the run stops at a
    safe point, says so, and a training can be resumed."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _output_lock(args):
    """The output folder's lock (files.output_lock) for a command that writes into one; under
    torchrun only rank 0 holds it, for the whole job."""
    from contextlib import nullcontext
    from ..files import output_lock
    folder = getattr(args, "output_dir", None)
    if args.command not in ("generate", "train", "finetune") or not folder or os.environ.get("RANK", "0") != "0":
        return nullcontext()
    return output_lock(folder, f"trc {args.command}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        with _output_lock(args):
            run(args)
    except (TRCError, ValueError, ArithmeticError) as e:
        if os.environ.get("TRC_DEBUG"):
            raise
        print(f"trc {args.command}: error: {_as_flags(str(e), args)}", file=sys.stderr)
        return 2
    except OSError as e:  # an unwritable output path, a full disk
        if os.environ.get("TRC_DEBUG"):
            raise
        print(f"trc {args.command}: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"trc {args.command}: error: out of memory; use smaller sizes", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"trc {args.command}: {how}" + (" (continue with --resume)" if args.command == "train" else ""),
              file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
