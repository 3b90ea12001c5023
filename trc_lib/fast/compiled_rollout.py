"""A nonlinear task's terminal map x_N = F(x_0, u), compiled to C with its derivative (a fast path:
the reference is the task's eager torch rollout, Task.terminal_state_torch; parity: tests/test_terminal_map.py).

The error feedback asks at every recursion where the current answer would end: x_N(x_0, u)
through the task's own integrator (N control intervals of `substeps` RK4 steps each, the same
integrator the oracle optimizes and the scorer uses). Written as torch operations on a [B, n]
tensor that is N * substeps * ~30 tiny operations of a few microseconds of dispatch each,
whatever the batch: milliseconds per rollout for about a thousand flops of arithmetic.

So the rollout is compiled to C once per system, from the system's own vector field
(`Task.casadi_vector_field`, the expression the oracle's NLP is built from):

    terminal_state      (x_0 [n], u [N, m])                  -> x_N [n]
    terminal_state_vjp  (x_0 [n], u [N, m], w [n])           -> (w^T dx_N/dx_0 [n], w^T dx_N/du [N, m])
    terminal_state_jacobian (x_0 [n], u [N, m])              -> (x_N [n], dx_N/du [n, N m])

All integrate LANES problems side by side (a system whose interval calls the math library, one at a
time: LIBRARY_CALLS below). The interval map x_(k+1) = F(x_k, u_k) and its
vector-Jacobian product (CasADi's reverse mode, as an SX expression) are translated instruction
by instruction into C in which every instruction is a loop over the lanes, and the compiler
turns those loops into vector instructions (CasADi's own generated C is scalar, one problem at a
time). The VJP runs the N intervals
forwards, keeps their states, and runs the intervals' VJPs backwards. The system's C compiler
builds a shared library once per machine and CPU (c_library.py: cached by content, a few
seconds), and ctypes calls it; the call releases the GIL, so large batches are split over the
CPU's threads. Everything runs in float64, in the numpy rollout's order of operations, so x_N
is the scorer's to the last bit where f is arithmetic only (Van der Pol; a sine may be a last bit
away from numpy's). float32 inputs are widened and the result narrowed.

The compiled x_N is called through the torch custom op of terminal_map.py. Without a working C
compiler `CompiledTerminalMap` falls back to the task's eager torch rollout: the same numbers,
only slower.
"""

from __future__ import annotations

import ctypes
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..integrators import rk4
from ..terminal_map import _float64, _terminal_state_op, system_key
from .c_library import compiled_library, cpu_identity, target

PARALLEL_FROM = 512  # problems per call from which the batch is split over threads


LANES = 16  # problems integrated side by side: two AVX-512 registers of doubles (measured: 16 > 8 > 4)
# -O2, not -O3: on an AMD EPYC Zen 4, -O3 ran the lane loops 2.5x slower. No contraction of a * b + c
# into one fused multiply-add, so x_N is the numpy rollout's (the scorer's) to the last bit.
FLAGS = ("-O2", "-ffp-contract=off")  # and -march for c_library.target()


def _c_expressions():
    """C for each CasADi SX operation the vector fields use, on lane l of the work rows."""
    import casadi as ca
    return {ca.OP_ASSIGN: "{0}", ca.OP_ADD: "{0} + {1}", ca.OP_SUB: "{0} - {1}", ca.OP_MUL: "{0} * {1}",
            ca.OP_DIV: "{0} / {1}", ca.OP_NEG: "-{0}", ca.OP_SQ: "{0} * {0}", ca.OP_TWICE: "{0} + {0}",
            ca.OP_INV: "1. / {0}", ca.OP_SIN: "sin({0})", ca.OP_COS: "cos({0})", ca.OP_TAN: "tan({0})",
            ca.OP_EXP: "exp({0})", ca.OP_LOG: "log({0})", ca.OP_SQRT: "sqrt({0})", ca.OP_FABS: "fabs({0})",
            ca.OP_TANH: "tanh({0})", ca.OP_POW: "pow({0}, {1})", ca.OP_CONSTPOW: "pow({0}, {1})",
            ca.OP_FMIN: "fmin({0}, {1})", ca.OP_FMAX: "fmax({0}, {1})", ca.OP_ATAN2: "atan2({0}, {1})"}


