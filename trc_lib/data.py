"""Datasets of optimal control problems: generate, save, read (with checks), split, batch.

A dataset file `lqr_dataset.npz` holds, for B problems on a system with n states, m
controls and N steps:

    initial_states     [B, n]               x_0
    target_states      [B, n]               x*
    control_sequences  [B, N, m]            the exact optimum u*
    state_trajectories [B, N+1, n]          its trajectory
    costs              [B]                  J(u*) on the stated objective
    terminal_multipliers [B, n]             λ of the terminal constraint x_N = x* (zeros without
                                            one): dJ*/dx* = -λ, used by the evaluator's cost gap
    time_horizons      [B]                  each problem's horizon T (s), only for a task whose
                                            final time is free (free_final_time): then the horizon
                                            is part of the answer
    metadata           JSON string          problem (system, dt, bound, objective), sampling
                                            boxes, seed, controller, re-draw count, version

Reading a file checks all of this, so a corrupt file, a file for another problem, or labels
that are not optimal are refused with a clear message. Linear problems are re-solved exactly
(every label checked); nonlinear ones are checked for consistency (trajectories, costs,
bounds, terminal condition, every label) and a seeded handful is re-solved by IPOPT from the
stored answer, which must come back no better (a label that is not even locally optimal fails).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .oracles import OptimalSolution, oracle_of
from .errors import TRCError
from .files import atomic_path, check_input
from .task import Task
from .tasks import make_problem, task_from_dict  # noqa: F401  (make_problem: the guide's API lives here too)

FORMAT_VERSION = 4  # 3: the problem is a Task (its name or file, the file's hash, its parameters); 4: time_horizons
ARRAY_KEYS = ("initial_states", "target_states", "control_sequences", "state_trajectories", "costs",
              "terminal_multipliers")
OPTIONAL_KEYS = ("time_horizons",)
DATASET_FILENAME = "lqr_dataset.npz"  # the guide's name, whatever the controller


@dataclass
class ControlDataset:
    """A set of problems with their exact optimal solutions (arrays as in the module docstring)."""

    initial_states: np.ndarray
    target_states: np.ndarray
    control_sequences: np.ndarray
    state_trajectories: np.ndarray
    costs: np.ndarray
    terminal_multipliers: np.ndarray
    metadata: dict = field(default_factory=dict)
    path: str | None = None
    time_horizons: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.initial_states)

    @property
    def problem(self):
        """The Task (or RocketLanding) the labels solve."""
        return task_from_dict(self.metadata["problem"])

    @property
    def labels(self) -> tuple:
        """What a model learns to answer: (control_sequences,), and time_horizons where they exist."""
        return (self.control_sequences,) if self.time_horizons is None else (self.control_sequences, self.time_horizons)

    def subset(self, indices) -> "ControlDataset":
        arrays = {k: getattr(self, k)[indices] for k in ARRAY_KEYS}
        time_horizons = None if self.time_horizons is None else self.time_horizons[indices]
        return ControlDataset(**arrays, metadata=self.metadata, path=self.path, time_horizons=time_horizons)

    def optimum(self) -> OptimalSolution:
        """The stored labels as the oracle's answer (what the evaluator scores against)."""
        from .oracles.labels import bound_active
        return OptimalSolution(self.control_sequences, self.state_trajectories, self.costs,
                                       self.terminal_multipliers, bound_active(self.problem, self.control_sequences, 1e-9))


