"""Receding-horizon simulation: open-loop playback is exact, closed loop holds an unstable target,
runs reproduce, and bad input is refused."""

import dataclasses

import numpy as np
import pytest

from trc_lib.baselines import OracleController, RandomController, ZeroController
from trc_lib.studies.closed_loop import (
    ClosedLoopResult,
    compare_closed_loop,
    format_closed_loop,
    simulate,
)
from trc_lib.tasks import make_problem

# Van der Pol on a short horizon (T = 2 s, N = 20, dt = 0.1 s); from these starts IPOPT reaches
# the origin exactly (from farther ones, |u| <= 2 may not suffice in 2 s)
VDP_STARTS = np.array([[0.8, -0.5], [-0.6, 0.9], [0.5, 0.5]])


@pytest.fixture(scope="module")
def vanderpol():
    return make_problem(system="vanderpol", num_steps=20, time_horizon=2.0)


@pytest.fixture(scope="module")
def double_integrator():
    return make_problem(system="double_integrator")  # T = 5 s, N = 15, |u| <= 4, min energy


def recording(plan):
    """`plan`, keeping every plan it returns in .plans."""
    def wrapped(x, x_target):
        u = plan(x, x_target)
        wrapped.plans.append(u)
        return u
    wrapped.plans = []
    return wrapped


def test_open_loop_plays_the_oracle_plan_exactly(vanderpol):
    plan = recording(OracleController(vanderpol).predict)
    N, x_target = vanderpol.num_steps, np.zeros_like(VDP_STARTS)
    result = simulate(vanderpol, plan, VDP_STARTS, x_target, replan_every=None)
    assert result.num_plans == len(plan.plans) == 1
    applied = np.clip(plan.plans[0], -vanderpol.control_bound, vanderpol.control_bound)
    np.testing.assert_allclose(result.states[:, :N + 1], vanderpol.system.rollout(VDP_STARTS, applied),
                               rtol=0, atol=1e-9)
    np.testing.assert_array_equal(result.controls[:, :N], applied)
    assert result.terminal_error(N).max() < 1e-6  # IPOPT's plan arrives...
    np.testing.assert_array_equal(result.controls[:, N:], 0.0)  # ...then nothing more was planned


def test_ipopt_runs_on_dask_workers_give_the_same_flights(vanderpol):
    """Cases split over two Dask workers, each meeting its own slice of the noise: IPOPT solves
    problem after problem, so the closed loop is the same, array for array, as in one process."""
    rng = np.random.default_rng(5)
    x0 = np.concatenate([VDP_STARTS, rng.uniform(-0.5, 0.5, (2, 2))])
    x_target = np.zeros_like(x0)
    plan = OracleController(vanderpol).predict
    run = lambda workers: simulate(vanderpol, plan, x0, x_target, num_steps=6, replan_every=2,
                                   disturbance_std=0.01, seed=2, workers=workers)
    here, there = run(None), run(2)
    np.testing.assert_array_equal(there.states, here.states)
    np.testing.assert_array_equal(there.controls, here.controls)
    assert there.num_plans == here.num_plans == 3 and there.plan_time > 0
    rows = compare_closed_loop(vanderpol, {"IPOPT": plan}, x0, x_target, {"closed": {"num_steps": 2}},
                               workers=2, on_workers=("IPOPT",))
    assert rows[0]["num_plans"] == 2
    with pytest.raises(ValueError, match="on_workers names no planner"):
        compare_closed_loop(vanderpol, {"IPOPT": plan}, x0, x_target, {}, on_workers=("TRC",))


def test_shapes_bounds_plan_count_and_reproducibility(double_integrator):
    problem, rng = double_integrator, np.random.default_rng(0)
    x0, x_target = rng.uniform(-2, 2, (4, 2)), rng.uniform(-2, 2, (4, 2))
    oracle = OracleController(problem).predict
    run = lambda seed: simulate(problem, oracle, x0, x_target, num_steps=30, replan_every=5,
                                disturbance_std=0.05, seed=seed)
    result = run(seed=3)
    assert isinstance(result, ClosedLoopResult)
    assert result.states.shape == (4, 31, 2) and result.controls.shape == (4, 30, 1)
    assert result.num_steps == 30 and result.horizon == 15 and result.dt == problem.dt
    assert result.num_plans == 30 // 5 and result.plan_time > 0
    assert np.abs(result.controls).max() <= problem.control_bound
    np.testing.assert_array_equal(result.states[:, 0], x0)
    again, other = run(seed=3), run(seed=4)
    np.testing.assert_array_equal(again.states, result.states)
    np.testing.assert_array_equal(again.controls, result.controls)
    assert np.abs(other.states - result.states).max() > 1e-3

    # the default run is 2N steps, re-planned at every step
    assert simulate(problem, oracle, x0, x_target).num_plans == 2 * problem.num_steps
    # re-planning less often than the horizon: u = 0 between the end of a plan and the next one
    sparse = simulate(problem, oracle, x0, x_target, num_steps=40, replan_every=20)
    assert sparse.num_plans == 2
    np.testing.assert_array_equal(sparse.controls[:, 15:20], 0.0)
    assert np.abs(sparse.controls[:, 20:35]).max() > 0


def test_the_actuator_clips_what_the_planner_asks(double_integrator):
    u_max, N = double_integrator.control_bound, double_integrator.num_steps
    too_much = lambda x, x_target: np.full((len(x), N, 1), 10 * u_max) * np.sign(x[:, :1, None] + 1e-9)
    x0 = np.array([[1.0, 0.0], [-1.0, 0.0]])
    result = simulate(double_integrator, too_much, x0, np.zeros_like(x0), num_steps=3)
    np.testing.assert_array_equal(np.abs(result.controls), u_max)


