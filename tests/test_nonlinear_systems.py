"""Van der Pol and the pendulum: one vector field, the same RK4 in numpy, torch and CasADi."""

import numpy as np
import pytest
import torch

from trc_lib.integrators import NUMPY_OPS
from trc_lib.tasks import Pendulum, VanDerPol
from trc_lib.oracles.shooting import TrajectoryOptimizer

SYSTEMS = [VanDerPol(), Pendulum(damping=0.1)]


@pytest.mark.parametrize("system", SYSTEMS, ids=lambda s: s.name)
def test_numpy_and_torch_rollouts_agree_in_float64(system):
    rng = np.random.default_rng(0)
    x0, u = rng.uniform(-1.5, 1.5, (20, 2)), rng.uniform(-2, 2, (20, system.num_steps, 1))
    expected = system.rollout(x0, u)
    got = system.rollout_torch(torch.tensor(x0), torch.tensor(u)).numpy()
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("system", SYSTEMS, ids=lambda s: s.name)
def test_the_trajectory_optimizer_integrates_exactly_like_the_system(system):
    optimizer = TrajectoryOptimizer(system.casadi_vector_field(), 2, 1, system.time_horizon, system.num_steps,
                                    substeps=system.substeps)
    rng = np.random.default_rng(1)
    x0, u = rng.uniform(-1, 1, (5, 2)), rng.uniform(-1, 1, (5, system.num_steps, 1))
    np.testing.assert_allclose(optimizer.rollout(x0, u), system.rollout(x0, u), rtol=0, atol=1e-12)


def test_torch_rollout_is_differentiable():
    system = VanDerPol()
    u = torch.zeros(3, system.num_steps, 1, dtype=torch.float64, requires_grad=True)
    system.terminal_state_torch(torch.full((3, 2), 0.5, dtype=torch.float64), u).sum().backward()
    assert u.grad is not None and u.grad.abs().sum() > 0


def test_van_der_pol_origin_is_unstable_with_the_known_eigenvalues():
    system, eps = VanDerPol(mu=1.0), 1e-7
    jacobian = np.stack([(system.vector_field(eps * e, np.zeros(1), NUMPY_OPS)
                          - system.vector_field(-eps * e, np.zeros(1), NUMPY_OPS)) / (2 * eps) for e in np.eye(2)],
                        axis=1)
    eigenvalues = np.sort_complex(np.linalg.eigvals(jacobian))
    np.testing.assert_allclose(eigenvalues, [(1 - 1j * np.sqrt(3)) / 2, (1 + 1j * np.sqrt(3)) / 2], atol=1e-6)


def test_undamped_unforced_pendulum_conserves_energy():
    system = Pendulum(damping=0.0, num_steps=200, substeps=4)
    x0 = np.array([[2.0, 0.5], [0.1, -1.0]])
    states = system.rollout(x0, np.zeros((2, system.num_steps, 1)))
    energy = 0.5 * states[..., 1] ** 2 - system.gravity / system.length * np.cos(states[..., 0])
    assert np.abs(energy - energy[:, :1]).max() < 1e-6
    assert np.abs(states[:, -1] - states[:, 0]).max() > 0.1  # it did move


@pytest.mark.parametrize("kwargs", [dict(time_horizon=0.0), dict(num_steps=0), dict(substeps=1.5)])
def test_nonlinear_systems_reject_bad_horizons(kwargs):
    with pytest.raises(ValueError):
        VanDerPol(**kwargs)
