"""Reward fine-tuning: group-relative policy optimization (GRPO) for a whole control sequence.

finetune.py descends the task's own cost through the differentiable simulator. A reward of the
user's (reward.py) is a black box: a text parser, a rule, a simulator of their own. Its gradient
does not exist, so the network is made a policy and the reward only has to be evaluated:

- The policy: a Gaussian over the control sequence, its mean mu the network's answer (the
  recursion and the exact error feedback unchanged inside), standard deviation sigma per control,
  a fraction of the control's half-range scheduled linearly from sigma_start to sigma_end over the
  run. A sample a = mu + sigma eps is clipped to the control bounds before the reward sees it.
- A group of G answers per problem; each answer's advantage is its reward against its group's,
  A = (r - mean of the group) / (std of the group + 1e-4) (GRPO: no value network, the group is
  the baseline, and a reward's scale and offset do not matter). The group comes in mirrored
  pairs, mu + sigma eps and mu - sigma eps (as evolution strategies sample): a part of the reward
  that is even in eps (the quadratic growth of a cost or of a terminal miss with the noise) is
  the same for both answers of a pair and drops out of the step exactly, leaving the part that
  tells which way is better. With independent samples that even part is most of the spread.
- The step: PPO's clipped ratio on each sample's log-density under the current mean against the
  mean that drew it, ratio = pi(a | mu) / pi(a | mu_old), surrogate min(ratio A, clip(ratio,
  1 - clip, 1 + clip) A), taken `updates` times per batch; plus kl_coefficient times the KL
  divergence from the imitation model's policy, both at the first epoch's spread sigma_0, so
  KL = ||mu - mu_ref||^2 / (2 sigma_0^2) summed over the sequence: it keeps what imitation
  learned (reaching x*) while the reward moves the answer. Measured at the current, shrinking
  sigma instead, the same move would cost ever more (four times as much at half the spread),
  and the penalty pulled the answer back as the schedule went on (on a reward for one control,
  the held-out reward fell in the second epoch instead of rising).

The deployed answer is the mean: the fine-tuned network is a normal checkpoint.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import ControlDataset
from ..device import resolve_device
from ..errors import TRCError
from ..evaluate import metrics, score_controls
from ..model import TinyRecursiveControl
from ..reward import TEXT, Reward

STATE_FILE = "reward_finetune_state.pt"  # the run after each epoch, for --resume


def reward_finetune(model: TinyRecursiveControl, reward: Reward, train: ControlDataset, val: ControlDataset,
                    *, epochs: int = 10, lr: float = 1e-4, batch_size: int = 32, group_size: int = 8,
                    sigma_start: float = 0.01, sigma_end: float = 0.005, clip: float = 0.2,
                    kl_coefficient: float = 0.01, updates: int = 2, seed: int = 0, template: str | None = None,
                    device="cpu", state_dir=None, resume: bool = False, progress: bool = True) -> dict:
    """Train `model` in place to raise `reward` on the problems of `train`; return the history.

    sigma_start, sigma_end: the policy's standard deviation, a fraction of each control's
    half-range, at the first and the last epoch. state_dir: where the run is kept after every
    epoch (STATE_FILE); resume continues it (the same options, checked). template: the prompts'
    (a text reward), default llm.DEFAULT_TEMPLATE.

    History: per epoch "reward_mean", "reward_std", "reward_best" (of the sampled answers),
    "kl" (mean KL to the imitation model's policy), "sigma", and on `val` with the mean answer:
    "val_reward" (mean), "val_success", "val_cost_gap" (median); "initial" (the same on val
    before any step), "reward_calls" and "answers_scored" (all the reward calls of the run).
    """
    options = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "group_size": group_size,
               "sigma_start": sigma_start, "sigma_end": sigma_end, "clip": clip, "kl_coefficient": kl_coefficient,
               "updates": updates, "seed": seed}
    _check_options(model, options)
    model.to(resolve_device(device))
    policy = GaussianPolicy(model, options)
    prompts = _prompts(train, template) if reward.form == TEXT else None
    val_prompts = _prompts(val, template) if reward.form == TEXT else None
    generator = torch.Generator().manual_seed(seed)
    history = {"options": options, "epoch": [], "reward_mean": [], "reward_std": [], "reward_best": [], "kl": [],
               "sigma": [], "val_reward": [], "val_success": [], "val_cost_gap": [], "seconds": []}
    state_path = None if state_dir is None else Path(state_dir) / STATE_FILE
    if resume:
        history = _restore(state_path, model, policy.optimizer, generator, options)
    else:
        history["initial"] = _held_out(model, reward, val, val_prompts, "the held-out problems before fine-tuning")
    first = len(history["epoch"])
    bar = tqdm(range(first, epochs), desc="reward fine-tuning", disable=not progress, dynamic_ncols=True,
               initial=first, total=epochs)
    for epoch in bar:
        started = time.perf_counter()
        sigma = sigma_start + (sigma_end - sigma_start) * (epoch / max(1, epochs - 1))
        rewards, kls = [], []
        model.train()
        for b, index in enumerate(torch.randperm(len(train), generator=generator).split(int(batch_size))):
            problems = (train.initial_states[index.numpy()], train.target_states[index.numpy()])
            sample, answers = policy.sample(*problems, sigma, generator)
            r = _group_rewards(reward, train, prompts, index.numpy(), answers, model.problem,
                               f"epoch {epoch + 1}, batch {b + 1}")
            kls.append(policy.step(sample, r))
            rewards.append(r.ravel())
        rewards, kls = np.concatenate(rewards), np.concatenate(kls)
        scores = _held_out(model, reward, val, val_prompts, f"epoch {epoch + 1}, the held-out problems")
        _record(history, epoch + 1, rewards, kls, sigma, scores, time.perf_counter() - started, reward)
        bar.set_postfix(reward=f"{rewards.mean():.4g}", val=f"{scores['reward']:.4g}", kl=f"{kls.mean():.3g}",
                        success=f"{scores['success']:.1%}")
        if state_path is not None:
            _keep(state_path, model, policy.optimizer, generator, history)
    model.eval()
    return history


class GaussianPolicy:
    """The network as a policy: answers drawn around its own (see the module docstring), and the
    step that moves its answer towards the better of them. The batch in hand between the two:
    sample() keeps the problems, the mean that drew the answers and the imitation model's."""

    def __init__(self, model: TinyRecursiveControl, options: dict):
        self.model, self.options = model, options
        device = model.z_init.device
        lower, upper = (torch.as_tensor(a, dtype=torch.float32, device=device)
                        for a in (model.problem.control_lower, model.problem.control_upper))
        self.lower, self.upper, self.half_range = lower, upper, (upper - lower) / 2
        self.kl_scale = options["sigma_start"] * self.half_range  # the first epoch's spread, whatever sigma is later
        self.reference = copy.deepcopy(model).eval()  # the imitation model's policy, for the KL
        for p in self.reference.parameters():
            p.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=options["lr"])

    @torch.no_grad()
    def sample(self, initial_states, target_states, sigma: float, generator):
        """(sample [B, G, N, m], answers: the sample clipped to the bounds) for problems [B, n]:
        G answers per problem in mirrored pairs mu +- sigma eps."""
        device = self.lower.device
        self.x0, self.xt = (torch.as_tensor(a, dtype=torch.float32, device=device)
                            for a in (initial_states, target_states))
        self.mu_old = self.model(self.x0, self.xt)[-1]                         # [B, N, m]
        self.mu_ref = self.reference(self.x0, self.xt)[-1]
        self.scale = sigma * self.half_range                                    # [m]
        pairs = self.options["group_size"] // 2
        half = torch.randn((len(self.x0), pairs, *self.mu_old.shape[1:]), generator=generator).to(device)
        sample = self.mu_old[:, None] + self.scale * torch.cat([half, -half], dim=1)
        return sample, torch.minimum(torch.maximum(sample, self.lower), self.upper)

    def step(self, sample: torch.Tensor, rewards: np.ndarray) -> np.ndarray:
        """The clipped policy-gradient steps on the sample's rewards [B, G]; returns the KL [B]."""
        clip, kl_coefficient = self.options["clip"], self.options["kl_coefficient"]
        r = torch.as_tensor(rewards, dtype=torch.float32, device=sample.device)
        advantage = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)       # [B, G]
        old_log_density = _log_density(sample, self.mu_old, self.scale)
        for _ in range(self.options["updates"]):
            mu = self.model(self.x0, self.xt)[-1]
            ratio = torch.exp(_log_density(sample, mu, self.scale) - old_log_density)
            surrogate = torch.minimum(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage)
            kl = ((mu - self.mu_ref) / self.kl_scale).square().sum((1, 2)) / 2               # [B]
            loss = -surrogate.mean() + kl_coefficient * kl.mean()
            if not math.isfinite(loss.item()):
                raise FloatingPointError("reward fine-tuning diverged; try a lower lr")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
        return kl.detach().cpu().numpy()


