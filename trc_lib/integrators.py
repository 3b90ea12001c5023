"""Classic RK4 with a zero-order hold, and the few functions a vector field is written against.

A task writes its vector field f(x, u, ops) once; `ops` supplies sin, cos, indexing and
stacking for batched numpy arrays, torch tensors or CasADi symbols, so the data, the training,
the compiled terminal map and the trajectory optimizer all integrate the same expression with
the same steps.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def rk4(dynamics: Callable, x, u, h: float, substeps: int, quadrature: Callable | None = None):
    """`substeps` steps of classic RK4 of xdot = dynamics(x, u) over h seconds each, u held constant.

    x, u: numpy arrays, torch tensors or CasADi symbols. quadrature: optional L(x, u), integrated along the same
    steps as an extra state q (qdot = L, q(0) = 0). Returns (x after substeps * h seconds, q).
    """
    q = 0
    for _ in range(substeps):
        k1 = dynamics(x, u)
        k2 = dynamics(x + h / 2 * k1, u)
        k3 = dynamics(x + h / 2 * k2, u)
        k4 = dynamics(x + h * k3, u)
        if quadrature is not None:
            # the stage cost at the same four stage states, so q is RK4 of the augmented ODE
            q1 = quadrature(x, u)
            q2 = quadrature(x + h / 2 * k1, u)
            q3 = quadrature(x + h / 2 * k2, u)
            q4 = quadrature(x + h * k3, u)
            q = q + h / 6 * (q1 + 2 * q2 + 2 * q3 + q4)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x, q


# The functions a vector field (or a stage cost, or a path constraint) may call, besides + - * / **.
FUNCTIONS = ("sin", "cos", "tan", "exp", "log", "sqrt", "tanh", "atan2", "abs", "minimum", "maximum")


class Ops:
    """What `ops` offers a task's vector field: FUNCTIONS, and
    part(x, i): component i of x ([B] of a batch [B, n]; a scalar symbol in CasADi);
    stack([f_0, ..., f_(n-1)]): the components back into one vector ([B, n], or a column [n]).

    kind: "numpy", "torch" or "casadi". Asking for anything else is an AttributeError that lists
    what there is: a vector field written against these runs in every kind.
    """

    def __init__(self, kind: str, functions: dict, part: Callable, stack: Callable):
        self.kind, self._functions, self.part, self.stack = kind, functions, part, stack
        for name, function in functions.items():
            setattr(self, name, function)

    def __getattr__(self, name):  # only reached for a name that is not there
        raise AttributeError(f"ops.{name} does not exist: a vector field may use ops.part, ops.stack and "
                             f"ops.{', ops.'.join(FUNCTIONS)} (and + - * / **)")


NUMPY_OPS = Ops("numpy", dict(zip(FUNCTIONS, (np.sin, np.cos, np.tan, np.exp, np.log, np.sqrt, np.tanh,
                                              np.arctan2, np.abs, np.minimum, np.maximum))),
                part=lambda x, i: x[..., i], stack=lambda parts: np.stack(np.broadcast_arrays(*parts), axis=-1))
TORCH_OPS = Ops("torch", dict(zip(FUNCTIONS, (torch.sin, torch.cos, torch.tan, torch.exp, torch.log, torch.sqrt,
                                              torch.tanh, torch.atan2, torch.abs, torch.minimum, torch.maximum))),
                part=lambda x, i: x[..., i], stack=lambda parts: torch.stack(_broadcast_tensors(parts), dim=-1))


def _broadcast_tensors(parts):
    """Components of one batch: a constant (a Python number) becomes a tensor like the others."""
    like = next(p for p in parts if isinstance(p, torch.Tensor))
    parts = [p if isinstance(p, torch.Tensor) else torch.full_like(like, float(p)) for p in parts]
    return torch.broadcast_tensors(*parts)


def casadi_ops() -> Ops:
    import casadi as ca  # only the trajectory optimizer and the compiled terminal map need CasADi
    return Ops("casadi", dict(zip(FUNCTIONS, (ca.sin, ca.cos, ca.tan, ca.exp, ca.log, ca.sqrt, ca.tanh, ca.atan2,
                                              ca.fabs, ca.fmin, ca.fmax))),
               part=lambda x, i: x[i], stack=lambda parts: ca.vertcat(*parts))
