"""The tasks `--system` names: each system's default problem and where its test cases come from.

    double_integrator  x'' = u, T = 5 s, N = 15, |u| <= 4; by default the minimum-energy transfer
                       (x_N = x*, min dt sum u^2) from x_0 in [-2, 2]^2 to x* in [-2, 2]^2.
                       With --state_range -5 5 the bound is active on a good share of samples.
    vanderpol          x1' = x2, x2' = mu (1 - x1^2) x2 - x1 + u with mu = 1 (unstable origin),
                       T = 5 s, N = 50 steps of 4 RK4 substeps, |u| <= 2; regulate x_0 in
                       [-2, 2]^2 to the origin exactly at t = T, minimizing dt sum(|x - x*|^2 + u^2).
    pendulum           theta'' = -(g / l) sin(theta) + u / (m l^2), m = l = 1, g = 9.81, T = 5 s,
                       N = 50 steps of 4 RK4 substeps, |u| <= 3 < m g l = 9.81 (it cannot lift the
                       pendulum directly and must pump); swing up from within 0.5 (rad, rad/s) of
                       hanging (0, 0) to upright (pi, 0) exactly at t = T, same objective as Van der Pol.

Sampling: x_0 is uniform in state_range^n; x* is target_center + uniform in target_range^n, so a
range of (0, 0) pins the target (Van der Pol and pendulum targets are fixed by default).
The nonlinear tasks are labelled by IPOPT (labels.py) from the starts `label_starts` gives;
the pendulum uses several (zero torque and pumping either way first), since its swing-up
has more than one local optimum for some initial states.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .problem import ControlProblem, Objective
from .systems import ALL_SYSTEMS, make_system

QUADRATIC = "quadratic"  # the nonlinear tasks' objective: Q = I, R = 1, Q_f = 0, x_N = x*


@dataclass(frozen=True)
class Task:
    """Defaults of one system's task (see the module docstring)."""

    time_horizon: float
    num_steps: int
    control_bound: float
    state_range: tuple
    target_range: tuple
    target_center: tuple = (0.0, 0.0)
    controllers: tuple = (QUADRATIC,)
    parameters: dict = field(default_factory=dict)  # the system's own (mu, mass, ...), defaults


TASKS = {
    "double_integrator": Task(5.0, 15, 4.0, (-2.0, 2.0), (-2.0, 2.0), controllers=("min_energy", "lqr")),
    "vanderpol": Task(5.0, 50, 2.0, (-2.0, 2.0), (0.0, 0.0), parameters={"mu": 1.0, "substeps": 4}),
    "pendulum": Task(5.0, 50, 3.0, (-0.5, 0.5), (0.0, 0.0), target_center=(np.pi, 0.0),
                     parameters={"mass": 1.0, "length": 1.0, "gravity": 9.81, "damping": 0.0, "substeps": 4}),
}


LANDING = "rocket_landing"  # rocket_landing.py: its own problem (free flight time, minimum fuel, its own box)
SYSTEM_NAMES = (*TASKS, LANDING)


def landing_parameters() -> dict:
    """The rocket landing's parameters and their defaults: the constraints and the vehicle's."""
    from dataclasses import asdict
    from .rocket_landing import RocketLanding, Vehicle
    return {"glide_slope": RocketLanding.glide_slope, "pointing_angle": None, **asdict(Vehicle())}


def make_landing(num_steps=None, time_horizon=None, control_bound=None, controller=None, **parameters):
    """The rocket landing with any default overridden; the options of the fixed-horizon tasks
    (a horizon, a control bound, another objective) do not apply to it and are refused."""
    from .rocket_landing import RocketLanding, Vehicle
    for name, value, why in (("time_horizon", time_horizon, "the flight time is part of the answer"),
                             ("control_bound", control_bound, "the thrust bounds are the vehicle's"),
                             ("controller", None if controller in (None, "min_fuel") else controller,
                              "its objective is minimum fuel")):
        if value is not None:
            raise ValueError(f"{name} does not apply to {LANDING}: {why}")
    unknown = set(parameters) - set(landing_parameters())
    if unknown:
        raise ValueError(f"{LANDING} has no parameter {sorted(unknown)}; its parameters are "
                         f"{sorted(landing_parameters())}")
    vehicle = {k: v for k, v in parameters.items() if k not in ("glide_slope", "pointing_angle")}
    constraints = {k: v for k, v in parameters.items() if k in ("glide_slope", "pointing_angle")}
    return RocketLanding(vehicle=Vehicle(**vehicle), num_steps=50 if num_steps is None else int(num_steps),
                         **constraints)


