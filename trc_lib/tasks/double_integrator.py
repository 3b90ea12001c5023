"""The double integrator x'' = u: the training guide's task, with an exact closed-form oracle.

The minimum-energy transfer from x_0 to x* in T = 5 s over N = 15 intervals with |u| <= 4:
reach x* exactly at t = T, minimizing dt sum_k u_k^2. Initial states and targets are drawn from
[-2, 2]^2 (the bound never binds there; with --state_range -5 5 it does on a good share).
"""

from functools import cached_property

import numpy as np

from ..task import LinearTask


class DoubleIntegrator(LinearTask):
    """x = [position (m), velocity (m/s)], u = [acceleration (m/s^2)]; with a zero-order hold the
    discrete model is exact: A = [[1, dt], [0, 1]], B = [dt^2 / 2, dt]^T."""

    state_names = ("position", "velocity")
    state_units = ("m", "m/s")
    control_names = ("acceleration",)
    control_units = ("m/s^2",)
    time_horizon, num_steps, substeps = 5.0, 15, 1
    control_bounds = ((-4.0, 4.0),)
    initial_box = ((-2.0, 2.0), (-2.0, 2.0))
    target_box = ((-2.0, 2.0), (-2.0, 2.0))
    Q, R, Q_f = 0.0, 1.0, 0.0  # minimum energy, x_N = x*
    objective_name = "min_energy"

    def vector_field(self, x, u, ops):
        return ops.stack([ops.part(x, 1), ops.part(u, 0)])

    @cached_property
    def A(self) -> np.ndarray:
        """[2, 2], in closed form."""
        return np.array([[1.0, self.dt], [0.0, 1.0]])

    @cached_property
    def B(self) -> np.ndarray:
        """[2, 1], in closed form."""
        return np.array([[self.dt ** 2 / 2.0], [self.dt]])
