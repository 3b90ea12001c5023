"""The guide's steps as functions with file paths in and files out. The command line (cli.py),
the pipeline and the notebooks all call these, so each step is written once."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..baselines import (ExternalControls, LeastSquaresController, LQRController, OracleController,
                         RandomController, ZeroController)
from ..checkpoint import load_model, read_checkpoint
from ..compare import RefinementStep, TRCController, compare_controllers, evaluate_controller, format_table
from ..data import (DATASET_FILENAME, generate_dataset, load_dataset, make_problem, read_dataset, sampling_record,
                    save_dataset)
from ..device import resolve_device
from ..errors import TRCError, describe_difference
from ..evaluate import hardware
from ..export import OnnxController, export_onnx
from ..files import check_folder, write_json
from ..oracles import oracle_of
from ..training import train_model  # noqa: F401  (a step of the guide, as the faces call it)
from ..inference import INFERENCE_PRECISIONS
from ..model import TinyRecursiveControl
from ..oracles.workers import Workers, clear_journal
from ..tasks import import_reference, is_task_file, task_class


def generate(output_dir, *, num_samples=10000, num_steps=None, time_horizon=None, seed=42, state_range=None,
             target_range=None, control_bound=None, controller=None, system="double_integrator",
             lqr_Q=(1.0, 1.0), lqr_R=(0.1,), lqr_Qf=(100.0, 100.0), workers=None, cluster=None, progress=True,
             log=print, **system_parameters) -> Path:
    """Generate a dataset and write OUTPUT_DIR/lqr_dataset.npz; returns its path.

    None means the task's default (trc_lib/tasks/) for every problem and sampling option;
    system_parameters: the system's own (mu=..., substeps=...). workers: processes of the local
    Dask cluster solving IPOPT or cone-program labels (default: every core; 1: this process);
    cluster: the address of a Dask scheduler to use instead (default, when workers is not given
    either: $TRC_CLUSTER, else the local cluster). Finished chunks are kept in
    OUTPUT_DIR/lqr_dataset.npz.chunks until the dataset is written: a run started again after an
    interruption continues from them.
    """
    problem = make_problem(num_steps, time_horizon, control_bound, controller, system, lqr_Q, lqr_R, lqr_Qf,
                           **system_parameters)
    if problem.draws_its_own_problems and (state_range is not None or target_range is not None):
        raise ValueError(f"state_range and target_range do not apply to {system}: it draws from its own box")
    journal = Path(output_dir) / f"{DATASET_FILENAME}.chunks"
    solvers = Workers.of(workers, address=cluster, journal=journal)
    if solvers.address and oracle_of(problem).solves_on_workers:  # fails fast if the cluster is absent
        log(f"solving on the Dask cluster at {solvers.address} ({solvers.count()} workers)")
    started = time.perf_counter()
    dataset = generate_dataset(problem, num_samples, seed, state_range, target_range, workers=solvers,
                               progress=progress)
    path = save_dataset(dataset, Path(output_dir) / DATASET_FILENAME)
    clear_journal(journal)
    meta = dataset.metadata
    step = (f"dt = {problem.dt:.6g} s" if dataset.time_horizons is None else
            f"horizons {dataset.time_horizons.min():.1f} to {dataset.time_horizons.max():.1f} s")
    log(f"wrote {path}: {num_samples} {system} {problem.objective.name} solutions ({meta['oracle']}), "
        f"{step}, {meta['num_bound_active']} with the bound active, {meta['num_redrawn']} "
        f"{oracle_of(problem).failure} pairs re-drawn ({time.perf_counter() - started:.2f} s)")
    return path


def dataset_matches(path, **requested) -> bool:
    """True if `path` holds a valid dataset generated with these settings (for caching).

    requested: num_samples, seed, and optionally system, state_range, target_range, num_steps,
    time_horizon, control_bound, controller and system parameters (None or absent: the task's
    default; target_range None: as generate() chooses).
    """
    try:
        meta = read_dataset(path, verify_labels=False).metadata
    except TRCError:
        return False
    requested = dict(requested)
    num_samples, seed = requested.pop("num_samples"), requested.pop("seed")
    system = requested.pop("system", None) or "double_integrator"
    state_range, target_range = requested.pop("state_range", None) or None, requested.pop("target_range", None) or None
    problem_options = {k: v for k, v in requested.items() if v is not None}
    problem = make_problem(system=system, **problem_options)
    record = sampling_record(problem, state_range, target_range)
    return (meta["problem"] == problem.to_dict() and meta["num_samples"] == num_samples
            and meta["seed"] == seed and all(meta.get(k) == v for k, v in record.items()))


def check_system(path, system: str, option: str) -> None:
    """TRCError unless the dataset at `path` is for `system` (a cheap read: labels not verified)."""
    problem = read_dataset(path, verify_labels=False).problem
    found = getattr(problem, "reference", None) or problem.name
    if found != (task_class(system)._reference if is_task_file(system) else system):
        raise TRCError(f"{option} {path} holds {found} problems, not {system} (make {system} data with "
                       f"`trc generate --system {system}`)")


def _check_tolerance(tolerance, model=None):
    """A halting tolerance: None, or positive for a .pt model (halting simulates between refinements)."""
    if tolerance is None:
        return
    if not (tolerance > 0 and np.isfinite(tolerance)):
        raise TRCError(f"--tolerance must be a positive number, got {tolerance}")
    if isinstance(model, OnnxController):
        raise TRCError("--tolerance: halting needs the .pt checkpoint (it simulates between refinements)")


def _check_threshold(success_threshold):
    if not (success_threshold > 0 and np.isfinite(success_threshold)):
        raise TRCError(f"success_threshold must be a positive number, got {success_threshold}")


def _model_problem(model) -> dict | None:
    config = model.config if isinstance(model.config, dict) else model.config_dict()
    return config.get("problem") if config else None


def _check_same_problem(model, test, checkpoint):
    if _model_problem(model) != test.metadata["problem"]:
        difference = "; ".join(describe_difference(_model_problem(model) or {}, test.metadata["problem"]))
        raise TRCError(f"{checkpoint} was trained for another problem than {test.path} states "
                       f"(model vs data: {difference})")


def evaluate_checkpoint(checkpoint, test_data, *, output=None, success_threshold=0.1, device="cpu",
                        precision="float32", tolerance=None, log=print) -> dict:
    """Metrics and inference times of a trained model on a test set; written to `output` as JSON.

    precision: "float32", "bfloat16" or "float16" (TinyRecursiveControl.set_inference_precision; .pt only).
    tolerance: halt each problem once its simulated terminal error is below it (.pt only).
    """
    _check_threshold(success_threshold)
    _check_tolerance(tolerance)
    if precision not in INFERENCE_PRECISIONS:
        raise TRCError(f"--precision {precision!r}: choose one of {list(INFERENCE_PRECISIONS)}")
    device = resolve_device(device)
    model = load_model(checkpoint, device)
    test = read_dataset(test_data)
    _check_same_problem(model, test, checkpoint)
    _check_tolerance(tolerance, model)
    if isinstance(model, OnnxController) and precision != "float32":
        raise TRCError(f"--precision {precision}: an ONNX model runs in float32; pass a .pt checkpoint")
    if not isinstance(model, OnnxController):
        model.set_inference_precision(precision)
    result = {"checkpoint": str(checkpoint), "test_data": str(test.path), "num_samples": len(test),
              "problem": test.metadata["problem"], "device": str(device), "precision": precision,
              "hardware": hardware()}
    if test.problem.evaluation is not None:  # a task scored its own way (Task.evaluation)
        rows, table = import_reference(test.problem.evaluation)(model, test)
        result["rows"] = rows
    else:
        controller = model if isinstance(model, OnnxController) else TRCController(model, device, tolerance)
        row = evaluate_controller(controller, test, success_threshold)
        result, table = {**result, **row}, format_table([row])
    if output:
        write_json(output, result)
        log(f"wrote {output}")
    log(table)
    return result


def compare(test_data, *, trc_checkpoint=None, output=None, train_data=None, external=(), success_threshold=0.1,
            seed=0, device="cpu", newton_steps=0, tolerance=None, log=print) -> list[dict]:
    """Random, zero, least squares, LQR (where it applies: baselines.LQRController), TRC per
    refinement step, TRC, external files and the oracle, on the same test cases. external: sequence of (name, path). newton_steps > 0 adds TRC's
    answer polished by that many Newton steps onto the terminal constraint (studies/projection.py;
    nonlinear tasks). tolerance adds TRC halting at that simulated terminal error (.pt only).
    Writes JSON to `output`."""
    _check_compare_options(success_threshold, tolerance, newton_steps, trc_checkpoint, external)
    test = read_dataset(test_data)
    problem = test.problem
    for given, option in ((external, "--external"), (newton_steps, "--newton_steps"), (tolerance, "--tolerance")):
        if given:
            _check_available(test, f"compare {option}")
    if newton_steps and oracle_of(problem).exact_and_fast:
        raise TRCError(f"--newton_steps is for the nonlinear systems; {test.path} states a linear one, "
                       f"whose oracle is already exact")
    model = None
    if trc_checkpoint:
        device = resolve_device(device)
        model = load_model(trc_checkpoint, device)
        _check_same_problem(model, test, trc_checkpoint)
        _check_tolerance(tolerance, model)
        if train_data is None and not isinstance(model, OnnxController):
            train_data = read_checkpoint(trc_checkpoint).get("data", {}).get("path")
    if problem.comparison is not None:  # a task with baselines of its own (Task.comparison)
        rows, table = import_reference(problem.comparison)(test, model)
        return _report_comparison(test, trc_checkpoint, None, rows, table, output, log)
    train_set = _training_set(train_data, test)
    controllers = [RandomController(problem, seed), ZeroController(problem),
                   LeastSquaresController(problem).fit(train_set)]
    lqr = LQRController(problem)
    if lqr.applies(test.target_states):
        controllers.append(lqr)
    untimed = set()
    if model is not None:
        trc, steps = _trc_controllers(model, device, test, tolerance, newton_steps)
        controllers += trc
        untimed |= steps
    for name, path in external:  # answers an LLM wrote (.jsonl, llm.py) or control sequences (.npz, .json)
        from ..llm import TextAnswers
        controllers.append(TextAnswers(name, path, test) if Path(path).suffix == ".jsonl"
                           else ExternalControls(name, path, test))
        untimed.add(name)
    controllers.append(OracleController(problem))
    rows = compare_controllers(test, controllers, success_threshold, untimed=untimed)
    return _report_comparison(test, trc_checkpoint, train_set.path, rows, format_table(rows), output, log)


def _report_comparison(test, trc_checkpoint, train_path, rows, table, output, log) -> list[dict]:
    """compare's rows, written to `output` as JSON and their table logged."""
    result = {"test_data": str(test.path), "trc_checkpoint": str(trc_checkpoint) if trc_checkpoint else None,
              "train_data": None if train_path is None else str(train_path), "num_samples": len(test),
              "problem": test.metadata["problem"], "hardware": hardware(), "controllers": rows}
    if output:
        write_json(output, result)
        log(f"wrote {output}")
    log(table)
    return rows


