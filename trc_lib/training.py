"""Supervised training: imitate the exact optimum with TRM's deep supervision.

For each batch the carry (y, z) starts fresh and goes through N_sup supervision steps; after
each step the loss is the model's imitation_loss (the mean squared error between its controls
and the optimal ones, divided by u_max; a task's own model adds the rest of its answer), optionally plus
terminal_weight times its miss_loss (the terminal miss through the exact dynamics: squared near
the target, logarithmic far from it), and the carry is detached before the next step. An
exponential moving average (EMA) of the weights is what gets validated (on the same loss, for
the final answer), checkpointed and used for prediction.

Files written to output_dir:
    best_model.pt        weights (EMA) with the lowest validation loss so far
    last_model.pt        the last finished epoch, with everything `resume=True` needs
    training_stats.json  the history, rewritten after every epoch (watch -n 5 cat ...)
    training_curves.png  losses and learning rate per epoch

Under torchrun (ranks.py) each process trains on its share of every mini-batch and
DistributedDataParallel averages the gradients, so the W processes take the optimizer steps of
one process with the same batch_size (up to rounding): the same shuffled batches, the same
weights on every rank. Each rank validates its share of the validation set and the sums are
added up, so every rank makes the same early-stopping decision. Rank 0 alone logs and writes
the files; the others wait for it where they read them (the best weights at the end), so
output_dir must be one folder every rank sees (a shared filesystem across machines). Every rank
restores last_model.pt to resume, also with another number of processes than before.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
from .data import BatchLoader, create_data_loaders, load_dataset
from .device import describe_device, resolve_device
from .errors import TRCError, describe_difference
from .files import check_folder, write_json
from .model import MODEL_SIZES, TinyRecursiveControl, model_class
from .ranks import ONE_PROCESS, RankShares, World, data_parallel, start_from_environment

SCHEDULERS = ("cosine", "step", "plateau", "none")


def make_scheduler(name: str, optimizer, epochs: int, patience: int):
    """Learning-rate schedule, stepped once per epoch."""
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs), eta_min=0.0)
    if name == "step":  # divide by 10 at one third and two thirds of the run
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=max(1, patience // 4))
    if name == "none":
        return None
    raise TRCError(f"scheduler {name!r}: choose one of {list(SCHEDULERS)}")


class EMA:
    """Exponential moving average of a model's weights (TRM: decay 0.999)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        # warm-up: early on the average would mostly remember the random initialization
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        torch._foreach_lerp_(list(self.shadow.parameters()), list(model.parameters()), 1.0 - decay)


@torch.no_grad()
def validate(model: TinyRecursiveControl, loader: BatchLoader, world: World = ONE_PROCESS,
             terminal_weight: float = 0.0) -> dict:
    """Loss of the final answer (its imitation_loss plus terminal_weight times its miss_loss: the
    loss it trains on, so that the best checkpoint is judged by it) and its mean terminal error
    (the model's terminal_errors: ||x_N - x*||, or what its task's own model measures) on the
    validation set.

    Under torchrun `loader` is this rank's share (ranks.RankShares) and the sums are added up
    over the ranks: every rank returns the same numbers.
    """
    total_loss, total_error, count = 0.0, 0.0, 0
    for initial_states, target_states, *labels in loader:
        answer = model(initial_states, target_states)[-1]
        loss = model.imitation_loss(answer, *labels)
        if terminal_weight:
            loss = loss + terminal_weight * model.miss_loss(initial_states, target_states, answer)
        total_loss += loss.item() * len(answer)
        total_error += model.terminal_errors(initial_states, target_states, answer).sum().item()
        count += len(answer)
    if world.size > 1:
        total_loss, total_error, count = world.sum([total_loss, total_error, count])
    return {"val_loss": total_loss / count, "val_terminal_error": total_error / count}