def generate_dataset(problem: Task, num_samples: int, seed: int = 42,
                     state_range=None, target_range=None, workers=None, progress=False) -> ControlDataset:
    """Draw x_0 uniformly from the task's initial_box and x* = its target + a draw from its
    target_box, and solve each. state_range, target_range: one (low, high) for every component
    instead (Task.sampling_boxes: a varying target is drawn from state_range too when only that
    is given).

    Each pair is solved by the system's oracle (oracles/: the exact QP, or IPOPT and the cone
    program on `workers`: a number of processes, or an oracles.workers.Workers naming a Dask
    cluster and a journal of finished chunks; default: a local Dask cluster, one process per
    core). Pairs it cannot solve (an unreachable target, an IPOPT failure) are re-drawn, and how
    many is recorded in metadata['num_redrawn']. The same seed gives identical arrays.
    """
    if not problem.draws_its_own_problems:
        _check_ranges(state_range, target_range)
    if int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
    _check_memory(problem, num_samples)
    rng = np.random.default_rng(seed)
    oracle = oracle_of(problem)
    parts, num_redrawn, have = [], 0, 0
    while have < num_samples:
        need = num_samples - have
        x0, xt = draw_problems(problem, rng, need, state_range, target_range)
        tried = oracle.screen(problem, x0, xt)  # the QP's unreachable targets are known without a solve
        x0, xt = x0[tried], xt[tried]
        solution, keep = (oracle.optimum(problem, x0, xt, workers=workers, progress=progress) if len(x0)
                          else (None, []))
        num_redrawn += need - int(np.sum(keep))
        # give up when almost nothing is reachable, or when every problem tried has failed (IPOPT)
        if num_redrawn > 100 * num_samples or (have == 0 and len(x0) and not np.any(keep)):
            raise ValueError(_unsolvable(problem, state_range, target_range))
        if len(x0):
            parts.append((x0[keep], xt[keep], solution, keep))
        have += int(np.sum(keep))
    initial_states = np.concatenate([x0 for x0, _, _, _ in parts])
    target_states = np.concatenate([xt for _, xt, _, _ in parts])
    keys = ("control_sequences", "state_trajectories", "costs", "terminal_multipliers", "bound_active",
            *(("time_horizons",) if parts[0][2].time_horizons is not None else ()))
    arrays = {key: np.concatenate([getattr(sol, key)[keep] for _, _, sol, keep in parts]) for key in keys}
    from .version import __version__
    metadata = {
        "format_version": FORMAT_VERSION, "trc_lib_version": __version__,
        "problem": problem.to_dict(), "controller": problem.objective.name,
        "oracle": oracle.method,
        "num_samples": int(num_samples), "seed": int(seed), **sampling_record(problem, state_range, target_range),
        "num_redrawn": num_redrawn, "num_bound_active": int(arrays["bound_active"][:num_samples].sum()),
    }
    time_horizons = arrays["time_horizons"][:num_samples] if "time_horizons" in arrays else None
    return ControlDataset(initial_states[:num_samples], target_states[:num_samples],
                          *(arrays[k][:num_samples] for k in ("control_sequences", "state_trajectories", "costs",
                                                             "terminal_multipliers")), metadata,
                          time_horizons=time_horizons)


def _check_ranges(state_range, target_range) -> None:
    # a target range may be a point (a fixed target); the initial states must vary
    for label, given, below in (("state_range", state_range, np.less),
                                ("target_range", target_range, np.less_equal)):
        if given is None:
            continue
        low, high = given
        if not (np.isfinite(low) and np.isfinite(high) and below(low, high)):
            relation = "<" if below is np.less else "<="
            raise ValueError(f"{label} must be two finite numbers LOW {relation} HIGH, got {low} {high}")


def sampling_record(problem, state_range, target_range) -> dict:
    """Where the problems were drawn from, as metadata records it."""
    if problem.draws_its_own_problems:
        return problem.sampling_record()
    initial, offsets = problem.sampling_boxes(state_range, target_range)
    return {"initial_box": initial.tolist(), "target": problem.target_center.tolist(), "target_box": offsets.tolist()}


def _unsolvable(problem, state_range, target_range) -> str:
    if problem.draws_its_own_problems:
        return "almost no problem drawn from the task's own box is feasible: check the task's parameters"
    initial, offsets = problem.sampling_boxes(state_range, target_range)
    return (f"almost no target drawn around {problem.target_center.tolist()} from {offsets.tolist()} is reachable "
            f"from {initial.tolist()} within the control bounds {problem.control_limits.tolist()}: widen the "
            f"bounds or narrow the boxes")


def draw_problems(problem, rng: np.random.Generator, count: int, state_range, target_range):
    """(initial_states, target_states) [count, n] from the task's boxes (Task.draw_problems, with
    state_range and target_range as in sampling_boxes); a task that draws its own
    (draws_its_own_problems) ignores the two ranges."""
    if problem.draws_its_own_problems:
        return problem.draw_problems(rng, count)
    return problem.draw_problems(rng, count, *problem.sampling_boxes(state_range, target_range))