def _check_compare_options(success_threshold, tolerance, newton_steps, trc_checkpoint, external) -> None:
    _check_threshold(success_threshold)
    _check_tolerance(tolerance)
    if int(newton_steps) != newton_steps or newton_steps < 0:
        raise TRCError(f"--newton_steps must be a non-negative integer, got {newton_steps}")
    if newton_steps and not trc_checkpoint:
        raise TRCError("--newton_steps polishes TRC's answer: pass --trc_checkpoint too")
    names = [name for name, _ in external]
    reserved = {"random", "zero", "least squares (linear)", LQRController.name, "TRC", "TRC (ONNX Runtime)",
                "oracle (exact QP)", "oracle (IPOPT)"}
    if (len(set(names)) < len(names) or reserved & set(names)
            or any(n.startswith(("TRC after step", "TRC + Newton", "TRC (halting")) for n in names)):
        raise TRCError(f"--external names must be unique and differ from the built-in controllers "
                       f"{sorted(reserved)}; got {names}")


def _training_set(train_data, test):
    """The least-squares baseline's training set, checked against the test set's problem."""
    if train_data is None:
        raise TRCError("the least-squares baseline needs the training set: pass --train_data "
                       "(or --trc_checkpoint, whose training data is used)")
    try:
        train_set = read_dataset(train_data)
    except TRCError as e:
        raise TRCError(f"training set for the least-squares baseline: {e} (pass --train_data)") from None
    if train_set.metadata["problem"] != test.metadata["problem"]:
        raise TRCError(f"{train_data} and {test.path} state different problems")
    return train_set


