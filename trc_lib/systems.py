"""Dynamical systems, discretized exactly, with batched rollouts in numpy and torch.

The double integrator x'' = u with state x = [position, velocity] and a control held
constant over each step (zero-order hold) has the exact discrete-time model

    x_{k+1} = A x_k + B u_k,   A = [[1, dt], [0, 1]],   B = [dt^2 / 2, dt]^T,

with dt = time_horizon / num_steps, computed here and nowhere else. Because the model is
linear, a whole trajectory is one matrix product (no per-step Python loop):

    x_k = A^k x_0 + sum_{j<k} A^(k-1-j) B u_j   =>   states = x_0 Phi^T + u Gamma^T.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property
from typing import Callable

import numpy as np
import torch

from .integrators import NUMPY_OPS, TORCH_OPS, casadi_ops, rk4


@dataclass(frozen=True)
class DoubleIntegrator:
    """Double integrator on a fixed horizon.

    time_horizon: T in seconds; num_steps: N control intervals; dt = T / N seconds.
    """

    time_horizon: float = 5.0
    num_steps: int = 15

    name = "double_integrator"
    is_linear = True
    oracle = "closed_form"  # the QP of oracles/closed_form.py, solved exactly
    state_dim = 2
    control_dim = 1
    state_names = ("position", "velocity")

    def __post_init__(self):
        if not (self.time_horizon > 0 and np.isfinite(self.time_horizon)):
            raise ValueError(f"time_horizon must be a positive number, got {self.time_horizon}")
        if int(self.num_steps) != self.num_steps or self.num_steps < 1:
            raise ValueError(f"num_steps must be a positive integer, got {self.num_steps}")

    @property
    def dt(self) -> float:
        """Step length in seconds: exactly time_horizon / num_steps."""
        return self.time_horizon / self.num_steps

    @cached_property
    def A(self) -> np.ndarray:
        """State transition matrix [2, 2]."""
        return np.array([[1.0, self.dt], [0.0, 1.0]])

    @cached_property
    def B(self) -> np.ndarray:
        """Input matrix [2, 1]."""
        return np.array([[self.dt**2 / 2.0], [self.dt]])

    @cached_property
    def transition_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """(Phi [N+1, n, n], Gamma [N+1, n, N*m]) with x_k = Phi_k x_0 + Gamma_k u_flat."""
        n, m, N = self.state_dim, self.control_dim, self.num_steps
        Phi = np.zeros((N + 1, n, n))
        Gamma = np.zeros((N + 1, n, N * m))
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
        """One step. states [B, n], controls [B, m] -> next states [B, n]."""
        return states @ self.A.T + controls @ self.B.T

    def rollout(self, initial_states: np.ndarray, control_sequences: np.ndarray) -> np.ndarray:
        """Trajectories in float64. initial_states [B, n], control_sequences [B, N, m] -> [B, N+1, n]."""
        Phi, Gamma = self.transition_matrices
        x0 = np.asarray(initial_states, dtype=np.float64)
        u = np.asarray(control_sequences, dtype=np.float64).reshape(len(x0), -1)
        return np.einsum("kij,bj->bki", Phi, x0) + np.einsum("kij,bj->bki", Gamma, u)

    def rollout_torch(self, initial_states: torch.Tensor, control_sequences: torch.Tensor) -> torch.Tensor:
        """Differentiable trajectories. initial_states [B, n], control_sequences [B, N, m] -> [B, N+1, n]."""
        Phi, Gamma = (torch.as_tensor(M, dtype=initial_states.dtype, device=initial_states.device)
                      for M in self.transition_matrices)
        u = control_sequences.reshape(control_sequences.shape[0], -1)
        return torch.einsum("kij,bj->bki", Phi, initial_states) + torch.einsum("kij,bj->bki", Gamma, u)

    def terminal_state_torch(self, initial_states: torch.Tensor, control_sequences: torch.Tensor) -> torch.Tensor:
        """Differentiable x_N only (cheaper than a whole rollout). [B, n], [B, N, m] -> [B, n]."""
        Phi, Gamma = self.transition_matrices
        A_N = torch.as_tensor(Phi[-1], dtype=initial_states.dtype, device=initial_states.device)
        G = torch.as_tensor(Gamma[-1], dtype=initial_states.dtype, device=initial_states.device)
        u = control_sequences.reshape(control_sequences.shape[0], -1)
        return initial_states @ A_N.T + u @ G.T

    def make_terminal_map(self):
        """x_N = A^N x_0 + G u: one matrix product (terminal_map.py, LinearTerminalMap)."""
        from .terminal_map import LinearTerminalMap
        Phi, Gamma = self.transition_matrices
        return LinearTerminalMap(Phi[-1], Gamma[-1])

    def linearization(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(A [n, n], B [n, m]) of x_{k+1} = A x_k + B u_k around `state`: the model itself."""
        return self.A, self.B

    def to_dict(self) -> dict:
        return {"name": self.name, "time_horizon": float(self.time_horizon),
                "num_steps": int(self.num_steps), "dt": self.dt}


# ---- nonlinear systems: xdot = f(x, u), discretized by RK4 ----------------------------------

