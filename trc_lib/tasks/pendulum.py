"""The pendulum swing-up: from near hanging to upright with a torque too weak to lift it directly.

theta'' = -(g / l) sin(theta) - damping theta' + u / (m l^2), m = l = 1, g = 9.81, T = 5 s,
N = 50 intervals of 4 RK4 substeps, |u| <= 3 < m g l: it must pump. From within 0.5 (rad, rad/s)
of hanging (0, 0) to upright (pi, 0) exactly at t = T, minimizing dt sum (|x - x*|^2 + u^2).

The swing-up has two local optima for many initial states (swing left or right first), so IPOPT
starts three times: from zero torque, and from bang-bang pumping at the natural frequency
sqrt(g / l) pushing either way first; the best converged start is the label.
"""

import numpy as np

from ..task import Task


class Pendulum(Task):
    """Damped pendulum driven by a torque, state [angle (0: hanging, pi: upright), angular velocity]:
    theta'' = -(g / l) sin(theta) - damping theta' + u / (m l^2)."""

    state_names = ("angle", "angular velocity")
    state_units = ("rad", "rad/s")
    control_names = ("torque",)
    control_units = ("N m",)
    time_horizon, num_steps, substeps = 5.0, 50, 4
    control_bounds = ((-3.0, 3.0),)
    initial_box = ((-0.5, 0.5), (-0.5, 0.5))
    target = (np.pi, 0.0)
    Q, R = 1.0, 1.0
    mass, length, gravity, damping = 1.0, 1.0, 9.81, 0.0  # kg, m, m/s^2, 1/s

    def vector_field(self, x, u, ops):
        theta, omega = ops.part(x, 0), ops.part(x, 1)
        alpha = (-(self.gravity / self.length) * ops.sin(theta) - self.damping * omega
                 + ops.part(u, 0) / (self.mass * self.length ** 2))
        return ops.stack([omega, alpha])

    def label_starts(self) -> np.ndarray:
        """[3, N, 1]: zero torque, and pumping either way first."""
        t = np.arange(self.num_steps) * self.dt
        pump = self.control_upper[0] * np.sign(np.sin(np.sqrt(self.gravity / self.length) * t + 1e-9))
        return np.stack([np.zeros(self.num_steps), pump, -pump])[:, :, None]
