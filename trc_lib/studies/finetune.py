"""Fine-tuning on the task's own objective, through the differentiable simulator.

Imitation (training.py) can at best copy its labels; when they come from a sub-optimal teacher
(teacher.py) the model inherits the teacher's excess cost. Here the label controls are not
used at all, only the problems (x_0, x*): the model's controls are rolled out by the exact
dynamics (system.rollout_torch: matrix products for linear systems, RK4 for nonlinear ones,
both differentiable) and the loss is what the task actually asks for,

    loss(u) = J(u) / J_ref  +  terminal_penalty * ||x_N(u) - x*||^2,

with J the objective of task.py (dt-weighted stage cost plus terminal cost) and the
terminal constraint x_N = x* replaced by the quadratic penalty. With the default penalty of
10 a miss of 0.1 costs a tenth of a typical whole transfer. A larger one is not better when the
model's misses are noise it cannot remove: on Van der Pol after imitation (misses ~0.03),
penalty 100 spent the fine-tuning on the misses and left J where it was, while penalty 10
lowered J by 4% and still brought every test case within 0.1 (benchmarks/finetune_teacher.py).

J_ref is one constant for the whole run: by default the mean cost of the training set's labels
(the teacher's mean J), which puts the first term at O(1) whatever the system, so the penalty
means the same thing on every task; being fixed, it does not rescale the gradient as J falls (a
per-batch scale would). That one number is all that is read of the labels: the controls and
trajectories never are. (The model's own initial J would do as well where it is positive, but
an untrained model answers zero controls, and on a minimum-energy task those cost exactly 0.)
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import ControlDataset
from ..device import resolve_device
from ..model import TinyRecursiveControl
from ..task import Task


def trajectory_cost(problem: Task, initial_states: torch.Tensor, target_states: torch.Tensor,
                    controls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(J [B], terminal miss x_N - x* [B, n]) of controls [B, N, m] from [B, n] states; differentiable.

    The same J as Task.cost (dt * sum_k [e_k'Q e_k + u_k'R u_k] + e_N'Q_f e_N with
    e_k = x_k - x*, or the task's own stage cost L(x_k, u_k) in the sum), in torch.
    """
    Q, R, Q_f = (torch.as_tensor(M, dtype=controls.dtype, device=controls.device)
                 for M in problem.objective.matrices())
    states = problem.system.rollout_torch(initial_states, controls)       # [B, N+1, n]
    errors = states - target_states[:, None, :]
    if problem.has_stage_cost:
        from ..integrators import TORCH_OPS
        B, N = controls.shape[:2]
        targets = target_states.repeat_interleave(N, dim=0)
        stage = problem.stage_cost(states[:, :-1].reshape(B * N, -1), controls.reshape(B * N, -1), targets,
                                   TORCH_OPS).reshape(B, N).sum(1)
    else:
        stage = (torch.einsum("bki,ij,bkj->b", errors[:, :-1], Q, errors[:, :-1])
                 + torch.einsum("bki,ij,bkj->b", controls, R, controls))
    terminal = torch.einsum("bi,ij,bj->b", errors[:, -1], Q_f, errors[:, -1])
    return problem.dt * stage + terminal, errors[:, -1]


def objective(model, initial_states: torch.Tensor, target_states: torch.Tensor, answer: torch.Tensor):
    """(J [B], miss [B, ...]) of the model's answer: trajectory_cost, or the model's own objective
    where its task's own model defines one (its `objective` method: the landing's fuel and
    miss, for one)."""
    if hasattr(model, "objective"):
        return model.objective(initial_states, target_states, answer)
    return trajectory_cost(model.problem, initial_states, target_states, answer)


def objective_loss(cost: torch.Tensor, miss: torch.Tensor, cost_scale: float, terminal_penalty: float) -> torch.Tensor:
    """Per-sample loss [B]: J / J_ref + terminal_penalty * ||x_N - x*||^2."""
    return cost / cost_scale + terminal_penalty * miss.square().sum(-1)


