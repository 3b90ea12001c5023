"""Generalization: score trained controllers on problems unlike their training data.

Three studies, as the guide's "next steps" ask: larger initial deviations (wider boxes),
other time horizons (the same 15 steps over another T, so another dt), and targets outside
the training box. Each draws fresh exact solutions, so every number is against the optimum.
"""

from __future__ import annotations

from .data import generate_dataset, make_problem
from .compare import format_percent
from .evaluate import metrics, score_controls


def score_on(controllers: dict, problem, state_range, target_range=None, num_samples=500, seed=7,
             success_threshold=0.1) -> dict:
    """{name: metrics} for controllers {name: predict(initial_states, target_states)} on fresh
    problems, plus 'oracle': the exact optimum of these problems (the reference, not a controller
    trained elsewhere)."""
    test = generate_dataset(problem, num_samples, seed=seed, state_range=state_range, target_range=target_range)
    answers = {name: predict(test.initial_states, test.target_states) for name, predict in controllers.items()}
    answers["oracle"] = test.control_sequences
    return {name: metrics(score_controls(test, controls, success_threshold), success_threshold)
            for name, controls in answers.items()}


def sweep(controllers: dict, study: str, values, num_samples=500, seed=7) -> list[dict]:
    """Rows {study, value, controller, success_rate, median terminal error, median cost gap},
    for each of `controllers` and the oracle of each new problem.

    study: 'box' (x0 and x* from [-v, v]^2), 'target_box' (x0 from [-2, 2]^2, x* from [-v, v]^2)
    or 'horizon' (T = v seconds, x0 and x* from [-2, 2]^2).
    """
    rows = []
    for value in values:
        value = float(value)
        if study == "box":
            results = score_on(controllers, make_problem(), (-value, value), None, num_samples, seed)
        elif study == "target_box":
            results = score_on(controllers, make_problem(), (-2.0, 2.0), (-value, value), num_samples, seed)
        elif study == "horizon":
            results = score_on(controllers, make_problem(time_horizon=value), (-2.0, 2.0), None, num_samples, seed)
        else:
            raise ValueError(f"unknown study {study!r}; choose 'box', 'target_box' or 'horizon'")
        for name, m in results.items():
            rows.append({"study": study, "value": value, "controller": name, "success_rate": m["success_rate"],
                         "terminal_error_median": m["terminal_error"]["median"],
                         "cost_gap_median": m["cost_gap"]["median"]})
    return rows


def format_rows(rows: list[dict]) -> str:
    """One line per row of `sweep`, for printing."""
    return "\n".join(f"{r['study']:>10} {r['value']:5.2f} {r['controller']:>14}: success {100 * r['success_rate']:5.1f}%, "
                     f"median error {r['terminal_error_median']:.1e}, median gap {format_percent(r['cost_gap_median'])}"
                     for r in rows)
