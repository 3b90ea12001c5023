"""The rocket landing in closed loop: the gust plant, TRC's re-planning and the cone program's."""

import numpy as np
import pytest
import torch

from trc_lib.tasks.rocket_landing.closed_loop import (closed_loop_scores, cone_program_closed_loop, draw_gusts, fly_interval,
                                         trc_closed_loop)
from trc_lib.tasks.rocket_landing.model import LandingRecursiveControl
from trc_lib.tasks.rocket_landing.problem import RocketLanding, sample_problems

LANDING = RocketLanding(num_steps=20)


def test_the_plant_is_the_exact_rollout_plus_the_gust():
    """Without gusts one interval is the task's rollout; a constant gust w adds w dt^2/2 and w dt."""
    rng = np.random.default_rng(0)
    x0, _ = sample_problems(rng, 4, LANDING)
    thrusts = rng.uniform(-3000, 3000, (4, LANDING.num_steps, 3)) + [0, 0, 8000]
    time_horizons = np.full(4, 60.0)
    states = LANDING.rollout(x0, thrusts, time_horizons)
    dt = time_horizons / LANDING.num_steps
    np.testing.assert_allclose(fly_interval(LANDING, x0, thrusts[:, 0], dt, np.zeros((4, 3))), states[:, 1])
    w = np.array([0.1, -0.2, 0.05])
    pushed = fly_interval(LANDING, x0, thrusts[:, 0], dt, np.tile(w, (4, 1)))
    np.testing.assert_allclose(pushed[:, 0:3] - states[:, 1, 0:3], 0.5 * dt[:, None] ** 2 * w)
    np.testing.assert_allclose(pushed[:, 3:6] - states[:, 1, 3:6], dt[:, None] * w)
    np.testing.assert_allclose(pushed[:, 6], states[:, 1, 6])


def test_trc_replanning_rejects_gusts():
    """An untrained network's answer, corrected, is a landing; flown under gusts it misses by tens
    of metres, re-planned by the correction step it lands within a metre or two (the gusts of the
    last two intervals, about 3 s each here, are what is left), inside the annulus."""
    torch.manual_seed(0)
    model = LandingRecursiveControl.create("small", landing=LANDING)
    rng = np.random.default_rng(1)
    x0, xt = sample_problems(rng, 6, LANDING)
    gusts = draw_gusts(rng, 6, LANDING, 0.05)
    calm = closed_loop_scores(LANDING, trc_closed_loop(model, x0, xt, 0 * gusts), xt)
    assert calm["position_error"].max() < 1e-3 and calm["velocity_error"].max() < 1e-3
    open_loop = closed_loop_scores(LANDING, trc_closed_loop(model, x0, xt, gusts, replan=False), xt)
    flights = trc_closed_loop(model, x0, xt, gusts)
    closed = closed_loop_scores(LANDING, flights, xt)
    assert np.median(open_loop["position_error"]) > 5
    assert closed["position_error"].max() < 2 and closed["velocity_error"].max() < 1
    assert closed["violation_thrust_max"].max() == 0 and closed["violation_thrust_min"].max() == 0
    assert len(flights.plan_seconds) == LANDING.num_steps - 2


def test_the_cone_program_replans_from_its_labels():
    """Without gusts re-planning keeps the oracle's landing and fuel; with them it lands near the pad."""
    from trc_lib.tasks.rocket_landing.cone_program import solve_landings
    rng = np.random.default_rng(2)
    x0, xt = sample_problems(rng, 3, LANDING)
    labels = solve_landings(LANDING, x0, xt, workers=1, progress=False)
    gusts = draw_gusts(rng, 3, LANDING, 0.05)
    calm = cone_program_closed_loop(LANDING, x0, xt, 0 * gusts, labels.thrusts, labels.time_horizons)
    scores = closed_loop_scores(LANDING, calm, xt)
    assert scores["position_error"].max() < 1e-5
    np.testing.assert_allclose(scores["fuel"], labels.fuel, rtol=2e-3)
    flights = cone_program_closed_loop(LANDING, x0, xt, gusts, labels.thrusts, labels.time_horizons)
    windy = closed_loop_scores(LANDING, flights, xt)
    assert windy["position_error"].max() < 5
    # flown on two Dask workers, a landing per chunk: the same flights
    there = cone_program_closed_loop(LANDING, x0, xt, gusts, labels.thrusts, labels.time_horizons, workers=2)
    for name in ("states", "thrusts", "time_horizons", "failed_plans"):
        np.testing.assert_array_equal(getattr(there, name), getattr(flights, name))
    assert there.plan_seconds.shape == flights.plan_seconds.shape == (3 * (LANDING.num_steps - 2),)


def test_bad_gust_is_refused():
    with pytest.raises(ValueError, match="gust"):
        draw_gusts(np.random.default_rng(0), 2, LANDING, -1.0)
