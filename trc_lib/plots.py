"""Figures. Each function returns a matplotlib Figure (shown inline in a notebook) and, given
a path, also saves it. Figures are built without pyplot, so saving works on any backend and
nothing here changes the notebook's backend."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .files import atomic_path


def _save(fig: Figure, path) -> Figure:
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return fig


def plot_training_curves(history: list[dict], path=None) -> Figure:
    """Training and validation loss (log scale), terminal error and learning rate per epoch."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    ax_loss, ax_err, ax_lr = fig.subplots(1, 3)
    ax_loss.semilogy(epochs, [h["train_loss"] for h in history], label="train (live weights)")
    ax_loss.semilogy(epochs, [h["val_loss"] for h in history], label="validation (EMA weights)")
    ax_loss.set(xlabel="epoch", ylabel="MSE of controls / u_max^2", title="loss")
    ax_loss.legend()
    ax_err.semilogy(epochs, [h["val_terminal_error"] for h in history], color="C2")
    ax_err.set(xlabel="epoch", ylabel="mean ||x_N - x*||", title="validation terminal error")
    ax_lr.plot(epochs, [h["lr"] for h in history], color="C3")
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="learning rate")
    for ax in (ax_loss, ax_err, ax_lr):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_trajectories(problem, initial_states, target_states, controls_by_name: dict, title=None, path=None) -> Figure:
    """The phase plane (two-state systems), each state and each control over time, for a few
    cases and one or more controllers.

    initial_states, target_states: [B, n]; controls_by_name: {name: controls [B, N, m]}. Cases
    are told apart by colour, controllers by line style (the first one solid); a single case
    gives each controller its own colour too.
    """
    system = problem.system
    names, n = system.state_names, system.state_dim
    times = np.arange(system.num_steps + 1) * system.dt
    styles = ["-", "--", ":", "-."]
    phase = n == 2  # a plane only when the state is one
    panels = int(phase) + n + system.control_dim
    fig = Figure(figsize=(3.25 * panels, 3.8), layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(1, panels)))
    ax_phase = axes.pop(0) if phase else None
    ax_states, ax_controls = axes[:n], axes[n:]
    for j, (name, controls) in enumerate(controls_by_name.items()):
        states = system.rollout(initial_states, np.clip(controls, problem.control_lower, problem.control_upper))
        for i in range(len(initial_states)):
            colour = f"C{j % 10}" if len(initial_states) == 1 else f"C{i % 10}"
            kw = dict(color=colour, linestyle=styles[j % 4], label=name if i == 0 else None)
            if phase:
                ax_phase.plot(states[i, :, 0], states[i, :, 1], marker="." if j == 0 else None, **kw)
            for k, ax in enumerate(ax_states):
                ax.plot(times, states[i, :, k], **kw)
            for k, ax in enumerate(ax_controls):
                ax.stairs(controls[i, :, k], times, baseline=None, **kw)
    for i in range(len(initial_states)):
        marker = dict(color="k" if len(initial_states) == 1 else f"C{i % 10}", markeredgecolor="k")
        if phase:
            ax_phase.plot(*initial_states[i], "o", markersize=6, **marker)
            ax_phase.plot(*target_states[i], "*", markersize=13, **marker)
        for k, ax in enumerate(ax_states):
            ax.plot(times[-1], target_states[i, k], "*", markersize=11, **marker)
    for k, ax in enumerate(ax_controls):
        for bound in problem.control_limits[k]:
            ax.axhline(bound, color="grey", linewidth=0.8, linestyle=":")
        ax.set(xlabel="time [s]", ylabel=system.control_names[k], title=f"{system.control_names[k]} (dotted: bounds)")
    if phase:
        ax_phase.set(xlabel=names[0], ylabel=names[1], title="phase plane (o start, * target)")
    for name, ax in zip(names, ax_states):
        ax.set(xlabel="time [s]", ylabel=name, title=name)
    (ax_phase or ax_states[0]).legend(fontsize=8)
    for ax in fig.axes:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_error_histograms(scores_by_name: dict, success_threshold=0.1, path=None) -> Figure:
    """Histograms of terminal error and cost gap (log scale) for each controller.

    scores_by_name: {name: evaluate.score_controls(...) output}.
    """
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax_err, ax_gap = fig.subplots(1, 2)
    for j, (name, scores) in enumerate(scores_by_name.items()):
        err = np.maximum(scores["terminal_error"], 1e-16)
        gap = np.maximum(scores["cost_gap"], 1e-12)
        bins_err = np.logspace(np.log10(err.min()) - 0.1, np.log10(err.max()) + 0.1, 40)
        bins_gap = np.logspace(np.log10(gap.min()) - 0.1, np.log10(gap.max()) + 0.1, 40)
        ax_err.hist(err, bins=bins_err, alpha=0.6, label=name, color=f"C{j}")
        ax_gap.hist(gap, bins=bins_gap, alpha=0.6, label=name, color=f"C{j}")
    ax_err.axvline(success_threshold, color="k", linestyle="--", label=f"success threshold {success_threshold}")
    ax_err.set(xscale="log", xlabel="terminal error ||x_N - x*||", ylabel="test cases", title="terminal error")
    ax_gap.set(xscale="log", xlabel="cost gap (fraction of J*)", ylabel="test cases", title="cost gap")
    for ax in (ax_err, ax_gap):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_refinement(rows: list[dict], path=None) -> Figure:
    """Terminal error (median and p90) and success after each TRC supervision step.

    rows: comparison rows whose names start with 'TRC' (in order), from compare.compare_controllers.
    """
    steps = np.arange(1, len(rows) + 1)
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax_err, ax_succ = fig.subplots(1, 2)
    ax_err.semilogy(steps, [r["terminal_error"]["median"] for r in rows], "o-", label="median")
    ax_err.semilogy(steps, [r["terminal_error"]["p90"] for r in rows], "s--", label="p90")
    ax_err.set(xlabel="supervision step", ylabel="||x_N - x*||", title="terminal error per refinement")
    ax_err.legend()
    ax_succ.plot(steps, [100 * r["success_rate"] for r in rows], "o-", color="C2")
    ax_succ.set(xlabel="supervision step", ylabel="success [%]", title="success per refinement")
    for ax in (ax_err, ax_succ):
        ax.set_xticks(steps)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_comparison(rows: list[dict], path=None) -> Figure:
    """Bars: success rate, median terminal error and median cost gap of every controller."""
    names = [r["name"] for r in rows]
    y = np.arange(len(rows))
    fig = Figure(figsize=(13, 0.45 * len(rows) + 1.5), layout="constrained")
    ax_succ, ax_err, ax_gap = fig.subplots(1, 3, sharey=True)
    ax_succ.barh(y, [100 * r["success_rate"] for r in rows], color="C2")
    ax_err.barh(y, [max(r["terminal_error"]["median"], 1e-16) for r in rows], color="C0")
    ax_gap.barh(y, [max(r["cost_gap"]["median"], 1e-12) for r in rows], color="C1")
    ax_succ.set(yticks=y, yticklabels=names, xlabel="success [%]", xlim=(0, 100))
    ax_err.set(xscale="log", xlabel="median terminal error")
    ax_gap.set(xscale="log", xlabel="median cost gap (fraction)")
    ax_succ.invert_yaxis()
    for ax in (ax_succ, ax_err, ax_gap):
        ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def plot_generalization(rows: list[dict], xlabel: str, trained_at=None, path=None) -> Figure:
    """Success and median terminal error against the swept value, one line per controller.

    rows: generalization.sweep output for one study; trained_at: the training value, marked.
    """
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    ax_succ, ax_err = fig.subplots(1, 2)
    for j, name in enumerate(dict.fromkeys(r["controller"] for r in rows)):
        mine = [r for r in rows if r["controller"] == name]
        values = [r["value"] for r in mine]
        ax_succ.plot(values, [100 * r["success_rate"] for r in mine], "o-", color=f"C{j}", label=name)
        ax_err.semilogy(values, [max(r["terminal_error_median"], 1e-16) for r in mine], "o-", color=f"C{j}",
                        label=name)
    for ax in (ax_succ, ax_err):
        if trained_at is not None:
            ax.axvline(trained_at, color="grey", linestyle=":", label="training")
        ax.set(xlabel=xlabel)
        ax.grid(alpha=0.3)
    ax_succ.set(ylabel="success [%]", ylim=(-2, 102))
    ax_err.set(ylabel="median ||x_N - x*||")
    ax_succ.legend(fontsize=8)
    return _save(fig, path)


