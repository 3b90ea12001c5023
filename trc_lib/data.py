"""Datasets of optimal control problems: generate, save, read (with checks), split, batch.

A dataset file `lqr_dataset.npz` holds, for N problems on a system with n states, m
controls and `num_steps` steps:

    initial_states     [N, n]               x_0
    target_states      [N, n]               x*
    control_sequences  [N, num_steps, m]    the exact optimum u*
    state_trajectories [N, num_steps+1, n]  its trajectory
    costs              [N]                  J(u*) on the stated objective
    metadata           JSON string          problem (system, dt, bound, objective), sampling
                                            boxes, seed, controller, re-draw count, version

Reading a file checks all of this and re-solves the stated problem, so a corrupt file, a
file for another problem, or labels that are not optimal are refused with a clear message.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import optimal
from .errors import TRCError
from .files import atomic_path
from .problem import ControlProblem, Objective
from .systems import make_system

FORMAT_VERSION = 1
ARRAY_KEYS = ("initial_states", "target_states", "control_sequences", "state_trajectories", "costs")
DATASET_FILENAME = "lqr_dataset.npz"  # the guide's name, whatever the controller
CONTROLLERS = ("min_energy", "lqr")


@dataclass
class ControlDataset:
    """A set of problems with their exact optimal solutions (arrays as in the module docstring)."""

    initial_states: np.ndarray
    target_states: np.ndarray
    control_sequences: np.ndarray
    state_trajectories: np.ndarray
    costs: np.ndarray
    metadata: dict = field(default_factory=dict)
    path: str | None = None

    def __len__(self) -> int:
        return len(self.initial_states)

    @property
    def problem(self) -> ControlProblem:
        return ControlProblem.from_dict(self.metadata["problem"])

    def subset(self, indices) -> "ControlDataset":
        arrays = {k: getattr(self, k)[indices] for k in ARRAY_KEYS}
        return ControlDataset(**arrays, metadata=self.metadata, path=self.path)


def make_problem(num_steps=15, time_horizon=5.0, control_bound=4.0, controller="min_energy",
                 system="double_integrator", lqr_Q=(1.0, 1.0), lqr_R=(0.1,), lqr_Qf=(100.0, 100.0)):
    """The problem a controller name stands for: 'min_energy' (default) or 'lqr' tracking."""
    if controller not in CONTROLLERS:
        raise ValueError(f"unknown controller {controller!r}; choose one of {list(CONTROLLERS)}")
    objective = Objective.min_energy() if controller == "min_energy" else Objective.lqr(lqr_Q, lqr_R, lqr_Qf)
    return ControlProblem(make_system(system, time_horizon, num_steps), float(control_bound), objective)


def generate_dataset(problem: ControlProblem, num_samples: int, seed: int = 42,
                     state_range=(-2.0, 2.0), target_range=None, reachability_margin=1e-6) -> ControlDataset:
    """Draw x_0 uniformly from state_range^n and x* from target_range^n, solve each exactly.

    With a terminal constraint, pairs whose target is not reachable within the bound (or lies
    within `reachability_margin` of the edge of the reachable set) are re-drawn; how many is
    recorded in metadata['num_redrawn']. The same seed gives identical arrays.
    """
    target_range = state_range if target_range is None else target_range
    for label, (low, high) in (("state_range", state_range), ("target_range", target_range)):
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ValueError(f"{label} must be two finite numbers LOW < HIGH, got {low} {high}")
    if int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
    rng = np.random.default_rng(seed)
    n = problem.system.state_dim
    initial_states = np.empty((0, n))
    target_states = np.empty((0, n))
    num_redrawn = 0
    while len(initial_states) < num_samples:
        need = num_samples - len(initial_states)
        x0 = rng.uniform(*state_range, size=(need, n))
        xt = rng.uniform(*target_range, size=(need, n))
        if problem.objective.terminal_constraint:
            keep = optimal.reachability_margin(problem, x0, xt) > reachability_margin
            num_redrawn += int(np.sum(~keep))
            if num_redrawn > 100 * num_samples:
                raise ValueError(f"almost no target in {list(target_range)} is reachable with "
                                 f"|u| <= {problem.control_bound}: widen the bound or narrow the boxes")
            x0, xt = x0[keep], xt[keep]
        initial_states = np.concatenate([initial_states, x0])
        target_states = np.concatenate([target_states, xt])
    solution = optimal.solve(problem, initial_states, target_states)
    from . import __version__
    metadata = {
        "format_version": FORMAT_VERSION, "trc_lib_version": __version__,
        "problem": problem.to_dict(), "controller": problem.objective.name,
        "num_samples": int(num_samples), "seed": int(seed),
        "state_range": [float(v) for v in state_range], "target_range": [float(v) for v in target_range],
        "num_redrawn": num_redrawn, "num_bound_active": int(solution.bound_active.sum()),
    }
    return ControlDataset(initial_states, target_states, solution.control_sequences,
                          solution.state_trajectories, solution.costs, metadata)


def save_dataset(dataset: ControlDataset, path) -> Path:
    """Write the dataset to `path` (.npz) atomically and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{k: getattr(dataset, k) for k in ARRAY_KEYS},
                 metadata=np.array(json.dumps(dataset.metadata)))
    dataset.path = str(path)
    return path