def _trc_controllers(model, device, test, tolerance, newton_steps) -> tuple[list, set]:
    """TRC after each refinement (untimed: read off one forward pass), TRC, and TRC halting or
    with Newton steps when asked; returns (controllers, names of the untimed ones)."""
    final = model if isinstance(model, OnnxController) else TRCController(model, device)
    refinements = model.predict_refinements(test.initial_states, test.target_states)
    steps = [RefinementStep(final, r, refinements) for r in range(1, len(refinements))]
    controllers = [*steps, final]
    if tolerance is not None:
        controllers.append(TRCController(model, device, tolerance))
    if newton_steps:
        from ..studies.projection import ProjectedController
        controllers.append(ProjectedController(final, test.problem, int(newton_steps)))
    return controllers, {s.name for s in steps}


def prompts(test_data, output, *, template=None, log=print) -> Path:
    """`trc prompts`: the test cases as prompts for a language model, one JSON line each (llm.py)."""
    from ..files import check_writable
    from ..llm import DEFAULT_TEMPLATE, prompts as make_prompts, read_template, write_jsonl
    text = DEFAULT_TEMPLATE if template is None else read_template(template)
    check_writable(output)
    test = read_dataset(test_data)
    _check_available(test, "trc prompts")
    path = write_jsonl(output, make_prompts(test, text))
    log(f"wrote {len(test)} prompts to {path}; answer them, then: trc compare --test_data {test.path} "
        f"--external \"NAME={Path(path).with_name('answers.jsonl')}\" ...")
    return path