def plot_dataset_summary(dataset, path=None) -> Figure:
    """Where the samples are and what they cost: initial and target states, costs, largest |u|."""
    problem = dataset.problem
    fig = Figure(figsize=(12, 3.4), layout="constrained")
    ax_states, ax_cost, ax_u = fig.subplots(1, 3)
    ax_states.scatter(*dataset.initial_states[:, :2].T, s=3, alpha=0.4, label="initial states")
    ax_states.scatter(*dataset.target_states[:, :2].T, s=3, alpha=0.4, label="targets")
    ax_states.set(xlabel=problem.state_names[0], ylabel=problem.state_names[1], title=f"{len(dataset)} problems")
    ax_states.legend(markerscale=4, fontsize=8)
    ax_cost.hist(dataset.costs, bins=50, color="C2")
    ax_cost.set(xlabel="optimal cost J*", ylabel="problems", title="optimal cost")
    # how close each optimum comes to a bound, in units of the bounds' half-width (1: on a bound)
    center, half = problem.control_limits.mean(axis=1), np.ptp(problem.control_limits, axis=1) / 2
    ax_u.hist(np.abs((dataset.control_sequences - center) / half).max(axis=(1, 2)), bins=50, color="C3")
    ax_u.axvline(1.0, color="k", linestyle="--", label="a bound")
    ax_u.set(xlabel="max_k |u_k* - c| / h", ylabel="problems", title="largest optimal control")
    ax_u.legend(fontsize=8)
    for ax in (ax_states, ax_cost, ax_u):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_ablation(variant_rows: list[dict], step_rows: list[dict], path=None) -> Figure:
    """Ablation: median cost gap and success per variant, and the default model's error against
    the number of refinement steps run at inference (rows of ablation.score_variants / steps_at_inference)."""
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    ax_gap, ax_succ, ax_steps = fig.subplots(1, 3)
    names = [r["variant"] for r in variant_rows]
    y = np.arange(len(names))
    ax_gap.barh(y, [max(100 * r["cost_gap"]["median"], 1e-6) for r in variant_rows], color="C0")
    ax_gap.set(yticks=y, yticklabels=names, xscale="log", xlabel="median cost gap [%] (log)", title="cost gap")
    ax_succ.barh(y, [100 * r["success_rate"] for r in variant_rows], color="C2")
    ax_succ.set(yticks=y, yticklabels=[], xlabel="success [%]", xlim=(0, 100), title="success")
    steps = [r["steps"] for r in step_rows]
    ax_steps.semilogy(steps, [r["terminal_error"]["median"] for r in step_rows], "o-", label="median terminal error")
    ax_steps.semilogy(steps, [max(r["cost_gap"]["median"], 1e-9) for r in step_rows], "s-", label="median cost gap")
    if step_rows:
        ax_steps.axvline(step_rows[0]["trained_steps"], color="grey", linestyle=":", label="trained with")
    ax_steps.set(xlabel="refinement steps at inference", title="more steps at test time?")
    ax_steps.legend(fontsize=8)
    for ax in (ax_gap, ax_succ, ax_steps):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_reward_curves(history: dict, path=None) -> Figure:
    """Reward fine-tuning by epoch: the sampled answers' reward (mean, and mean +- std) and the
    held-out mean answer's; the KL to the starting policy; held-out success and median cost gap."""
    fig = Figure(figsize=(13, 3.6))
    left, middle, right = fig.subplots(1, 3)
    epochs = np.asarray(history["epoch"])
    mean, std = np.asarray(history["reward_mean"]), np.asarray(history["reward_std"])
    left.plot(epochs, mean, "o-", label="sampled answers (mean)")
    left.fill_between(epochs, mean - std, mean + std, alpha=0.2, label="+- std")
    left.plot(epochs, history["val_reward"], "s-", label="held-out, the answer itself")
    left.axhline(history["initial"]["reward"], color="gray", ls=":", label="held-out, before")
    left.set(xlabel="epoch", ylabel="reward", title="reward (larger is better)")
    left.legend(fontsize=8)
    middle.plot(epochs, history["kl"], "o-")
    middle.set(xlabel="epoch", ylabel="KL", yscale="log", title="KL to the starting policy")
    right.plot(epochs, 100 * np.asarray(history["val_success"]), "o-", label="success (%)")
    right.set(xlabel="epoch", ylabel="success on held-out (%)", title="held-out success and cost gap")
    gap = right.twinx()
    gap.plot(epochs, 100 * np.asarray(history["val_cost_gap"]), "s--", color="C1", label="median cost gap (%)")
    gap.set_ylabel("median cost gap (%)")
    fig.tight_layout()
    return _save(fig, path)
