"""Generalization: score trained controllers on problems unlike their training data.

The studies the guide's "next steps" and the Beyond issue ask for, for every system: larger
initial deviations (wider boxes), other time horizons (the same N steps over another T, so
another dt), targets outside the training box (double integrator; the nonlinear tasks have a
fixed target), and another Van der Pol mu. Each draws fresh problems solved by the oracle
(exact QP, or IPOPT for the nonlinear systems), so every number is against the optimum of the
new problem, while the controllers keep what they learned on the old one.
"""

from __future__ import annotations

import numpy as np

from ..compare import format_percent
from ..data import ControlDataset, generate_dataset
from ..evaluate import metrics, score_controls
from ..task import Task

STUDIES = {"box": "half-width v of the box for x0 (and x* on the double integrator)",
           "target_box": "half-width v of the box for x*", "horizon": "horizon T [s]",
           "mu": "Van der Pol mu"}


def score_on(controllers: dict, problem, state_range, target_range=None, num_samples=500, seed=7,
             success_threshold=0.1) -> dict:
    """{name: metrics} for controllers {name: predict(initial_states, target_states)} on fresh
    problems, plus 'oracle': the optimum of these problems (the reference, not a controller
    trained elsewhere)."""
    test = generate_dataset(problem, num_samples, seed=seed, state_range=state_range, target_range=target_range)
    answers = {name: predict(test.initial_states, test.target_states) for name, predict in controllers.items()}
    answers["oracle"] = test.control_sequences
    return {name: metrics(score_controls(test, controls, success_threshold), success_threshold)
            for name, controls in answers.items()}


def studies_for(problem: Task) -> list[str]:
    """The studies that make sense for a problem's system."""
    name = problem.system.name
    return ["box", "target_box", "horizon"] if name == "double_integrator" else \
        ["box", "horizon", "mu"] if name == "vanderpol" else ["box", "horizon"]


def sweep(controllers: dict, study: str, values, num_samples=500, seed=7, train: ControlDataset | None = None
          ) -> list[dict]:
    """Rows {study, value, controller, success_rate, median terminal error, median cost gap},
    for each of `controllers` and the oracle of each new problem.

    train: the training set, whose problem and boxes are the starting point (default: the
    default double integrator trained on [-2, 2]^2). study: 'box' (x0 from [-v, v]^2; x* from
    the same box on the double integrator, the task's fixed target otherwise), 'target_box'
    (x* from [-v, v]^2), 'horizon' (T = v seconds, same number of steps), 'mu' (Van der Pol).
    """
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; choose one of {list(STUDIES)}")
    if train is None:
        from ..tasks import make_problem
        problem, state_range, target_range = make_problem(), (-2.0, 2.0), (-2.0, 2.0)
    else:
        problem = train.problem
        # the studied tasks draw every component from one range: the first component's
        state_range, target_range = tuple(train.metadata["initial_box"][0]), tuple(train.metadata["target_box"][0])
    if study not in studies_for(problem):
        raise ValueError(f"study {study!r} does not apply to {problem.system.name}; choose one of "
                         f"{studies_for(problem)}")
    follows_box = problem.system.name == "double_integrator" and target_range == state_range
    rows = []
    for value in values:
        value = float(value)
        new_problem, new_states, new_targets = problem, state_range, target_range
        if study == "box":
            new_states = (-value, value)
            new_targets = new_states if follows_box else target_range
        elif study == "target_box":
            new_targets = (-value, value)
        elif study == "horizon":
            new_problem = problem.replace(time_horizon=value)
        else:
            new_problem = problem.replace(mu=value)
        results = score_on(controllers, new_problem, new_states, new_targets, num_samples, seed)
        for name, m in results.items():
            rows.append({"study": study, "value": value, "controller": name, "success_rate": m["success_rate"],
                         "terminal_error_median": m["terminal_error"]["median"],
                         "cost_gap_median": m["cost_gap"]["median"]})
    return rows


def study_values(train: ControlDataset) -> tuple[dict, dict]:
    """({study: values to sweep}, {study: the training value}) around a training set's settings."""
    half_width = np.abs(train.metadata["initial_box"]).max()
    target_half_width = np.abs(train.metadata["target_box"]).max()
    T = train.problem.system.time_horizon
    values = {"box": [round(half_width * f, 6) for f in (0.5, 1, 1.25, 1.5, 2, 2.5)],
              "target_box": [round(max(target_half_width, 1e-3) * f, 6) for f in (1, 1.5, 2)],
              "horizon": [round(T * f, 6) for f in (0.8, 0.9, 1, 1.1, 1.2)],
              "mu": [0.5, 1.0, 1.5, 2.0]}
    trained_at = {"box": half_width, "target_box": target_half_width, "horizon": T,
                  "mu": getattr(train.problem.system, "mu", None)}
    return values, trained_at


def format_rows(rows: list[dict]) -> str:
    """One line per row of `sweep`, for printing."""
    return "\n".join(f"{r['study']:>10} {r['value']:5.2f} {r['controller']:>14}: success {100 * r['success_rate']:5.1f}%, "
                     f"median error {r['terminal_error_median']:.1e}, median gap {format_percent(r['cost_gap_median'])}"
                     for r in rows)