class DeepSupervisionLoss(torch.nn.Module):
    """One batch's training loss: the sum of the N_sup supervision steps' losses (see _train_epoch).

    It is a module so that DistributedDataParallel can wrap it: DDP averages the gradients of
    what its forward computes, and the recursive model's training step is not the model's
    forward but a sequence of calls (initial_carry, supervision_step, imitation_loss, miss_loss).
    """

    def __init__(self, model: TinyRecursiveControl, terminal_weight: float):
        super().__init__()
        self.model, self.terminal_weight = model, terminal_weight

    def forward(self, initial_states, target_states, *labels):
        """(initial_states [B, n], target_states [B, n], labels as the loader's) -> (the summed loss,
        the last supervision step's loss), scalars."""
        model = self.model
        if not len(initial_states):  # a rank's empty share of a short last batch: zero gradients, as a
            zero = sum(p.sum() for p in self.parameters()) * 0.0  # step of DDP needs one for every weight
            return zero, zero.detach()
        carry = model.initial_carry(len(initial_states))
        loss = 0.0
        for _ in range(model.config.num_supervision_steps):
            carry, answer = model.supervision_step(initial_states, target_states, carry)
            step_loss = model.imitation_loss(answer, *labels)
            if self.terminal_weight:
                step_loss = step_loss + self.terminal_weight * model.miss_loss(initial_states, target_states, answer)
            loss = loss + step_loss
            carry = tuple(c.detach() for c in carry)
        return loss, step_loss


def train(model: TinyRecursiveControl, train_loader: BatchLoader, val_loader: BatchLoader, epochs: int = 100,
          lr: float = 1e-3, device="auto", output_dir="outputs/supervised", scheduler: str = "cosine",
          patience: int = 20, weight_decay: float = 0.0, ema_decay: float = 0.999, grad_clip: float = 1.0,
          terminal_weight: float = 0.0, resume: bool = False, progress: bool = True, log=print,
          start_from: str | None = None) -> TinyRecursiveControl:
    """Train `model` and return it carrying its best (EMA) weights.

    epochs: maximum number of passes over train_loader; patience: stop after this many epochs without
    a lower validation loss (0 disables early stopping); resume: continue from output_dir/last_model.pt,
    which must come from the same model and data; start_from: where `model`'s weights came from, for the record.

    Started by torchrun, each process trains on its share of every batch (see the module's
    docstring); device "cuda" (or "auto" with GPUs) means each process's own GPU, cuda:LOCAL_RANK.
    """
    _check_options(model, train_loader, epochs, patience, lr)
    world = start_from_environment(resolve_device(device))
    device = world.device
    if not world.is_main:  # rank 0 speaks for the job
        log, progress = (lambda *_: None), False
    output_dir = _checked_output_dir(output_dir, resume, log)
    log(f"training on {_where(world)}; {model.num_parameters():,} parameters")
    output_dir.mkdir(parents=True, exist_ok=True)
    model.to(device).train()
    train_loader.to(device), val_loader.to(device)
    # before EMA copies the weights: DDP starts every rank from rank 0's
    supervised_loss, train_batches, val_batches = _this_rank(model, terminal_weight, train_loader, val_loader, world)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    lr_schedule = make_scheduler(scheduler, optimizer, epochs, patience)
    ema = EMA(model, ema_decay) if ema_decay > 0 else None
    run = {"epochs": int(epochs), "lr": lr, "scheduler": scheduler, "patience": int(patience),
           "batch_size": train_loader.batch_size, "weight_decay": weight_decay, "ema_decay": ema_decay,
           "grad_clip": grad_clip, "terminal_weight": terminal_weight, "start_from": start_from,
           **_run_record(model, train_loader, val_loader, world)}
    state = {"epoch": 0, "best_val_loss": math.inf, "best_epoch": 0, "epochs_without_improvement": 0,
             "history": [], "run": run}
    if resume:
        state = _restore(output_dir / "last_model.pt", model, optimizer, lr_schedule, ema, train_loader, run)
        log(f"resuming after epoch {state['epoch']}")
    bar = tqdm(range(state["epoch"], epochs), initial=state["epoch"], total=epochs, desc="epochs",
               disable=not progress, dynamic_ncols=True)
    status = "finished"
    try:
        for epoch in bar:
            metrics = _epoch(model, supervised_loss, train_batches, val_batches, optimizer, lr_schedule, ema,
                             grad_clip, world)
            _check_finite(metrics, epoch, output_dir, state, world)
            _keep(output_dir, model, ema, optimizer, lr_schedule, train_loader, state, metrics, world.is_main)
            bar.set_postfix(train=f"{metrics['train_loss']:.2e}", val=f"{metrics['val_loss']:.2e}",
                            err=f"{metrics['val_terminal_error']:.1e}")
            if patience and state["epochs_without_improvement"] >= patience:
                status = "early_stopped"
                log(f"early stopping after epoch {epoch + 1}: no improvement for {patience} epochs")
                break
    except KeyboardInterrupt:
        if world.is_main:
            write_json(output_dir / "training_stats.json", _stats(state, "interrupted"))
        bar.close()
        raise
    bar.close()
    return _finish(model, output_dir, state, status, log, world)