def _record(history: dict, epoch: int, rewards, kls, sigma: float, scores: dict, seconds: float,
            reward: Reward) -> None:
    """One epoch into the history, and the reward's call counts moved into it."""
    for key, value in (("epoch", epoch), ("reward_mean", rewards.mean()), ("reward_std", rewards.std()),
                       ("reward_best", rewards.max()), ("kl", kls.mean()), ("sigma", sigma),
                       ("val_reward", scores["reward"]), ("val_success", scores["success"]),
                       ("val_cost_gap", scores["cost_gap"]), ("seconds", seconds)):
        history[key].append(float(value))
    history["reward_calls"] = history.get("reward_calls", 0) + reward.calls
    history["answers_scored"] = history.get("answers_scored", 0) + reward.answers
    reward.calls = reward.answers = 0


def _check_options(model, options: dict) -> None:
    if not isinstance(model, TinyRecursiveControl) or model.answer_shape != model.control_shape:
        raise TRCError("reward fine-tuning is for tasks whose answer is the control sequence (the rocket "
                       "landing's answer is not yet)")
    for name in ("epochs", "batch_size", "updates"):
        if int(options[name]) != options[name] or options[name] < 1:
            raise ValueError(f"{name} must be a positive integer, got {options[name]}")
    if int(options["group_size"]) != options["group_size"] or options["group_size"] < 2 or options["group_size"] % 2:
        raise ValueError(f"group_size must be an even integer of at least 2 (answers compared per problem, in "
                         f"mirrored pairs), got {options['group_size']}")
    for name in ("lr", "sigma_start", "sigma_end", "clip"):
        if not (math.isfinite(options[name]) and options[name] > 0):
            raise ValueError(f"{name} must be a positive number, got {options[name]}")
    if not (math.isfinite(options["kl_coefficient"]) and options["kl_coefficient"] >= 0):
        raise ValueError(f"kl_coefficient must be a number >= 0, got {options['kl_coefficient']}")


