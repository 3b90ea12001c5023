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
