"""The double integrator: exact discretization, and rollouts in numpy and torch that agree."""

import numpy as np
import pytest
import torch

from trc_lib.errors import TRCError
from trc_lib.tasks import DoubleIntegrator, make_problem


@pytest.fixture
def system():
    return DoubleIntegrator(time_horizon=5.0, num_steps=15)


def test_dt_is_exactly_time_horizon_over_num_steps(system):
    """The guide's 0.33 is a rounding; the discretization must use 5/15 itself."""
    assert system.dt == 5.0 / 15
    assert system.dt != 0.33
    assert DoubleIntegrator(time_horizon=3.0, num_steps=7).dt == 3.0 / 7


def test_matrices_are_the_exact_zero_order_hold_discretization(system):
    dt = 5.0 / 15
    np.testing.assert_array_equal(system.A, [[1.0, dt], [0.0, 1.0]])
    np.testing.assert_array_equal(system.B, [[dt**2 / 2], [dt]])


def test_numpy_rollout_equals_repeated_step(system, rng):
    x0 = rng.uniform(-3, 3, size=(7, 2))
    u = rng.uniform(-4, 4, size=(7, system.num_steps, 1))
    states = system.rollout(x0, u)
    assert states.shape == (7, system.num_steps + 1, 2)
    x = x0
    np.testing.assert_array_equal(states[:, 0], x0)
    for k in range(system.num_steps):
        x = system.step(x, u[:, k])
        np.testing.assert_allclose(states[:, k + 1], x, rtol=0, atol=1e-12)


def test_numpy_and_torch_rollouts_agree_in_float64(system, rng):
    x0 = rng.normal(size=(11, 2)) * 3
    u = rng.normal(size=(11, system.num_steps, 1)) * 3
    expected = system.rollout(x0, u)
    got = system.rollout_torch(torch.tensor(x0, dtype=torch.float64), torch.tensor(u, dtype=torch.float64))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-9)


def test_terminal_state_torch_equals_last_state_of_rollout(system, rng):
    x0 = torch.tensor(rng.normal(size=(9, 2)))
    u = torch.tensor(rng.normal(size=(9, system.num_steps, 1)))
    terminal = system.terminal_state_torch(x0, u)
    assert terminal.shape == (9, 2)
    torch.testing.assert_close(terminal, system.rollout_torch(x0, u)[:, -1], rtol=0, atol=1e-12)


def test_gradients_flow_through_rollout_torch(system, rng):
    """d x_N / d u_k = A^(N-1-k) B, so the gradient of sum(x_N) must equal that, not just exist."""
    x0 = torch.tensor(rng.normal(size=(1, 2)), requires_grad=True)
    u = torch.tensor(rng.normal(size=(1, system.num_steps, 1)), requires_grad=True)
    system.rollout_torch(x0, u)[:, -1].sum().backward()
    N = system.num_steps
    expected_u = [np.ones(2) @ np.linalg.matrix_power(system.A, N - 1 - k) @ system.B for k in range(N)]
    np.testing.assert_allclose(u.grad.numpy().reshape(-1), np.ravel(expected_u), atol=1e-12)
    expected_x0 = np.ones(2) @ np.linalg.matrix_power(system.A, N)
    np.testing.assert_allclose(x0.grad.numpy().reshape(-1), expected_x0, atol=1e-12)


def test_reachability_matrix_is_built_from_powers_of_A(system):
    N = system.num_steps
    by_hand = np.hstack([np.linalg.matrix_power(system.A, N - 1 - j) @ system.B for j in range(N)])
    assert system.reachability_matrix.shape == (2, N)
    np.testing.assert_allclose(system.reachability_matrix, by_hand, rtol=1e-13, atol=1e-13)


def test_reachability_matrix_maps_controls_to_the_terminal_state(system, rng):
    x0 = rng.normal(size=(5, 2))
    u = rng.normal(size=(5, system.num_steps, 1))
    x_N = x0 @ np.linalg.matrix_power(system.A, system.num_steps).T + u[..., 0] @ system.reachability_matrix.T
    np.testing.assert_allclose(system.rollout(x0, u)[:, -1], x_N, atol=1e-12)


def test_make_problem_rejects_unknown_names():
    with pytest.raises(TRCError, match="'segway': not a built-in task"):
        make_problem(system="segway")


@pytest.mark.parametrize("kwargs", [dict(time_horizon=0.0), dict(time_horizon=float("nan")),
                                    dict(num_steps=0), dict(num_steps=2.5)])
def test_system_rejects_bad_horizons(kwargs):
    with pytest.raises(ValueError):
        DoubleIntegrator(**kwargs)