def finetune_checkpoint(checkpoint, data, *, output_dir="outputs/finetuned", epochs=20, lr=1e-4, batch_size=64,
                        terminal_penalty=10.0, val_fraction=0.1, device="auto", seed=0, progress=True,
                        log=print) -> TinyRecursiveControl:
    """`trc finetune`: train a checkpoint further on its task's true objective (finetune.py).

    Uses the problems of `data` (split as in training), not its labels. Writes
    OUTPUT_DIR/finetuned_model.pt and OUTPUT_DIR/finetune_stats.json (the history).
    """
    from ..checkpoint import save_checkpoint
    from ..studies.finetune import finetune
    if Path(checkpoint).suffix == ".onnx":
        raise TRCError(f"{checkpoint}: an ONNX file cannot be trained; pass the .pt checkpoint")
    check_folder(output_dir, "output_dir")  # before the epochs, not after them
    model = load_model(checkpoint, "cpu")
    train_set, val_set = load_dataset(data, val_fraction=val_fraction, seed=seed)
    _check_same_problem(model, train_set, checkpoint)
    torch.manual_seed(seed)
    history = finetune(model, train_set, val_set, epochs=epochs, lr=lr, batch_size=batch_size,
                       terminal_penalty=terminal_penalty, device=resolve_device(device), seed=seed,
                       progress=progress, log=log)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.cpu().eval()
    save_checkpoint(output_dir / "finetuned_model.pt", model, model.state_dict(),
                    data={"path": str(Path(data).resolve())}, finetuned_from=str(checkpoint),
                    finetune={k: history[k] for k in ("cost_scale", "terminal_penalty", "initial", "final")})
    write_json(output_dir / "finetune_stats.json", history)
    log(f"wrote {output_dir / 'finetuned_model.pt'} and finetune_stats.json")
    return model