@dataclass(frozen=True)
class ODESystem:
    """x_{k+1} = RK4^substeps of xdot = f(x, u) over dt = time_horizon / num_steps, u held constant.

    Subclasses write `vector_field(x, u, ops)` once; numpy, torch and CasADi versions follow, so
    data, training and the trajectory optimizer all use the same integrator.
    """

    time_horizon: float = 5.0
    num_steps: int = 50
    substeps: int = 4

    control_dim = 1
    is_linear = False
    oracle = "shooting"  # IPOPT on the multiple-shooting NLP (oracles/labels.py)

    def __post_init__(self):
        if not (self.time_horizon > 0 and np.isfinite(self.time_horizon)):
            raise ValueError(f"time_horizon must be a positive number, got {self.time_horizon}")
        for name in ("num_steps", "substeps"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")

    @property
    def dt(self) -> float:
        return self.time_horizon / self.num_steps

    def vector_field(self, x, u, ops):
        raise NotImplementedError

    def _step(self, states, controls, ops):
        f = lambda x, u: self.vector_field(x, u, ops)
        return rk4(f, states, controls, self.dt / self.substeps, self.substeps)[0]

    def step(self, states: np.ndarray, controls: np.ndarray) -> np.ndarray:
        """One control interval. states [B, n], controls [B, m] -> [B, n] (numpy)."""
        return self._step(np.asarray(states, np.float64), np.asarray(controls, np.float64), NUMPY_OPS)

    def rollout(self, initial_states: np.ndarray, control_sequences: np.ndarray) -> np.ndarray:
        """[B, n], [B, N, m] -> trajectories [B, N+1, n] (numpy, float64)."""
        states = [np.asarray(initial_states, np.float64)]
        for k in range(self.num_steps):
            states.append(self._step(states[-1], np.asarray(control_sequences[:, k], np.float64), NUMPY_OPS))
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
        """x_N through every RK4 substep, compiled to C with its derivative (terminal_map.py)."""
        from .terminal_map import CompiledTerminalMap
        return CompiledTerminalMap(self)

    def linearization(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(A [n, n], B [n, m]): the exact zero-order-hold discretization over dt of the dynamics
        linearized at (state, u = 0). The Jacobians of f by automatic differentiation (float64),
        then the matrix exponential of the block matrix [[A_c, B_c], [0, 0]] * dt."""
        import scipy.linalg
        n, m = self.state_dim, self.control_dim
        x = torch.as_tensor(state, dtype=torch.float64)
        u = torch.zeros(m, dtype=torch.float64)
        A_c, B_c = torch.autograd.functional.jacobian(lambda x, u: self.vector_field(x, u, TORCH_OPS), (x, u))
        block = np.zeros((n + m, n + m))
        block[:n, :n], block[:n, n:] = A_c.numpy(), B_c.numpy()
        transition = scipy.linalg.expm(self.dt * block)  # [[A, B], [0, I]]
        return transition[:n, :n], transition[:n, n:]

    def to_dict(self) -> dict:
        """Name, every constructor field (horizon, steps, substeps, physical parameters) and dt."""
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in fields(self)}, "dt": self.dt}

    def casadi_vector_field(self) -> Callable:
        """f(x, u) on CasADi symbols, for oracles.shooting.TrajectoryOptimizer(dynamics=...)."""
        ops = casadi_ops()
        return lambda x, u: self.vector_field(x, u, ops)


@dataclass(frozen=True)
class VanDerPol(ODESystem):
    """Forced Van der Pol oscillator, state [position, velocity]:
    x1' = x2,  x2' = mu (1 - x1^2) x2 - x1 + u. For mu > 0 the origin is unstable
    (mu = 1: eigenvalues (1 +- i sqrt 3) / 2), so an open-loop sequence drifts off it."""

    mu: float = 1.0

    name = "vanderpol"
    state_dim = 2
    state_names = ("position", "velocity")

    def vector_field(self, x, u, ops):
        x1, x2 = ops.part(x, 0), ops.part(x, 1)
        return ops.stack([x2, self.mu * (1 - x1 ** 2) * x2 - x1 + ops.part(u, 0)])


@dataclass(frozen=True)
class Pendulum(ODESystem):
    """Damped pendulum driven by a torque, state [angle (0: hanging, pi: upright), angular velocity]:
    theta'' = -(g / l) sin(theta) - damping theta' + u / (m l^2)."""

    mass: float = 1.0
    length: float = 1.0
    gravity: float = 9.81
    damping: float = 0.0

    name = "pendulum"
    state_dim = 2
    state_names = ("angle", "angular velocity")

    def vector_field(self, x, u, ops):
        theta, omega = ops.part(x, 0), ops.part(x, 1)
        alpha = (-(self.gravity / self.length) * ops.sin(theta) - self.damping * omega
                 + ops.part(u, 0) / (self.mass * self.length ** 2))
        return ops.stack([omega, alpha])


SYSTEMS = {"double_integrator": DoubleIntegrator}
NONLINEAR_SYSTEMS = {"vanderpol": VanDerPol, "pendulum": Pendulum}


ALL_SYSTEMS = {**SYSTEMS, **NONLINEAR_SYSTEMS}


def make_system(name: str, time_horizon: float, num_steps: int, **parameters):
    """Build a system by name (a key of SYSTEMS or NONLINEAR_SYSTEMS) with its other parameters."""
    if name not in ALL_SYSTEMS:
        raise ValueError(f"unknown system {name!r}; choose one of {sorted(ALL_SYSTEMS)}")
    return ALL_SYSTEMS[name](time_horizon=float(time_horizon), num_steps=int(num_steps), **parameters)