@torch.no_grad()
def measure(model: TinyRecursiveControl, dataset: ControlDataset, cost_scale: float = 1.0,
            terminal_penalty: float = 0.0, batch_size: int = 1024) -> dict:
    """Means over `dataset` of the final answer's loss, J, terminal error ||x_N - x*|| and its square."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals = {"cost": 0.0, "terminal_error": 0.0, "squared_terminal_error": 0.0}
    for start in range(0, len(dataset), batch_size):
        x0, xt = (torch.as_tensor(a[start:start + batch_size], dtype=torch.float32, device=device)
                  for a in (dataset.initial_states, dataset.target_states))
        cost, miss = objective(model, x0, xt, model(x0, xt)[-1])
        totals["cost"] += cost.sum().item()
        totals["terminal_error"] += torch.linalg.vector_norm(miss, dim=-1).sum().item()
        totals["squared_terminal_error"] += miss.square().sum().item()
    model.train(was_training)
    means = {key: value / len(dataset) for key, value in totals.items()}
    # the loss is linear in J and ||miss||^2, so its mean follows from theirs
    return {"loss": means["cost"] / cost_scale + terminal_penalty * means["squared_terminal_error"], **means}


def finetune(model: TinyRecursiveControl, train: ControlDataset, val: ControlDataset | None = None,
             epochs: int = 20, lr: float = 1e-4, batch_size: int = 64, terminal_penalty: float = 10.0,
             device="cpu", seed: int = 0, progress: bool = True, log=print, cost_scale: float | None = None,
             deep_supervision: bool = False) -> dict:
    """Train `model` in place on the true objective of its problem; return the history.

    Only train.initial_states and train.target_states are used, plus the labels' mean cost as
    the scale J_ref unless cost_scale is given (see the module docstring); never the label
    controls, so the model can end up cheaper than whatever produced them. The loss is that of
    the final answer (see _batch_loss for why not deep supervision). AdamW (torch defaults),
    gradients clipped at norm 1, batches shuffled by a torch.Generator seeded with `seed`. No
    EMA: fine-tuning starts from trained (EMA) weights at a small learning rate.

    Returns {"cost_scale": J_ref, "terminal_penalty", "initial" and "final": measure() on the
    training problems before and after, "epoch": [1, 2, ...], and per epoch:
    "loss", "cost", "terminal_error" (training means of the final answer, during the epoch),
    "val_loss", "val_cost", "val_terminal_error" (of the final answer after it; None without val)}.
    """
    cost_scale = _check_options(model, train, val, epochs, batch_size, lr, terminal_penalty, cost_scale)
    device = resolve_device(device)
    model.to(device)
    initial = measure(model, train, cost_scale, terminal_penalty)
    x0_all, xt_all = (torch.as_tensor(a, dtype=torch.float32, device=device)
                      for a in (train.initial_states, train.target_states))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    history = {"cost_scale": cost_scale, "terminal_penalty": terminal_penalty, "initial": initial, "epoch": [],
               "loss": [], "cost": [], "terminal_error": [], "val_loss": [], "val_cost": [],
               "val_terminal_error": [], "seconds": []}
    model.train()
    bar = tqdm(range(epochs), desc="fine-tuning", disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        started = time.perf_counter()
        totals = np.zeros(3)
        for index in torch.randperm(len(train), generator=generator).split(int(batch_size)):
            index = index.to(device)
            x0, xt = x0_all[index], xt_all[index]
            loss, cost, miss = _batch_loss(model, x0, xt, cost_scale, terminal_penalty, deep_supervision)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            totals += len(x0) * np.array([objective_loss(cost, miss, cost_scale, terminal_penalty).mean().item(),
                                          cost.mean().item(), torch.linalg.vector_norm(miss, dim=-1).mean().item()])
        loss, cost, error = totals / len(train)
        if not math.isfinite(loss):
            raise FloatingPointError(f"fine-tuning diverged at epoch {epoch + 1} (loss {loss}); try a lower lr")
        scores = measure(model, val, cost_scale, terminal_penalty) if val is not None else {}
        _record(history, epoch + 1, loss, cost, error, scores, time.perf_counter() - started)
        bar.set_postfix(J=f"{cost:.3g}", err=f"{error:.1e}",
                        **({"val_err": f"{scores['terminal_error']:.1e}"} if scores else {}))
    bar.close()
    history["final"] = final = measure(model, train, cost_scale, terminal_penalty)
    log(f"fine-tuned {epochs} epochs on the true objective: on the training problems mean J "
        f"{initial['cost']:.4g} -> {final['cost']:.4g}, terminal error {initial['terminal_error']:.2g} -> "
        f"{final['terminal_error']:.2g}")
    return history


def _check_options(model, train, val, epochs, batch_size, lr, terminal_penalty, cost_scale) -> float:
    """Refuse bad options before any work; returns J_ref (default: the labels' mean cost)."""
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr}")
    if not (terminal_penalty >= 0 and math.isfinite(terminal_penalty)):
        raise ValueError(f"terminal_penalty must be a non-negative number, got {terminal_penalty}")
    for name, dataset in (("train", train), ("val", val)):
        if dataset is not None and dataset.metadata.get("problem") != model.config.problem:
            raise ValueError(f"the {name} set's problem {dataset.metadata.get('problem')} does not match the "
                             f"model's {model.config.problem}")
    if len(train) == 0:
        raise ValueError("the training set is empty")
    cost_scale = float(np.mean(train.costs)) if cost_scale is None else float(cost_scale)
    if not (cost_scale > 0 and math.isfinite(cost_scale)):
        raise ValueError(f"cost_scale (J_ref; default: the labels' mean cost) must be a positive number, "
                         f"got {cost_scale}")
    return cost_scale