def test_closed_loop_holds_the_unstable_origin_that_open_loop_loses(vanderpol):
    """The point of closing the loop. Under noise (std 0.02 per step) open-loop playback of the
    IPOPT plan ends 0.40-0.75 from the origin, closed-loop IPOPT 0.03-0.13; with mu = 1.2 in the plant
    instead of 1 (no noise), 0.44-0.67 against 0.02-0.03."""
    plan, x_target = OracleController(vanderpol).predict, np.zeros_like(VDP_STARTS)
    run = lambda **kwargs: simulate(vanderpol, plan, VDP_STARTS, x_target, **kwargs).terminal_error()

    open_loop, closed_loop = run(replan_every=None, disturbance_std=0.02), run(disturbance_std=0.02)
    assert (closed_loop < open_loop).all(), (closed_loop, open_loop)
    assert np.median(closed_loop) < np.median(open_loop) / 3, (closed_loop, open_loop)
    assert closed_loop.max() < 0.25 and open_loop.min() > 0.3, (closed_loop, open_loop)

    plant = vanderpol.replace(mu=1.2)
    open_loop, closed_loop = run(replan_every=None, plant=plant), run(plant=plant)
    assert closed_loop.max() < 0.1 and open_loop.min() > 0.3, (closed_loop, open_loop)


def test_every_planner_meets_the_same_disturbance(double_integrator):
    """Open-loop controls ignore the noise, and the plant is linear, so the noise's effect on the
    states, states(noise) - states(no noise), must be the same for two different planners."""
    problem, rng = double_integrator, np.random.default_rng(1)
    x0, x_target = rng.uniform(-2, 2, (3, 2)), rng.uniform(-2, 2, (3, 2))
    effects = []
    for plan in (ZeroController(problem).predict, RandomController(problem).predict):
        noisy, clean = (simulate(problem, plan, x0, x_target, replan_every=None, disturbance_std=std, seed=7)
                        for std in (0.1, 0.0))
        effects.append(noisy.states - clean.states)
    assert np.abs(effects[0]).max() > 0.05
    np.testing.assert_allclose(effects[0], effects[1], rtol=0, atol=1e-12)


def test_summary_cost_and_table(double_integrator):
    problem, rng = double_integrator, np.random.default_rng(2)
    x0, x_target = rng.uniform(-2, 2, (3, 2)), rng.uniform(-2, 2, (3, 2))
    planners = {"oracle": OracleController(problem).predict, "zero": ZeroController(problem).predict}
    scenarios = {"open loop": {"replan_every": None}, "MPC, noise": {"disturbance_std": 0.01, "seed": 1}}
    rows = compare_closed_loop(problem, planners, x0, x_target, scenarios)
    assert [(r["planner"], r["scenario"]) for r in rows] == [
        ("oracle", "open loop"), ("zero", "open loop"), ("oracle", "MPC, noise"), ("zero", "MPC, noise")]
    expected = {"planner", "scenario", "settings", "cases", "steps", "horizon", "threshold",
                "success_rate_at_horizon", "success_rate_at_end", "terminal_error_at_horizon",
                "terminal_error_at_end", "cost", "num_plans", "plan_time_s", "ms_per_plan"}
    for row in rows:
        assert set(row) == expected
        assert set(row["terminal_error_at_end"]) == {"mean", "median", "p90", "max"}
    assert rows[0]["success_rate_at_horizon"] == 1.0  # the exact QP arrives at step N
    assert rows[1]["success_rate_at_end"] == 0.0 and rows[1]["cost"]["max"] == 0.0  # zero: no energy

    # cost: dt * sum_k u_k' R u_k on min energy (Q = 0); at step N it is the oracle's own J*
    result = simulate(problem, planners["oracle"], x0, x_target, replan_every=None)
    N = problem.num_steps
    np.testing.assert_allclose(result.cost(), problem.cost(result.states[:, :N + 1], result.controls[:, :N],
                                                           x_target), rtol=1e-12)

    table = format_closed_loop(rows).splitlines()
    assert table[0] == ("| planner | scenario | success at step N | success at end | terminal error median at end "
                        "| cost median | ms per plan |")
    assert len(table) == 2 + len(rows) and table[2].startswith("| oracle | open loop | 100.0% |")


def test_bad_input_is_refused(double_integrator):
    problem, plan = double_integrator, ZeroController(double_integrator).predict
    x0 = np.zeros((2, 2))
    cases = [
        ({"initial_states": np.zeros((2, 3))}, "initial_states must have shape"),
        ({"initial_states": np.zeros(2)}, "initial_states must have shape"),
        ({"target_states": np.zeros((3, 2))}, "target_states must have the shape"),
        ({"disturbance_std": -0.1}, "disturbance_std must be a non-negative"),
        ({"replan_every": 0}, "replan_every must be a positive integer"),
        ({"replan_every": 1.5}, "replan_every must be a positive integer"),
        ({"num_steps": 0}, "num_steps must be a positive integer"),
        ({"plan": lambda x, xt: np.zeros((len(x), 3, 1))}, "the planner returned shape"),
        ({"plant": problem.replace(num_steps=30)}, "plant dt"),
        ({"plan": lambda x, xt: np.full((len(x), 15, 1), np.nan)}, "NaN or inf"),
    ]
    for overrides, message in cases:
        kwargs = {"problem": problem, "plan": plan, "initial_states": x0, "target_states": x0, "num_steps": 4,
                  **overrides}
        with pytest.raises(ValueError, match=message):
            simulate(**kwargs)
    result = simulate(problem, plan, x0, x0, num_steps=4)
    with pytest.raises(ValueError, match="at_step must be an integer in"):
        result.terminal_error(at_step=5)
