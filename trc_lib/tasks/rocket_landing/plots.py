"""Figures of rocket landings: the 3-D path in its glide cone, the ground track, the thrust
magnitude against the annulus, and the mass (notebook 08, benchmarks/landing.py)."""

from __future__ import annotations

import numpy as np

from .problem import RocketLanding


def plot_landings(landing: RocketLanding, flights: list[dict], title: str | None = None):
    """One figure, four panels, for several flights of the same problem.

    flights: dicts with label, states [N+1, 7], thrusts [N, 3] (N), final_time (s) and optionally
    style (a matplotlib format string). Returns the figure."""
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(13, 7.5))
    path = fig.add_subplot(2, 2, 1, projection="3d")
    track, thrust, mass = (fig.add_subplot(2, 2, i) for i in (2, 3, 4))
    reach = max(np.linalg.norm(f["states"][:, :2], axis=1).max() for f in flights) * 1.1
    if landing.glide_slope > 0:  # the cone the path must stay above
        radius, angle = np.meshgrid(np.linspace(0, reach, 8), np.linspace(0, 2 * np.pi, 40))
        path.plot_surface(radius * np.cos(angle), radius * np.sin(angle), radius * landing.glide_slope_tangent,
                          alpha=0.12, color="gray")
    for i, flight in enumerate(flights):
        style = flight.get("style", "-" if i == 0 else "--")
        states, thrusts, final_time = flight["states"], flight["thrusts"], flight["final_time"]
        times = np.linspace(0.0, final_time, landing.num_steps + 1)
        path.plot(*states[:, :3].T, style, label=flight["label"])
        track.plot(states[:, 0], states[:, 1], style, label=flight["label"])
        thrust.step(times[:-1], np.linalg.norm(thrusts, axis=-1), style, where="post", label=flight["label"])
        mass.plot(times, states[:, 6], style, label=flight["label"])
    path.set_xlabel("downrange (m)"), path.set_ylabel("crossrange (m)"), path.set_zlabel("altitude (m)")
    path.legend(loc="upper left", fontsize=8)
    track.plot(0, 0, "kx")
    track.set_xlabel("downrange (m)"), track.set_ylabel("crossrange (m)"), track.set_title("ground track")
    track.axis("equal")
    for bound, name in ((landing.vehicle.thrust_min, "rho_1"), (landing.vehicle.thrust_max, "rho_2")):
        thrust.axhline(bound, color="gray", lw=0.8)
        thrust.annotate(name, (0, bound), textcoords="offset points", xytext=(2, 2), fontsize=8, color="gray")
    thrust.set_xlabel("time (s)"), thrust.set_ylabel("thrust at each interval's start (N)")
    thrust.set_title("thrust magnitude: the optimum is max-min-max"), thrust.legend(fontsize=8)
    mass.axhline(landing.vehicle.dry_mass, color="gray", lw=0.8)
    mass.set_xlabel("time (s)"), mass.set_ylabel("mass (kg)"), mass.set_title("mass (dry mass in gray)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