def _where(world: World) -> str:
    where = describe_device(world.device)
    return f"{world.size} processes (torchrun), rank 0 on {where}" if world.size > 1 else where


def _this_rank(model, terminal_weight, train_loader, val_loader, world: World):
    """(the training loss module, this rank's training batches, its validation batches): the
    model's DeepSupervisionLoss and the loaders themselves in one process; under torchrun the
    loss wrapped in DistributedDataParallel and this rank's shares of the loaders' batches."""
    supervised_loss = DeepSupervisionLoss(model, terminal_weight)
    if world.size == 1:
        return supervised_loss, train_loader, val_loader
    return data_parallel(supervised_loss, world), RankShares(train_loader, world), RankShares(val_loader, world)


def _check_finite(metrics, epoch, output_dir, state, world) -> None:
    """A diverged training stops with a one-line error, its statistics written."""
    if not math.isfinite(metrics["train_loss"]) or not math.isfinite(metrics["val_loss"]):
        if world.is_main:
            write_json(output_dir / "training_stats.json", _stats(state, "diverged"))
        raise TRCError(f"training diverged at epoch {epoch + 1} (loss {metrics['train_loss']}); try a lower lr")


def _checked_output_dir(output_dir, resume, log) -> Path:
    """output_dir, checked before any work (not at the first save)."""
    output_dir = check_folder(output_dir, "output_dir")
    if resume and not (output_dir / "last_model.pt").exists():
        raise TRCError(f"resume: {output_dir / 'last_model.pt'} does not exist (nothing to resume in this output_dir)")
    if not resume and (output_dir / "last_model.pt").exists():
        log(f"replacing the earlier run in {output_dir} (resume continues it instead)")
    return output_dir


def _run_record(model, train_loader, val_loader, world) -> dict:
    """What training_stats.json's run says beside the options: where, what model, which data."""
    record = {"device": str(world.device), "num_parameters": model.num_parameters(),
              "model_config": model.config_dict(), "data": _resolved(train_loader.dataset.path),
              "num_train": len(train_loader.dataset), "num_val": len(val_loader.dataset),
              "validation_sha1": _fingerprint(val_loader.dataset)}
    if world.size > 1:  # batch_size stays the global batch: the run's optimization does not depend on it
        record["world_size"] = world.size
    return record


def _check_options(model, train_loader, epochs, patience, lr) -> None:
    if int(epochs) != epochs or epochs < 1:
        raise TRCError(f"epochs must be a positive integer, got {epochs}")
    if int(patience) != patience or patience < 0:
        raise TRCError(f"patience must be a non-negative integer, got {patience}")
    if not (lr > 0 and math.isfinite(lr)):
        raise TRCError(f"lr must be a positive number, got {lr}")
    problem = train_loader.dataset.metadata.get("problem")
    if problem != model.config.problem:
        raise TRCError(f"{train_loader.dataset.path}: the data's problem {problem} does not match the "
                       f"model's {model.config.problem}")


