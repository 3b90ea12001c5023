"""The rocket landing's flight with its Jacobian: what each Gauss-Newton step of the correction needs.

flight_jacobian(model, states, raw, dt, ddt) flies raw answers exactly as
LandingRecursiveControl.fly does and returns, besides the flight, the derivatives of every node's
position and of the final velocity with respect to the P = 4n + 1 raw numbers (the last one moves
the interval length dt, d dt / d v_P = ddt). landing_flight.c computes them forward through the
intervals in one compiled pass (a fraction of a millisecond per landing); without a C compiler, or
with a pointing cone (which the C does not write), PyTorch's automatic differentiation gives the
same numbers, about a hundred times slower at batch 1.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import torch

from ...fast.c_library import compiled_library, native_flags, cpu_identity

SOURCE = Path(__file__).parents[2] / "fast" / "landing_flight.c"
_LIBRARY: ctypes.CDLL | bool | None = None


def _library() -> ctypes.CDLL | None:
    global _LIBRARY
    if _LIBRARY is None:
        library = compiled_library(SOURCE.read_text(), "landing_flight", native_flags(), cpu_identity())
        if library is not None:
            library.landing_flight.argtypes = ([ctypes.c_longlong, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
                                               + [ctypes.c_void_p] * 9)
            library.landing_flight.restype = ctypes.c_int
            library.landing_miss.argtypes = ([ctypes.c_longlong, ctypes.c_int] + [ctypes.c_double] * 3
                                             + [ctypes.c_void_p] * 6)
            library.landing_miss.restype = None
            library.landing_fractions.argtypes = ([ctypes.c_longlong, ctypes.c_int] + [ctypes.c_double] * 4
                                                  + [ctypes.c_int] + [ctypes.c_void_p] * 4)
            library.landing_fractions.restype = None
        _LIBRARY = library or False
    return _LIBRARY or None


def flight_jacobian(model, states, raw, dt, ddt, compiled: bool = True, jacobian: bool = True):
    """Numpy float64 in and out. states [B, 7], raw [B, n, 4], dt [B] (s), ddt [B] (s per unit of the
    last raw number) -> (thrusts [B, n, 3] (N), positions r_1 .. r_n [B, n, 3] (m), v_n [B, 3] (m/s),
    d positions / d v [B, n, 3, P], d v_n / d v [B, 3, P]) with P = 4n + 1; the last two None
    when jacobian is False (the flight alone, a small fraction of the work)."""
    states, raw = np.ascontiguousarray(states, np.float64), np.ascontiguousarray(raw, np.float64)
    dt, ddt = np.ascontiguousarray(dt, np.float64), np.ascontiguousarray(ddt, np.float64)
    B, n = raw.shape[:2]
    P = 4 * n + 1
    library = _library() if compiled and model.problem.pointing_angle is None else None
    if library is None and not jacobian:  # the flight alone, no derivatives to carry
        with torch.no_grad():
            thrusts, positions, velocity = model.fly(torch.as_tensor(states), torch.as_tensor(raw), torch.as_tensor(dt))
        return thrusts.numpy(), positions.numpy(), velocity.numpy(), None, None
    if library is None:
        return _autograd_flight_jacobian(model, states, raw, dt, ddt)
    fields = model.c_answer_fields()  # the constants forward.c reads the answer with: the same here
    params = np.array([fields[name] for name in ("alpha", "rho_1", "rho_2", "gravity", "margin", "magnitude_offset")],
                      np.float64)
    out = [np.empty((B, n, 3)), np.empty((B, n, 3)), np.empty((B, 3))]
    out += [np.empty((B, n, 3, P)), np.empty((B, 3, P))] if jacobian else [None, None]
    pointer = lambda a: None if a is None else a.ctypes.data  # an address; argtypes make it a void*
    status = library.landing_flight(B, n, pointer(params), fields["newton_steps"], pointer(states), pointer(raw),
                                    pointer(dt), pointer(ddt), *map(pointer, out))
    if status:
        raise MemoryError("landing_flight.c: out of memory")
    return tuple(out)


def landing_miss(landing, initial_states, thrusts, time_horizons, target_states):
    """What given thrusts miss, flown exactly as RocketLanding.rollout flies them: (the miss [B, 6]
    = (r_N - r*, v_N - v*) in m and m/s, the largest glide violation [B] in m over the nodes 0 .. N,
    positive where the cone is left; 0 without a glide slope). initial_states, target_states [B, 7],
    thrusts [B, N, 3] (N), time_horizons [B] (s); numpy float64. In C (microseconds per landing);
    without a compiler, the rollout and constraint_violations of problem.py."""
    x0, xt = (np.ascontiguousarray(a, np.float64) for a in (initial_states, target_states))
    thrusts, time_horizons = np.ascontiguousarray(thrusts, np.float64), np.ascontiguousarray(time_horizons, np.float64)
    B, N = thrusts.shape[:2]
    slope = landing.glide_slope_tangent if landing.glide_slope > 0 else 0.0
    library = _library()
    if library is None:
        states = landing.rollout(x0, thrusts, time_horizons)
        relative = states[:, :, :3] - xt[:, None, :3]
        glide = (slope * np.linalg.norm(relative[..., :2], axis=-1) - relative[..., 2]).max(1) if slope else np.zeros(B)
        return states[:, -1, :6] - xt[:, :6], glide
    miss, glide = np.empty((B, 6)), np.empty(B)
    library.landing_miss(B, N, landing.vehicle.fuel_rate, landing.vehicle.gravity, slope, x0.ctypes.data,
                         thrusts.ctypes.data, time_horizons.ctypes.data, xt.ctypes.data, miss.ctypes.data,
                         glide.ctypes.data)
    return miss, glide


def thrust_fractions(landing, masses, magnitudes, dt, newton_steps: int, margin: float):
    """[B, N]: where each thrust magnitude [B, N] (N) lies in its interval's range, (|T_k| - lo_k) /
    (high - lo_k), with high = rho_2 (1 - margin) and lo_k = landing.least_thrust of the mass the
    thrusts before leave (masses [B] kg at the start, intervals of dt [B] s). What the model's
    raw_answer inverts the sigmoid of; numpy float64, in C where a compiler is."""
    masses, magnitudes, dt = (np.ascontiguousarray(a, np.float64) for a in (masses, magnitudes, dt))
    vehicle, (B, N) = landing.vehicle, magnitudes.shape
    high = vehicle.thrust_max * (1 - margin)
    library = _library()
    if library is None:
        fractions, m = [], masses
        for k in range(N):
            low = landing.least_thrust(m, dt, newton_steps, margin)
            fractions.append((magnitudes[:, k] - low) / (high - low))
            m = m * np.exp(-vehicle.fuel_rate * dt / m * magnitudes[:, k])
        return np.stack(fractions, axis=1)
    fractions = np.empty((B, N))
    library.landing_fractions(B, N, vehicle.fuel_rate, vehicle.thrust_min, high, margin, newton_steps,
                              masses.ctypes.data, magnitudes.ctypes.data, dt.ctypes.data, fractions.ctypes.data)
    return fractions


def _autograd_flight_jacobian(model, states, raw, dt, ddt):
    """flight_jacobian by PyTorch's reverse mode: one batched backward pass over the 3n + 3 outputs."""
    B, n = raw.shape[:2]
    x = torch.as_tensor(states)
    v = torch.cat([torch.as_tensor(raw).reshape(B, 4 * n), torch.zeros(B, 1, dtype=torch.float64)], dim=1)
    v.requires_grad_(True)
    with torch.enable_grad():
        thrusts, positions, velocity = model.fly(x, v[:, :-1].view(B, n, 4),
                                                 torch.as_tensor(dt) + torch.as_tensor(ddt) * v[:, -1])
        outputs = torch.cat([positions.flatten(1), velocity], dim=1)  # [B, 3n + 3]
        M = outputs.shape[1]
        seeds = torch.eye(M, dtype=torch.float64)[:, None, :].expand(M, B, M)
        jacobian = torch.autograd.grad(outputs, v, seeds, is_grads_batched=True)[0].transpose(0, 1)  # [B, M, P]
    jacobian = jacobian.numpy()
    return (thrusts.detach().numpy(), positions.detach().numpy(), velocity.detach().numpy(),
            jacobian[:, :3 * n].reshape(B, n, 3, -1), jacobian[:, 3 * n:])
