"""The rocket landing: its exact interval dynamics, its cone-program oracle and IPOPT's cross-check."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from trc_lib.tasks.rocket_landing.cone_program import LandingConeProgram, best_landing, solve_landings
from trc_lib.tasks.rocket_landing.nlp_check import LandingNlp
from trc_lib.tasks.rocket_landing.problem import INITIAL_BOX, RocketLanding, Vehicle, published_example, sample_problems

LANDING = RocketLanding(num_steps=20)  # coarse: quick, and every statement below holds at any N


@pytest.fixture(scope="module")
def labels():
    x0, xt = sample_problems(np.random.default_rng(3), 4, LANDING)
    return x0, xt, solve_landings(LANDING, x0, xt, workers=1, progress=False)


def test_vehicle_matches_acikmese_and_ploen():
    vehicle = Vehicle()
    assert vehicle.thrust_min == pytest.approx(4972, abs=1)
    assert vehicle.thrust_max == pytest.approx(13258, abs=1)
    assert vehicle.fuel_rate == pytest.approx(1 / (225 * 9.807 * np.cos(np.radians(27))))


def test_rollout_is_the_continuous_dynamics_with_thrust_per_mass_held():
    """The closed form per interval equals a fine ODE integration of r' = v, v' = T/m + g,
    m' = -alpha |T| with T(t) = u_k m(t) over each interval."""
    rng = np.random.default_rng(0)
    x0 = np.array([800.0, -200.0, 1500.0, 10.0, -5.0, -60.0, 1905.0])
    thrusts = rng.uniform(-3000, 3000, size=(LANDING.num_steps, 3)) + np.array([0, 0, 8000.0])
    final_time = 40.0
    states = LANDING.rollout(x0[None], thrusts[None], [final_time])[0]
    vehicle, dt = LANDING.vehicle, final_time / LANDING.num_steps
    x = x0.copy()
    for k in range(LANDING.num_steps):
        u = thrusts[k] / x[6]  # the acceleration held over interval k

        def field(t, s):
            thrust = u * s[6]
            return np.concatenate([s[3:6], thrust / s[6] + vehicle.gravity_vector,
                                   [-vehicle.fuel_rate * np.linalg.norm(thrust)]])
        x = solve_ivp(field, (0, dt), x, rtol=1e-12, atol=1e-10).y[:, -1]
        np.testing.assert_allclose(x, states[k + 1], rtol=1e-9, atol=1e-6)


def test_oracle_lands_exactly_within_every_constraint(labels):
    x0, xt, found = labels
    assert found.success.all()
    landing_error = np.abs(found.states[:, -1, :6] - xt[:, :6])
    assert landing_error[:, :3].max() < 1e-6 and landing_error[:, 3:].max() < 1e-6  # m, m/s
    violations = LANDING.constraint_violations(found.states, found.thrusts, found.time_horizons)
    assert violations["thrust_max"].max() == 0 and violations["thrust_min"].max() == 0
    assert violations["glide_slope"].max() < 1e-6 and violations["dry_mass"].max() == 0
    assert found.max_slack.max() < 1e-7  # the relaxation is lossless: sigma = |u|
    np.testing.assert_allclose(found.fuel, found.states[:, 0, 6] - found.states[:, -1, 6])


def test_oracle_flight_time_is_the_best(labels):
    """Fuel at the chosen flight time is no more than at flight times around it."""
    x0, xt, found = labels
    program = LandingConeProgram(LANDING)
    for i in range(2):
        for shift in (-1.0, 1.0):
            other, _ = program.solve_exact(x0[i], xt[i], found.time_horizons[i] + shift)
            assert other is None or other.fuel >= found.fuel[i] - 1e-6


def test_ipopt_from_the_oracle_agrees_in_fuel(labels):
    """IPOPT on the original non-convex problem (annulus, thrust and flight time as variables),
    started at the oracle's answer as a warm start, stays there: same fuel to 1e-5 (the bar is 0.1%)."""
    x0, xt, found = labels
    nlp = LandingNlp(LANDING, warm=True)
    for i in range(2):
        answer = nlp.solve(x0[i], xt[i], found.thrusts[i], found.time_horizons[i])
        assert answer.converged
        assert answer.fuel == pytest.approx(found.fuel[i], rel=1e-5)


def test_labels_do_not_depend_on_the_number_of_workers(labels):
    x0, xt, found = labels
    again = solve_landings(LANDING, x0, xt, workers=2, chunk_size=2, progress=False)
    np.testing.assert_array_equal(again.thrusts, found.thrusts)
    np.testing.assert_array_equal(again.time_horizons, found.time_horizons)


def test_published_example():
    """Açıkmeşe & Ploen's example, staying above the ground but without a glide slope: about
    390.5 kg of fuel at about 75 s. N = 100 here (the benchmark reports N = 200)."""
    landing = RocketLanding(num_steps=100, glide_slope=0.0)
    x0, xt = published_example()
    solution, _ = best_landing(LandingConeProgram(landing), x0, xt)
    assert abs(solution.final_time - 75.0) < 1.0
    assert solution.fuel == pytest.approx(390.5, rel=5e-3)


def test_infeasible_flight_times_have_no_answer():
    x0, xt = published_example()
    program = LandingConeProgram(RocketLanding(num_steps=20))
    assert program.solve(x0, xt, 20.0) is None  # far too short to stop from 75 m/s at 1500 m
    assert program.solve(x0, xt, 150.0) is None  # the tank runs dry at the least thrust first


def test_sample_problems_in_the_box():
    x0, xt = sample_problems(np.random.default_rng(0), 500)
    for i, (low, high) in enumerate(INITIAL_BOX.values()):
        assert low <= x0[:, i].min() and x0[:, i].max() <= high
    assert (x0[:, 6] == Vehicle().wet_mass).all() and (xt[:, :6] == 0).all()


@pytest.mark.parametrize("make, message", [
    (lambda: Vehicle(dry_mass=2000.0), "dry_mass"),
    (lambda: Vehicle(throttle_min=0.9), "throttle"),
    (lambda: RocketLanding(num_steps=1), "num_steps"),
    (lambda: RocketLanding(glide_slope=95.0), "glide_slope"),
    (lambda: sample_problems(np.random.default_rng(0), 2, initial_mass=3000.0), "initial_mass"),
])
def test_bad_parameters_are_refused_by_name(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_vehicle_that_cannot_hover_is_refused_at_once(capsys, tmp_path):
    """Its flight-time search could never end in a landing (it once scanned 490,350 s): refused
    before any work, naming the parameter to change."""
    from trc_lib.interfaces.cli import main
    code = main(["generate", "--system", "rocket_landing", "--parameter", "engine_thrust=1", "--num_samples", "5",
                 "--output_dir", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "cannot hover with a full tank" in error and "engine_thrust" in error
    assert len(error.splitlines()) == 1 and not (tmp_path / "out").exists()
