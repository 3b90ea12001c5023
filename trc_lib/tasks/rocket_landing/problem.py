"""Powered descent: a 3-DOF rocket landing on Mars, with the thrust annulus and the glide slope.

State x = [r (m, 3), v (m/s, 3), m (kg)], r = (downrange, crossrange, altitude); control the
thrust T (N, 3). The continuous dynamics are

    r' = v,   v' = T / m + g,   m' = -alpha |T|,      g = (0, 0, -gravity).

What is held constant over a control interval [t_k, t_k + dt], dt = t_f / N: the thrust per unit
mass, u_k = T(t) / m(t). The engine is throttled down as the tank empties, so the acceleration
it gives stays u_k; the control the dataset stores is the thrust at the interval's start,
T_k = u_k m_k (N). This is the choice that makes the convex oracle (cone_program.py)
exact: with u_k constant the interval has a closed-form solution, with no integrator error,

    r_{k+1} = r_k + dt v_k + dt^2 / 2 (u_k + g),   v_{k+1} = v_k + dt (u_k + g),
    m_{k+1} = m_k exp(-alpha |u_k| dt)               (z = ln m falls linearly: z' = -alpha |u_k|).

Over the interval the thrust magnitude |T(t)| = |u_k| m(t) falls from |T_k| to |T_k| m_{k+1}/m_k,
so the annulus rho_1 <= |T(t)| <= rho_2 holds on the whole interval exactly when

    |T_k| <= rho_2   (at its start)   and   |T_k| m_{k+1} / m_k >= rho_1   (at its end).

The glide slope, altitude >= tan(glide_slope) * horizontal distance from the target, and the
optional pointing cone (thrust within pointing_angle of vertical; the direction is constant
over an interval) are imposed at the N + 1 nodes and N intervals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import cos, radians, tan

import numpy as np

STATE_NAMES = ("x", "y", "altitude", "vx", "vy", "vz", "mass")
# Where the problems start (the task's defaults): downrange x, crossrange y, altitude (m); the
# velocity components (m/s); the tank is full.
INITIAL_BOX = {"x": (500.0, 2500.0), "y": (-500.0, 500.0), "altitude": (1000.0, 2000.0),
               "vx": (-30.0, 30.0), "vy": (-30.0, 30.0), "vz": (-80.0, -40.0)}


@dataclass(frozen=True)
class Vehicle:
    """The lander of Açıkmeşe & Ploen (2007): six canted engines, throttle between two bounds.

    Masses in kg, specific_impulse in s, engine_thrust in N, cant_angle in degrees, gravity in
    m/s^2 (Mars), standard_gravity g0 in m/s^2 (defines the specific impulse)."""

    wet_mass: float = 1905.0
    dry_mass: float = 1505.0
    specific_impulse: float = 225.0
    engine_count: int = 6
    engine_thrust: float = 3100.0
    cant_angle: float = 27.0
    throttle_min: float = 0.3
    throttle_max: float = 0.8
    gravity: float = 3.7114
    standard_gravity: float = 9.807

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not (np.isfinite(value) and value > 0) and not (name == "cant_angle" and value == 0):
                raise ValueError(f"vehicle {name} must be a positive number, got {value}")
        if self.dry_mass >= self.wet_mass:
            raise ValueError(f"dry_mass ({self.dry_mass}) must be below wet_mass ({self.wet_mass})")
        if not self.throttle_min < self.throttle_max <= 1:
            raise ValueError(f"throttle bounds must satisfy throttle_min < throttle_max <= 1, "
                             f"got {self.throttle_min}, {self.throttle_max}")
        if not 0 <= self.cant_angle < 90:
            raise ValueError(f"cant_angle must be in [0, 90) degrees, got {self.cant_angle}")

    @property
    def thrust_min(self) -> float:
        """rho_1 (N): the smallest net thrust, all engines at throttle_min."""
        return self.throttle_min * self.engine_count * self.engine_thrust * cos(radians(self.cant_angle))

    @property
    def thrust_max(self) -> float:
        """rho_2 (N): the largest net thrust."""
        return self.throttle_max * self.engine_count * self.engine_thrust * cos(radians(self.cant_angle))

    @property
    def fuel_rate(self) -> float:
        """alpha (s/m): mass flow per newton of net thrust, 1 / (Isp g0 cos(cant))."""
        return 1.0 / (self.specific_impulse * self.standard_gravity * cos(radians(self.cant_angle)))

    @property
    def gravity_vector(self) -> np.ndarray:
        return np.array([0.0, 0.0, -self.gravity])


@dataclass(frozen=True)
class FuelObjective:
    """Minimum fuel, m_0 - m_N (kg), with r_N = v_N = 0 and the flight time free."""

    name: str = "min_fuel"

    def to_dict(self) -> dict:
        return {"name": self.name, "formula": "J = m_0 - m_N (kg)  s.t. r_N = v_N = 0, t_f free"}


@dataclass(frozen=True)
class RocketLanding:
    """The landing problem: vehicle, N control intervals over a free flight time, constraints.

    It is its own system and its own problem (the objective is always minimum fuel).
    glide_slope: degrees, 0 for the ground itself (altitude >= 0); pointing_angle: degrees from
    vertical (None: off)."""

    vehicle: Vehicle = Vehicle()
    num_steps: int = 50
    glide_slope: float = 4.0
    pointing_angle: float | None = None

    name = "rocket_landing"
    state_dim = 7
    control_dim = 3
    state_names = STATE_NAMES
    objective = FuelObjective()
    # ---- the hooks of the task interface (trc_lib/task.py) that the landing uses -----------
    draws_its_own_problems = True  # from INITIAL_BOX (draw_problems); the state and target ranges do not apply
    free_final_time = True  # the flight time is part of every answer, and datasets store it (time_horizons)
    oracle = "trc_lib.tasks.rocket_landing.cone_program:ConeProgramOracle"  # a cone program per flight time
    model_class = "trc_lib.tasks.rocket_landing.model:LandingRecursiveControl"  # thrusts in the annulus, a flight time
    evaluation = "trc_lib.tasks.rocket_landing.evaluate:evaluation"  # physical units, with the correction
    comparison = "trc_lib.tasks.rocket_landing.evaluate:comparison"  # beside ZEM/ZEV guidance
    notebook = "08_rocket_landing.ipynb"
    unavailable = {"trc prompts": "its prompts are written for one control per step and a fixed horizon",
                   "compare --external": "TRC's own correction is in the table",
                   "compare --newton_steps": "TRC's own correction is in the table",
                   "compare --tolerance": "TRC's own correction is in the table"}

    @classmethod
    def parameter_names(cls) -> list[str]:
        """What --parameter sets: the constraints and every number of the vehicle."""
        return ["glide_slope", "pointing_angle", *asdict(Vehicle())]

    @classmethod
    def from_options(cls, num_steps=None, time_horizon=None, control_bound=None, controller=None, **parameters):
        """The landing with any default overridden (tasks.make_problem); the options of the
        fixed-horizon tasks (a horizon, a control bound, another objective) are refused."""
        for name, value, why in (("time_horizon", time_horizon, "the flight time is part of the answer"),
                                 ("control_bound", control_bound, "the thrust bounds are the vehicle's"),
                                 ("controller", None if controller in (None, "min_fuel") else controller,
                                  "its objective is minimum fuel")):
            if value is not None:
                raise ValueError(f"{name} does not apply to {cls.name}: {why}")
        unknown = set(parameters) - set(cls.parameter_names())
        if unknown:
            raise ValueError(f"{cls.name} has no parameter {sorted(unknown)}; its parameters are "
                             f"{sorted(cls.parameter_names())}")
        vehicle = {k: v for k, v in parameters.items() if k not in ("glide_slope", "pointing_angle")}
        constraints = {k: v for k, v in parameters.items() if k in ("glide_slope", "pointing_angle")}
        return cls(vehicle=Vehicle(**vehicle), num_steps=50 if num_steps is None else int(num_steps), **constraints)

    @property
    def system(self) -> "RocketLanding":
        return self

    def __post_init__(self):
        if int(self.num_steps) != self.num_steps or self.num_steps < 2:
            raise ValueError(f"num_steps must be an integer of at least 2, got {self.num_steps}")
        if not 0 <= self.glide_slope < 90:
            raise ValueError(f"glide_slope must be in [0, 90) degrees, got {self.glide_slope}")
        if self.pointing_angle is not None and not 0 < self.pointing_angle <= 180:
            raise ValueError(f"pointing_angle must be in (0, 180] degrees, got {self.pointing_angle}")
        vehicle = self.vehicle
        weight = vehicle.wet_mass * vehicle.gravity
        if vehicle.thrust_max <= weight:  # it could never stop falling: no search would end in a landing
            raise ValueError(f"vehicle cannot hover with a full tank: its largest thrust {vehicle.thrust_max:,.0f} N "
                             f"(engine_count x engine_thrust x throttle_max x cos(cant_angle)) is below its weight "
                             f"{weight:,.0f} N (wet_mass x gravity); raise engine_thrust or engine_count")

    @property
    def glide_slope_tangent(self) -> float:
        return tan(radians(self.glide_slope))

    def to_dict(self) -> dict:
        """Every field, with the derived vehicle figures for readers (from_dict ignores them)."""
        v = self.vehicle
        return {"task": self.name, "name": self.name, "num_steps": int(self.num_steps), "glide_slope": float(self.glide_slope),
                "pointing_angle": self.pointing_angle, "vehicle": asdict(v),
                "thrust_min": v.thrust_min, "thrust_max": v.thrust_max, "fuel_rate": v.fuel_rate,
                "objective": self.objective.to_dict(),
                "held_constant": "thrust per unit mass over each interval; controls are the thrust at its start"}

    @classmethod
    def from_dict(cls, d: dict) -> "RocketLanding":
        return cls(vehicle=Vehicle(**d["vehicle"]), num_steps=int(d["num_steps"]),
                   glide_slope=float(d["glide_slope"]), pointing_angle=d["pointing_angle"])

    def accelerations_to_thrusts(self, initial_masses, accelerations, time_horizons):
        """The thrusts T_k = u_k m_k (N) of accelerations u_k (m/s^2), with the masses m_k from
        the exact mass dynamics. initial_masses [B] (kg), accelerations [B, N, 3], time_horizons [B] (s)
        -> (thrusts [B, N, 3], masses [B, N+1])."""
        u = np.asarray(accelerations, np.float64)
        dt = np.asarray(time_horizons, np.float64)[:, None] / self.num_steps
        burn = self.vehicle.fuel_rate * np.linalg.norm(u, axis=-1) * dt  # [B, N]: ln(m_k / m_{k+1})
        log_masses = np.log(np.asarray(initial_masses, np.float64))[:, None] - np.concatenate(
            [np.zeros((len(u), 1)), np.cumsum(burn, axis=1)], axis=1)
        masses = np.exp(log_masses)
        return u * masses[:, :-1, None], masses

    def rollout(self, initial_states, thrusts, time_horizons) -> np.ndarray:
        """Trajectories at the nodes, exact (closed form per interval), float64.
        initial_states [B, 7], thrusts [B, N, 3] (N, at each interval's start), time_horizons [B] (s)
        -> states [B, N+1, 7]."""
        x = np.array(initial_states, np.float64)
        T = np.asarray(thrusts, np.float64)
        dt = np.asarray(time_horizons, np.float64) / self.num_steps  # [B]
        states = [x]
        for k in range(self.num_steps):
            x = self.step(x, T[:, k], dt)
            states.append(x)
        return np.stack(states, axis=1)

    def step(self, states, thrusts, dt) -> np.ndarray:
        """One interval, exact: states [B, 7], thrusts [B, 3] (N, at the interval's start, held as
        thrust per unit mass), dt [B] (s) -> states [B, 7] at the interval's end."""
        r, v, m = states[:, 0:3], states[:, 3:6], states[:, 6]
        dt = np.asarray(dt, np.float64)[:, None]
        u = np.asarray(thrusts, np.float64) / m[:, None]
        a = u + self.vehicle.gravity_vector
        return np.concatenate([r + dt * v + 0.5 * dt ** 2 * a, v + dt * a,
                               (m * np.exp(-self.vehicle.fuel_rate * np.linalg.norm(u, axis=-1) * dt[:, 0]))[:, None]],
                              axis=1)

    def constraint_violations(self, states, thrusts, time_horizons) -> dict:
        """The largest violation of each constraint per problem (0 when satisfied), [B] each:

        thrust_max (N): |T(t)| - rho_2 at each interval's start;  thrust_min (N): rho_1 - |T(t)|
        at each interval's end;  glide_slope (m): tan(gamma) * horizontal distance - altitude at
        the nodes;  dry_mass (kg): m_dry - m_N;  pointing (degrees): angle from vertical - limit."""
        vehicle = self.vehicle
        T = np.asarray(thrusts, np.float64)
        magnitude = np.linalg.norm(T, axis=-1)  # [B, N]
        mass_ratio = states[:, 1:, 6] / states[:, :-1, 6]  # m_{k+1} / m_k
        r = states[:, :, 0:3]
        positive = lambda a: np.maximum(a.max(axis=1), 0.0)
        out = {"thrust_max": positive(magnitude - vehicle.thrust_max),
               "thrust_min": positive(vehicle.thrust_min - magnitude * mass_ratio),
               "dry_mass": np.maximum(vehicle.dry_mass - states[:, -1, 6], 0.0)}
        if self.glide_slope > 0:
            horizontal = np.linalg.norm(r[:, :, 0:2], axis=-1)
            out["glide_slope"] = positive(self.glide_slope_tangent * horizontal - r[:, :, 2])
        if self.pointing_angle is not None:
            angle = np.degrees(np.arccos(np.clip(T[:, :, 2] / np.maximum(magnitude, 1e-300), -1, 1)))
            out["pointing"] = positive(angle - self.pointing_angle)
        return out

    def fuel(self, states) -> np.ndarray:
        """Fuel used (kg) per problem: m_0 - m_N. states [B, N+1, 7] -> [B]."""
        return states[:, 0, 6] - states[:, -1, 6]

    def max_flight_time(self, initial_mass: float) -> float:
        """The longest a flight can last (s): burning at the least thrust until the tank is dry."""
        return (initial_mass - self.vehicle.dry_mass) / (self.vehicle.fuel_rate * self.vehicle.thrust_min)

    def shortest_descent(self, initial_state) -> float:
        """A lower bound on the flight time (s) from the vertical motion alone: the net vertical
        acceleration lies in [-(g - rho_1/m_0), rho_2/m_dry - g], so the quickest way down is to
        speed up at the first bound, then brake at the second, stopping at the ground (0 when the
        bounds do not allow this reasoning)."""
        vehicle = self.vehicle
        down = vehicle.gravity - vehicle.thrust_min / initial_state[6]
        up = vehicle.thrust_max / vehicle.dry_mass - vehicle.gravity
        height, speed = initial_state[2], -initial_state[5]  # speed: downward
        if down <= 0 or up <= 0 or height <= 0 or speed < 0:
            return 0.0
        top_speed = np.sqrt((height + speed ** 2 / (2 * down)) / (1 / (2 * down) + 1 / (2 * up)))
        return float(max(top_speed - speed, 0.0) / down + top_speed / up)

    def check_problems(self, initial_states: np.ndarray, target_states: np.ndarray) -> None:
        """ValueError unless every initial mass is within [dry_mass, wet_mass] (the task interface's hook)."""
        masses = initial_states[:, 6]
        outside = (masses < self.vehicle.dry_mass) | (masses > self.vehicle.wet_mass)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise ValueError(f"initial_states[{i}]: mass {masses[i]:g} kg is outside the vehicle's "
                             f"[dry_mass, wet_mass] = [{self.vehicle.dry_mass:g}, {self.vehicle.wet_mass:g}] kg")

    def draw_problems(self, rng: np.random.Generator, count: int):
        """(initial_states, target_states) [count, 7] from the task's box (sample_problems)."""
        return sample_problems(rng, count, self)

    def sampling_record(self) -> dict:
        """Where the problems were drawn from, as dataset metadata records it."""
        return {"box": {name: list(bounds) for name, bounds in INITIAL_BOX.items()}}

    def least_thrust(self, masses, dt, newton_steps: int = 6, margin: float = 1e-9) -> np.ndarray:
        """[B]: the least thrust (N) an interval of dt [B] s may start with from masses [B] (kg) so that
        at its end, the mass having fallen, it is still rho_1: the root of T = rho_1 exp(alpha T dt / m),
        by newton_steps of Newton's method from below, nudged up by a relative `margin` so rounding
        cannot cross it (model.py reads its answers with 3 steps and its own MARGIN)."""
        alpha, rho_1 = self.vehicle.fuel_rate, self.vehicle.thrust_min
        burn = alpha * np.asarray(dt, np.float64) / np.asarray(masses, np.float64)
        low = np.full_like(burn, rho_1)
        for _ in range(newton_steps):
            grown = rho_1 * np.exp(burn * low)
            low = low - (low - grown) / (1 - burn * grown)
        return low * (1 + margin)

    def log_mass_floor(self, initial_mass: float, times) -> np.ndarray:
        """ln of the lightest the vehicle can be at times t (s): max(m_0 - alpha rho_2 t, m_dry)."""
        vehicle = self.vehicle
        return np.log(np.maximum(initial_mass - vehicle.fuel_rate * vehicle.thrust_max * np.asarray(times),
                                 vehicle.dry_mass))


def sample_problems(rng: np.random.Generator, count: int, landing: RocketLanding | None = None,
                    box: dict | None = None, initial_mass: float | None = None):
    """(initial_states [count, 7], target_states [count, 7]): positions and velocities uniform in
    `box` (default INITIAL_BOX), mass initial_mass (default: a full tank); the target r = v = 0 at
    the landing site, its mass entry the dry mass (the mass is not a target)."""
    vehicle = (landing or RocketLanding()).vehicle
    box = {**INITIAL_BOX, **(box or {})}
    low, high = (np.array([box[name][i] for name in STATE_NAMES[:6]]) for i in (0, 1))
    if not (low <= high).all():
        raise ValueError(f"each box range must be LOW <= HIGH, got {box}")
    mass = vehicle.wet_mass if initial_mass is None else float(initial_mass)
    if not vehicle.dry_mass < mass <= vehicle.wet_mass:
        raise ValueError(f"initial_mass must be in ({vehicle.dry_mass}, {vehicle.wet_mass}] kg, got {mass}")
    initial_states = np.column_stack([rng.uniform(low, high, size=(count, 6)), np.full(count, mass)])
    target_states = np.zeros((count, 7))
    target_states[:, 6] = vehicle.dry_mass
    return initial_states, target_states


def published_example() -> tuple[np.ndarray, np.ndarray]:
    """Açıkmeşe & Ploen's example, (initial_state [7], target_state [7]): r_0 = (2000, 0, 1500) m,
    v_0 = (100, 0, -75) m/s, full tank; the target r = v = 0 (its mass entry holds the dry mass,
    the lightest allowed landing: the mass is not a target)."""
    vehicle = Vehicle()
    return (np.array([2000.0, 0.0, 1500.0, 100.0, 0.0, -75.0, vehicle.wet_mass]),
            np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, vehicle.dry_mass]))