def _epoch(model, supervised_loss, train_loader, val_loader, optimizer, lr_schedule, ema, grad_clip, world) -> dict:
    """One epoch of training, validation of the (EMA) weights, and the schedule's step."""
    started = time.perf_counter()
    train_loss = _train_epoch(model, supervised_loss, train_loader, optimizer, ema, grad_clip, world)
    terminal_weight = getattr(supervised_loss, "module", supervised_loss).terminal_weight  # under DDP, its module's
    metrics = validate(ema.shadow if ema else model, val_loader, world, terminal_weight)
    lr_now = optimizer.param_groups[0]["lr"]
    if isinstance(lr_schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
        lr_schedule.step(metrics["val_loss"])
    elif lr_schedule is not None:
        lr_schedule.step()
    return {"train_loss": train_loss, **metrics, "lr": lr_now, "seconds": time.perf_counter() - started}


def _keep(output_dir, model, ema, optimizer, lr_schedule, train_loader, state, metrics, write=True) -> None:
    """Record an epoch: history, best_model.pt when it improved, last_model.pt, training_stats.json.

    write: whether to write the files (rank 0 does); every rank keeps the same state.
    """
    epoch = state["epoch"] = state["epoch"] + 1
    state["history"].append({"epoch": epoch, **metrics})
    scored = ema.shadow if ema else model
    if metrics["val_loss"] < state["best_val_loss"]:
        state.update(best_val_loss=metrics["val_loss"], best_epoch=epoch, epochs_without_improvement=0)
        if write:
            save_checkpoint(output_dir / "best_model.pt", model, scored.state_dict(), epoch=epoch,
                            val_loss=metrics["val_loss"], data=_data_record(train_loader))
    else:
        state["epochs_without_improvement"] += 1
    if write:
        _save_last(output_dir / "last_model.pt", model, scored, optimizer, lr_schedule, ema, train_loader, state)
        write_json(output_dir / "training_stats.json", _stats(state, "running"))


def _stats(state: dict, status: str) -> dict:
    """training_stats.json: the status, the best epoch so far, the options and the history."""
    return {"status": status, **{k: state[k] for k in ("epoch", "best_epoch", "best_val_loss")},
            "run": state["run"], "history": state["history"]}


def _finish(model, output_dir, state, status, log, world) -> TinyRecursiveControl:
    """Write the final statistics and curves; return the model carrying its best weights."""
    if world.is_main:
        write_json(output_dir / "training_stats.json", _stats(state, status))
        if state["history"]:
            from .plots import plot_training_curves
            plot_training_curves(state["history"], output_dir / "training_curves.png")
    world.barrier()  # the other ranks read best_model.pt once rank 0 has finished writing it
    best = read_checkpoint(output_dir / "best_model.pt")
    model.load_state_dict(best["model_state"])
    log(f"best validation loss {state['best_val_loss']:.3e} at epoch {state['best_epoch']}; files in {output_dir}")
    return model.eval()


def _train_epoch(model, supervised_loss, loader, optimizer, ema, grad_clip, world) -> float:
    """One pass with deep supervision; returns the mean loss of the final supervision step.

    supervised_loss: DeepSupervisionLoss(model, terminal_weight), which sums the N_sup steps'
    losses. The carry is detached between supervision steps, so each step's loss has its own
    gradient, as in TRM. TRM then takes an optimizer step per supervision step; here the
    N_sup losses are summed into one step per batch, which trained better at the guide's
    learning rate of 1e-3 (12 epochs, medium: validation loss 3.9e-7 against 6.3e-6) and
    takes a third fewer seconds per epoch.

    Under torchrun, supervised_loss is wrapped in DistributedDataParallel and `loader` yields
    this rank's share of each batch (ranks.RankShares), its loss weighted so that the gradient
    DDP averages over the ranks is the whole batch's: every rank then clips and steps alike.
    """
    batches = loader.weighted() if world.size > 1 else ((1.0, batch) for batch in loader)
    total, count = 0.0, 0
    for weight, (initial_states, target_states, *labels) in batches:
        loss, step_loss = supervised_loss(initial_states, target_states, *labels)
        if weight != 1.0:  # a share of other than B / W rows (W does not divide this batch)
            loss = loss * weight
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if ema:
            ema.update(model)
        total += step_loss.item() * len(initial_states)
        count += len(initial_states)
    if world.size > 1:
        total, count = world.sum([total, count])
    return total / count


def _resolved(path) -> str | None:
    return str(Path(path).resolve()) if path else None


def _fingerprint(dataset) -> str:
    """SHA-1 of a dataset's arrays: tells whether a resumed run validates on the same samples."""
    digest = hashlib.sha1()
    for array in (dataset.initial_states, dataset.target_states):
        digest.update(array.tobytes())
    return digest.hexdigest()


def _data_record(loader: BatchLoader) -> dict:
    meta = loader.dataset.metadata
    return {"path": _resolved(loader.dataset.path), "num_samples": meta.get("num_samples"), "seed": meta.get("seed"),
            "state_range": meta.get("state_range"), "target_range": meta.get("target_range")}


def _save_last(path, model, scored, optimizer, lr_schedule, ema, loader, state):
    training_state = {
        "raw_model_state": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": lr_schedule.state_dict() if lr_schedule is not None else {},
        "shuffle_generator": loader.generator.get_state(), "ema_updates": ema.num_updates if ema else 0,
        **{k: state[k] for k in ("epoch", "best_val_loss", "best_epoch", "epochs_without_improvement")},
        "history_json": json.dumps(state["history"]), "run_json": json.dumps(state["run"]),
    }
    save_checkpoint(path, model, scored.state_dict(), epoch=state["epoch"], data=_data_record(loader),
                    training_state=training_state)


def _restore(path, model, optimizer, lr_schedule, ema, loader, run) -> dict:
    if not path.exists():
        raise TRCError(f"resume: {path} does not exist (nothing to resume in this output_dir)")
    payload = read_checkpoint(path)
    ts = payload["training_state"]
    saved = json.loads(ts["run_json"])
    same = ("epochs", "lr", "scheduler", "patience", "batch_size", "weight_decay", "ema_decay", "grad_clip",
            "terminal_weight", "data", "num_train", "num_val", "validation_sha1")
    changed = [f"{k}: {saved.get(k)} before, {run.get(k)} now" for k in same if saved.get(k) != run.get(k)]
    if changed:
        raise TRCError(f"resume continues the run in {path.parent} with the same options and data; changed: "
                       + "; ".join(changed) + " (validation_sha1 changes with --seed or --val_fraction)")
    if payload["config"] != model.config_dict():
        raise TRCError(f"resume: {path} was trained with another model configuration ("
                       + "; ".join(describe_difference(payload["config"], model.config_dict()))
                       + " before vs now); use the same model_size and latent_dim")
    model.load_state_dict(ts["raw_model_state"])
    optimizer.load_state_dict(ts["optimizer"])
    if lr_schedule is not None:
        lr_schedule.load_state_dict(ts["scheduler"])
    if ema is not None:
        ema.shadow.load_state_dict(payload["model_state"])
        ema.num_updates = ts["ema_updates"]
    loader.generator.set_state(ts["shuffle_generator"])
    model_from_checkpoint(payload, path)  # checks the stored weights too
    return {"epoch": ts["epoch"], "best_val_loss": ts["best_val_loss"], "best_epoch": ts["best_epoch"],
            "epochs_without_improvement": ts["epochs_without_improvement"],
            "history": json.loads(ts["history_json"]), "run": run}


def train_model(data, *, output_dir="outputs/supervised", model_size=None, epochs=100, batch_size=64,
                lr=1e-3, patience=20, scheduler="cosine", latent_dim=None, num_outer_cycles=None,
                num_inner_cycles=None, num_supervision_steps=None, device="auto", seed=0, resume=False,
                val_fraction=0.1, ema_decay=0.999, weight_decay=0.0, terminal_weight=0.0, error_feedback=None,
                start_from=None, progress=True, log=print) -> TinyRecursiveControl:
    """Build a model of `model_size` (default medium) for the problem of the dataset file `data` and
    train it (see train). The architecture options left None take the size's values
    (model.MODEL_SIZES).

    start_from: a checkpoint to start from instead (a second stage: the pendulum learns to land by
    the terminal loss after it has learned to imitate). Its architecture is kept; the loop counts
    (num_outer_cycles, num_inner_cycles, num_supervision_steps) may be changed, the widths and the
    feedback may not (checked before any work)."""
    torch.manual_seed(seed)
    start = _start_model(start_from, model_size, latent_dim, error_feedback) if start_from is not None else None
    train_set, val_set = load_dataset(data, val_fraction=val_fraction, seed=seed)
    loop_counts = {k: v for k, v in (("num_outer_cycles", num_outer_cycles), ("num_inner_cycles", num_inner_cycles),
                                     ("num_supervision_steps", num_supervision_steps)) if v is not None}
    if start is not None:
        model = start
        for name, value in loop_counts.items():
            setattr(model.config, name, int(value))
    else:
        overrides = {**loop_counts, **{k: v for k, v in (("latent_dim", latent_dim), ("error_feedback", error_feedback))
                                       if v is not None}}
        model = model_class(train_set.problem).for_training_set(model_size or "medium", train_set, **overrides)
    train_loader, val_loader = create_data_loaders(train_set, val_set, batch_size, seed=seed)
    return train(model, train_loader, val_loader, epochs=epochs, lr=lr, device=device, output_dir=output_dir,
                 scheduler=scheduler, patience=patience, weight_decay=weight_decay, ema_decay=ema_decay,
                 terminal_weight=terminal_weight, resume=resume, progress=progress, log=log,
                 start_from=_resolved(start_from))


def _start_model(path, model_size, latent_dim, error_feedback) -> TinyRecursiveControl:
    """The model of checkpoint `path`, refusing options that would change its weights' shapes."""
    model = model_from_checkpoint(read_checkpoint(path), path)
    config = model.config
    wanted = {"latent_dim": latent_dim if latent_dim is not None else MODEL_SIZES.get(model_size),
              "error_feedback": error_feedback}
    for name, value in wanted.items():
        if value is not None and value != getattr(config, name):
            option = "model_size" if name == "latent_dim" and latent_dim is None else name
            raise TRCError(f"start_from: {path} has {name} {getattr(config, name)}; {option} "
                           f"{model_size if option == 'model_size' else value} does not fit its weights")
    return model.train()