def task(system: str) -> Task:
    if system not in TASKS:
        raise ValueError(f"unknown system {system!r}; choose one of {sorted(TASKS)}")
    return TASKS[system]


def quadratic_objective(state_dim: int = 2) -> Objective:
    identity = tuple(tuple(float(i == j) for j in range(state_dim)) for i in range(state_dim))
    zero = tuple(tuple(0.0 for _ in range(state_dim)) for _ in range(state_dim))
    return Objective(name=QUADRATIC, Q=identity, R=((1.0,),), Q_f=zero, terminal_constraint=True)


def make_problem(num_steps=None, time_horizon=None, control_bound=None, controller=None,
                 system="double_integrator", lqr_Q=(1.0, 1.0), lqr_R=(0.1,), lqr_Qf=(100.0, 100.0),
                 **parameters) -> ControlProblem:
    """The problem `system` stands for, with any default overridden (None keeps the task's).

    controller: the objective: 'min_energy' (default) or 'lqr' on the double integrator;
    'quadratic' (the only one) on the nonlinear systems. parameters: the system's own, e.g.
    mu=0.5 for Van der Pol, substeps=8. system='rocket_landing' gives a RocketLanding (make_landing).
    """
    if system == LANDING:
        return make_landing(num_steps, time_horizon, control_bound, controller, **parameters)
    defaults = task(system)
    controller = controller or defaults.controllers[0]
    if controller not in defaults.controllers:
        raise ValueError(f"unknown controller {controller!r} for {system}; choose one of {list(defaults.controllers)}")
    unknown = set(parameters) - set(defaults.parameters)
    if unknown:
        raise ValueError(f"{system} has no parameter {sorted(unknown)}; its parameters are "
                         f"{sorted(defaults.parameters) or 'none'}")
    if controller == "min_energy":
        objective = Objective.min_energy()
    elif controller == "lqr":
        objective = Objective.lqr(lqr_Q, lqr_R, lqr_Qf)
    else:
        objective = quadratic_objective(ALL_SYSTEMS[system].state_dim)
    system_parameters = {**defaults.parameters, **parameters}
    built = make_system(system, defaults.time_horizon if time_horizon is None else time_horizon,
                        defaults.num_steps if num_steps is None else num_steps, **system_parameters)
    bound = defaults.control_bound if control_bound is None else control_bound
    return ControlProblem(built, float(bound), objective)


def sampling_boxes(system: str, state_range=None, target_range=None) -> tuple[tuple, tuple]:
    """(state_range, target_range) with None replaced by the task's defaults: the double
    integrator's targets come from the same box as its initial states, the others' from their own."""
    if system == LANDING:
        if state_range is not None or target_range is not None:
            raise ValueError(f"state_range and target_range do not apply to {LANDING}: it draws from its own box "
                             f"(rocket_landing.INITIAL_BOX)")
        return None, None
    defaults = task(system)
    state_range = tuple(defaults.state_range if state_range is None else state_range)
    if target_range is None:
        target_range = state_range if system == "double_integrator" else defaults.target_range
    return state_range, tuple(target_range)


def target_center(system: str) -> np.ndarray:
    return np.asarray(task(system).target_center, dtype=np.float64)


def label_starts(problem: ControlProblem) -> np.ndarray:
    """Initial guesses for IPOPT, [S, N, m]: zero controls, and for the pendulum also bang-bang
    pumping at its natural frequency sqrt(g / l), pushing either way first."""
    system = problem.system
    N, m = system.num_steps, system.control_dim
    starts = [np.zeros((N, m))]
    if system.name == "pendulum":
        t = np.arange(N) * system.dt
        pump = problem.control_bound * np.sign(np.sin(np.sqrt(system.gravity / system.length) * t + 1e-9))
        starts += [np.repeat(pump[:, None], m, 1), np.repeat(-pump[:, None], m, 1)]
    return np.stack(starts)