def _lanes_function(function, lanes: int) -> str:
    """C of a CasADi SX function for `lanes` problems side by side, as
    `static void NAME_LANES(double in0[size][LANES], ..., double out0[size][LANES], ...)`:
    each SX instruction becomes a loop over the lanes, which the compiler turns into vector
    instructions (CasADi's own C evaluates one problem at a time, with scalar arithmetic).
    Outputs must not alias inputs."""
    import casadi as ca
    expressions, lines = _c_expressions(), []
    for k in range(function.n_instructions()):
        op, inputs, outputs = function.instruction_id(k), function.instruction_input(k), function.instruction_output(k)
        if op == ca.OP_OUTPUT:
            lines.append(f"for (int l = 0; l < {lanes}; ++l) out{outputs[0]}[{outputs[1]}][l] = w[{inputs[0]}][l];")
            continue
        if op == ca.OP_INPUT:
            value = f"in{inputs[0]}[{inputs[1]}][l]"
        elif op == ca.OP_CONST:
            value = repr(float(function.instruction_constant(k)))
        elif op in expressions:
            value = expressions[op].format(*(f"w[{i}][l]" for i in inputs))
        else:
            raise NotImplementedError(f"CasADi operation {op} has no C expression in terminal_map.py")
        lines.append(f"for (int l = 0; l < {lanes}; ++l) w[{outputs[0]}][l] = {value};")
    arguments = [f"double in{i}[{function.nnz_in(i)}][{lanes}]" for i in range(function.n_in())]
    arguments += [f"double out{i}[{function.nnz_out(i)}][{lanes}]" for i in range(function.n_out())]
    body = "\n  ".join(lines)
    return f"""
static void {function.name()}_{lanes}({', '.join(arguments)}) {{
  double w[{function.sz_w()}][{lanes}];
  {body}
}}
"""


def _blocks_source(n: int, m: int, N: int, lanes: int) -> str:
    """x_N and its vector-Jacobian product for `lanes` problems side by side, in the batch's
    row-major layout: x0 [lanes, n], u [lanes, N, m], seed [lanes, n]. The reverse pass keeps the
    N + 1 states of the forward one and runs the intervals' own VJPs backwards."""
    L = lanes
    load = lambda target, source, stride, offset, size: (
        f"for (int i = 0; i < {size}; ++i) for (int l = 0; l < {L}; ++l) "
        f"{target}[i][l] = {source}[l * {stride} + {offset}i];")
    return f"""
static void terminal_state_{L}(const double* x0, const double* u, double* xN) {{
  double x[{n}][{L}], uk[{m}][{L}], next[{n}][{L}];
  {load("x", "x0", n, "", n)}
  for (int k = 0; k < {N}; ++k) {{
    {load("uk", "u", N * m, f"k * {m} + ", m)}
    interval_{L}(x, uk, next);
    for (int i = 0; i < {n}; ++i) for (int l = 0; l < {L}; ++l) x[i][l] = next[i][l];
  }}
  for (int i = 0; i < {n}; ++i) for (int l = 0; l < {L}; ++l) xN[l * {n} + i] = x[i][l];
}}

static void terminal_state_vjp_{L}(const double* x0, const double* u, const double* seed,
                                   double* grad_x0, double* grad_u) {{
  double x[{N + 1}][{n}][{L}], uk[{m}][{L}], w[{n}][{L}], w_before[{n}][{L}], g[{m}][{L}];
  {load("x[0]", "x0", n, "", n)}
  for (int k = 0; k < {N}; ++k) {{
    {load("uk", "u", N * m, f"k * {m} + ", m)}
    interval_{L}(x[k], uk, x[k + 1]);
  }}
  {load("w", "seed", n, "", n)}
  for (int k = {N - 1}; k >= 0; --k) {{  /* w <- w^T dx_(k+1)/dx_k; g = w^T dx_(k+1)/du_k */
    {load("uk", "u", N * m, f"k * {m} + ", m)}
    interval_vjp_{L}(x[k], uk, w, w_before, g);
    for (int j = 0; j < {m}; ++j) for (int l = 0; l < {L}; ++l) grad_u[l * {N * m} + k * {m} + j] = g[j][l];
    for (int i = 0; i < {n}; ++i) for (int l = 0; l < {L}; ++l) w[i][l] = w_before[i][l];
  }}
  for (int i = 0; i < {n}; ++i) for (int l = 0; l < {L}; ++l) grad_x0[l * {n} + i] = w[i][l];
}}

static void terminal_state_jacobian_{L}(const double* x0, const double* u, double* xN, double* jacobian) {{
  /* x_N and dx_N/du [n, N m] per problem: one forward pass, then one reverse pass per row e_i */
  double x[{N + 1}][{n}][{L}], uk[{m}][{L}], w[{n}][{L}], w_before[{n}][{L}], g[{m}][{L}];
  {load("x[0]", "x0", n, "", n)}
  for (int k = 0; k < {N}; ++k) {{
    {load("uk", "u", N * m, f"k * {m} + ", m)}
    interval_{L}(x[k], uk, x[k + 1]);
  }}
  for (int i = 0; i < {n}; ++i) for (int l = 0; l < {L}; ++l) xN[l * {n} + i] = x[{N}][i][l];
  for (int row = 0; row < {n}; ++row) {{
    for (int i = 0; i < {n}; ++i) for (int l = 0; l < {L}; ++l) w[i][l] = i == row;
    for (int k = {N - 1}; k >= 0; --k) {{
      {load("uk", "u", N * m, f"k * {m} + ", m)}
      interval_vjp_{L}(x[k], uk, w, w_before, g);
      for (int j = 0; j < {m}; ++j) for (int l = 0; l < {L}; ++l)
        jacobian[(l * {n} + row) * {N * m} + k * {m} + j] = g[j][l];
      for (int i = 0; i < {n}; ++i) for (int l = 0; l < {L}; ++l) w[i][l] = w_before[i][l];
    }}
  }}
}}
"""


