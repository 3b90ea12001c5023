"""The terminal map x_N = F(x_0, u): where an answer would end, for the error feedback and halting.

Each task makes its own (Task.make_terminal_map): a linear task's is one matrix product,
x_N = A^N x_0 + G u (LinearTerminalMap, here); a nonlinear task's is its own integrator compiled
to C with its derivative (fast/compiled_rollout.py), called through the torch custom op defined
here (`torch.ops.trc.terminal_state`): torch.compile treats it as one opaque call, and autograd
differentiates it through the generated vector-Jacobian product. The reference for both is the
task's eager torch rollout (Task.terminal_state_torch), which gives the same numbers.
"""

from __future__ import annotations

import json

import numpy as np
import torch

class LinearTerminalMap:
    """x_N = A^N x_0 + G u of a linear system: one matrix product, differentiable as it stands.

    A_N [n, n], G [n, N m] in float64; each device and dtype it is asked for gets its own copy once.
    """

    onnx_exportable = True  # a matrix product is an ONNX operator

    def __init__(self, A_N: np.ndarray, G: np.ndarray):
        self.A_N, self.G = np.asarray(A_N, np.float64), np.asarray(G, np.float64)
        self._copies: dict = {}

    def _matrices(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (like.device, like.dtype)
        if key not in self._copies:
            self._copies[key] = tuple(torch.as_tensor(M, dtype=like.dtype, device=like.device)
                                      for M in (self.A_N, self.G))
        return self._copies[key]

    def differentiable(self, initial_states: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        """x_N [B, n] from x_0 [B, n] and controls [B, N, m], in their dtype and on their device."""
        A_N, G = self._matrices(initial_states)
        return initial_states @ A_N.T + controls.flatten(1) @ G.T

    def terminal_states(self, initial_states: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        """x_N [B, n]: float64, on the CPU, no gradient."""
        with torch.no_grad():
            return self.differentiable(_float64(initial_states), _float64(controls))

    def jacobian(self, initial_states: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        """dx_N/du [B, n, N m] (float64, CPU): G for every problem."""
        return self._matrices(_float64(initial_states))[1].expand(len(initial_states), *self.G.shape)

    def terminal_states_array(self, initial_states: np.ndarray, controls: np.ndarray) -> np.ndarray:
        """x_N [B, n] for arrays x_0 [B, n] and controls [B, N, m], float64."""
        return np.asarray(initial_states, np.float64) @ self.A_N.T + \
            np.asarray(controls, np.float64).reshape(len(initial_states), -1) @ self.G.T

    def jacobian_array(self, initial_states: np.ndarray, controls: np.ndarray) -> np.ndarray:
        """dx_N/du [B, n, N m] for arrays, float64: G for every problem."""
        return np.broadcast_to(self.G, (len(initial_states), *self.G.shape)).copy()

    def terminal_states_and_jacobian_array(self, initial_states: np.ndarray, controls: np.ndarray):
        """(x_N [B, n], dx_N/du [B, n, N m]) for arrays, float64."""
        return self.terminal_states_array(initial_states, controls), self.jacobian_array(initial_states, controls)

    def c_arguments(self):
        """What forward.c's error feedback reads: (A_N, G as float32 CPU tensors, no C function)."""
        A_N, G = self._matrices(torch.empty(0))
        return A_N, G, None


def _float64(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to(device="cpu", dtype=torch.float64).contiguous()



_MAPS: dict = {}  # system_key -> its terminal map


def system_key(system) -> str:
    """The system as a string (name, horizon, steps, substeps, parameters): the op's argument."""
    return json.dumps(system.to_dict(), sort_keys=True)


def terminal_map(system):
    """The terminal map of `system` (system.make_terminal_map: LinearTerminalMap or
    CompiledTerminalMap), built once per process."""
    key = system_key(system)
    if key not in _MAPS:
        _MAPS[key] = system.make_terminal_map()
    return _MAPS[key]


def _map_of(key: str):
    """The terminal map a system key names (the op's argument is the key, not the system)."""
    if key not in _MAPS:
        raise KeyError(f"no terminal map was built in this process for {key}: call terminal_map(system) first")
    return _MAPS[key]


# ---- the torch op: one opaque call under torch.compile, differentiated by the generated VJP ----

@torch.library.custom_op("trc::terminal_state", mutates_args=())
def _terminal_state_op(initial_states: torch.Tensor, controls: torch.Tensor, system: str) -> torch.Tensor:
    return _map_of(system).terminal_states(initial_states, controls).to(initial_states)


@_terminal_state_op.register_fake
def _(initial_states, controls, system):
    return torch.empty_like(initial_states)


@torch.library.custom_op("trc::terminal_state_vjp", mutates_args=())
def _terminal_state_vjp_op(initial_states: torch.Tensor, controls: torch.Tensor, seed: torch.Tensor,
                           system: str) -> tuple[torch.Tensor, torch.Tensor]:
    grad_x0, grad_u = _map_of(system).vjp(initial_states, controls, seed)
    return grad_x0.to(initial_states), grad_u.to(controls).view(controls.shape)


@_terminal_state_vjp_op.register_fake
def _(initial_states, controls, seed, system):
    return torch.empty_like(initial_states), torch.empty_like(controls)


def _setup_context(ctx, inputs, output):
    initial_states, controls, system = inputs
    ctx.save_for_backward(initial_states, controls)
    ctx.system = system


def _backward(ctx, grad_output):
    initial_states, controls = ctx.saved_tensors
    grad_x0, grad_u = _terminal_state_vjp_op(initial_states, controls, grad_output.contiguous(), ctx.system)
    return grad_x0, grad_u, None


_terminal_state_op.register_autograd(_backward, setup_context=_setup_context)


def terminal_state(initial_states: torch.Tensor, controls: torch.Tensor, system, key: str | None = None) -> torch.Tensor:
    """Differentiable x_N [B, n] of `system` from x_0 [B, n] and controls [B, N, m], in their dtype
    and on their device. key: system_key(system), when the caller has it at hand."""
    mapped = _MAPS.get(key) if key else None
    return (mapped or terminal_map(system)).differentiable(initial_states, controls)
