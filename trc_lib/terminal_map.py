"""The terminal map x_N = F(x_0, u) of a nonlinear system, compiled to C, as a differentiable torch op.

The error feedback asks at every recursion where the current answer would end: x_N(x_0, u)
through the task's own integrator (N control intervals of `substeps` RK4 steps each, the same
integrator the oracle optimizes and the scorer uses). Written as torch operations on a [B, n]
tensor that is N * substeps * ~30 tiny operations of a few microseconds of dispatch each,
whatever the batch: milliseconds per rollout for about a thousand flops of arithmetic.

So the rollout is generated once per system as C by CasADi, from the system's own vector field
(`ODESystem.casadi_vector_field`, the expression the oracle's NLP is built from), together with
its reverse-mode derivative:

    terminal_state      (x_0 [n], u [N, m])                  -> x_N [n]
    terminal_state_vjp  (x_0 [n], u [N, m], w [n])           -> (w^T dx_N/dx_0 [n], w^T dx_N/du [N, m])

A loop over the batch is appended, the system's C compiler builds a shared library once per
machine (c_library.py: cached by content, under a second), and ctypes calls it; the call
releases the GIL, so large batches are split over the CPU's threads. Everything runs in float64
(the answer is exact to float64 round-off; float32 inputs are widened and the result narrowed).

`terminal_state(x_0, u, system)` is a torch custom op (`torch.ops.trc.terminal_state`): torch.compile
treats it as one opaque call, and autograd differentiates it through the generated derivative.
Without a working C compiler `TerminalMap` falls back to the system's eager torch rollout: the
same numbers, only slower. (A linear system needs none of this: its x_N is one matrix product.)
"""

from __future__ import annotations

import ctypes
import json
import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from .c_library import compiled_library

PARALLEL_FROM = 512  # problems per call from which the batch is split over threads


def _c_source(system) -> str:
    """C for terminal_state and terminal_state_vjp of `system`, with batch loops appended."""
    import casadi as ca

    from .systems import rk4
    n, m, N = system.state_dim, system.control_dim, system.num_steps
    x, u = ca.SX.sym("x", n), ca.SX.sym("u", m)
    interval = ca.Function("interval", [x, u], [rk4(system.casadi_vector_field(), x, u,
                                                    system.dt / system.substeps, system.substeps)[0]])
    x0, U = ca.MX.sym("x0", n), ca.MX.sym("u", m, N)  # column k of U is u_k: memory order [N, m]
    forward = ca.Function("trc_terminal_state", [x0, U], [interval.mapaccum("intervals", N)(x0, U)[:, -1]])
    reverse = forward.reverse(1)  # (x0, U, x_N (unused), w) -> (w dx_N/dx0, w dx_N/dU)
    reverse = ca.Function("trc_terminal_state_vjp", reverse.mx_in(), reverse.call(reverse.mx_in()))
    with tempfile.TemporaryDirectory(prefix="trc-codegen-") as folder:
        cwd = os.getcwd()
        try:  # CasADi writes into the working directory
            os.chdir(folder)
            generator = ca.CodeGenerator("terminal_map.c", {"with_header": False})
            generator.add(forward)
            generator.add(reverse)
            generator.generate()
            source = Path(folder, "terminal_map.c").read_text()
        finally:
            os.chdir(cwd)
    work = lambda f: f"const casadi_real* arg[{f.sz_arg()}]; casadi_real* res[{f.sz_res()}]; " \
                     f"casadi_int iw[{f.sz_iw() + 1}]; casadi_real w[{f.sz_w() + 1}];"
    return source + f"""
/* ---- batch loops (trc_lib.terminal_map): problem b reads x0 + b n, u + b N m ---- */
int trc_terminal_state_batch(long long B, const double* x0, const double* u, double* xN) {{
  {work(forward)}
  for (long long b = 0; b < B; ++b) {{
    arg[0] = x0 + b * {n}; arg[1] = u + b * {N * m}; res[0] = xN + b * {n};
    if (trc_terminal_state(arg, res, iw, w, 0)) return 1;
  }}
  return 0;
}}

int trc_terminal_state_vjp_batch(long long B, const double* x0, const double* u, const double* seed,
                                 double* grad_x0, double* grad_u) {{
  {work(reverse)}
  for (long long b = 0; b < B; ++b) {{
    arg[0] = x0 + b * {n}; arg[1] = u + b * {N * m}; arg[2] = 0; arg[3] = seed + b * {n};
    res[0] = grad_x0 + b * {n}; res[1] = grad_u + b * {N * m};
    if (trc_terminal_state_vjp(arg, res, iw, w, 0)) return 1;
  }}
  return 0;
}}
"""


