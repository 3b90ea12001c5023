"""The trajectory explorer, for a task of any state dimension: a toggle between a test case
(chosen by its index) and a problem set by sliders, a slider for every component of the initial
state x_0 and of the target x* that the task lets vary, and one for TRC's supervision step. The
figure and the printed numbers follow the sliders.

What is shown for one problem is the task's view: `TrajectoryView` below for the systems of
trc_lib/tasks/ (or a user's task file); a task folder may bring its own. A view says which state
components get sliders, and over which range (`sliders`), where the others stay (`base_states`),
how to solve a new problem (`solve`) and what to show for one (`show`).

The logic lives in `explore`, a plain function that tests call directly; `trajectory_explorer`
wraps it in `ipywidgets.interactive`, so `ui.children[k].value = ...` re-runs it and
`ui.result` holds what it returned, with or without a browser.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import ControlDataset
from .evaluate import score_controls
from .oracles import oracle_of
from .plots import plot_trajectories


@dataclass(frozen=True)
class StateSlider:
    """One slider: component `index` of x_0 (which "x0") or of x* (which "xt"). Its keyword in
    `explore` is `key`, such as x0_position or xt_velocity; low, high, value and step are in the
    component's units."""

    which: str
    index: int
    name: str
    low: float
    high: float
    value: float
    step: float
    unit: str = ""

    @property
    def key(self) -> str:
        return f"{self.which}_{self.name.replace(' ', '_')}"

    @property
    def description(self) -> str:
        return f"{'x0' if self.which == 'x0' else 'x*'} {self.name}" + (f" ({self.unit})" if self.unit else "")


class TrajectoryView:
    """The explorer's view of a Task (any state dimension): every component of
    x_0 and of x* has a slider; the oracle (closed form, QP or IPOPT) solves a new problem;
    the figure is `plots.plot_trajectories` of the oracle and TRC after the chosen step."""

    def sliders(self, test: ControlDataset) -> list[StateSlider]:
        names = test.problem.system.state_names
        states = np.concatenate([test.initial_states, test.target_states])
        spans = np.maximum(2.0, np.abs(states).max(axis=0))  # per component, symmetric about 0
        x0, xt = self.base_states(test)
        return ([StateSlider("x0", i, name, -spans[i], spans[i], x0[i], 0.05) for i, name in enumerate(names)]
                + [StateSlider("xt", i, name, -spans[i], spans[i], xt[i], 0.05) for i, name in enumerate(names)])

    def base_states(self, test: ControlDataset) -> tuple[np.ndarray, np.ndarray]:
        """Where the sliders start: x_0 = 0, and x* on the task's target (fixed for the nonlinear
        tasks), moved one unit along the first component where the target varies."""
        n = test.problem.system.state_dim
        target = np.asarray(test.metadata.get("target", np.zeros(n)), float)
        varies = np.ptp(test.metadata.get("target_box", [[-1.0, 1.0]]), axis=1).any()
        return np.zeros(n), target + (np.eye(n)[0] if varies else 0.0)

    def case(self, test: ControlDataset, case: int) -> ControlDataset:
        return test.subset([case])  # its label is the oracle's answer: nothing to solve

    def solve(self, test: ControlDataset, x0: np.ndarray, xt: np.ndarray) -> tuple[ControlDataset | None, str]:
        """(The problem [1] with its optimum, or None with why it has none)."""
        problem = test.problem
        oracle = oracle_of(problem)
        solution, success = oracle.optimum(problem, x0[None], xt[None], workers=1)
        if not success[0]:
            return None, (f"x* = {xt} cannot be reached from x0 = {x0} with |u| <= {problem.control_bound}"
                          f" ({oracle.name}: {oracle.failure})")
        return ControlDataset(x0[None], xt[None], solution.control_sequences, solution.state_trajectories,
                              solution.costs, solution.terminal_multipliers, test.metadata), ""

    def show(self, model, case_set: ControlDataset, step: int | None) -> dict:
        """Oracle vs TRC after supervision step `step` (default the last): terminal errors, costs,
        the cost gap, the figure and a line to print."""
        x0, xt = case_set.initial_states, case_set.target_states
        solution = case_set.optimum()
        refinements = model.predict_refinements(x0, xt)
        step = len(refinements) if step is None else int(step)
        trc_controls = refinements[step - 1]
        trc = score_controls(case_set, trc_controls, solution=solution)
        oracle = score_controls(case_set, solution.control_sequences, solution=solution)
        figure = plot_trajectories(case_set.problem, x0, xt, {"oracle": solution.control_sequences,
                                                              f"TRC step {step}/{len(refinements)}": trc_controls},
                                   title=f"x0 = {_short(x0[0])}  ->  x* = {_short(xt[0])}")
        result = {"step": step, "terminal_error_trc": float(trc["terminal_error"][0]),
                  "terminal_error_oracle": float(oracle["terminal_error"][0]),
                  "cost_trc": float(trc["cost"][0]), "cost_oracle": float(solution.costs[0]),
                  "cost_gap": float(trc["cost_gap"][0]), "figure": figure}
        result["line"] = (f"TRC after step {step}/{len(refinements)}: terminal error {result['terminal_error_trc']:.2e}, "
                          f"cost {result['cost_trc']:.4f} vs optimal {result['cost_oracle']:.4f}, "
                          f"cost gap {100 * result['cost_gap']:.4f}%")
        return result