def _log_density(sample: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log pi(sample | mean) [B, G] up to a constant: sample [B, G, N, m], mean [B, N, m]."""
    return -(((sample - mean[:, None]) / scale).square().sum((2, 3))) / 2


def _prompts(dataset: ControlDataset, template: str | None) -> list[str]:
    from ..llm import DEFAULT_TEMPLATE, prompts
    return [record["prompt"] for record in prompts(dataset, template or DEFAULT_TEMPLATE)]


def _group_rewards(reward: Reward, dataset: ControlDataset, prompts, index: np.ndarray, answers: torch.Tensor,
                   problem, batch: str) -> np.ndarray:
    """The rewards [B, G] of answers [B, G, N, m] to the problems `index` of dataset: one call."""
    B, G = answers.shape[:2]
    repeated = np.repeat(index, G)
    flat = answers.reshape(B * G, *answers.shape[2:]).double().cpu().numpy()
    values = reward(dataset.initial_states[repeated], dataset.target_states[repeated], flat, problem,
                    prompts=None if prompts is None else [prompts[i] for i in repeated], indices=repeated,
                    batch=batch)
    return values.reshape(B, G)


def _held_out(model, reward: Reward, val: ControlDataset, prompts, batch: str) -> dict:
    """The mean answer on `val`: its mean reward, success rate and median cost gap."""
    controls = model.predict(val.initial_states, val.target_states)
    values = reward(val.initial_states, val.target_states, controls, model.problem, prompts=prompts,
                    indices=np.arange(len(val)), batch=batch)
    summary = metrics(score_controls(val, controls))
    return {"reward": float(values.mean()), "success": summary["success_rate"],
            "cost_gap": summary["cost_gap"]["median"]}


def _keep(path: Path, model, optimizer, generator, history) -> None:
    from ..files import atomic_path
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(), "history": history}, tmp)


def _restore(path, model, optimizer, generator, options: dict) -> dict:
    """The history of the run kept at `path`, its model, optimizer and random state restored;
    TRCError if there is none or its options differ."""
    if path is None or not Path(path).is_file():
        raise TRCError(f"resume: no run to resume at {path} (start without --resume)")
    try:
        kept = torch.load(path, map_location="cpu", weights_only=True)
        history = kept["history"]
        different = [k for k in options if history["options"].get(k) != options[k]]
        if not different:
            model.load_state_dict(kept["model"])
            optimizer.load_state_dict(kept["optimizer"])
            generator.set_state(kept["generator"])
    except Exception as e:  # a file of another run, truncated or altered
        raise TRCError(f"resume: {path} cannot be read as a reward fine-tuning run ({type(e).__name__})") from None
    if different:
        k = different[0]
        raise TRCError(f"resume: the run at {path} had {k} = {history['options'][k]}, not {options[k]}; "
                       f"resume with the same options")
    return history