def read_dataset(path, verify_labels: bool = True) -> ControlDataset:
    """Read and check a dataset file; raise TRCError naming the file and the problem if it is bad.

    verify_labels re-solves the stated problem (about 50 ms per 10,000 samples) and refuses
    labels that are not its exact optimum.
    """
    path = Path(path)
    if path.is_dir():
        path = path / DATASET_FILENAME
    if not path.exists():
        raise TRCError(f"{path}: no such dataset file (make one with `trc generate`)")
    if not zipfile.is_zipfile(path):
        raise TRCError(f"{path}: not a .npz dataset (make one with `trc generate`)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            contents = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise TRCError(f"{path}: not a readable .npz dataset ({e})") from None
    missing = [k for k in (*ARRAY_KEYS, "metadata") if k not in contents]
    if missing:
        raise TRCError(f"{path}: missing keys {missing}; a dataset has {[*ARRAY_KEYS, 'metadata']}")
    try:
        metadata = json.loads(str(contents["metadata"]))
        problem = ControlProblem.from_dict(metadata["problem"])
    except (ValueError, KeyError, TypeError) as e:
        raise TRCError(f"{path}: unreadable metadata ({type(e).__name__}: {e})") from None
    if metadata.get("format_version") != FORMAT_VERSION:
        raise TRCError(f"{path}: format version {metadata.get('format_version')}, expected {FORMAT_VERSION}")
    num = len(contents["initial_states"])
    n, m, N = problem.system.state_dim, problem.system.control_dim, problem.num_steps
    expected = {"initial_states": (num, n), "target_states": (num, n), "control_sequences": (num, N, m),
                "state_trajectories": (num, N + 1, n), "costs": (num,)}
    for key, shape in expected.items():
        if contents[key].shape != shape:
            raise TRCError(f"{path}: '{key}' has shape {list(contents[key].shape)}, expected {list(shape)} "
                           f"for {num} samples of {N} steps")
        if not np.issubdtype(contents[key].dtype, np.floating):
            raise TRCError(f"{path}: '{key}' has dtype {contents[key].dtype}, expected floating point")
        if not np.isfinite(contents[key]).all():
            raise TRCError(f"{path}: '{key}' contains NaN or inf")
    if num == 0:
        raise TRCError(f"{path}: the dataset is empty")
    dataset = ControlDataset(**{k: contents[k].astype(np.float64) for k in ARRAY_KEYS},
                             metadata=metadata, path=str(path))
    if verify_labels:
        try:
            solution = optimal.solve(problem, dataset.initial_states, dataset.target_states)
        except ValueError as e:
            raise TRCError(f"{path}: {e}") from None
        scale = 1.0 + np.abs(solution.control_sequences).max()
        if (not np.allclose(solution.control_sequences, dataset.control_sequences, rtol=0, atol=1e-6 * scale)
                or not np.allclose(solution.costs, dataset.costs, rtol=1e-6, atol=1e-9)):
            raise TRCError(f"{path}: 'control_sequences'/'costs' are not the exact optimum of the problem "
                           f"stated in its metadata (a corrupt file, or labels from another problem)")
    return dataset


def load_dataset(path, val_fraction: float = 0.1, seed: int = 0):
    """The guide's API: read a dataset file and split it into (train, validation) ControlDatasets.

    The split is a seeded permutation; val_fraction of the samples (at least one) validate.
    """
    dataset = read_dataset(path)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(dataset) < 2:
        raise TRCError(f"{dataset.path}: {len(dataset)} sample cannot be split into training and validation")
    order = np.random.default_rng(seed).permutation(len(dataset))
    num_val = max(1, int(round(val_fraction * len(dataset))))
    return dataset.subset(order[num_val:]), dataset.subset(order[:num_val])


class BatchLoader:
    """Mini-batches of in-memory tensors, without DataLoader's per-sample overhead.

    Yields (initial_states [b, n], target_states [b, n], control_sequences [b, N, m]) as float32
    tensors on `device`. Shuffling draws from its own torch.Generator, whose state is saved with
    checkpoints so a resumed run sees the same batches.
    """

    def __init__(self, dataset: ControlDataset, batch_size: int = 64, shuffle: bool = False,
                 seed: int = 0, device="cpu"):
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        self.dataset, self.batch_size, self.shuffle = dataset, int(batch_size), shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.to(device)

    def to(self, device) -> "BatchLoader":
        as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)
        self.device = torch.device(device)
        self.tensors = tuple(as_tensor(a) for a in (self.dataset.initial_states, self.dataset.target_states,
                                                    self.dataset.control_sequences))
        return self

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self):
        num = len(self.dataset)
        order = torch.randperm(num, generator=self.generator) if self.shuffle else torch.arange(num)
        order = order.to(self.device)
        for start in range(0, num, self.batch_size):
            index = order[start:start + self.batch_size]
            yield tuple(t[index] for t in self.tensors)


def create_data_loaders(train_dataset: ControlDataset, val_dataset: ControlDataset, batch_size: int = 64,
                        seed: int = 0, device="cpu"):
    """The guide's API: (shuffled training loader, ordered validation loader)."""
    return (BatchLoader(train_dataset, batch_size, shuffle=True, seed=seed, device=device),
            BatchLoader(val_dataset, batch_size=max(batch_size, 1024), shuffle=False, device=device))