# Operations compiled to a call into the C math library. A lane loop holding one stays scalar and
# sends every intermediate through memory, so a system whose interval needs them is integrated one
# problem at a time (benchmarks/terminal_map.py times both).
LIBRARY_CALLS = ("OP_SIN", "OP_COS", "OP_TAN", "OP_EXP", "OP_LOG", "OP_TANH", "OP_POW", "OP_CONSTPOW", "OP_ATAN2")


def calls_math_library(function) -> bool:
    """Whether a CasADi SX function has an operation that compiles to a libm call."""
    import casadi as ca
    calls = {getattr(ca, name) for name in LIBRARY_CALLS}
    return any(function.instruction_id(k) in calls for k in range(function.n_instructions()))


def interval_functions(system):
    """CasADi SX functions of one control interval (`substeps` RK4 steps): x_(k+1) = F(x_k, u_k), and
    (x_k, u_k, w) -> (w^T dx_(k+1)/dx_k, w^T dx_(k+1)/du_k), its reverse mode."""
    import casadi as ca
    n, m = system.state_dim, system.control_dim
    x, u, w = ca.SX.sym("x", n), ca.SX.sym("u", m), ca.SX.sym("w", n)
    x_next = rk4(system.casadi_vector_field(), x, u, system.dt / system.substeps, system.substeps)[0]
    return (ca.Function("interval", [x, u], [x_next]),
            ca.Function("interval_vjp", [x, u, w], [ca.jtimes(x_next, x, w, True), ca.jtimes(x_next, u, w, True)]))


def _c_source(system, lanes: int | None = None) -> str:
    """C for x_N, its vector-Jacobian product and its Jacobian, from the system's own vector field
    and integrator: `lanes` problems at a time and the last few one by one. lanes None: LANES,
    or 1 where the interval calls the math library."""
    n, m, N = system.state_dim, system.control_dim, system.num_steps
    interval, interval_vjp = interval_functions(system)
    if lanes is None:
        lanes = 1 if calls_math_library(interval_vjp) else LANES
    pieces = ["/* generated by trc_lib.terminal_map for " + system_key(system).replace("*/", "") + " */",
              "#include <math.h>"]
    for width in sorted({lanes, 1}, reverse=True):
        pieces += [_lanes_function(interval, width), _lanes_function(interval_vjp, width), _blocks_source(n, m, N, width)]
    batch = lambda name, args, offsets: f"""
int trc_{name}_batch(long long B, {', '.join(f'{t} {a}' for t, a in args)}) {{
  long long b = 0;
  for (; b + {lanes} <= B && {lanes} > 1; b += {lanes}) {name}_{lanes}({', '.join(f'{a} + b * {o}' for (_, a), o in zip(args, offsets))});
  for (; b < B; ++b) {name}_1({', '.join(f'{a} + b * {o}' for (_, a), o in zip(args, offsets))});
  return 0;
}}
"""
    pieces.append(batch("terminal_state", [("const double*", "x0"), ("const double*", "u"), ("double*", "xN")],
                        [n, N * m, n]))
    pieces.append(batch("terminal_state_vjp", [("const double*", "x0"), ("const double*", "u"),
                                               ("const double*", "seed"), ("double*", "grad_x0"), ("double*", "grad_u")],
                        [n, N * m, n, n, N * m]))
    pieces.append(batch("terminal_state_jacobian", [("const double*", "x0"), ("const double*", "u"), ("double*", "xN"),
                                                    ("double*", "jacobian")], [n, N * m, n, n * N * m]))
    return "\n".join(pieces)


