"""The trajectory explorer: sliders for the initial and target state (or a test case by index)
and for the refinement step; the figure and the printed numbers follow the sliders.

The logic lives in `explore`, a plain function that tests call directly; `trajectory_explorer`
wraps it in `ipywidgets.interactive`, so `ui.children[k].value = ...` re-runs it and
`ui.result` holds what it returned, with or without a browser.
"""

from __future__ import annotations

import numpy as np

from . import optimal
from .data import ControlDataset
from .evaluate import score_controls
from .plots import plot_trajectories


def explore(model, test: ControlDataset, source="test case", case=0, initial_position=0.0, initial_velocity=0.0,
            target_position=1.0, target_velocity=0.0, step=None, show=True) -> dict:
    """Oracle vs TRC (after supervision step `step`, default the last) for one problem.

    source: 'test case' uses test case number `case`; 'sliders' uses the four slider values.
    Returns terminal errors, cost gap, costs and the figure.
    """
    problem = test.problem
    if source == "test case":
        x0, xt = test.initial_states[case:case + 1], test.target_states[case:case + 1]
    else:
        x0, xt = np.array([[initial_position, initial_velocity]]), np.array([[target_position, target_velocity]])
    refinements = model.predict_refinements(x0, xt)
    step = len(refinements) if step is None else int(step)
    trc_controls = refinements[step - 1]
    if problem.objective.terminal_constraint and optimal.reachability_margin(problem, x0, xt)[0] <= 0:
        result = {"reachable": False, "terminal_error_trc": None, "cost_gap": None, "figure": None}
        if show:
            print(f"x* = {xt[0]} cannot be reached from x0 = {x0[0]} with |u| <= {problem.control_bound}")
        return result
    solution = optimal.solve(problem, x0, xt)
    case_set = ControlDataset(x0, xt, solution.control_sequences, solution.state_trajectories, solution.costs,
                              test.metadata)
    trc = score_controls(case_set, trc_controls, solution=solution)
    oracle = score_controls(case_set, solution.control_sequences, solution=solution)
    figure = plot_trajectories(problem, x0, xt, {"oracle": solution.control_sequences,
                                                 f"TRC step {step}/{len(refinements)}": trc_controls},
                               title=f"x0 = ({x0[0, 0]:.2f}, {x0[0, 1]:.2f})  ->  x* = ({xt[0, 0]:.2f}, {xt[0, 1]:.2f})")
    result = {"reachable": True, "initial_state": x0[0].tolist(), "target_state": xt[0].tolist(), "step": step,
              "terminal_error_trc": float(trc["terminal_error"][0]),
              "terminal_error_oracle": float(oracle["terminal_error"][0]),
              "cost_trc": float(trc["cost"][0]), "cost_oracle": float(solution.costs[0]),
              "cost_gap": float(trc["cost_gap"][0]), "figure": figure}
    if show:
        from IPython.display import display
        print(f"TRC after step {step}/{len(refinements)}: terminal error {result['terminal_error_trc']:.2e}, "
              f"cost {result['cost_trc']:.4f} vs optimal {result['cost_oracle']:.4f}, "
              f"cost gap {100 * result['cost_gap']:.4f}%")
        display(figure)
    return result


def trajectory_explorer(model, test: ControlDataset, show=True):
    """An ipywidgets.interactive over `explore`; its children are, in order: source, case,
    initial_position, initial_velocity, target_position, target_velocity, step (then the output)."""
    import ipywidgets as w
    span = float(max(2.0, np.abs(test.initial_states).max(), np.abs(test.target_states).max()))
    look = dict(style={"description_width": "90px"}, layout=w.Layout(width="460px"), continuous_update=False)
    state_slider = lambda description, value: w.FloatSlider(value=value, min=-span, max=span, step=0.05,
                                                            description=description, **look)
    controls = dict(
        source=w.ToggleButtons(options=["test case", "sliders"], value="test case", description="problem"),
        case=w.IntSlider(value=0, min=0, max=len(test) - 1, description="test case", **look),
        initial_position=state_slider("x0 position", 0.0),
        initial_velocity=state_slider("x0 velocity", 0.0),
        target_position=state_slider("x* position", 1.0),
        target_velocity=state_slider("x* velocity", 0.0),
        step=w.IntSlider(value=model.config.num_refinements, min=1, max=model.config.num_refinements,
                         description="TRC step", **look),
    )
    return w.interactive(lambda **kw: explore(model, test, show=show, **kw), **controls)
