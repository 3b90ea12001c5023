"""Classical guidance for the rocket landing: the baseline TRC is compared with.

ZEM/ZEV guidance (D'Souza 1997; Guo, Hawkins & Wie 2013) is the energy-optimal feedback law for
a vehicle in uniform gravity when the thrust is unbounded:

    a = 6 ZEM / t_go^2 - 2 ZEV / t_go,   ZEM = r* - (r + v t_go + g t_go^2 / 2),   ZEV = v* - (v + g t_go)

with t_go the time left. Here it is applied at each interval's start from the state the thrusts so
far reach (the exact dynamics), its thrust T = m a scaled into the annulus (direction kept,
magnitude clipped to [least_thrust, rho_2], the interval bounds of problem.py) and held as
thrust per unit mass, the task's interval semantics. It needs a flight time: the best of a grid
FLIGHT_TIME_STEP s apart from the shortest descent to the longest flight the tank allows, the one
using the least fuel among those that land within the success thresholds, else the one missing
the pad least. No optimizer runs: it is a rule a guidance engineer could fly, and it minimizes
the squared acceleration, not the fuel, so its fuel gap shows what the optimum is worth.
"""

from __future__ import annotations

import numpy as np

from .problem import RocketLanding

FLIGHT_TIME_STEP = 1.0  # s, between the flight times tried


def zem_zev_flights(landing: RocketLanding, initial_states, target_states, time_horizons):
    """(thrusts [B, N, 3] in N, states [B, N+1, 7]) of ZEM/ZEV guidance flown over time_horizons [B] s."""
    vehicle, N = landing.vehicle, landing.num_steps
    x = np.array(initial_states, np.float64)
    target = np.asarray(target_states, np.float64)
    time_horizons = np.asarray(time_horizons, np.float64)
    dt = time_horizons / N
    g = vehicle.gravity_vector
    states, thrusts = [x], []
    for k in range(N):
        t_go = (time_horizons - k * dt)[:, None]
        r, v, m = x[:, 0:3], x[:, 3:6], x[:, 6]
        zem = target[:, 0:3] - (r + v * t_go + 0.5 * g * t_go ** 2)
        zev = target[:, 3:6] - (v + g * t_go)
        thrust = m[:, None] * (6 * zem / t_go ** 2 - 2 * zev / t_go)
        magnitude = np.linalg.norm(thrust, axis=-1)
        bounded = np.clip(magnitude, landing.least_thrust(m, dt), vehicle.thrust_max * (1 - 1e-9))  # rounding-safe
        direction = np.where(magnitude[:, None] > 0, thrust / np.maximum(magnitude, 1e-300)[:, None], [0.0, 0.0, 1.0])
        thrust = bounded[:, None] * direction
        x = landing.step(x, thrust, dt)
        states.append(x), thrusts.append(thrust)
    return np.stack(thrusts, axis=1), np.stack(states, axis=1)


def zem_zev_guidance(landing: RocketLanding, initial_states, target_states, success_position: float = 5.0,
                     success_velocity: float = 1.0):
    """(thrusts [B, N, 3] in N, time_horizons [B] in s): ZEM/ZEV at the best flight time of the grid."""
    initial_states, target_states = (np.asarray(a, np.float64) for a in (initial_states, target_states))
    B = len(initial_states)
    lowest = min(landing.shortest_descent(x) for x in initial_states)
    longest = max(landing.max_flight_time(x[6]) for x in initial_states)
    grid = np.arange(max(FLIGHT_TIME_STEP, np.floor(lowest)), longest + FLIGHT_TIME_STEP, FLIGHT_TIME_STEP)
    G = len(grid)
    thrusts, states = zem_zev_flights(landing, np.repeat(initial_states, G, axis=0),
                                      np.repeat(target_states, G, axis=0), np.tile(grid, B))
    miss = states[:, -1, :6] - np.repeat(target_states, G, axis=0)[:, :6]
    position, velocity = np.linalg.norm(miss[:, :3], axis=1), np.linalg.norm(miss[:, 3:], axis=1)
    fuel = landing.fuel(states)
    lands = (position < success_position) & (velocity < success_velocity)
    # the least fuel among the landings; without one, the least miss (in units of the thresholds)
    score = np.where(lands, fuel, np.inf + 0 * fuel).reshape(B, G)
    shortfall = (position / success_position + velocity / success_velocity).reshape(B, G)
    best = np.where(np.isfinite(score).any(1), np.argmin(score, axis=1), np.argmin(shortfall, axis=1))
    rows = np.arange(B) * G + best
    return thrusts[rows], grid[best]
