"""Dynamical systems, discretized exactly, with batched rollouts in numpy and torch.

The double integrator x'' = u with state x = [position, velocity] and a control held
constant over each step (zero-order hold) has the exact discrete-time model

    x_{k+1} = A x_k + B u_k,   A = [[1, dt], [0, 1]],   B = [dt^2 / 2, dt]^T,

with dt = time_horizon / num_steps, computed here and nowhere else. Because the model is
linear, a whole trajectory is one matrix product (no per-step Python loop):

    x_k = A^k x_0 + sum_{j<k} A^(k-1-j) B u_j   =>   states = x_0 Phi^T + u Gamma^T.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch


@dataclass(frozen=True)
class DoubleIntegrator:
    """Double integrator on a fixed horizon.

    time_horizon: T in seconds; num_steps: N control intervals; dt = T / N seconds.
    """

    time_horizon: float = 5.0
    num_steps: int = 15

    name = "double_integrator"
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

    def to_dict(self) -> dict:
        return {"name": self.name, "time_horizon": float(self.time_horizon),
                "num_steps": int(self.num_steps), "dt": self.dt}


SYSTEMS = {"double_integrator": DoubleIntegrator}


def make_system(name: str, time_horizon: float, num_steps: int):
    """Build a system by name; the names are the keys of SYSTEMS."""
    if name not in SYSTEMS:
        raise ValueError(f"unknown system {name!r}; choose one of {sorted(SYSTEMS)}")
    return SYSTEMS[name](time_horizon=float(time_horizon), num_steps=int(num_steps))
