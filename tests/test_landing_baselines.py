"""ZEM/ZEV guidance, the rocket landing's classical baseline."""

import numpy as np

from trc_lib.tasks.rocket_landing.guidance import zem_zev_flights, zem_zev_guidance
from trc_lib.tasks.rocket_landing.cone_program import solve_landings
from trc_lib.tasks.rocket_landing.problem import RocketLanding, sample_problems

LANDING = RocketLanding(num_steps=20)


def test_its_flight_is_the_task_rollout_inside_the_annulus():
    """The thrust it commands is clipped into the annulus and flown through the task's own rollout."""
    x0, xt = sample_problems(np.random.default_rng(0), 4, LANDING)
    thrusts, states = zem_zev_flights(LANDING, x0, xt, np.full(4, 60.0))
    np.testing.assert_allclose(states, LANDING.rollout(x0, thrusts, np.full(4, 60.0)))
    violations = LANDING.constraint_violations(states, thrusts, np.full(4, 60.0))
    assert violations["thrust_max"].max() == 0 and violations["thrust_min"].max() == 0


def test_best_flight_time_lands_and_uses_more_fuel_than_the_optimum():
    x0, xt = sample_problems(np.random.default_rng(1), 5, LANDING)
    thrusts, time_horizons = zem_zev_guidance(LANDING, x0, xt)
    states = LANDING.rollout(x0, thrusts, time_horizons)
    miss = states[:, -1, :6] - xt[:, :6]
    assert (np.linalg.norm(miss[:, :3], axis=1) < 5).all() and (np.linalg.norm(miss[:, 3:], axis=1) < 1).all()
    optimum = solve_landings(LANDING, x0, xt, workers=1, progress=False)
    assert (LANDING.fuel(states) >= optimum.fuel * (1 - 1e-6)).all()  # the optimum is the optimum
    assert (LANDING.fuel(states) > optimum.fuel * 1.001).any()  # and ZEM/ZEV is not it