class CompiledTerminalMap:
    """x_N(x_0, u) of one ODE system, compiled (see the module docstring).

    compiled: whether the C library runs (False: the eager torch rollout stands in). lanes: problems
    integrated side by side (None: _c_source's choice for the system).
    """

    onnx_exportable = False  # ONNX has no operator for a call into compiled C

    def __init__(self, system, lanes: int | None = None):
        self.system, self.key = system, system_key(system)
        self.shape = (system.state_dim, system.num_steps, system.control_dim)
        self._library = compiled_library(_c_source(system, lanes), "terminal_map", (*FLAGS, f"-march={target()}"), cpu_identity())
        self.compiled = self._library is not None
        if not self.compiled:
            warnings.warn("no working C compiler: the error feedback runs the eager torch rollout (slow)")
            return
        self._forward = self._library.trc_terminal_state_batch
        self._forward.argtypes = [ctypes.c_longlong] + [ctypes.c_void_p] * 3
        self._reverse = self._library.trc_terminal_state_vjp_batch
        self._reverse.argtypes = [ctypes.c_longlong] + [ctypes.c_void_p] * 5
        self._jacobian = self._library.trc_terminal_state_jacobian_batch
        self._jacobian.argtypes = [ctypes.c_longlong] + [ctypes.c_void_p] * 4

    def differentiable(self, initial_states: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        """x_N [B, n] from x_0 [B, n] and controls [B, N, m], in their dtype and on their device.

        The torch custom op where there is a graph to record or one to trace, a plain call of the
        C otherwise; the system's eager torch rollout without a C compiler.
        """
        if not self.compiled:
            return self.system.terminal_state_torch(initial_states, controls)
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return _terminal_state_op(initial_states, controls, self.key)
        return self.terminal_states(initial_states, controls).to(initial_states)

    def c_arguments(self):
        """What forward.c's error feedback reads: (no matrices, the address of the compiled x_N),
        or None without a C compiler."""
        return (None, None, ctypes.cast(self._forward, ctypes.c_void_p).value) if self.compiled else None

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
        """dx_N/du [B, n, N m] (float64, CPU): per problem one forward pass, then one reverse pass
        per state component from its stored states."""
        x0, u = _float64(initial_states), _float64(controls)
        B, n = x0.shape
        if self.compiled:
            x_N, J = torch.empty_like(x0), torch.empty(B, n, u[0].numel(), dtype=torch.float64)
            self._run(self._jacobian, [x0, u, x_N, J])
            return J
        rows = []
        for i in range(self.shape[0]):
            seed = torch.zeros_like(x0)
            seed[:, i] = 1.0
            rows.append(self.vjp(x0, u, seed)[1].reshape(len(x0), -1))
        return torch.stack(rows, dim=1)

    # The same two maps on numpy arrays, for the Newton projection's many calls on a few problems:
    # the C is called on the arrays themselves, since at batch 1 torch's conversions cost more than
    # the integration. A batch large enough to split over threads goes through the torch methods.

    def terminal_states_array(self, initial_states: np.ndarray, controls: np.ndarray) -> np.ndarray:
        """x_N [B, n] for arrays x_0 [B, n] and controls [B, N, m] (or [B, N m]), float64."""
        x0 = np.ascontiguousarray(initial_states, np.float64)
        u = np.ascontiguousarray(controls, np.float64)
        if not self.compiled or len(x0) >= PARALLEL_FROM:
            return self.terminal_states(torch.from_numpy(x0), torch.from_numpy(u).reshape(len(x0), *self.shape[1:])).numpy()
        x_N = np.empty_like(x0)
        self._call(self._forward, x0, u, x_N)
        return x_N

    def terminal_states_and_jacobian_array(self, initial_states: np.ndarray, controls: np.ndarray):
        """(x_N [B, n], dx_N/du [B, n, N m]) for arrays x_0 [B, n] and controls [B, N, m] (or [B, N m]),
        float64, from one call: the reverse passes reuse the forward pass's states."""
        x0 = np.ascontiguousarray(initial_states, np.float64)
        u = np.ascontiguousarray(controls, np.float64)
        B, n = x0.shape
        if not self.compiled:
            x0_t, u_t = torch.from_numpy(x0), torch.from_numpy(u).reshape(B, *self.shape[1:])
            return self.terminal_states(x0_t, u_t).numpy(), self.jacobian(x0_t, u_t).numpy()
        x_N, J = np.empty_like(x0), np.empty((B, n, u[0].size))
        if B >= PARALLEL_FROM:  # split over the threads (the tensors share the arrays' memory)
            self._run(self._jacobian, [torch.from_numpy(a) for a in (x0, u, x_N, J)])
        else:
            self._call(self._jacobian, x0, u, x_N, J)
        return x_N, J

    def jacobian_array(self, initial_states: np.ndarray, controls: np.ndarray) -> np.ndarray:
        """dx_N/du [B, n, N m] for arrays x_0 [B, n] and controls [B, N, m] (or [B, N m]), float64."""
        return self.terminal_states_and_jacobian_array(initial_states, controls)[1]

    @staticmethod
    def _call(function, *arrays: np.ndarray) -> None:
        """A batch loop on contiguous float64 arrays (inputs, then outputs), on this thread."""
        if function(len(arrays[0]), *(a.ctypes.data for a in arrays)):
            raise FloatingPointError("the compiled terminal map failed")


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads()), thread_name_prefix="trc-rollout")
    return _POOL