def _short(state: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in state) + ")"


def explore(model, test, source="test case", case=0, step=None, view=None, show=True, **components) -> dict:
    """What the explorer shows for one problem: test case number `case` (scored against its
    stored label) when source is 'test case'; with 'sliders', the problem the slider values set
    (keywords such as x0_position, xt_velocity: `StateSlider.key`), solved by the task's oracle.

    view: the task's view (default TrajectoryView()). Returns the view's numbers and figure with
    'reachable', 'initial_state' and 'target_state'; an unreachable problem has reachable False
    and no figure.
    """
    view = view or TrajectoryView()
    sliders = view.sliders(test)
    unknown = set(components) - {slider.key for slider in sliders}
    if unknown:
        raise ValueError(f"no slider named {', '.join(sorted(unknown))}")
    if source == "test case":
        case_set = view.case(test, case)
    else:
        x0, xt = (state.copy() for state in view.base_states(test))
        for slider in sliders:
            if slider.key in components:
                (x0 if slider.which == "x0" else xt)[slider.index] = components[slider.key]
        case_set, why = view.solve(test, x0, xt)
        if case_set is None:
            if show:
                print(why)
            return {"reachable": False, "figure": None}
    result = {"reachable": True, "initial_state": case_set.initial_states[0].tolist(),
              "target_state": case_set.target_states[0].tolist(), **view.show(model, case_set, step)}
    if show:
        from IPython.display import display
        print(result["line"])
        display(result["figure"])
    return result


def trajectory_explorer(model, test, view=None, show=True):
    """An ipywidgets.interactive over `explore`; its children are, in order: source, case, the
    view's sliders (`view.sliders(test)`: x_0's components, then x*'s), step, then the output."""
    import ipywidgets as w
    view = view or TrajectoryView()
    look = dict(style={"description_width": "120px"}, layout=w.Layout(width="480px"), continuous_update=False)
    controls = {"source": w.ToggleButtons(options=["test case", "sliders"], value="test case", description="problem"),
                "case": w.IntSlider(value=0, min=0, max=len(test) - 1, description="test case", **look)}
    for s in view.sliders(test):
        controls[s.key] = w.FloatSlider(value=s.value, min=s.low, max=s.high, step=s.step, description=s.description,
                                        **look)
    controls["step"] = w.IntSlider(value=model.config.num_refinements, min=1, max=model.config.num_refinements,
                                   description="TRC step", **look)
    return w.interactive(lambda **kw: explore(model, test, view=view, show=show, **kw), **controls)
