"""The task interface: one class declares a whole optimal-control problem, and everything follows.

A task is a subclass of `Task` in a file of its own (`trc_lib/tasks/` holds the built-in ones,
written exactly this way; `--system path/to/file.py:ClassName` loads a user's). It declares

    state_names, control_names        n >= 1 states and m >= 1 controls (units: state_units, control_units)
    vector_field(x, u, ops)           xdot = f(x, u), written once against `ops` (integrators.Ops), so
                                      numpy, torch, CasADi and the compiled C all integrate the same f
    time_horizon, num_steps, substeps T seconds, N intervals of dt = T / N, each `substeps` RK4 steps,
                                      the control held constant over an interval (zero-order hold)
    control_bounds                    ((lower, upper), ...) for each control: finite, lower < upper
    initial_box                       ((lower, upper), ...) for each state: where x_0 is drawn
    target, target_box                x* = target + a draw from target_box (None: the target is fixed)

and may override (the defaults in brackets)

    Q, R, Q_f                         the objective's weights: a number (times the identity), a diagonal, or
                                      a matrix [Q = 0, R = 1, Q_f = 0]
    stage_cost(x, u, target, ops)     instead of the quadratic stage cost, any L(x, u) against `ops`
    terminal_constraint               True: x_N = x* exactly; False: no constraint (Q_f penalizes the
                                      miss); or the names of the constrained state components [True]
    state_bounds                      ((lower, upper), ...) on x_1 .. x_N, +-inf where free [None]
    path_constraints(x, u, ops)       a list of expressions g(x_k, u_k) that must stay <= 0 [none]
    label_starts()                    the optimizer's first guesses, [S, N, m] [zero controls, clipped
                                      into the bounds]
    physical parameters               any other number declared on the class (a mass, a length) is a
                                      parameter that `Task(mass=2.0)` and `--parameter mass=2.0` override

The problem every task states, for a target x*, is

    minimize   J(u) = dt sum_{k<N} L(x_k, u_k) + (x_N - x*)' Q_f (x_N - x*),
               L(x, u) = (x - x*)' Q (x - x*) + u' R u   (unless stage_cost is given)
    subject to x_{k+1} = F(x_k, u_k)   (RK4 of f over dt),   lower <= u_k <= upper,
               state_lower <= x_k <= state_upper (k = 1 .. N),   g(x_k, u_k) <= 0 (k = 0 .. N-1),
               x_N[i] = x*[i] for the constrained components i.

A task file is Python that the user chose to run, as a training framework's config module is.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from .integrators import NUMPY_OPS, TORCH_OPS, casadi_ops, rk4


@dataclass(frozen=True)
class Objective:
    """The quadratic part of a task's objective. name: what datasets record as the controller;
    Q [n, n], R [m, m], Q_f [n, n] as nested tuples; terminal_constraint: whether any component
    of x_N must equal x* (which ones: Task.terminal_indices)."""

    name: str
    Q: tuple
    R: tuple
    Q_f: tuple
    terminal_constraint: bool
    formula: str = ""  # the objective in one line, as prompts and records state it

    def matrices(self):
        return np.array(self.Q, float), np.array(self.R, float), np.array(self.Q_f, float)

    def to_dict(self) -> dict:
        return {"name": self.name, "Q": [list(r) for r in self.Q], "R": [list(r) for r in self.R],
                "Q_f": [list(r) for r in self.Q_f], "terminal_constraint": self.terminal_constraint,
                "formula": self.formula}


def _formula(task) -> str:
    """The objective in one line, as prompts and records state it."""
    stage = "L(x_k, u_k)" if task.has_stage_cost else "(x_k-x*)'Q(x_k-x*) + u_k'R u_k"
    names = [task.state_names[i] for i in task.terminal_indices]
    constraint = ("" if not names else "  s.t. x_N = x*" if len(names) == task.state_dim
                  else f"  s.t. x_N = x* on {', '.join(names)}")
    return f"J = dt*sum_k[{stage}] + (x_N-x*)'Q_f(x_N-x*)" + constraint


def _matrix(value, size: int, what: str) -> tuple:
    """A weight given as a number, a diagonal [size] or a matrix [size, size], as a matrix."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        array = float(array) * np.eye(size)
    elif array.ndim == 1 and len(array) == size:
        array = np.diag(array)
    if array.shape != (size, size) or not np.isfinite(array).all():
        raise ValueError(f"{what} must be a finite number, a diagonal of {size} or a {size}x{size} matrix, "
                         f"got {np.asarray(value).tolist()}")
    if not np.allclose(array, array.T) or np.linalg.eigvalsh(array).min() < -1e-12:
        raise ValueError(f"{what} must be symmetric and positive semi-definite")
    return tuple(map(tuple, array.tolist()))