def _check_memory(problem: Task, num_samples: int, copies: int = 4) -> None:
    """Refuse, before any solve, a dataset that cannot fit in this machine's memory: its arrays
    (x_0, x*, u, x, cost, multipliers) in float64, held about `copies` times while they are
    drawn, solved and concatenated."""
    n, m, N = problem.system.state_dim, problem.system.control_dim, problem.num_steps
    needed = copies * 8 * num_samples * (2 * n + N * m + (N + 1) * n + 1 + n + 1)
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not every platform reports it
        return
    if needed > available:
        raise TRCError(f"num_samples: {num_samples} problems need about {needed / 2**30:,.0f} GiB of memory, "
                       f"more than this machine's {available / 2**30:,.0f} GiB")


def save_dataset(dataset: ControlDataset, path) -> Path:
    """Write the dataset to `path` (.npz) atomically and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        optional = {} if dataset.time_horizons is None else {"time_horizons": dataset.time_horizons}
        np.savez(fh, **{k: getattr(dataset, k) for k in ARRAY_KEYS}, **optional,
                 metadata=np.array(json.dumps(dataset.metadata)))
    dataset.path = str(path)
    return path


def read_dataset(path, verify_labels: bool = True) -> ControlDataset:
    """Read and check a dataset file; raise TRCError naming the file and the problem if it is bad.

    verify_labels checks that the labels are the stated problem's optimum, by the system's oracle
    (oracles/): the exact QP solves all of them again; IPOPT checks rollouts, costs, bound and
    targets of all, and solves a seeded handful again.
    """
    path = Path(path)
    if path.is_dir():
        path = path / DATASET_FILENAME
    if not path.exists():
        raise TRCError(f"{path}: no such dataset file (make one with `trc generate`)")
    if not zipfile.is_zipfile(check_input(path, "dataset")):
        raise TRCError(f"{path}: not a .npz dataset (make one with `trc generate`)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            contents = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise TRCError(f"{path}: not a readable .npz dataset ({e})") from None
    try:
        metadata = json.loads(str(contents["metadata"]))
        version = metadata.get("format_version")
    except (KeyError, ValueError, AttributeError) as e:
        raise TRCError(f"{path}: unreadable metadata ({type(e).__name__}: {e})") from None
    if version != FORMAT_VERSION:
        raise TRCError(f"{path}: dataset format version {version}, expected {FORMAT_VERSION} "
                       f"(written by another trc_lib version: generate it again with `trc generate`)")
    missing = [k for k in (*ARRAY_KEYS, "metadata") if k not in contents]
    if missing:
        raise TRCError(f"{path}: missing keys {missing}; a dataset has {[*ARRAY_KEYS, 'metadata']}")
    try:
        problem = task_from_dict(metadata["problem"])
    except TRCError as e:  # its task file is missing or broken
        raise TRCError(f"{path}: {e}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise TRCError(f"{path}: unreadable metadata ({type(e).__name__}: {e})") from None
    num = len(contents["initial_states"])
    n, m, N = problem.system.state_dim, problem.system.control_dim, problem.num_steps
    expected = {"initial_states": (num, n), "target_states": (num, n), "control_sequences": (num, N, m),
                "state_trajectories": (num, N + 1, n), "costs": (num,), "terminal_multipliers": (num, n)}
    if problem.free_final_time:
        expected["time_horizons"] = (num,)
    for key, shape in expected.items():
        if key not in contents:
            raise TRCError(f"{path}: missing key '{key}'")
        if contents[key].shape != shape:
            raise TRCError(f"{path}: '{key}' has shape {list(contents[key].shape)}, expected {list(shape)} "
                           f"for {num} samples of {N} steps")
        if not np.issubdtype(contents[key].dtype, np.floating):
            raise TRCError(f"{path}: '{key}' has dtype {contents[key].dtype}, expected floating point")
        if not np.isfinite(contents[key]).all():
            raise TRCError(f"{path}: '{key}' contains NaN or inf")
    if num == 0:
        raise TRCError(f"{path}: the dataset is empty")
    time_horizons = contents["time_horizons"].astype(np.float64) if "time_horizons" in expected else None
    dataset = ControlDataset(**{k: contents[k].astype(np.float64) for k in ARRAY_KEYS},
                             metadata=metadata, path=str(path), time_horizons=time_horizons)
    if verify_labels:
        oracle_of(problem).verify(dataset)
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

    Yields (initial_states [b, n], target_states [b, n], control_sequences [b, N, m]), and
    time_horizons [b] where the dataset has them, as float32 tensors on `device`. Shuffling draws from its own torch.Generator, whose state is saved with
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
                                                    *self.dataset.labels))
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
