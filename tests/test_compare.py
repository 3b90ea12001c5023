"""Baselines, external controls and the comparison table: every controller scored the same way."""

import json

import numpy as np
import pytest

from trc_lib.interfaces import workflow
from trc_lib.baselines import (ExternalControls, LeastSquaresController, OracleController, RandomController,
                               ZeroController, read_external_controls)
from trc_lib.compare import compare_controllers, evaluate_controller, format_table
from trc_lib.data import generate_dataset, make_problem
from trc_lib.errors import TRCError


@pytest.fixture(scope="module")
def unbounded_sets():
    """The default problem with a bound that never binds: the optimum is linear in (x0, x*)."""
    problem = make_problem(control_bound=1e6)
    return generate_dataset(problem, 200, seed=1), generate_dataset(problem, 100, seed=2)


# ---------------------------------------------------------------------------------------------
# baselines
# ---------------------------------------------------------------------------------------------

def test_least_squares_is_exact_when_the_optimum_is_linear(unbounded_sets):
    train, test = unbounded_sets
    controller = LeastSquaresController(train.problem).fit(train)
    assert controller.num_parameters == 5 * 15
    assert controller.memory_bytes == 5 * 15 * 8
    row = evaluate_controller(controller, test, timing=False)
    assert row["success_rate"] == 1.0
    assert row["cost_gap"]["median"] < 1e-6
    assert row["terminal_error"]["max"] < 1e-6


def test_least_squares_cannot_follow_an_active_bound():
    """On [-5, 5] the bound binds on a share of the pairs, where no linear map is optimal; the
    baseline's controls are still clipped to the bound."""
    problem = make_problem()
    train = generate_dataset(problem, 200, seed=1, state_range=(-5.0, 5.0))
    test = generate_dataset(problem, 100, seed=2, state_range=(-5.0, 5.0))
    assert test.metadata["num_bound_active"] > 5
    controller = LeastSquaresController(problem).fit(train)
    controls = controller.predict(test.initial_states, test.target_states)
    assert np.abs(controls).max() == 4.0
    row = evaluate_controller(controller, test, timing=False)
    assert row["cost_gap"]["max"] > 1e-3


def test_random_controller_is_seeded_and_within_the_bound(test_set):
    problem = test_set.problem
    a = RandomController(problem, seed=1).predict(test_set.initial_states, test_set.target_states)
    b = RandomController(problem, seed=1).predict(test_set.initial_states, test_set.target_states)
    c = RandomController(problem, seed=2).predict(test_set.initial_states, test_set.target_states)
    assert a.shape == (100, 15, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a).max() <= 4.0
    assert np.abs(a).max() > 3.0  # it uses the whole box, not a sliver of it


def test_zero_and_oracle_controllers(test_set):
    zero = ZeroController(test_set.problem).predict(test_set.initial_states, test_set.target_states)
    np.testing.assert_array_equal(zero, np.zeros((100, 15, 1)))
    oracle = OracleController(test_set.problem).predict(test_set.initial_states, test_set.target_states)
    np.testing.assert_allclose(oracle, test_set.control_sequences, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# external controls
# ---------------------------------------------------------------------------------------------

def test_external_npz_is_read(test_set, tmp_path):
    path = tmp_path / "llm.npz"
    np.savez(path, control_sequences=test_set.control_sequences, initial_states=test_set.initial_states,
             target_states=test_set.target_states)
    external = ExternalControls("llm", path, test_set)
    assert external.name == "llm"
    np.testing.assert_array_equal(external.predict(test_set.initial_states, test_set.target_states),
                                  test_set.control_sequences)


@pytest.mark.parametrize("form", ["dict", "list", "dict_2d", "list_2d"])
def test_external_json_is_read_as_dict_or_bare_list(test_set, tmp_path, form):
    u = test_set.control_sequences
    payload = (u[..., 0] if form.endswith("2d") else u).tolist()
    if form.startswith("dict"):
        payload = {"control_sequences": payload, "initial_states": test_set.initial_states.tolist()}
    path = tmp_path / "controls.json"
    path.write_text(json.dumps(payload))
    np.testing.assert_array_equal(read_external_controls(path, test_set), u)


def test_external_two_dimensional_npz_is_accepted(test_set, tmp_path):
    path = tmp_path / "flat.npz"
    np.savez(path, control_sequences=test_set.control_sequences[..., 0])
    assert read_external_controls(path, test_set).shape == (100, 15, 1)


def _npz(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case, message", [
    ("wrong_shape", r"control_sequences has shape \[100, 14, 1\]"),
    ("too_few", r"control_sequences has shape \[99, 15, 1\]"),
    ("nan", "NaN or inf"),
    ("missing_key", "no 'control_sequences'"),
    ("other_cases", "'initial_states' differs from the test set's"),
    ("other_targets", "'target_states' differs from the test set's"),
    ("wrong_extension", "expected a .npz or .json file"),
    ("missing_file", "no such file"),
    ("corrupt_npz", "unreadable control sequences"),
    ("bad_json", "unreadable control sequences"),
])
def test_bad_external_files_are_refused_naming_the_file(test_set, tmp_path, case, message):
    u = test_set.control_sequences.copy()
    if case == "wrong_shape":
        path = _npz(tmp_path, "bad_file.npz", control_sequences=u[:, :14])
    elif case == "too_few":
        path = _npz(tmp_path, "bad_file.npz", control_sequences=u[:99])
    elif case == "nan":
        u[3, 3, 0] = np.nan
        path = _npz(tmp_path, "bad_file.npz", control_sequences=u)
    elif case == "missing_key":
        path = _npz(tmp_path, "bad_file.npz", controls=u)
    elif case == "other_cases":
        path = _npz(tmp_path, "bad_file.npz", control_sequences=u, initial_states=test_set.initial_states + 0.01)
    elif case == "other_targets":
        path = _npz(tmp_path, "bad_file.npz", control_sequences=u, target_states=test_set.target_states[::-1])
    elif case == "wrong_extension":
        path = tmp_path / "bad_file.txt"
        path.write_text(json.dumps(u.tolist()))
    elif case == "missing_file":
        path = tmp_path / "bad_file.npz"
    elif case == "corrupt_npz":
        path = tmp_path / "bad_file.npz"
        path.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    elif case == "bad_json":
        path = tmp_path / "bad_file.json"
        path.write_text('{"control_sequences": [1, 2,')
    with pytest.raises(TRCError, match=f"bad_file\\.(npz|json|txt).*{message}"):
        ExternalControls("ext", path, test_set)