def reward_finetune_checkpoint(checkpoint, data, reward, *, output_dir="outputs/reward_finetuned", epochs=10,
                               lr=1e-4, batch_size=32, group_size=8, sigma_start=0.01, sigma_end=0.005,
                               kl_coefficient=0.01, template=None, conversational=False, resume=False,
                               val_fraction=0.1, device="auto", seed=0, progress=True, log=print):
    """`trc finetune --reward FILE.py:function`: raise the user's reward by group-relative policy
    optimization (studies/reward_finetune.py), starting from `checkpoint`, which stays untouched.

    Everything is checked before the first epoch (the reward's file, function and form, the
    template, the options). Keeps the run in OUTPUT_DIR after every epoch (resume=True goes on
    from there); at the end writes OUTPUT_DIR/finetuned_model.pt (a normal checkpoint),
    reward_finetune_stats.json (the history) and reward_curves.png.
    """
    from ..checkpoint import save_checkpoint
    from ..llm import read_template
    from ..plots import plot_reward_curves
    from ..reward import TEXT, Reward
    from ..studies.reward_finetune import reward_finetune
    if Path(checkpoint).suffix == ".onnx":
        raise TRCError(f"{checkpoint}: an ONNX file cannot be trained; pass the .pt checkpoint")
    function = Reward.load(reward, conversational=conversational)
    if function.form != TEXT and (template is not None or conversational):
        raise TRCError(f"--{'template' if template is not None else 'conversational'} applies to a text reward; "
                       f"{reward} takes arrays")
    template = read_template(template) if template is not None else None
    check_folder(output_dir, "output_dir")
    model = load_model(checkpoint, "cpu")
    train_set, val_set = load_dataset(data, val_fraction=val_fraction, seed=seed)
    _check_same_problem(model, train_set, checkpoint)
    torch.manual_seed(seed)
    history = reward_finetune(model, function, train_set, val_set, epochs=epochs, lr=lr, batch_size=batch_size,
                              group_size=group_size, sigma_start=sigma_start, sigma_end=sigma_end,
                              kl_coefficient=kl_coefficient, seed=seed, template=template,
                              device=resolve_device(device), state_dir=output_dir, resume=resume, progress=progress)
    output_dir = Path(output_dir)
    model.cpu().eval()
    save_checkpoint(output_dir / "finetuned_model.pt", model, model.state_dict(),
                    data={"path": str(Path(data).resolve())}, finetuned_from=str(checkpoint),
                    reward_finetune={"reward": str(reward), "options": history["options"],
                                     "initial": history["initial"], "final_val_reward": history["val_reward"][-1]})
    write_json(output_dir / "reward_finetune_stats.json", history)
    plot_reward_curves(history, output_dir / "reward_curves.png")
    before = history["initial"]
    log(f"held-out reward {before['reward']:.4g} -> {history['val_reward'][-1]:.4g}, success {before['success']:.1%} -> "
        f"{history['val_success'][-1]:.1%} ({history['reward_calls']} reward calls, {history['answers_scored']:,} answers)")
    log(f"wrote {output_dir / 'finetuned_model.pt'}, reward_finetune_stats.json and reward_curves.png")
    return model


def export(checkpoint, output, *, log=print) -> dict:
    """`trc export`: a checkpoint to ONNX, checked against PyTorch (see export.export_onnx)."""
    return export_onnx(load_model(checkpoint), output, log=log)


def _check_available(dataset, command: str) -> None:
    """TRCError, before any work, for what `command` cannot do for the dataset's task yet (Task.unavailable)."""
    why = dataset.problem.unavailable.get(command)
    if why is not None:
        raise TRCError(f"{dataset.path}: {command} is not available for {dataset.problem.name} yet ({why})")
