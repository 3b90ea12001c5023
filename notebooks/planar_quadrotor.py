"""A planar quadrotor: two rotors, fly from anywhere in a 2 m box to hover at a target.

trc check --system notebooks/planar_quadrotor.py:PlanarQuadrotor   (notebook 09 writes this file)
"""

import numpy as np

from trc_lib import Task


class PlanarQuadrotor(Task):
    """x = [px, pz (m), pitch (rad), vx, vz (m/s), pitch rate (rad/s)]; u = two rotor thrusts (N)."""

    state_names = ("px", "pz", "pitch", "vx", "vz", "pitch rate")
    state_units = ("m", "m", "rad", "m/s", "m/s", "rad/s")
    control_names = ("left thrust", "right thrust")
    control_units = ("N", "N")
    time_horizon, num_steps, substeps = 3.0, 30, 2
    control_bounds = ((0.0, 10.0), (0.0, 10.0))  # a rotor pushes, never pulls
    initial_box = ((-1, 1), (-1, 1), (-0.3, 0.3), (-0.5, 0.5), (-0.5, 0.5), (-0.5, 0.5))
    target_box = ((-1, 1), (-1, 1), (0, 0), (0, 0), (0, 0), (0, 0))  # hover anywhere in the box
    Q, R = 1.0, 0.1  # dt sum(|x - x*|^2 + 0.1 |u|^2), x_N = x* exactly
    mass, inertia, arm, gravity = 1.0, 0.01, 0.25, 9.81  # kg, kg m^2, m, m/s^2

    def vector_field(self, x, u, ops):
        pitch, left, right = ops.part(x, 2), ops.part(u, 0), ops.part(u, 1)
        thrust = left + right
        return ops.stack([ops.part(x, 3), ops.part(x, 4), ops.part(x, 5),
                          -thrust * ops.sin(pitch) / self.mass,
                          thrust * ops.cos(pitch) / self.mass - self.gravity,
                          self.arm * (right - left) / self.inertia])

    def label_starts(self):
        """IPOPT starts from hovering: each rotor carries half the weight."""
        hover = self.mass * self.gravity / 2
        return np.full((1, self.num_steps, self.control_dim), hover)
