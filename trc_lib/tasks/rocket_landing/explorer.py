"""The rocket landing's view for the trajectory explorer (widgets.py): sliders for the initial
position and velocity; the optimum, TRC's answer after the chosen step and TRC's after its
correction follow them (notebook 08).

    trajectory_explorer(model, test, view=LandingView(model.problem))

The target (the pad, r = v = 0) and the initial mass (a full tank) are the task's own, so they
have no sliders.
"""

from __future__ import annotations

import numpy as np

from ...data import ControlDataset
from .problem import INITIAL_BOX, RocketLanding
from ...widgets import StateSlider

POSITIONS = ("x", "y", "altitude")  # m
START = {"x": 1500.0, "y": 0.0, "altitude": 1500.0, "vx": 0.0, "vy": 0.0, "vz": -60.0}  # m, m/s


class LandingView:
    """The explorer's view of the rocket landing. program: the LandingConeProgram that solves a
    new problem (its flight-time search, about a quarter of a second); laid out once here, so
    each move of a slider solves without rebuilding it."""

    def __init__(self, landing: RocketLanding):
        from .cone_program import LandingConeProgram
        self.landing = landing
        self.program = LandingConeProgram(landing)

    def sliders(self, test=None) -> list[StateSlider]:
        """x_0's position (m) and velocity (m/s) over the task's box (INITIAL_BOX)."""
        names = self.landing.system.state_names[:6]
        return [StateSlider("x0", i, name, *INITIAL_BOX[name], START[name], 50.0 if name in POSITIONS else 1.0,
                            "m" if name in POSITIONS else "m/s") for i, name in enumerate(names)]

    def base_states(self, test=None) -> tuple[np.ndarray, np.ndarray]:
        """x_0 with a full tank (the sliders set the rest), x* on the pad with the dry mass."""
        vehicle = self.landing.vehicle
        x0, xt = np.zeros(7), np.zeros(7)
        x0[:6] = [START[name] for name in self.landing.system.state_names[:6]]
        x0[6], xt[6] = vehicle.wet_mass, vehicle.dry_mass
        return x0, xt

    def case(self, test: ControlDataset, case: int) -> ControlDataset:
        return test.subset([case])  # its label is the optimum: nothing to solve

    def solve(self, test, x0: np.ndarray, xt: np.ndarray) -> tuple[ControlDataset | None, str]:
        """(The problem [1] with its optimum, or None with why it has none)."""
        from .cone_program import best_landing
        solution, _ = best_landing(self.program, x0, xt)
        if solution is None:
            return None, "no landing exists from here (the cone program is infeasible at every flight time)"
        time_horizons = np.array([solution.final_time])
        thrusts, _ = self.landing.accelerations_to_thrusts(x0[None, 6], solution.accelerations[None], time_horizons)
        states = self.landing.rollout(x0[None], thrusts, time_horizons)
        return ControlDataset(x0[None], xt[None], thrusts, states, self.landing.fuel(states),
                              np.zeros((1, 7)), {}, time_horizons=time_horizons), ""

    def show(self, model, case_set: ControlDataset, step: int | None) -> dict:
        """The optimum, TRC after supervision step `step` (default the last) and TRC's final answer
        after its correction: fuel (kg), flight time (s), landing position error (m) and largest
        glide-slope violation (m) of each, the figure and a line to print."""
        from .plots import plot_landings
        x0, xt = case_set.initial_states, case_set.target_states
        refinements = model.predict_refinements(x0, xt)
        step = len(refinements) if step is None else int(step)
        answers = {"optimum": (case_set.control_sequences, case_set.time_horizons),
                   f"TRC step {step}/{len(refinements)}": model.split(refinements[step - 1]),
                   "TRC + correction": model.predict_corrected(x0, xt)}
        result, flights = {"step": step}, []
        for name, (thrusts, time_horizons) in answers.items():
            states = self.landing.rollout(x0, thrusts, time_horizons)
            glide = self.landing.constraint_violations(states, thrusts, time_horizons).get("glide_slope", np.zeros(1))
            result[name] = {"fuel": float(self.landing.fuel(states)[0]), "final_time": float(time_horizons[0]),
                            "position_error": float(np.linalg.norm(states[0, -1, :3] - xt[0, :3])),
                            "glide_slope_violation": float(glide[0])}
            flights.append({"label": f"{name}: {result[name]['fuel']:.1f} kg, lands within "
                                     f"{result[name]['position_error']:.2g} m", "states": states[0],
                            "thrusts": thrusts[0], "final_time": time_horizons[0]})
        result["figure"] = plot_landings(self.landing, flights)
        result["line"] = "; ".join(flight["label"] for flight in flights)
        return result
