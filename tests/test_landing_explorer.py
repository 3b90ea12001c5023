"""The trajectory explorer on the rocket landing (seven states, the landing's view), driven in
plain Python: moving a slider re-runs the callback and changes what it reports."""

import matplotlib
import numpy as np
import pytest
import torch

from trc_lib.data import generate_dataset
from trc_lib.tasks.rocket_landing.explorer import LandingView
from trc_lib.tasks.rocket_landing.model import LandingRecursiveControl
from trc_lib.tasks.rocket_landing.problem import RocketLanding
from trc_lib.widgets import explore, trajectory_explorer

matplotlib.use("Agg")
LANDING = RocketLanding(num_steps=10)
SLIDERS = ["x0_x", "x0_y", "x0_altitude", "x0_vx", "x0_vy", "x0_vz"]


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    model = LandingRecursiveControl.create("small", landing=LANDING)
    test = generate_dataset(LANDING, 3, seed=5, workers=1)
    return model, test, LandingView(LANDING)


@pytest.fixture
def ui(setting):
    model, test, view = setting
    return trajectory_explorer(model, test, view=view, show=False)


def widgets(ui):
    return dict(zip(["source", "case", *SLIDERS, "step"], ui.children))


def test_sliders_for_position_and_velocity_only(setting):
    """The pad and the full tank are the task's: no sliders for x* or the mass."""
    _, _, view = setting
    assert [s.key for s in view.sliders()] == SLIDERS
    assert [s.unit for s in view.sliders()] == ["m"] * 3 + ["m/s"] * 3


def test_explorer_starts_on_test_case_zero_and_shows_its_stored_optimum(ui, setting):
    model, test, _ = setting
    result = ui.result
    assert result["reachable"] and result["step"] == model.config.num_refinements
    np.testing.assert_allclose(result["initial_state"], test.initial_states[0])
    assert result["optimum"]["fuel"] == pytest.approx(test.costs[0], rel=1e-9)
    assert result["optimum"]["position_error"] < 1e-6
    assert result["TRC + correction"]["position_error"] < 1e-3  # even an untrained network, corrected
    assert result["figure"] is not None


def test_sliders_set_the_problem_and_the_oracle_solves_it(ui):
    w = widgets(ui)
    w["source"].value = "sliders"
    first = ui.result
    assert first["initial_state"][:6] == [1500.0, 0.0, 1500.0, 0.0, 0.0, -60.0]
    assert first["initial_state"][6] == LANDING.vehicle.wet_mass
    w["x0_altitude"].value = 1900.0
    w["x0_vx"].value = -20.0
    assert ui.result["initial_state"][2] == 1900.0 and ui.result["initial_state"][3] == -20.0
    assert ui.result["optimum"]["fuel"] != first["optimum"]["fuel"]
    assert ui.result["optimum"]["fuel"] <= ui.result["TRC + correction"]["fuel"] * (1 + 1e-6)


def test_step_slider_shows_each_supervision_step(ui, setting):
    model, test, _ = setting
    w = widgets(ui)
    fuels = []
    for step in range(1, model.config.num_refinements + 1):
        w["step"].value = step
        fuels.append(ui.result[f"TRC step {step}/{model.config.num_refinements}"]["fuel"])
    refinements = model.predict_refinements(test.initial_states[:1], test.target_states[:1])
    exact = [LANDING.fuel(LANDING.rollout(test.initial_states[:1], *model.split(r)))[0] for r in refinements]
    np.testing.assert_allclose(fuels, exact, rtol=1e-12)


def test_an_unreachable_start_says_so(setting, capsys):
    """A vehicle 20 m up, falling at 80 m/s, cannot stop above the ground: no figure, one line."""
    model, test, view = setting
    result = explore(model, test, source="sliders", view=view, x0_x=500.0, x0_altitude=20.0, x0_vz=-80.0,
                     show=True)
    assert result == {"reachable": False, "figure": None}
    assert "no landing exists" in capsys.readouterr().out
