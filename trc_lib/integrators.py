"""Classic RK4 with a zero-order hold, and the few functions a vector field is written against.

A system writes its vector field f(x, u, ops) once; `ops` supplies sin, cos, indexing and
stacking for batched numpy arrays, torch tensors or CasADi symbols, so the data, the training,
the compiled terminal map and the trajectory optimizer all integrate the same expression with
the same steps.
"""

from __future__ import annotations

from types import SimpleNamespace
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


# The few functions a vector field needs, for each array kind: batched numpy [B, n] and torch
# [B, n] tensors, and CasADi column symbols [n]. A system writes f once against these.
NUMPY_OPS = SimpleNamespace(sin=np.sin, cos=np.cos, part=lambda x, i: x[..., i],
                            stack=lambda parts: np.stack(parts, axis=-1))
TORCH_OPS = SimpleNamespace(sin=torch.sin, cos=torch.cos, part=lambda x, i: x[..., i],
                            stack=lambda parts: torch.stack(parts, dim=-1))


def casadi_ops():
    import casadi as ca  # only the trajectory optimizer needs CasADi
    return SimpleNamespace(sin=ca.sin, cos=ca.cos, part=lambda x, i: x[i], stack=lambda parts: ca.vertcat(*parts))
