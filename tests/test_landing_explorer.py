"""The rocket landing's explorer, driven in plain Python: moving a slider re-runs the callback and
changes what it reports."""

import matplotlib
import pytest
import torch

from trc_lib.landing_explorer import explore_landing, landing_explorer
from trc_lib.landing_model import LandingRecursiveControl
from trc_lib.rocket_landing import RocketLanding

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def ui():
    torch.manual_seed(0)
    model = LandingRecursiveControl.create("small", landing=RocketLanding(num_steps=10))
    return landing_explorer(model, show=False)


def sliders(ui):
    return dict(zip(["x", "y", "altitude", "vx", "vy", "vz"], ui.children))


def test_explorer_starts_on_its_default_problem_and_the_correction_lands(ui):
    result = ui.result
    assert result["reachable"] and result["initial_state"][:6] == [1500.0, 0.0, 1500.0, 0.0, 0.0, -60.0]
    assert result["TRC + correction"]["position_error"] < 1e-3  # even an untrained network, corrected
    assert result["optimum"]["fuel"] <= result["TRC + correction"]["fuel"] * (1 + 1e-6)
    assert result["figure"] is not None


def test_sliders_set_the_problem(ui):
    before = ui.result["optimum"]["fuel"]
    s = sliders(ui)
    s["altitude"].value = 1900.0
    s["vx"].value = -20.0
    assert ui.result["initial_state"][2] == 1900.0 and ui.result["initial_state"][3] == -20.0
    assert ui.result["optimum"]["fuel"] != before


def test_an_unreachable_start_says_so(capsys):
    """A vehicle 20 m up, falling at 80 m/s, cannot stop above the ground: no figure, one line."""
    landing = RocketLanding(num_steps=10)
    model = LandingRecursiveControl.create("small", landing=landing)
    from trc_lib.oracles.cone_program import LandingConeProgram
    result = explore_landing(model, LandingConeProgram(landing), x=500.0, altitude=20.0, vz=-80.0, show=True)
    assert not result["reachable"] and result["figure"] is None
    assert "no landing exists" in capsys.readouterr().out
