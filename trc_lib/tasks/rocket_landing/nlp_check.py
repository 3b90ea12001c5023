"""The landing as IPOPT sees it: the original non-convex problem, in the original variables.

An independent check of the cone program (cone_program.py). The decision variables are the
thrusts T_k (N, at each interval's start), the states at the nodes (multiple shooting) and the
flight time t_f itself; the interval map is problem.py's closed form (thrust per unit
mass held over the interval), and the constraints are written as they are stated, with no
change of variables and no relaxation:

    rho_1^2 <= |T(t)|^2 <= rho_2^2        (|T_k|^2 <= rho_2^2 at the start of each interval,
                                           |T_k|^2 (m_{k+1}/m_k)^2 >= rho_1^2 at its end)
    tan^2(gamma) (x_k^2 + y_k^2) <= z_k^2, z_k >= 0 at the inner nodes (glide slope)
    T_z >= cos(theta) |T| (pointing cone, when on),  m_N >= m_dry,  r_N = v_N = 0,
    minimize m_0 - m_N over T and t_f.

The annulus makes this non-convex: IPOPT finds a local optimum, which depends on where it
starts. Started from the cone program's answer it must agree with it; started cold it may not.
"""

from __future__ import annotations

from dataclasses import dataclass

import casadi as ca
import numpy as np

from .problem import RocketLanding


@dataclass
class NlpLanding:
    """IPOPT's answer: thrusts [N, 3] (N), final_time (s), fuel (kg), converged, iterations."""

    thrusts: np.ndarray
    final_time: float
    fuel: float
    converged: bool
    iterations: int


class LandingNlp:
    """The non-convex landing NLP of one RocketLanding, built once; solve() per problem.

    warm: each start is (near) an optimum, such as the cone program's answer. IPOPT is then
    started as an interior-point method must be to stay there: a barrier parameter of 1e-6
    instead of 0.1, and the start moved at most 1e-9 (relative) inside its bounds. With IPOPT's
    defaults the first iterations leave the optimum, which sits on the annulus's bounds (the
    max-min-max thrust), and some runs end elsewhere or not at all (benchmarks/landing_oracle.py).
    """

    def __init__(self, landing: RocketLanding, tolerance: float = 1e-9, max_iterations: int = 1000,
                 warm: bool = False):
        self.landing = landing
        vehicle, N = landing.vehicle, landing.num_steps
        opti = ca.Opti()
        self.states = opti.variable(7, N + 1)
        self.thrusts = opti.variable(3, N)
        self.final_time = opti.variable()
        self.initial_state = opti.parameter(7)
        self.target = opti.parameter(6)
        X, T, dt = self.states, self.thrusts, self.final_time / N
        g = ca.DM(vehicle.gravity_vector)
        opti.subject_to(X[:, 0] == self.initial_state)
        for k in range(N):
            r, v, m, thrust = X[0:3, k], X[3:6, k], X[6, k], T[:, k]
            squared = ca.sumsqr(thrust)
            a = thrust / m + g
            next_mass = m * ca.exp(-vehicle.fuel_rate * ca.sqrt(squared + 1e-12) * dt / m)
            opti.subject_to(X[:, k + 1] == ca.vertcat(r + dt * v + dt ** 2 / 2 * a, v + dt * a, next_mass))
            opti.subject_to(squared <= vehicle.thrust_max ** 2)
            opti.subject_to(squared * (next_mass / m) ** 2 >= vehicle.thrust_min ** 2)
            if landing.pointing_angle is not None:
                opti.subject_to(thrust[2] >= np.cos(np.radians(landing.pointing_angle)) * ca.sqrt(squared + 1e-12))
        for k in range(1, N):
            opti.subject_to(X[2, k] >= 0)
            if landing.glide_slope > 0:
                opti.subject_to(landing.glide_slope_tangent ** 2 * ca.sumsqr(X[0:2, k]) <= X[2, k] ** 2)
        opti.subject_to(X[0:6, N] == self.target)
        # the dry mass at every node, not only the last (the same set: mass only falls), keeps
        # IPOPT's iterates where exp() and 1/m stay finite
        opti.subject_to(opti.bounded(vehicle.dry_mass, X[6, 1:], vehicle.wet_mass))
        opti.subject_to(opti.bounded(1.0, self.final_time, landing.max_flight_time(vehicle.wet_mass)))
        opti.minimize(X[6, 0] - X[6, N])
        options = {"print_level": 0, "sb": "yes", "tol": tolerance, "max_iter": max_iterations}
        if warm:
            options.update({"mu_init": 1e-6, **{f"{kind}_{what}": 1e-9 for kind in ("bound", "slack_bound")
                                                for what in ("push", "frac")}})
        opti.solver("ipopt", {"print_time": False}, options)
        self.opti = opti

    def solve(self, initial_state, target_state, thrusts, final_time) -> NlpLanding:
        """IPOPT from the start (thrusts [N, 3] in N, final_time in s); the states start from
        their exact rollout."""
        landing, opti = self.landing, self.opti
        initial_state = np.asarray(initial_state, np.float64)
        thrusts = np.asarray(thrusts, np.float64)
        start = landing.rollout(initial_state[None], thrusts[None], [final_time])[0]
        opti.set_value(self.initial_state, initial_state)
        opti.set_value(self.target, np.asarray(target_state, np.float64)[:6])
        opti.set_initial(self.states, start.T)
        opti.set_initial(self.thrusts, thrusts.T)
        opti.set_initial(self.final_time, final_time)
        try:
            solution = opti.solve()
            converged = True
        except RuntimeError:  # not converged: read where it stopped
            solution, converged = opti.debug, False
        states = np.asarray(solution.value(self.states)).T
        return NlpLanding(np.asarray(solution.value(self.thrusts)).T, float(solution.value(self.final_time)),
                          float(states[0, 6] - states[-1, 6]), converged,
                          int(solution.stats()["iter_count"]))

    def cold_start(self, initial_state, final_time: float = 60.0):
        """A start that knows nothing of the answer: thrust straight up at hover, (thrusts [N, 3], t_f)."""
        thrusts = np.zeros((self.landing.num_steps, 3))
        thrusts[:, 2] = initial_state[6] * self.landing.vehicle.gravity
        return thrusts, final_time
