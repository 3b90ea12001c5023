"""The trajectory explorer, driven in plain Python: moving a widget re-runs the callback and
changes what it reports."""

import numpy as np
import pytest

from trc_lib import load_model
from trc_lib.widgets import TrajectoryView, explore, trajectory_explorer


@pytest.fixture(scope="module")
def model(trained_dir):
    return load_model(trained_dir / "best_model.pt")


@pytest.fixture
def ui(model, test_set):
    return trajectory_explorer(model, test_set, show=False)


def widgets(ui, test_set):
    """The explorer's widgets by their keyword in `explore`."""
    names = ["source", "case", *[s.key for s in TrajectoryView().sliders(test_set)], "step"]
    return dict(zip(names, ui.children))


def test_a_slider_for_every_state_component_of_start_and_target(test_set):
    names = test_set.problem.system.state_names
    keys = [s.key for s in TrajectoryView().sliders(test_set)]
    assert keys == [f"x0_{name}" for name in names] + [f"xt_{name}" for name in names] == \
        ["x0_position", "x0_velocity", "xt_position", "xt_velocity"]


def test_explorer_starts_on_test_case_zero_after_the_last_step(ui, model, test_set):
    assert ui.result["reachable"] and ui.result["step"] == model.config.num_refinements
    np.testing.assert_allclose(ui.result["initial_state"], test_set.initial_states[0])
    assert ui.result["figure"] is not None


def test_case_slider_changes_the_problem_and_the_numbers(ui, test_set):
    before = ui.result
    widgets(ui, test_set)["case"].value = 5
    np.testing.assert_allclose(ui.result["initial_state"], test_set.initial_states[5])
    assert ui.result["terminal_error_trc"] != before["terminal_error_trc"]
    assert ui.result["cost_oracle"] == pytest.approx(test_set.costs[5])


def test_state_sliders_set_the_problem_in_slider_mode(ui, test_set):
    w = widgets(ui, test_set)
    w["source"].value = "sliders"
    w["xt_position"].value = 1.5
    w["x0_velocity"].value = -0.5
    assert ui.result["initial_state"] == [0.0, -0.5] and ui.result["target_state"] == [1.5, 0.0]
    assert ui.result["terminal_error_oracle"] < 1e-8


def test_step_slider_shows_each_refinement(ui, model, test_set):
    w = widgets(ui, test_set)
    errors = []
    for step in range(1, model.config.num_refinements + 1):
        w["step"].value = step
        errors.append(ui.result["terminal_error_trc"])
    refinements = model.predict_refinements(test_set.initial_states[:1], test_set.target_states[:1])
    exact = [np.linalg.norm(test_set.problem.system.rollout(test_set.initial_states[:1], r)[0, -1]
                            - test_set.target_states[0]) for r in refinements]
    np.testing.assert_allclose(errors, exact, rtol=1e-9)


def test_unreachable_target_is_reported_not_plotted(model, test_set, capsys):
    result = explore(model, test_set, source="sliders", x0_position=0, x0_velocity=0, xt_position=60.0,
                     xt_velocity=0, show=True)
    assert result == {"reachable": False, "figure": None}
    assert "cannot be reached" in capsys.readouterr().out


def test_a_misspelt_slider_is_refused(model, test_set):
    with pytest.raises(ValueError, match="no slider named x0_postion"):
        explore(model, test_set, source="sliders", x0_postion=1.0, show=False)
