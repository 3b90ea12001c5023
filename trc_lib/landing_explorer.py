"""The rocket landing's explorer: sliders for the initial position and velocity; the oracle's
landing, TRC's and TRC's after its correction follow them (notebook 08).

The logic lives in `explore_landing`, a plain function that tests call directly;
`landing_explorer` wraps it in `ipywidgets.interactive`, so `ui.children[k].value = ...` re-runs
it and `ui.result` holds what it returned, with or without a browser.
"""

from __future__ import annotations

import numpy as np

from .rocket_landing import INITIAL_BOX, STATE_NAMES

SLIDERS = STATE_NAMES[:6]  # x, y, altitude (m), vx, vy, vz (m/s); the tank starts full


def explore_landing(model, program, x=1500.0, y=0.0, altitude=1500.0, vx=0.0, vy=0.0, vz=-60.0,
                    show=True) -> dict:
    """The optimum (program: a LandingConeProgram, its flight-time search), TRC's answer and TRC's
    after its correction, from r_0 = (x, y, altitude) m and v_0 = (vx, vy, vz) m/s with a full tank.
    Returns fuel (kg), landing position errors (m) and glide-slope violations (m) of each, and
    the figure; 'reachable' False (and no figure) when the cone program finds no landing."""
    from .landing_plots import plot_landings
    from .oracles.cone_program import best_landing
    landing = model.problem
    x0 = np.array([[x, y, altitude, vx, vy, vz, landing.vehicle.wet_mass]])
    xt = np.zeros((1, 7))
    xt[0, 6] = landing.vehicle.dry_mass
    solution, _ = best_landing(program, x0[0], xt[0])
    if solution is None:
        if show:
            print("no landing exists from here (the cone program is infeasible at every flight time)")
        return {"reachable": False, "figure": None}
    optimum, _ = landing.accelerations_to_thrusts(x0[:, 6], solution.accelerations[None], [solution.final_time])
    answers = {"optimum": (optimum, np.array([solution.final_time])), "TRC": model.predict(x0, xt),
               "TRC + correction": model.predict_corrected(x0, xt)}
    result, flights = {"reachable": True, "initial_state": x0[0].tolist()}, []
    for name, (thrusts, final_times) in answers.items():
        states = landing.rollout(x0, thrusts, final_times)
        glide = landing.constraint_violations(states, thrusts, final_times).get("glide_slope", np.zeros(1))
        result[name] = {"fuel": float(landing.fuel(states)[0]), "final_time": float(final_times[0]),
                        "position_error": float(np.linalg.norm(states[0, -1, :3] - xt[0, :3])),
                        "glide_slope_violation": float(glide[0])}
        flights.append({"label": f"{name}: {result[name]['fuel']:.1f} kg, lands within "
                                 f"{result[name]['position_error']:.2g} m", "states": states[0],
                        "thrusts": thrusts[0], "final_time": final_times[0]})
    result["figure"] = plot_landings(landing, flights)
    if show:
        from IPython.display import display
        display(result["figure"])
    return result


def landing_explorer(model, show=True):
    """An ipywidgets.interactive over `explore_landing`; its children are the sliders x, y,
    altitude, vx, vy, vz (the task's box, INITIAL_BOX), then the output."""
    import ipywidgets as w
    from .oracles.cone_program import LandingConeProgram
    program = LandingConeProgram(model.problem)  # laid out once: each move solves, it does not rebuild
    start = {"x": 1500.0, "y": 0.0, "altitude": 1500.0, "vx": 0.0, "vy": 0.0, "vz": -60.0}
    look = dict(style={"description_width": "90px"}, layout=w.Layout(width="460px"), continuous_update=False)
    sliders = {name: w.FloatSlider(value=start[name], min=INITIAL_BOX[name][0], max=INITIAL_BOX[name][1],
                                   step=50.0 if name in ("x", "y", "altitude") else 1.0,
                                   description=f"{name} ({'m' if name in ('x', 'y', 'altitude') else 'm/s'})",
                                   **look) for name in SLIDERS}
    return w.interactive(lambda **kw: explore_landing(model, program, show=show, **kw), **sliders)
