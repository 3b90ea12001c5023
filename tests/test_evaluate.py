"""The evaluator: scores against the exact optimum, with a cost gap that cannot be gamed."""

import numpy as np
import pytest

from trc_lib.oracles import closed_form
from trc_lib.evaluate import metrics, score_controls, summarize, time_inference
from trc_lib.errors import TRCError


@pytest.fixture(scope="module")
def solution(test_set):
    return closed_form.solve(test_set.problem, test_set.initial_states, test_set.target_states)


def test_oracle_controls_score_perfectly(test_set, solution):
    scores = score_controls(test_set, test_set.control_sequences, solution=solution)
    assert scores["success"].all()
    assert scores["terminal_error"].max() < 1e-8
    assert np.abs(scores["cost_gap"]).max() < 1e-9
    np.testing.assert_allclose(scores["cost"], test_set.costs, rtol=1e-12)
    np.testing.assert_array_equal(scores["bound_violation"], 0.0)
    assert metrics(scores)["success_rate"] == 1.0


def test_solution_is_recomputed_when_not_given(test_set, solution):
    with_solution = score_controls(test_set, np.zeros_like(test_set.control_sequences), solution=solution)
    without = score_controls(test_set, np.zeros_like(test_set.control_sequences))
    np.testing.assert_allclose(without["cost_gap"], with_solution["cost_gap"], rtol=1e-12)


def test_zero_controls_have_a_cost_gap_of_exactly_one_when_no_bound_binds(test_set, solution):
    """J(0) = 0 and mu . (A^N x0 - x*) = 2 J* for the unbounded minimum-energy optimum, so the gap
    (0 + 2 J* - J*) / J* is 1 (100%), not the -100% a plain cost gap would report."""
    scores = score_controls(test_set, np.zeros_like(test_set.control_sequences), solution=solution)
    free = ~solution.bound_active
    assert free.sum() > 50
    np.testing.assert_array_equal(scores["cost"], 0.0)
    np.testing.assert_allclose(scores["cost_gap"][free], 1.0, rtol=0, atol=1e-9)


def test_random_controls_never_get_a_negative_cost_gap(test_set, solution):
    rng = np.random.default_rng(0)
    for scale in (4.0, 1.0, 0.1):
        controls = rng.uniform(-scale, scale, size=test_set.control_sequences.shape)
        assert (score_controls(test_set, controls, solution=solution)["cost_gap"] >= -1e-9).all()
        nearby = test_set.control_sequences + rng.normal(scale=scale / 10, size=controls.shape)
        assert (score_controls(test_set, nearby, solution=solution)["cost_gap"] >= -1e-9).all()


def test_undershooting_is_not_rewarded(test_set, solution):
    """90% of u* spends 19% less energy but misses: the plain cost is below J*, the gap is positive."""
    scores = score_controls(test_set, 0.9 * test_set.control_sequences, solution=solution)
    missed = scores["terminal_error"] > 1e-6
    assert missed.sum() > 90
    assert (scores["cost"][missed] < test_set.costs[missed]).all()
    assert (scores["cost_gap"][missed] > 0).all()


def test_success_follows_the_threshold(test_set, solution):
    controls = 0.9 * test_set.control_sequences
    error = score_controls(test_set, controls, solution=solution)["terminal_error"]
    threshold = float(np.median(error))
    scores = score_controls(test_set, controls, success_threshold=threshold, solution=solution)
    np.testing.assert_array_equal(scores["success"], error < threshold)
    assert 0 < scores["success"].mean() < 1


@pytest.mark.parametrize("shape", [(100, 15), (100, 14, 1), (99, 15, 1), (100, 15, 2)])
def test_wrong_shape_is_refused(test_set, shape):
    with pytest.raises(TRCError, match=r"shape .*expected \[100, 15, 1\]"):
        score_controls(test_set, np.zeros(shape))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_controls_are_refused(test_set, bad):
    controls = test_set.control_sequences.copy()
    controls[5, 3, 0] = bad
    with pytest.raises(TRCError, match="NaN or inf"):
        score_controls(test_set, controls)


def test_controls_beyond_the_bound_are_clipped_and_reported(test_set, solution):
    controls = test_set.control_sequences.copy()
    controls[2, 0, 0] = 10.0
    controls[7, 4, 0] = -6.5
    clipped = np.clip(controls, -4, 4)
    scores = score_controls(test_set, controls, solution=solution)
    reference = score_controls(test_set, clipped, solution=solution)
    expected_violation = np.zeros(100)
    expected_violation[[2, 7]] = [6.0, 2.5]
    np.testing.assert_allclose(scores["bound_violation"], expected_violation)
    np.testing.assert_array_equal(reference["bound_violation"], 0.0)
    for key in ("cost", "terminal_error", "cost_gap", "state_trajectories"):
        np.testing.assert_array_equal(scores[key], reference[key])
    summary = metrics(scores)["bound_violation"]
    assert summary == {"max": 6.0, "fraction": 0.02}


def test_metrics_summarize_every_score(test_set, solution):
    scores = score_controls(test_set, 0.9 * test_set.control_sequences, solution=solution)
    summary = metrics(scores, success_threshold=0.1)
    assert set(summary) == {"success_rate", "success_threshold", "terminal_error", "cost", "cost_gap",
                            "bound_violation"}
    for key in ("terminal_error", "cost", "cost_gap"):
        assert set(summary[key]) == {"mean", "median", "p90", "max"}
        assert summary[key]["median"] == pytest.approx(np.median(scores[key]))
        assert summary[key]["max"] == pytest.approx(scores[key].max())
    assert summary["success_rate"] == pytest.approx(scores["success"].mean())
    assert summary["success_threshold"] == 0.1


def test_summarize_statistics():
    s = summarize(np.arange(1.0, 11.0))
    assert s == {"mean": 5.5, "median": 5.5, "p90": pytest.approx(9.1), "max": 10.0}


def test_time_inference_reports_median_p90_and_time_per_problem(test_set):
    calls = []

    def predict(x0, xt):
        calls.append(len(x0))
        return np.zeros((len(x0), 15, 1))

    timing = time_inference(predict, test_set.initial_states, test_set.target_states, batch_size=250, repeats=5)
    assert set(timing) == {"batch_size", "repeats", "median_ms", "p90_ms", "mean_ms", "us_per_problem"}
    assert timing["batch_size"] == 250 and timing["repeats"] == 5
    assert timing["median_ms"] > 0 and timing["p90_ms"] >= timing["median_ms"] and timing["us_per_problem"] > 0
    assert timing["mean_ms"] > 0
    assert timing["us_per_problem"] == pytest.approx(1e3 * timing["median_ms"] / 250)
    # two warm-up calls, then the timed repeats, each on a batch tiled up to the requested size
    assert calls == [250] * 7


def test_time_inference_times_batch_one_over_the_problems_not_on_one(test_set):
    seen = []
    time_inference(lambda x0, xt: seen.append(x0[0].copy()), test_set.initial_states, test_set.target_states,
                   batch_size=1, repeats=len(test_set))
    timed = np.array(seen[2:])  # after the two warm-up calls
    np.testing.assert_array_equal(timed, test_set.initial_states)