def test_external_controls_refuse_to_answer_other_cases(test_set, tmp_path):
    path = _npz(tmp_path, "ext.npz", control_sequences=test_set.control_sequences)
    external = ExternalControls("ext", path, test_set)
    with pytest.raises(TRCError, match="ext.npz.*holds 100 sequences, asked for 3"):
        external.predict(test_set.initial_states[:3], test_set.target_states[:3])


# ---------------------------------------------------------------------------------------------
# comparison and table
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compared(trained_dir, test_path, test_set, tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    external = folder / "perfect.npz"
    np.savez(external, control_sequences=test_set.control_sequences)
    output = folder / "comparison.json"
    rows = workflow.compare(test_path, trc_checkpoint=trained_dir / "best_model.pt", output=output,
                            external=[("perfect external", external)], log=lambda *_: None)
    return rows, output


def test_compare_has_a_row_for_every_controller(compared):
    rows, _ = compared
    names = [r["name"] for r in rows]
    assert names[:3] == ["random", "zero", "least squares (linear)"]
    refinements = [n for n in names if n.startswith("TRC after step")]
    assert refinements and refinements == [f"TRC after step {r}/{len(refinements) + 1}"
                                           for r in range(1, len(refinements) + 1)]
    assert names[3 + len(refinements):] == ["TRC", "perfect external", "oracle (exact QP)"]


def test_compare_oracle_and_perfect_external_rows_are_perfect(compared):
    rows, _ = compared
    by_name = {r["name"]: r for r in rows}
    for name in ("oracle (exact QP)", "perfect external"):
        assert by_name[name]["success_rate"] == 1.0
        assert abs(by_name[name]["cost_gap"]["median"]) < 1e-9
    assert by_name["zero"]["cost_gap"]["median"] == pytest.approx(1.0, abs=1e-9)
    assert by_name["random"]["cost_gap"]["median"] > 0


def test_compare_times_live_controllers_only(compared):
    rows, _ = compared
    for row in rows:
        timed = not (row["name"].startswith("TRC after step") or row["name"] == "perfect external")
        assert ("inference_time" in row) == timed, row["name"]
        if timed:
            assert set(row["inference_time"]) == {"batch_1", "batch_1000"}


def test_compare_reports_model_size(compared):
    rows, _ = compared
    by_name = {r["name"]: r for r in rows}
    trc = by_name["TRC"]
    assert trc["num_parameters"] > 0 and trc["memory_bytes"] >= 4 * trc["num_parameters"]
    assert by_name["least squares (linear)"]["num_parameters"] == 75
    assert by_name["oracle (exact QP)"]["num_parameters"] is None


def test_compare_writes_json_with_the_rows(compared, test_path):
    rows, output = compared
    written = json.loads(output.read_text())
    assert [r["name"] for r in written["controllers"]] == [r["name"] for r in rows]
    assert written["num_samples"] == 100
    assert written["test_data"] == str(test_path)


def test_compare_without_training_data_is_refused(test_path):
    with pytest.raises(TRCError, match="--train_data"):
        workflow.compare(test_path, log=lambda *_: None)


def test_compare_refuses_training_data_of_another_problem(test_path, tmp_path):
    other = workflow.generate(tmp_path / "other", num_samples=30, num_steps=10, seed=0, log=lambda *_: None)
    with pytest.raises(TRCError, match="state different problems"):
        workflow.compare(test_path, train_data=other, log=lambda *_: None)


def test_format_table_has_a_header_and_one_line_per_row(compared, test_set):
    rows, _ = compared
    table = format_table(rows)
    lines = table.splitlines()
    assert len(lines) == len(rows) + 2  # header, separator, rows
    assert lines[0].startswith("| controller |")
    assert set(lines[1]) == {"|", "-"}
    for row, line in zip(rows, lines[2:]):
        assert line.startswith(f"| {row['name']} |")
        assert line.count("|") == lines[0].count("|")
    oracle_line = lines[2 + [r["name"] for r in rows].index("oracle (exact QP)")]
    assert "| 100.0% |" in oracle_line


def test_compare_controllers_scores_untimed_rows_without_timing(test_set):
    rows = compare_controllers(test_set, [ZeroController(test_set.problem), OracleController(test_set.problem)],
                               untimed={"zero", "oracle (exact QP)"})
    assert [r["name"] for r in rows] == ["zero", "oracle (exact QP)"]
    assert all("inference_time" not in r for r in rows)
    assert "| - | - |" in format_table(rows).splitlines()[2]