def _batch_loss(model, x0, xt, cost_scale, terminal_penalty, deep_supervision):
    """(loss to back-propagate, cost [b], miss [b, n] of the final answer).

    The loss is that of the final answer only, back-propagated through every supervision step
    (the carry is not detached), because the final answer is what gets used and scored. Deep
    supervision (deep_supervision=True: the loss summed over every step's answer, carry detached
    in between, as in imitation training) was tried and trains the wrong thing here: the first
    answer misses x* by ~4x more than the last (Van der Pol after imitation: 0.20 vs 0.05), so its
    penalty is ~20x larger and dominates the gradient, and the shared weights fix the first answer
    at the expense of the last (lr 3e-4, batch 64, penalty 100: the final answer's mean J rose from
    6.18 to 7.23 over 20 epochs; final-only kept it flat). The intermediate answers are then no
    longer trained to be answers themselves; they remain control sequences within the bound.
    """
    if not deep_supervision:
        cost, miss = objective(model, x0, xt, model(x0, xt)[-1])
        return objective_loss(cost, miss, cost_scale, terminal_penalty).mean(), cost, miss
    carry, loss = model.initial_carry(len(x0)), 0.0
    for _ in range(model.config.num_supervision_steps):
        carry, controls = model.supervision_step(x0, xt, carry)
        cost, miss = objective(model, x0, xt, controls)
        loss = loss + objective_loss(cost, miss, cost_scale, terminal_penalty).mean()
        carry = tuple(c.detach() for c in carry)
    return loss, cost, miss


def _record(history: dict, epoch: int, loss, cost, error, scores: dict, seconds: float) -> None:
    history["epoch"].append(epoch)
    for key, value in (("loss", loss), ("cost", cost), ("terminal_error", error),
                       ("val_loss", scores.get("loss")), ("val_cost", scores.get("cost")),
                       ("val_terminal_error", scores.get("terminal_error")), ("seconds", seconds)):
        history[key].append(None if value is None else float(value))
