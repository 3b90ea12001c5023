"""The Newton projection: perturbed optima are pulled back onto the terminal constraint."""

import numpy as np
import pytest

from trc_lib.oracles.labels import solve_nonlinear
from trc_lib.studies.projection import ProjectedController, TerminalProjection
from trc_lib.tasks import make_problem


@pytest.fixture(scope="module")
def vanderpol():
    problem = make_problem(num_steps=20, system="vanderpol")
    rng = np.random.default_rng(3)
    x0, xt = rng.uniform(-1.5, 1.5, (6, 2)), np.zeros((6, 2))
    solution, ok = solve_nonlinear(problem, x0, xt, workers=1, progress=False)
    assert ok.all()
    return problem, x0, xt, solution.control_sequences


def test_jacobian_agrees_with_finite_differences(vanderpol):
    problem, x0, _, u = vanderpol
    projection = TerminalProjection(problem)
    flat = u.reshape(len(u), -1)
    _, J = projection.terminal_states_and_jacobian(x0, flat)
    h, k = 1e-6, 7
    bumped = flat.copy()
    bumped[:, k] += h
    difference = (projection.terminal_states(x0, bumped) - projection.terminal_states(x0, flat)) / h
    np.testing.assert_allclose(J[:, :, k], difference, atol=1e-4)
    # and x_N is the problem's own integrator
    np.testing.assert_allclose(projection.terminal_states(x0, flat), problem.system.rollout(x0, u)[:, -1], atol=1e-12)


def test_perturbed_optima_are_projected_onto_the_target_within_the_bound(vanderpol):
    problem, x0, xt, u = vanderpol
    noisy = u + np.random.default_rng(0).normal(0, 0.05, u.shape)
    before = np.linalg.norm(problem.system.rollout(x0, np.clip(noisy, -2, 2))[:, -1] - xt, axis=1)
    projection = TerminalProjection(problem, iterations=4)
    projected = projection.project(x0, xt, noisy)
    after = np.linalg.norm(problem.system.rollout(x0, projected)[:, -1] - xt, axis=1)
    assert before.min() > 1e-3 and after.max() < 1e-8
    np.testing.assert_allclose(projection.residuals, after, atol=1e-12)
    assert np.abs(projected).max() <= problem.control_bound
    # the minimal correction stays near the answer it started from
    assert np.linalg.norm(projected - noisy) < np.linalg.norm(noisy - u)


def test_saturated_controls_are_held_at_the_bound():
    problem = make_problem(num_steps=20, system="vanderpol", control_bound=1.0)
    x0, xt = np.array([[1.2, -1.0]]), np.zeros((1, 2))
    solution, ok = solve_nonlinear(problem, x0, xt, workers=1, progress=False)
    at_bound = np.abs(solution.control_sequences) > 1.0 - 1e-6
    assert ok.all() and at_bound.any()
    noisy = np.clip(solution.control_sequences + 0.02, -1.0, 1.0)
    projected = TerminalProjection(problem, iterations=5).project(x0, xt, noisy)
    assert np.abs(projected).max() <= 1.0
    assert np.linalg.norm(problem.system.rollout(x0, projected)[:, -1] - xt) < 1e-8


def test_a_hopeless_start_is_never_made_worse():
    problem = make_problem(system="pendulum")
    x0, xt = np.zeros((3, 2)), np.tile([np.pi, 0.0], (3, 1))
    start = np.zeros((3, problem.num_steps, 1))  # no torque: the pendulum stays down, far from any basin
    projection = TerminalProjection(problem, iterations=2)
    projected = projection.project(x0, xt, start)
    before = np.linalg.norm(problem.system.rollout(x0, start)[:, -1] - xt, axis=1)
    assert (projection.residuals <= before + 1e-12).all()
    assert np.abs(projected).max() <= problem.control_bound


def test_the_controller_wrapper_names_itself(vanderpol):
    problem, x0, xt, u = vanderpol

    class Noisy:
        name = "noisy optimum"

        def predict(self, a, b):
            return u + 0.01

    controller = ProjectedController(Noisy(), problem, iterations=2)
    assert controller.name == "noisy optimum + Newton projection (2 steps)"
    assert np.linalg.norm(problem.system.rollout(x0, controller.predict(x0, xt))[:, -1] - xt, axis=1).max() < 1e-6


def test_on_a_linear_system_one_newton_step_lands_on_the_target():
    """The double integrator's terminal map is affine (x_N = A^N x_0 + G u, Jacobian G): the
    first Newton step of the projection is exact."""
    problem = make_problem()  # double integrator, x_N = x* required, |u| <= 4
    rng = np.random.default_rng(5)
    x0, xt = rng.uniform(-1, 1, (2, 20, 2))
    controls = rng.uniform(-1, 1, (20, problem.num_steps * problem.system.control_dim))
    projection = TerminalProjection(problem, iterations=1)
    np.testing.assert_array_equal(projection.terminal_states_and_jacobian(x0, controls)[1][0],
                                  problem.system.reachability_matrix)
    projected = projection.project(x0, xt, controls)
    assert np.abs(projected).max() <= problem.control_bound
    reached = problem.system.rollout(x0, projected.reshape(20, problem.num_steps, 1))[:, -1]
    np.testing.assert_allclose(reached, xt, atol=1e-9)


class _Refining:
    """A controller whose refinements are given: predict() is the last."""
    name = "refining"

    def __init__(self, refinements):
        self.refinements = refinements

    def predict_refinements(self, a, b):
        return self.refinements

    def predict(self, a, b):
        return self.refinements[-1]


def test_the_final_answer_is_projected_first_and_kept_when_it_arrives(vanderpol):
    problem, x0, xt, u = vanderpol
    # a hopeless first refinement (beyond the bound everywhere), the optimum last
    controller = ProjectedController(_Refining(np.stack([np.full_like(u, 50.0), u])), problem)
    assert controller.name == "refining + Newton projection (10 steps, earlier refinements as fallback starts)"
    np.testing.assert_allclose(controller.predict(x0, xt), u, atol=1e-6)
    assert (controller.residuals < 1e-6).all()


def test_an_earlier_refinement_is_the_fallback_start_where_the_final_answer_misses(vanderpol):
    problem, x0, xt, u = vanderpol
    hopeless = np.full_like(u, 50.0)
    hopeless[0] = u[0]  # the final answer reaches for the first problem only
    controller = ProjectedController(_Refining(np.stack([u, hopeless])), problem, iterations=3)
    chosen = controller.predict(x0, xt)
    assert (controller.residuals < 1e-6).all()
    np.testing.assert_allclose(chosen, u, atol=1e-6)
    only_final = ProjectedController(_Refining(np.stack([u, hopeless])), problem, iterations=3,
                                     every_refinement=False)
    only_final.predict(x0, xt)
    assert (only_final.residuals[1:] > 1e-3).all()  # without the fallback the others stay short
