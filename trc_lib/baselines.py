"""Controllers to compare with: each has `name`, `num_parameters`, `memory_bytes` and
`predict(initial_states [B, n], target_states [B, n]) -> control_sequences [B, N, m]` (numpy).

- RandomController: uniform controls within the bound (seeded) - the floor.
- ZeroController: do nothing.
- OracleController: the oracle (exact QP, or IPOPT on nonlinear systems) - the ceiling.
- LQRController: finite-horizon LQR on the dynamics linearized at the target, played in closed
  loop on the true dynamics and clipped into the bounds, where it applies (every target held by
  some control, the linearization controllable).
- LeastSquaresController: controls = W^T [x_0, x*, 1] fitted by least squares on the training
  set, then clipped to the bound. Without active bounds the optimum is exactly linear in
  (x_0, x*), so this 5 x N*m matrix is the honest "simplest learner that could do the job".
- ExternalControls: control sequences from a file, for a controller that runs elsewhere (an
  LLM, an optimizer): npz with key `control_sequences`, or JSON {"control_sequences": ...}
  or a bare JSON list, aligned with the test cases. If the file also has `initial_states`
  and `target_states`, they must match the test set's.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .oracles import oracle_of
from .data import ControlDataset
from .errors import TRCError
from .files import check_input
from .task import Task


class RandomController:
    name = "random"
    num_parameters = 0
    memory_bytes = 0

    def __init__(self, problem: Task, seed: int = 0):
        self.problem, self.seed = problem, seed

    def predict(self, initial_states, target_states):
        rng = np.random.default_rng(self.seed)
        N, m = self.problem.num_steps, self.problem.control_dim
        return rng.uniform(self.problem.control_lower, self.problem.control_upper, size=(len(initial_states), N, m))


class ZeroController:
    name = "zero"
    num_parameters = 0
    memory_bytes = 0

    def __init__(self, problem: Task):
        self.problem = problem

    def predict(self, initial_states, target_states):
        """Zero controls, or the nearest point of the bounds where zero lies outside them."""
        zero = np.clip(np.zeros(self.problem.control_dim), self.problem.control_lower, self.problem.control_upper)
        return np.broadcast_to(zero, (len(initial_states), self.problem.num_steps, self.problem.control_dim)).copy()


class OracleController:
    """The oracle as a controller (oracles/: the exact QP, or IPOPT on one core from the task's
    starts): the ceiling on quality, and the online solver to beat on speed. IPOPT runs on the
    NLP compiled to C (built on first use; CasADi's interpreter where no C compiler works)."""

    num_parameters = None  # a solver, not a learned map
    memory_bytes = None

    def __init__(self, problem: Task):
        self.problem, self.oracle = problem, oracle_of(problem)
        self.name = f"oracle ({self.oracle.name})"
        if self.oracle.one_problem_at_a_time:
            self.timing_batch_sizes = (1,)  # per problem it costs the same at any batch size

    def predict(self, initial_states, target_states):
        return self.oracle.controls(self.problem, initial_states, target_states)


TERMINAL_WEIGHT = 1e3  # LQR has no terminal constraint: this weight on |x_N - x*|^2 stands in for x_N = x*


def lqr_gains(task: Task, A: np.ndarray, B: np.ndarray, terminal_weight: float = TERMINAL_WEIGHT) -> np.ndarray:
    """Time-varying gains K_k [N, m, n] of the finite-horizon LQR (backward Riccati recursion) for
    x_{k+1} = A x_k + B u_k with the task's weights: stage dt (e'Qe + u'Ru), terminal e'Q_f e, plus
    terminal_weight * I where the task demands x_N = x*:
        K_k = (dt R + B'P_{k+1}B)^-1 B'P_{k+1}A,   P_k = dt Q + A'P_{k+1}(A - B K_k)."""
    Q, R, Q_f = task.objective.matrices()
    P = Q_f + (terminal_weight * np.eye(len(Q)) if task.objective.terminal_constraint else 0.0)
    gains = np.zeros((task.num_steps, B.shape[1], A.shape[0]))
    for k in reversed(range(task.num_steps)):
        K = np.linalg.solve(task.dt * R + B.T @ P @ B, B.T @ P @ A)
        P = task.dt * Q + A.T @ P @ (A - B @ K)
        P = (P + P.T) / 2  # keep it symmetric against round-off over many steps
        gains[k] = K
    return gains


def equilibrium_control(task: Task, state: np.ndarray) -> np.ndarray | None:
    """u_e [m] within the bounds that holds `state` still over an interval, x = F(x, u_e) (found by
    bounded least squares from the bounds' center), or None where no control does (to 1e-9)."""
    import scipy.optimize
    residual = lambda u: task.step(state[None], u[None])[0] - state
    found = scipy.optimize.least_squares(residual, task.control_limits.mean(axis=1),
                                         bounds=(task.control_lower, task.control_upper), xtol=1e-15, ftol=1e-15,
                                         gtol=1e-15)
    return found.x if np.abs(residual(found.x)).max() <= 1e-9 * (1.0 + np.abs(state).max()) else None


class LQRController:
    """Finite-horizon LQR on the task's dynamics linearized at each target x* and the control u_e
    that holds it, played in closed loop on the true dynamics: u_k = clip(u_e - K_k (x_k - x*))
    into the bounds; the sequence it plays is its answer. `applies(targets)` says whether every
    target is held by some control and its linearization is controllable. Gains are kept per
    target (computing them is not part of the timed answer for a target seen before)."""

    name = "LQR (linearized at the target)"
    num_parameters = None
    memory_bytes = None

    def __init__(self, task: Task, terminal_weight: float = TERMINAL_WEIGHT):
        self.task, self.terminal_weight, self._gains = task, terminal_weight, {}

    def gains_at(self, target: np.ndarray):
        """(u_e [m], K [N, m, n]) at `target`, or None where LQR does not apply there."""
        key = np.asarray(target, np.float64).tobytes()
        if key not in self._gains:
            u_e = equilibrium_control(self.task, np.asarray(target, np.float64))
            found = None
            if u_e is not None:
                A, B = self.task.linearization(target, u_e)
                n = A.shape[0]
                reachable = np.hstack([np.linalg.matrix_power(A, k) @ B for k in range(n)])
                if np.linalg.matrix_rank(reachable) == n:
                    found = (u_e, lqr_gains(self.task, A, B, self.terminal_weight))
            self._gains[key] = found
        return self._gains[key]

    def applies(self, target_states) -> bool:
        return all(self.gains_at(t) is not None for t in np.unique(np.asarray(target_states), axis=0))

    def predict(self, initial_states, target_states) -> np.ndarray:
        """controls [B, N, m]: each problem's closed-loop LQR played on the true dynamics."""
        task, targets = self.task, np.asarray(target_states, np.float64)
        u_e, gains = (np.stack(parts) for parts in zip(*(self.gains_at(t) for t in targets)))  # [B, m], [B, N, m, n]
        states, controls = np.asarray(initial_states, np.float64), []
        for k in range(task.num_steps):
            u = np.clip(u_e - np.einsum("bij,bj->bi", gains[:, k], states - targets), task.control_lower,
                        task.control_upper)
            controls.append(u)
            states = task.step(states, u)
        return np.stack(controls, axis=1)


class LeastSquaresController:
    name = "least squares (linear)"

    def __init__(self, problem: Task):
        self.problem = problem
        self.weights = None  # [2n + 1, N*m]

    @staticmethod
    def features(initial_states, target_states):
        x0, xt = np.asarray(initial_states, np.float64), np.asarray(target_states, np.float64)
        return np.concatenate([x0, xt, np.ones((len(x0), 1))], axis=1)

    def fit(self, train: ControlDataset) -> "LeastSquaresController":
        targets = train.control_sequences.reshape(len(train), -1)
        self.weights = np.linalg.lstsq(self.features(train.initial_states, train.target_states), targets,
                                       rcond=None)[0]
        return self

    @property
    def num_parameters(self):
        return int(self.weights.size)

    @property
    def memory_bytes(self):
        return int(self.weights.nbytes)

    def predict(self, initial_states, target_states):
        u = (self.features(initial_states, target_states) @ self.weights).reshape(len(initial_states),
                                                                                  self.problem.num_steps, -1)
        return np.clip(u, self.problem.control_lower, self.problem.control_upper)


class ExternalControls:
    """Precomputed control sequences for exactly the test cases (no timing: it ran elsewhere)."""

    num_parameters = None
    memory_bytes = None

    def __init__(self, name: str, path, test: ControlDataset):
        self.name, self.path = name, Path(path)
        self.control_sequences = read_external_controls(self.path, test)

    def predict(self, initial_states, target_states):
        if len(initial_states) != len(self.control_sequences):
            raise TRCError(f"{self.path}: holds {len(self.control_sequences)} sequences, asked for {len(initial_states)}")
        return self.control_sequences


def _numbers(value, key: str, path: Path) -> np.ndarray:
    """`value` as a float64 array, refusing anything that is not a number: "1.5" and true
    would otherwise be converted silently (numpy turns both into floats)."""
    if isinstance(value, (list, tuple, str, bool)):  # read from JSON: look at every leaf
        wrong = next((x for x in _leaves(value) if isinstance(x, bool) or not isinstance(x, (int, float))), None)
        if wrong is not None:
            raise TRCError(f"{path}: '{key}' must hold numbers only (found {type(wrong).__name__} {wrong!r})")
    try:
        array = np.asarray(value)
    except ValueError:
        raise TRCError(f"{path}: '{key}' is ragged: every row must have the same length") from None
    if array.dtype.kind not in "iuf":
        found = {"b": "true/false", "U": "text", "S": "text", "O": "mixed values"}.get(array.dtype.kind,
                                                                                     str(array.dtype))
        raise TRCError(f"{path}: '{key}' must hold numbers only (found {found})")
    return array.astype(np.float64)


def _leaves(value):
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def read_external_controls(path, test: ControlDataset) -> np.ndarray:
    """Read and check a file of control sequences for the test set; returns [B, N, m]."""
    path = Path(path)
    if not path.exists():
        raise TRCError(f"{path}: no such file of control sequences")
    check_input(path, "control sequences file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                contents = {k: npz[k] for k in npz.files}
        elif path.suffix == ".json":
            raw = json.loads(path.read_text())
            contents = raw if isinstance(raw, dict) else {"control_sequences": raw}
        else:
            raise TRCError(f"{path}: expected a .npz or .json file")
        if "control_sequences" not in contents:
            raise TRCError(f"{path}: no 'control_sequences' in the file")
        arrays = {k: _numbers(v, k, path) for k, v in contents.items()
                  if k in ("control_sequences", "initial_states", "target_states")}
    except (zipfile.BadZipFile, json.JSONDecodeError, ValueError, TypeError, OSError) as e:
        raise TRCError(f"{path}: unreadable control sequences ({type(e).__name__}: {e})") from None
    expected = test.control_sequences.shape
    u = arrays["control_sequences"]
    if u.ndim == 2 and expected[2] == 1:
        u = u[..., None]  # [B, N] is accepted for a single control
    if u.shape != expected:
        raise TRCError(f"{path}: control_sequences has shape {list(u.shape)}, expected {list(expected)} "
                       f"(one sequence per test case)")
    if not np.isfinite(u).all():
        raise TRCError(f"{path}: control_sequences contains NaN or inf")
    for key in ("initial_states", "target_states"):
        if key in arrays and (arrays[key].shape != getattr(test, key).shape
                              or not np.allclose(arrays[key], getattr(test, key), atol=1e-6)):
            raise TRCError(f"{path}: '{key}' differs from the test set's: the file is for other test cases")
    return u