def _box(value, size: int, what: str, finite: bool = True, allow_point: bool = False) -> np.ndarray:
    """((lower, upper), ...) for `size` components as a float array [size, 2], checked."""
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = np.zeros(0)
    if array.shape != (size, 2):
        raise ValueError(f"{what} must be {size} pairs (lower, upper), one per component, got {value!r}")
    if np.isnan(array).any() or (finite and not np.isfinite(array).all()):
        raise ValueError(f"{what} must hold {'finite ' if finite else ''}numbers, got {array.tolist()}")
    inverted = array[:, 0] > array[:, 1] if allow_point else array[:, 0] >= array[:, 1]
    if inverted.any():
        i = int(np.flatnonzero(inverted)[0])
        relation = "<=" if allow_point else "<"
        raise ValueError(f"{what}: component {i} has lower {array[i, 0]:g} and upper {array[i, 1]:g}; "
                         f"it needs lower {relation} upper")
    return array


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


class Task:
    """An optimal-control task (see the module docstring). Subclass it; construct it with any
    declared value overridden, e.g. VanDerPol(mu=0.5, num_steps=100)."""

    # ---- what a task declares (the defaults) -----------------------------------------------
    state_names: tuple = ()
    control_names: tuple = ()
    state_units: tuple | None = None
    control_units: tuple | None = None
    time_horizon: float = 5.0
    num_steps: int = 50
    substeps: int = 4
    control_bounds: tuple = ()
    initial_box: tuple = ()
    target: tuple | None = None  # None: the origin
    target_box: tuple | None = None  # None: the target is fixed
    Q = 0.0
    R = 1.0
    Q_f = 0.0
    terminal_constraint = True
    state_bounds: tuple | None = None
    objective_name = "quadratic"  # what datasets record as the controller

    # ---- hooks: what a task that is more than a fixed-horizon problem changes ------------------
    # A task file rarely needs any of these; a task folder (tasks/rocket_landing/: a free flight
    # time, its own oracle, network, scoring and notebook) uses each, and the core reads it only
    # through them. Code is named by reference, "package.module:Name", and imported when used.
    oracle = "shooting"  # a name in oracles.ORACLES (here IPOPT from label_starts()), or a reference
    model_class = None  # the network: a reference to a TinyRecursiveControl subclass (None: that class)
    evaluation = None  # `trc evaluate`'s scoring: f(model, test) -> (rows, table) (None: evaluate.py's)
    comparison = None  # `trc compare`'s: f(test, model or None) -> (rows, table) (None: baselines.py's)
    is_linear = False
    draws_its_own_problems = False  # True: draw_problems(rng, count) alone; --state_range does not apply
    free_final_time = False  # True: each problem's horizon is part of its answer (datasets' time_horizons)
    notebook = None  # the notebook of notebooks/ that tells this task's story: `trc pipeline` runs it alone
    unavailable: dict = {}  # {"trc prompts": "why", ...}: what a command cannot do for this task yet

    _FIXED = ("oracle", "model_class", "evaluation", "comparison", "is_linear", "draws_its_own_problems", "free_final_time", "notebook", "unavailable")

    def __init__(self, **overrides):
        names = self.parameter_names()
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            label = self.reference if self.reference and ":" not in self.reference else type(self).__name__
            raise ValueError(f"{label} has no parameter {unknown}; its parameters are {sorted(names)}")
        for key, value in overrides.items():
            object.__setattr__(self, key, value)
        # what differs from the class's own values: what datasets record, and what makes two tasks differ
        changed = {k: v for k, v in overrides.items() if _plain(v) != _plain(getattr(type(self), k))}
        object.__setattr__(self, "_overrides", changed)
        self._check()

    def __setattr__(self, key, value):
        raise AttributeError(f"a task is immutable: make another, e.g. {type(self).__name__}({key}=...)")

    @classmethod
    def parameter_names(cls) -> list[str]:
        """What a constructor may override: every public value declared on the class or a base
        (numbers, tuples, strings), not its methods or properties."""
        names = []
        for klass in reversed(cls.__mro__):
            for key, value in vars(klass).items():
                if (key.startswith("_") or key in Task._FIXED or key in names or callable(value)
                        or isinstance(value, (property, cached_property, classmethod, staticmethod))):
                    continue
                names.append(key)
        return names

    # ---- the declared values, checked once -------------------------------------------------
    def _check(self) -> None:
        where = type(self).__name__
        n, m = len(self.state_names), len(self.control_names)
        if n < 1 or m < 1:
            raise ValueError(f"{where}: state_names and control_names must name at least one state and one control")
        for what, names, units in (("state", self.state_names, self.state_units),
                                   ("control", self.control_names, self.control_units)):
            if not all(isinstance(s, str) and s for s in names) or len(set(names)) != len(names):
                raise ValueError(f"{where}.{what}_names must be distinct non-empty strings, got {names!r}")
            if units is not None and len(units) != len(names):
                raise ValueError(f"{where}.{what}_units must have one unit per {what} ({len(names)}), got {units!r}")
        if not (isinstance(self.time_horizon, (int, float)) and np.isfinite(self.time_horizon)
                and self.time_horizon > 0):
            raise ValueError(f"{where}.time_horizon must be a positive number of seconds, got {self.time_horizon!r}")
        for name in ("num_steps", "substeps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{where}.{name} must be a positive integer, got {value!r}")
        try:
            self.control_limits
            self.initial_limits
            self.target_limits
            self.target_center
            self.objective
            self.terminal_indices
            self.state_limits
        except ValueError as e:
            raise ValueError(f"{where}.{e}") from None
        for name in self.parameter_names():
            value = getattr(self, name)
            if isinstance(value, (float, int)) and not isinstance(value, bool) and not np.isfinite(value):
                raise ValueError(f"{where}.{name} must be a finite number, got {value!r}")

    @property
    def reference(self) -> str | None:
        """Where the task's class comes from, as the loader (tasks/__init__.py) found it: a built-in's
        name, or "path/to/file.py:ClassName"; None for a class it did not load (a subclass of its
        own does not inherit it)."""
        return vars(type(self)).get("_reference")

    @property
    def source_sha256(self) -> str | None:
        """The SHA-256 of a task file's source, as it was loaded (None for a built-in)."""
        return vars(type(self)).get("_source_sha256")

    @property
    def name(self) -> str:
        """The task's name: the built-in's, or the class name in snake case."""
        reference = self.reference
        return reference if reference and ":" not in reference else snake_case(type(self).__name__)

    @property
    def system(self) -> "Task":
        """A task is its own system (the dynamics) and its own problem (bounds, objective)."""
        return self

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    @property
    def control_dim(self) -> int:
        return len(self.control_names)

    @property
    def dt(self) -> float:
        """Interval length in seconds: exactly time_horizon / num_steps."""
        return self.time_horizon / self.num_steps

    @cached_property
    def control_limits(self) -> np.ndarray:
        """[m, 2]: (lower, upper) of each control."""
        return _box(self.control_bounds, self.control_dim, "control_bounds")

    @property
    def control_lower(self) -> np.ndarray:
        return self.control_limits[:, 0]

    @property
    def control_upper(self) -> np.ndarray:
        return self.control_limits[:, 1]

    @property
    def control_bound(self) -> float:
        """u_max of a task whose every control lies in [-u_max, u_max]; ValueError otherwise."""
        lower, upper = self.control_lower, self.control_upper
        if not (np.all(upper == upper[0]) and np.all(lower == -upper)):
            raise ValueError(f"{type(self).__name__} has control bounds {self.control_limits.tolist()}, not one "
                             f"symmetric bound |u| <= u_max")
        return float(upper[0])

    @property
    def symmetric_bounds(self) -> bool:
        """Whether every control lies in the same [-u_max, u_max] (the fast C forward's case)."""
        upper = self.control_upper
        return bool(np.all(upper == upper[0]) and np.all(self.control_lower == -upper))

    @cached_property
    def initial_limits(self) -> np.ndarray:
        """[n, 2]: the box x_0 is drawn from."""
        return _box(self.initial_box, self.state_dim, "initial_box", allow_point=True)

    @cached_property
    def target_center(self) -> np.ndarray:
        """[n]: the target, or the center the targets are drawn around."""
        center = np.zeros(self.state_dim) if self.target is None else np.asarray(self.target, dtype=np.float64)
        if center.shape != (self.state_dim,) or not np.isfinite(center).all():
            raise ValueError(f"target must be {self.state_dim} finite numbers, got {self.target!r}")
        return center

    @cached_property
    def target_limits(self) -> np.ndarray:
        """[n, 2]: the offsets x* - target is drawn from (zeros: a fixed target)."""
        if self.target_box is None:
            return np.zeros((self.state_dim, 2))
        return _box(self.target_box, self.state_dim, "target_box", allow_point=True)

    @cached_property
    def state_limits(self) -> np.ndarray | None:
        """[n, 2] bounds on x_1 .. x_N, or None."""
        if self.state_bounds is None:
            return None
        return _box(self.state_bounds, self.state_dim, "state_bounds", finite=False)

    @cached_property
    def terminal_indices(self) -> tuple:
        """The components of x_N constrained to equal x* (all, none, or those named)."""
        value = self.terminal_constraint
        if value is True:
            return tuple(range(self.state_dim))
        if value is False or value is None:
            return ()
        names = [value] if isinstance(value, str) else list(value)
        unknown = [v for v in names if v not in self.state_names]
        if unknown:
            raise ValueError(f"terminal_constraint names {unknown}, which are not in state_names {list(self.state_names)}")
        return tuple(sorted(self.state_names.index(v) for v in names))

    @cached_property
    def objective(self) -> Objective:
        n, m = self.state_dim, self.control_dim
        R = _matrix(self.R, m, "R")
        if np.linalg.eigvalsh(np.array(R)).min() <= 0 and not self.has_stage_cost:
            raise ValueError("R must be positive definite")
        return Objective(self.objective_name, _matrix(self.Q, n, "Q"), R, _matrix(self.Q_f, n, "Q_f"),
                         bool(self.terminal_indices), _formula(self))

    @property
    def has_stage_cost(self) -> bool:
        return type(self).stage_cost is not Task.stage_cost

    @property
    def has_path_constraints(self) -> bool:
        return type(self).path_constraints is not Task.path_constraints

    # ---- what a task writes ----------------------------------------------------------------
    def vector_field(self, x, u, ops):
        """xdot = f(x, u): x [B, n] (or a CasADi column [n]), u [B, m] -> [B, n], against `ops`."""
        raise NotImplementedError(f"{type(self).__name__} must define vector_field(self, x, u, ops)")

    def stage_cost(self, x, u, target, ops):
        """L(x, u) per second: (x - x*)' Q (x - x*) + u' R u unless a task writes its own."""
        raise NotImplementedError  # never called: has_stage_cost is False

    def path_constraints(self, x, u, ops) -> list:
        """Expressions g(x_k, u_k) that must stay <= 0 on every interval; none by default."""
        return []

    def label_starts(self) -> np.ndarray:
        """The optimizer's first guesses [S, N, m]: zero controls, clipped into the bounds."""
        zero = np.clip(np.zeros(self.control_dim), self.control_lower, self.control_upper)
        return np.broadcast_to(zero, (1, self.num_steps, self.control_dim)).copy()

    # ---- the dynamics, in every kind ------------------------------------------------------
    def _step(self, states, controls, ops):
        f = lambda x, u: self.vector_field(x, u, ops)
        return rk4(f, states, controls, self.dt / self.substeps, self.substeps)[0]

    def step(self, states: np.ndarray, controls: np.ndarray) -> np.ndarray:
        """One control interval. states [B, n], controls [B, m] -> [B, n] (numpy, float64)."""
        return self._step(np.asarray(states, np.float64), np.asarray(controls, np.float64), NUMPY_OPS)

    def rollout(self, initial_states: np.ndarray, control_sequences: np.ndarray) -> np.ndarray:
        """[B, n], [B, N, m] -> trajectories [B, N+1, n] (numpy, float64)."""
        states = [np.asarray(initial_states, np.float64)]
        controls = np.asarray(control_sequences, np.float64)
        for k in range(self.num_steps):
            states.append(self._step(states[-1], controls[:, k], NUMPY_OPS))
        return np.stack(states, axis=1)

    def rollout_torch(self, initial_states: torch.Tensor, control_sequences: torch.Tensor) -> torch.Tensor:
        """Differentiable [B, n], [B, N, m] -> [B, N+1, n]."""
        states = [initial_states]
        for k in range(self.num_steps):
            states.append(self._step(states[-1], control_sequences[:, k], TORCH_OPS))
        return torch.stack(states, dim=1)

    def terminal_state_torch(self, initial_states: torch.Tensor, control_sequences: torch.Tensor) -> torch.Tensor:
        return self.rollout_torch(initial_states, control_sequences)[:, -1]

    def make_terminal_map(self):
        """x_N through every RK4 substep, compiled to C with its derivative (fast/compiled_rollout.py)."""
        from .fast.compiled_rollout import CompiledTerminalMap
        return CompiledTerminalMap(self)

    def casadi_vector_field(self):
        """f(x, u) on CasADi symbols, for oracles.shooting.TrajectoryOptimizer(dynamics=...)."""
        ops = casadi_ops()
        return lambda x, u: self.vector_field(x, u, ops)

    def linearization(self, state: np.ndarray, control: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(A [n, n], B [n, m]): the exact zero-order-hold discretization over dt of the dynamics
        linearized at (state, control; default u = 0). The Jacobians of f by automatic
        differentiation (float64), then the matrix exponential of [[A_c, B_c], [0, 0]] * dt."""
        import scipy.linalg
        n, m = self.state_dim, self.control_dim
        x = torch.as_tensor(np.asarray(state, np.float64)[None], dtype=torch.float64)
        u = torch.zeros(1, m, dtype=torch.float64) if control is None else \
            torch.as_tensor(np.asarray(control, np.float64)[None])
        A_c, B_c = torch.autograd.functional.jacobian(lambda x, u: self.vector_field(x, u, TORCH_OPS)[0], (x, u))
        block = np.zeros((n + m, n + m))
        block[:n, :n], block[:n, n:] = A_c[:, 0].numpy(), B_c[:, 0].numpy()
        transition = scipy.linalg.expm(self.dt * block)  # [[A, B], [0, I]]
        return transition[:n, :n], transition[:n, n:]

    # ---- the objective and the constraints, on numpy arrays --------------------------------
    def stage_costs(self, states: np.ndarray, control_sequences: np.ndarray, target_states: np.ndarray) -> np.ndarray:
        """L(x_k, u_k) [B, N] at the nodes k < N. states [B, N+1, n], controls [B, N, m], targets [B, n]."""
        x, u = states[:, :-1], control_sequences
        if self.has_stage_cost:
            B, N = u.shape[:2]
            flat = lambda a: a.reshape(B * N, a.shape[-1])
            targets = np.repeat(target_states, N, axis=0)
            values = self.stage_cost(flat(x), flat(u), targets, NUMPY_OPS)
            return np.broadcast_to(np.asarray(values, np.float64), (B * N,)).reshape(B, N)
        Q, R, _ = self.objective.matrices()
        errors = x - target_states[:, None, :]
        return np.einsum("bki,ij,bkj->bk", errors, Q, errors) + np.einsum("bki,ij,bkj->bk", u, R, u)

    def cost(self, states: np.ndarray, control_sequences: np.ndarray, target_states: np.ndarray) -> np.ndarray:
        """J for each problem. states [B, N+1, n], control_sequences [B, N, m], target_states [B, n] -> [B]."""
        _, _, Q_f = self.objective.matrices()
        terminal_errors = states[:, -1] - target_states
        terminal = np.einsum("bi,ij,bj->b", terminal_errors, Q_f, terminal_errors)
        return self.dt * self.stage_costs(states, control_sequences, target_states).sum(axis=1) + terminal

    def terminal_miss(self, final_states: np.ndarray, target_states: np.ndarray) -> np.ndarray:
        """[B]: ||x_N - x*|| over the constrained components (all of them when none is)."""
        indices = list(self.terminal_indices or range(self.state_dim))
        return np.linalg.norm(final_states[:, indices] - target_states[:, indices], axis=1)

    def constraint_violations(self, states: np.ndarray, control_sequences: np.ndarray) -> np.ndarray:
        """[B]: the largest excess over the state bounds (nodes 1 .. N) and the path constraints
        (intervals 0 .. N-1); 0 where every one holds."""
        worst = np.zeros(len(states))
        if self.state_limits is not None:
            lower, upper = self.state_limits[:, 0], self.state_limits[:, 1]
            with np.errstate(invalid="ignore"):
                excess = np.maximum(lower - states[:, 1:], states[:, 1:] - upper)
            worst = np.maximum(worst, np.nan_to_num(excess, nan=np.inf).max(axis=(1, 2)))
        if self.has_path_constraints:
            B, N = control_sequences.shape[:2]
            x = states[:, :-1].reshape(B * N, -1)
            g = self.path_constraints(x, control_sequences.reshape(B * N, -1), NUMPY_OPS)
            if len(g):
                values = np.stack([np.broadcast_to(np.asarray(v, np.float64), (B * N,)) for v in g], axis=-1)
                worst = np.maximum(worst, values.reshape(B, -1).max(axis=1))
        return np.maximum(worst, 0.0)

    # ---- where its problems come from ---------------------------------------------------------
    def sampling_boxes(self, state_range=None, target_range=None) -> tuple[np.ndarray, np.ndarray]:
        """(initial box [n, 2], target offsets [n, 2]): the task's own, or one range (low, high)
        for every component. A task whose targets vary draws them from state_range too when only
        state_range is given; a fixed target stays fixed."""
        n = self.state_dim
        initial = self.initial_limits if state_range is None else np.tile(np.asarray(state_range, float), (n, 1))
        if target_range is not None:
            offsets = np.tile(np.asarray(target_range, float), (n, 1))
        elif state_range is not None and self.target_limits.any():
            offsets = initial
        else:
            offsets = self.target_limits
        return initial, offsets

    def draw_problems(self, rng: np.random.Generator, count: int, initial_box=None, target_box=None):
        """(initial_states, target_states) [count, n]: x_0 uniform in the box, x* = target + uniform offsets."""
        initial, offsets = self.sampling_boxes() if initial_box is None else (initial_box, target_box)
        x0 = rng.uniform(initial[:, 0], initial[:, 1], size=(count, self.state_dim))
        return x0, self.target_center + rng.uniform(offsets[:, 0], offsets[:, 1], size=(count, self.state_dim))

    def check_problems(self, initial_states: np.ndarray, target_states: np.ndarray) -> None:
        """Hook: ValueError naming what in x_0 or x* [B, n] the task cannot accept (a mass below
        the dry mass); the default accepts any finite states."""

    # ---- what datasets and checkpoints record ---------------------------------------------
    def to_dict(self) -> dict:
        """The task as datasets and checkpoints record it: where it comes from (and the hash of a
        file's source), its overridden parameters, and what it states, for a reader."""
        return {"task": self.reference or type(self).__name__, "source_sha256": self.source_sha256,
                "parameters": {k: _plain(v) for k, v in sorted(self._overrides.items())},
                "state_names": list(self.state_names), "control_names": list(self.control_names),
                "time_horizon": float(self.time_horizon), "num_steps": int(self.num_steps),
                "substeps": int(self.substeps), "dt": self.dt, "control_bounds": self.control_limits.tolist(),
                "objective": self.objective.to_dict(),
                "terminal_components": [self.state_names[i] for i in self.terminal_indices]}

    def replace(self, **changes) -> "Task":
        """The same task with `changes` to its parameters (as dataclasses.replace)."""
        return type(self)(**{**self._overrides, **changes})

    def __eq__(self, other):
        return isinstance(other, Task) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __repr__(self):
        overrides = ", ".join(f"{k}={v!r}" for k, v in self._overrides.items())
        return f"{type(self).__name__}({overrides})"


def _plain(value):
    """A parameter as JSON has it: tuples as lists, numpy numbers as Python's."""
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class LinearTask(Task):
    """A task whose dynamics are linear, x_{k+1} = A x_k + B u_k, solved exactly by the QP of
    oracles/closed_form.py (the global optimum). A and B are the exact zero-order-hold
    discretization of the vector field (a subclass may write them in closed form). A whole
    trajectory is one matrix product: x_k = Phi_k x_0 + Gamma_k u."""

    oracle = "closed_form"
    is_linear = True

    @cached_property
    def A(self) -> np.ndarray:
        """[n, n]"""
        return Task.linearization(self, np.zeros(self.state_dim))[0]

    @cached_property
    def B(self) -> np.ndarray:
        """[n, m]"""
        return Task.linearization(self, np.zeros(self.state_dim))[1]

    @cached_property
    def transition_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """(Phi [N+1, n, n], Gamma [N+1, n, N*m]) with x_k = Phi_k x_0 + Gamma_k u_flat."""
        n, m, N = self.state_dim, self.control_dim, self.num_steps
        Phi, Gamma = np.zeros((N + 1, n, n)), np.zeros((N + 1, n, N * m))
        Phi[0] = np.eye(n)
        for k in range(N):
            Phi[k + 1] = self.A @ Phi[k]
            Gamma[k + 1] = self.A @ Gamma[k]
            Gamma[k + 1][:, k * m:(k + 1) * m] = self.B
        return Phi, Gamma

    @property
    def reachability_matrix(self) -> np.ndarray:
        """G = [A^(N-1) B, ..., A B, B], [n, N*m]: x_N = A^N x_0 + G u_flat."""
        return self.transition_matrices[1][-1]

    def step(self, states: np.ndarray, controls: np.ndarray) -> np.ndarray:
        return np.asarray(states, np.float64) @ self.A.T + np.asarray(controls, np.float64) @ self.B.T

    def rollout(self, initial_states: np.ndarray, control_sequences: np.ndarray) -> np.ndarray:
        Phi, Gamma = self.transition_matrices
        x0 = np.asarray(initial_states, dtype=np.float64)
        u = np.asarray(control_sequences, dtype=np.float64).reshape(len(x0), -1)
        return np.einsum("kij,bj->bki", Phi, x0) + np.einsum("kij,bj->bki", Gamma, u)

    def rollout_torch(self, initial_states: torch.Tensor, control_sequences: torch.Tensor) -> torch.Tensor:
        Phi, Gamma = (torch.as_tensor(M, dtype=initial_states.dtype, device=initial_states.device)
                      for M in self.transition_matrices)
        u = control_sequences.reshape(control_sequences.shape[0], -1)
        return torch.einsum("kij,bj->bki", Phi, initial_states) + torch.einsum("kij,bj->bki", Gamma, u)

    def terminal_state_torch(self, initial_states: torch.Tensor, control_sequences: torch.Tensor) -> torch.Tensor:
        Phi, Gamma = self.transition_matrices
        A_N = torch.as_tensor(Phi[-1], dtype=initial_states.dtype, device=initial_states.device)
        G = torch.as_tensor(Gamma[-1], dtype=initial_states.dtype, device=initial_states.device)
        return initial_states @ A_N.T + control_sequences.reshape(control_sequences.shape[0], -1) @ G.T

    def make_terminal_map(self):
        """x_N = A^N x_0 + G u: one matrix product (terminal_map.py, LinearTerminalMap)."""
        from .terminal_map import LinearTerminalMap
        Phi, Gamma = self.transition_matrices
        return LinearTerminalMap(Phi[-1], Gamma[-1])

    def linearization(self, state: np.ndarray, control=None) -> tuple[np.ndarray, np.ndarray]:
        """(A, B): the model itself, wherever it is linearized."""
        return self.A, self.B