class TerminalMap:
    """x_N(x_0, u) of one nonlinear system, compiled (see the module docstring).

    compiled: whether the C library runs (False: the eager torch rollout stands in).
    """

    def __init__(self, system):
        if system.is_linear:
            raise ValueError("TerminalMap is for nonlinear systems; a linear one's x_N is a matrix product")
        self.system = system
        self.shape = (system.state_dim, system.num_steps, system.control_dim)
        self._library = compiled_library(_c_source(system), "terminal_map")
        self.compiled = self._library is not None
        if not self.compiled:
            warnings.warn("no working C compiler: the error feedback runs the eager torch rollout (slow)")
            return
        self._forward = self._library.trc_terminal_state_batch
        self._forward.argtypes = [ctypes.c_longlong] + [ctypes.c_void_p] * 3
        self._reverse = self._library.trc_terminal_state_vjp_batch
        self._reverse.argtypes = [ctypes.c_longlong] + [ctypes.c_void_p] * 5

    def _run(self, function, arrays: list[torch.Tensor]) -> None:
        """Call a batch loop on contiguous float64 CPU tensors (inputs, then outputs), whose first
        dimension is the batch; in chunks on several threads when the batch is large."""
        B = arrays[0].shape[0]
        threads = min(torch.get_num_threads(), B // PARALLEL_FROM + 1)
        edges = [B * i // threads for i in range(threads + 1)]

        def call(span):
            lo, hi = span
            return function(hi - lo, *(a[lo:hi].data_ptr() for a in arrays))

        spans = list(zip(edges[:-1], edges[1:]))
        failed = call(spans[0]) if threads == 1 else any(_pool().map(call, spans))
        if failed:
            raise FloatingPointError("the compiled terminal map failed")

    def terminal_states(self, initial_states: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        """x_N [B, n] for x_0 [B, n] and controls [B, N, m]: float64, on the CPU, no gradient."""
        x0, u = _float64(initial_states), _float64(controls)
        if not self.compiled:
            with torch.no_grad():
                return self.system.terminal_state_torch(x0, u)
        x_N = torch.empty_like(x0)
        self._run(self._forward, [x0, u, x_N])
        return x_N

    def vjp(self, initial_states: torch.Tensor, controls: torch.Tensor, seed: torch.Tensor):
        """(seed^T dx_N/dx_0 [B, n], seed^T dx_N/du [B, N, m]) for seed [B, n]: float64, CPU."""
        x0, u, w = _float64(initial_states), _float64(controls), _float64(seed)
        if not self.compiled:
            with torch.enable_grad():
                x0, u = x0.requires_grad_(), u.requires_grad_()
                return torch.autograd.grad(self.system.terminal_state_torch(x0, u), (x0, u), w)
        grad_x0, grad_u = torch.empty_like(x0), torch.empty_like(u)
        self._run(self._reverse, [x0, u, w, grad_x0, grad_u])
        return grad_x0, grad_u

    def jacobian(self, initial_states: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        """dx_N/du [B, n, N m] (float64, CPU): one reverse pass per state component."""
        x0, u = _float64(initial_states), _float64(controls)
        rows = []
        for i in range(self.shape[0]):
            seed = torch.zeros_like(x0)
            seed[:, i] = 1.0
            rows.append(self.vjp(x0, u, seed)[1].reshape(len(x0), -1))
        return torch.stack(rows, dim=1)


def _float64(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to(device="cpu", dtype=torch.float64).contiguous()


_POOL: ThreadPoolExecutor | None = None
_MAPS: dict[str, TerminalMap] = {}


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads()), thread_name_prefix="trc-rollout")
    return _POOL


def system_key(system) -> str:
    """The system as a string (name, horizon, steps, substeps, parameters): the op's argument."""
    return json.dumps(system.to_dict(), sort_keys=True)


def terminal_map(system) -> TerminalMap:
    """The TerminalMap of `system`, built once per process."""
    key = system_key(system)
    if key not in _MAPS:
        _MAPS[key] = TerminalMap(system)
    return _MAPS[key]


def _map_of(key: str) -> TerminalMap:
    """The TerminalMap a system key names (the op's argument is the key, not the system)."""
    if key not in _MAPS:  # e.g. an op in a graph traced by another process: rebuild from the description
        from .systems import make_system
        description = {k: v for k, v in json.loads(key).items() if k != "dt"}
        system = make_system(description.pop("name"), description.pop("time_horizon"),
                             description.pop("num_steps"), **description)
        _MAPS[key] = TerminalMap(system)
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
    and on their device. key: system_key(system), when the caller has it at hand.

    The compiled C when a compiler is at hand (the custom op, or a plain call where there is
    neither a graph to record nor one to trace); the system's eager torch rollout without one.
    """
    key = key or system_key(system)
    if not _map_of(key).compiled:
        return system.terminal_state_torch(initial_states, controls)
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return _terminal_state_op(initial_states, controls, key)
    return _map_of(key).terminal_states(initial_states, controls).to(initial_states)
