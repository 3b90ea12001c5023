"""The optimal-control problem: a system, a control bound and an objective.

Both the oracle (`optimal.py`) and the evaluator (`evaluate.py`) read the objective from
here, so the two can never disagree about what "optimal" means.

For a target state x* the cost of a control sequence u_0..u_{N-1} is

    J(u) = dt * sum_{k<N} [ (x_k - x*)^T Q (x_k - x*) + u_k^T R u_k ]  +  (x_N - x*)^T Q_f (x_N - x*)

subject to |u_k| <= control_bound and, when `terminal_constraint` is set, x_N = x* exactly.
Two objectives are named:

- "min_energy" (the default): Q = 0, R = 1, Q_f = 0, x_N = x*: reach the target exactly at
  t = T with minimum control energy sum_k u_k^2 dt.
- "lqr": finite-horizon LQR tracking with the given Q, R, Q_f and no terminal constraint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .systems import make_system


@dataclass(frozen=True)
class Objective:
    """Quadratic objective. Q: [n, n], R: [m, m], Q_f: [n, n] (stored as nested lists)."""

    name: str = "min_energy"
    Q: tuple = ((0.0, 0.0), (0.0, 0.0))
    R: tuple = ((1.0,),)
    Q_f: tuple = ((0.0, 0.0), (0.0, 0.0))
    terminal_constraint: bool = True

    @classmethod
    def min_energy(cls) -> "Objective":
        return cls()

    @classmethod
    def lqr(cls, Q_diag=(1.0, 1.0), R_diag=(0.1,), Q_f_diag=(100.0, 100.0)) -> "Objective":
        as_matrix = lambda diag: tuple(map(tuple, np.diag(np.asarray(diag, dtype=float)).tolist()))
        for label, diag in (("Q", Q_diag), ("R", R_diag), ("Q_f", Q_f_diag)):
            if not all(np.isfinite(d) and d >= 0 for d in diag):
                raise ValueError(f"LQR weight {label} must be finite and non-negative, got {list(diag)}")
        if not all(d > 0 for d in R_diag):
            raise ValueError(f"LQR weight R must be positive, got {list(R_diag)}")
        return cls(name="lqr", Q=as_matrix(Q_diag), R=as_matrix(R_diag), Q_f=as_matrix(Q_f_diag),
                   terminal_constraint=False)

    def matrices(self):
        return np.array(self.Q, float), np.array(self.R, float), np.array(self.Q_f, float)

    def to_dict(self) -> dict:
        return {"name": self.name, "Q": [list(r) for r in self.Q], "R": [list(r) for r in self.R],
                "Q_f": [list(r) for r in self.Q_f], "terminal_constraint": self.terminal_constraint,
                "formula": "J = dt*sum_k[(x_k-x*)'Q(x_k-x*) + u_k'R u_k] + (x_N-x*)'Q_f(x_N-x*)"
                           + ("  s.t. x_N = x*" if self.terminal_constraint else "")}

    @classmethod
    def from_dict(cls, d: dict) -> "Objective":
        as_tuple = lambda M: tuple(tuple(float(v) for v in row) for row in M)
        return cls(name=d["name"], Q=as_tuple(d["Q"]), R=as_tuple(d["R"]), Q_f=as_tuple(d["Q_f"]),
                   terminal_constraint=bool(d["terminal_constraint"]))


@dataclass(frozen=True)
class ControlProblem:
    """A system on a horizon, a bound |u_k| <= control_bound, and an objective."""

    system: object = field(default_factory=lambda: make_system("double_integrator", 5.0, 15))
    control_bound: float = 4.0
    objective: Objective = field(default_factory=Objective)

    # a fixed horizon: its problems are drawn from --state_range / --target_range (data.py), and a
    # dataset holds no flight times (rocket_landing.RocketLanding answers True to both questions)
    draws_its_own_problems = False
    free_final_time = False

    def __post_init__(self):
        if not (self.control_bound > 0 and np.isfinite(self.control_bound)):
            raise ValueError(f"control_bound must be a positive number, got {self.control_bound}")

    @property
    def num_steps(self) -> int:
        return self.system.num_steps

    @property
    def dt(self) -> float:
        return self.system.dt

    def cost(self, states: np.ndarray, control_sequences: np.ndarray, target_states: np.ndarray) -> np.ndarray:
        """J for each sample. states [B, N+1, n], control_sequences [B, N, m], target_states [B, n] -> [B]."""
        Q, R, Q_f = self.objective.matrices()
        errors = states - target_states[:, None, :]
        stage = (np.einsum("bki,ij,bkj->b", errors[:, :-1], Q, errors[:, :-1])
                 + np.einsum("bki,ij,bkj->b", control_sequences, R, control_sequences))
        terminal = np.einsum("bi,ij,bj->b", errors[:, -1], Q_f, errors[:, -1])
        return self.dt * stage + terminal

    def to_dict(self) -> dict:
        return {"system": self.system.to_dict(), "control_bound": float(self.control_bound),
                "objective": self.objective.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "ControlProblem":
        s = {k: v for k, v in d["system"].items() if k != "dt"}  # dt follows from the rest
        return cls(system=make_system(s.pop("name"), s.pop("time_horizon"), s.pop("num_steps"), **s),
                   control_bound=float(d["control_bound"]), objective=Objective.from_dict(d["objective"]))


def problem_from_dict(d: dict):
    """The problem a dict from to_dict() describes: a ControlProblem, or a RocketLanding (which
    is its own problem: free flight time, minimum fuel)."""
    from .rocket_landing import RocketLanding
    if d.get("name") == RocketLanding.name:
        return RocketLanding.from_dict(d)
    return ControlProblem.from_dict(d)
