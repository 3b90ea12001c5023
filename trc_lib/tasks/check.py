"""`trc check --system FILE.py:ClassName`: a task file validated before anything long runs.

    1. it loads: the class exists, subclasses Task, its fields are consistent (load_task);
    2. its vector field is [B, n] and finite on states of its initial box;
    3. the four versions of its dynamics agree: x_N from the numpy rollout, the torch rollout, the
       CasADi integrator the optimizer uses, and the compiled C terminal map (with its derivative
       against torch's autograd), to 1e-9 relative;
    4. a handful of problems drawn from its boxes are solved by its oracle, and the labels reach
       their targets (a task whose targets cannot be reached within its bounds stops here).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import TRCError
from . import load_task

AGREEMENT = 1e-9  # relative: what the four versions of x_N may differ by (round-off of one integrator)


def check_task(spec: str, num_labels: int = 4, seed: int = 0, log=print, **parameters) -> dict:
    """Run every check on the task `spec` names (TRCError at the first that fails, naming it).
    Returns what was measured: {"differences": {version: largest relative difference}, "labels":
    solved of tried, "terminal_error": the labels' largest miss}."""
    task = load_task(spec, **parameters)
    where = spec
    log(f"{where}: {task.state_dim} states {list(task.state_names)}, {task.control_dim} controls "
        f"{list(task.control_names)}, N = {task.num_steps}, dt = {task.dt:g} s, oracle: {task.oracle}")
    rng = np.random.default_rng(seed)
    x0, xt = task.draw_problems(rng, 8)
    u = rng.uniform(task.control_lower, task.control_upper, size=(8, task.num_steps, task.control_dim))
    differences = dynamics_differences(task, x0, u)
    log("x_N agrees across " + ", ".join(f"{k} ({v:.1e})" for k, v in differences.items()))
    worst = max(differences, key=differences.get)
    if differences[worst] > AGREEMENT:
        raise TRCError(f"{where}: x_N from {worst} differs from numpy's by {differences[worst]:.1e} (relative), "
                       f"more than {AGREEMENT:g}: is vector_field written against ops only?")
    from ..oracles import optimum
    x0, xt = task.draw_problems(rng, num_labels)
    solution, success = optimum(task, x0, xt, workers=1)
    log(f"labels: {int(success.sum())} of {num_labels} problems solved by the oracle")
    if not success.any():
        raise TRCError(f"{where}: the oracle reached none of {num_labels} targets drawn from its target_box from "
                       f"its initial_box within its control_bounds (horizon {task.time_horizon:g} s): widen the "
                       f"bounds, lengthen the horizon or narrow the boxes")
    reached = task.terminal_miss(solution.state_trajectories[success, -1], xt[success])
    log(f"the solved labels miss their targets by at most {reached.max():.1e}; the task is ready: "
        f"trc generate --system {spec}")
    return {"differences": differences, "labels": [int(success.sum()), num_labels],
            "terminal_error": float(reached.max())}


def dynamics_differences(task, initial_states: np.ndarray, controls: np.ndarray) -> dict:
    """{version: the largest |x_N - x_N(numpy)| / (1 + |x_N(numpy)|)} over the problems, for the
    torch rollout, the optimizer's CasADi integrator, the compiled terminal map and its derivative
    (dx_N/du against autograd's through the torch rollout)."""
    from ..oracles.labels import make_optimizer
    from ..terminal_map import terminal_map
    reference = task.rollout(initial_states, controls)[:, -1]
    scale = 1.0 + np.abs(reference)
    x0_t, u_t = torch.as_tensor(initial_states), torch.as_tensor(controls)
    versions = {"torch": task.terminal_state_torch(x0_t, u_t).detach().numpy()}
    if not task.is_linear:
        versions["casadi"] = make_optimizer(task).rollout(initial_states, controls)[:, -1]
    mapped = terminal_map(task)
    versions["compiled" if getattr(mapped, "compiled", False) else "terminal map"] = \
        mapped.terminal_states(x0_t, u_t).numpy()
    differences = {name: float((np.abs(x - reference) / scale).max()) for name, x in versions.items()}
    jacobian = mapped.jacobian(x0_t, u_t).numpy()
    autograd = torch.autograd.functional.jacobian(lambda u: task.terminal_state_torch(x0_t[:1], u), u_t[:1])
    expected = autograd.reshape(task.state_dim, -1).numpy()
    differences["derivative"] = float(np.abs(jacobian[0] - expected).max() / (1.0 + np.abs(expected).max()))
    return differences
