"""The trajectory explorer: sliders for the initial and target state (or a test case by index)
and for the refinement step; the figure and the printed numbers follow the sliders.

The logic lives in `explore`, a plain function that tests call directly; `trajectory_explorer`
wraps it in `ipywidgets.interactive`, so `ui.children[k].value = ...` re-runs it and
`ui.result` holds what it returned, with or without a browser.
"""

from __future__ import annotations

import numpy as np

from .data import ControlDataset
from .evaluate import score_controls
from .oracles import oracle_of
from .plots import plot_trajectories


def explore(model, test: ControlDataset, source="test case", case=0, initial_position=0.0, initial_velocity=0.0,
            target_position=1.0, target_velocity=0.0, step=None, show=True) -> dict:
    """Oracle vs TRC (after supervision step `step`, default the last) for one problem.

    source: 'test case' uses test case number `case` (scored against its stored label);
    'sliders' uses the four slider values (the two state components, whatever the system calls
    them), solved by the oracle (IPOPT on nonlinear systems, a fraction of a second).
    Returns terminal errors, cost gap, costs and the figure.
    """
    problem = test.problem
    if source == "test case":
        case_set = test.subset([case])  # its label is the oracle's answer: nothing to solve
    else:
        x0, xt = np.array([[initial_position, initial_velocity]]), np.array([[target_position, target_velocity]])
        oracle = oracle_of(problem)
        solution, success = oracle.optimum(problem, x0, xt, workers=1)
        if not success[0]:
            if show:
                print(f"x* = {xt[0]} cannot be reached from x0 = {x0[0]} with |u| <= {problem.control_bound}"
                      f" ({oracle.name}: {oracle.failure})")
            return {"reachable": False, "terminal_error_trc": None, "cost_gap": None, "figure": None}
        case_set = ControlDataset(x0, xt, solution.control_sequences, solution.state_trajectories, solution.costs,
                                  solution.terminal_multipliers, test.metadata)
    x0, xt = case_set.initial_states, case_set.target_states
    solution = case_set.optimum()
    refinements = model.predict_refinements(x0, xt)
    step = len(refinements) if step is None else int(step)
    trc_controls = refinements[step - 1]
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
    position, velocity = test.problem.system.state_names
    # x* starts on the task's target (fixed for the nonlinear tasks), one unit right of it otherwise
    target = np.asarray(test.metadata.get("target_center", (0.0, 0.0)), float)
    low, high = test.metadata.get("target_range", (-1.0, 1.0))
    target = target + (np.array([1.0, 0.0]) if high > low else 0.0)
    look = dict(style={"description_width": "90px"}, layout=w.Layout(width="460px"), continuous_update=False)
    state_slider = lambda description, value: w.FloatSlider(value=value, min=-span, max=span, step=0.05,
                                                            description=description, **look)
    controls = dict(
        source=w.ToggleButtons(options=["test case", "sliders"], value="test case", description="problem"),
        case=w.IntSlider(value=0, min=0, max=len(test) - 1, description="test case", **look),
        initial_position=state_slider(f"x0 {position}", 0.0),
        initial_velocity=state_slider(f"x0 {velocity}", 0.0),
        target_position=state_slider(f"x* {position}", float(target[0])),
        target_velocity=state_slider(f"x* {velocity}", float(target[1])),
        step=w.IntSlider(value=model.config.num_refinements, min=1, max=model.config.num_refinements,
                         description="TRC step", **look),
    )
    return w.interactive(lambda **kw: explore(model, test, show=show, **kw), **controls)
