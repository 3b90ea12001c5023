"""The forced Van der Pol oscillator: regulate an unstable oscillator to the origin.

x1' = x2, x2' = mu (1 - x1^2) x2 - x1 + u with mu = 1: the origin is unstable (eigenvalues
(1 +- i sqrt 3) / 2), so an open-loop sequence drifts off it. T = 5 s, N = 50 intervals of 4 RK4
substeps, |u| <= 2; from x_0 in [-2, 2]^2 to the origin exactly at t = T, minimizing
dt sum (|x - x*|^2 + u^2). Labels: IPOPT from one start, zero controls (Task.label_starts).
"""

from ..task import Task


class VanDerPol(Task):
    """Forced Van der Pol oscillator, state [position, velocity]:
    x1' = x2,  x2' = mu (1 - x1^2) x2 - x1 + u. For mu > 0 the origin is unstable
    (mu = 1: eigenvalues (1 +- i sqrt 3) / 2), so an open-loop sequence drifts off it."""

    state_names = ("position", "velocity")
    control_names = ("force",)
    time_horizon, num_steps, substeps = 5.0, 50, 4
    control_bounds = ((-2.0, 2.0),)
    initial_box = ((-2.0, 2.0), (-2.0, 2.0))
    Q, R = 1.0, 1.0
    mu = 1.0  # damping parameter

    def vector_field(self, x, u, ops):
        x1, x2 = ops.part(x, 0), ops.part(x, 1)
        return ops.stack([x2, self.mu * (1 - x1 ** 2) * x2 - x1 + ops.part(u, 0)])
