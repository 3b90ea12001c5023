"""Honest metrics for a rocket-landing controller, in physical units, against the cone program.

A controller answers each test case with thrusts T_k (N, at each interval's start) and a flight
time t_f (s). The answer is flown through the exact dynamics (problem.py: thrust per unit
mass held over each interval, nothing clipped or corrected) and scored:

- landing errors  |r_N - r*| (m) and |v_N - v*| (m/s); success: both within the thresholds
                  (5 m and 1 m/s by default);
- fuel            m_0 - m_N (kg), and the fuel gap (fuel - fuel*) / fuel* against the oracle's
                  best flight time. A controller that misses the pad can use less fuel than the
                  optimum (stopping short is cheaper), so the gap is also reported over the
                  successful landings alone, and always next to the success rate;
- violations      the largest violation of each constraint (rocket_landing.constraint_violations:
                  thrust bounds in N, glide slope in m, dry mass in kg, pointing in degrees),
                  reported as they are: nothing is clipped first;
- flight time     |t_f - t_f*| (s).
"""

from __future__ import annotations

import numpy as np

from ...data import ControlDataset
from ...errors import TRCError
from ...evaluate import summarize
from .model import ACCEPT_WITHIN, CORRECTION_STEPS

SUCCESS_POSITION = 5.0  # m
SUCCESS_VELOCITY = 1.0  # m/s


def score_landings(test: ControlDataset, thrusts, time_horizons, success_position: float = SUCCESS_POSITION,
                   success_velocity: float = SUCCESS_VELOCITY) -> dict:
    """Per-case arrays [B]: position_error, velocity_error, success, fuel, fuel_gap, final_time_error,
    and violation_NAME for each constraint; state_trajectories [B, N+1, 7].

    thrusts [B, N, 3] (N), time_horizons [B] (s); test: a rocket_landing dataset (its labels are the optimum)."""
    landing = test.problem
    thrusts = np.asarray(thrusts, np.float64)
    time_horizons = np.asarray(time_horizons, np.float64)
    if thrusts.shape != test.control_sequences.shape or time_horizons.shape != (len(test),):
        raise TRCError(f"thrusts {list(thrusts.shape)} and time_horizons {list(time_horizons.shape)}: expected "
                       f"{list(test.control_sequences.shape)} and [{len(test)}]")
    if not (np.isfinite(thrusts).all() and np.isfinite(time_horizons).all() and (time_horizons > 0).all()):
        raise TRCError("thrusts and time_horizons must be finite, the flight times positive")
    states = landing.rollout(test.initial_states, thrusts, time_horizons)
    miss = states[:, -1, :6] - test.target_states[:, :6]
    position_error, velocity_error = np.linalg.norm(miss[:, :3], axis=1), np.linalg.norm(miss[:, 3:], axis=1)
    fuel = landing.fuel(states)
    scores = {"position_error": position_error, "velocity_error": velocity_error,
              "success": (position_error < success_position) & (velocity_error < success_velocity),
              "fuel": fuel, "fuel_gap": (fuel - test.costs) / test.costs,
              "final_time_error": np.abs(time_horizons - test.time_horizons), "state_trajectories": states}
    for name, worst in landing.constraint_violations(states, thrusts, time_horizons).items():
        scores[f"violation_{name}"] = worst
    return scores


def landing_metrics(scores: dict) -> dict:
    """Summary statistics of score_landings' output (JSON-ready)."""
    success = scores["success"]
    summary = {"success_rate": float(np.mean(success)),
               **{key: summarize(scores[key]) for key in ("position_error", "velocity_error", "fuel", "fuel_gap",
                                                          "final_time_error")},
               "fuel_gap_of_successes": summarize(scores["fuel_gap"][success]) if success.any() else None}
    for key in scores:
        if key.startswith("violation_"):
            summary[key] = {"max": float(scores[key].max()), "fraction": float(np.mean(scores[key] > 0))}
    return summary




def evaluate_landing_model(model, test: ControlDataset, correction_steps: int = CORRECTION_STEPS,
                           timing_batches=(1, 1000), accept_within=ACCEPT_WITHIN) -> list[dict]:
    """Rows for the network's answer, for it after its correction step, and for it corrected only
    where its exact flight misses by more than accept_within (predict_corrected; None leaves that
    row out): metrics on `test`, the share of answers corrected, and time per problem at each of
    timing_batches (median and mean over calls, after warm-up)."""
    from ...evaluate import time_inference
    x0, xt = test.initial_states, test.target_states
    network = model.predict(x0, xt)
    controllers = [(getattr(model, "name", "TRC"), model.predict, 0.0)]  # an ONNX model names itself
    if hasattr(model, "predict_corrected"):  # an ONNX model has the network only
        controllers.append((f"TRC + correction (Gauss-Newton, up to {correction_steps} steps)",
                            lambda a, b: model.predict_corrected(a, b, correction_steps), 1.0))
        if accept_within is not None:
            share = 1.0 - float(np.mean(model.accepted(x0, xt, *network, accept_within)))
            controllers.append((checked_correction_name(accept_within),
                                lambda a, b: model.predict_corrected(a, b, correction_steps, accept_within), share))
    rows = []
    for i, (name, predict, corrected) in enumerate(controllers):
        thrusts, time_horizons = network if i == 0 else predict(x0, xt)  # the first: the network, answered above
        row = {"controller": name, "corrected_share": corrected,
               **landing_metrics(score_landings(test, thrusts, time_horizons))}
        for batch in timing_batches:
            timing = time_inference(predict, x0, xt, min(batch, len(test)))
            row[f"us_per_problem_batch_{batch}"] = timing["us_per_problem"]
            row[f"us_per_problem_batch_{batch}_mean"] = 1e3 * timing["mean_ms"] / min(batch, len(test))
        rows.append(row)
    return rows


def checked_correction_name(accept_within=ACCEPT_WITHIN) -> str:
    """The table's name for predict_corrected with accept_within."""
    position, velocity, glide = accept_within
    return (f"TRC + correction where it misses by over {position:g} m or {velocity:g} m/s or leaves the glide "
            f"cone by over {glide:g} m")


def format_landing_table(rows: list[dict]) -> str:
    """A markdown table of evaluate_landing_model's rows (a time column for each batch size timed:
    median / mean per problem)."""
    batches = [key for key in rows[0] if key.startswith("us_per_problem_batch_") and not key.endswith("_mean")]
    head = ("| controller | answers corrected | success (5 m, 1 m/s) | position error median / max (m) "
            "| velocity error median / max (m/s) | fuel gap median / p90 | fuel gap of successes, median "
            "| thrust bound violation (N) | glide slope violation max (m) |"
            + "".join(f" time per problem at batch {key.rsplit('_', 1)[1]}, median / mean (ms) |" for key in batches))
    lines = [head, "|" + "---|" * head.count(" |")]
    for r in rows:
        successes = r["fuel_gap_of_successes"]
        corrected = r.get("corrected_share")
        lines.append(
            f"| {r['controller']} | {'-' if corrected is None else format(corrected, '.1%')} | {r['success_rate']:.1%} | "
            f"{r['position_error']['median']:.3g} / "
            f"{r['position_error']['max']:.3g} | {r['velocity_error']['median']:.3g} / {r['velocity_error']['max']:.3g} "
            f"| {r['fuel_gap']['median']:.3%} / {r['fuel_gap']['p90']:.3%} | "
            f"{'-' if successes is None else format(successes['median'], '.3%')} | "
            f"{max(r['violation_thrust_max']['max'], r['violation_thrust_min']['max']):.3g} | "
            f"{r.get('violation_glide_slope', {'max': 0.0})['max']:.3g} |"
            + "".join(f" {r[key] / 1e3:.3g} / {r.get(key + '_mean', r[key]) / 1e3:.3g} |" for key in batches))
    return "\n".join(lines)


def evaluation(model, test: ControlDataset) -> tuple[list[dict], str]:
    """`trc evaluate` for the landing (RocketLanding.evaluation): evaluate_landing_model's rows and table."""
    rows = evaluate_landing_model(model, test)
    return rows, format_landing_table(rows)


def comparison(test: ControlDataset, model=None) -> tuple[list[dict], str]:
    """`trc compare` for the landing (RocketLanding.comparison): ZEM/ZEV guidance (guidance.py),
    TRC (model, optional: a .pt or an ONNX model), TRC with its correction and with the checked
    correction (a .pt only), and the cone program's own labels, each scored in physical units
    (landing_metrics); (rows, table)."""
    from .guidance import FLIGHT_TIME_STEP, zem_zev_guidance
    x0, xt = test.initial_states, test.target_states
    answers = {f"ZEM/ZEV guidance (the best flight time of a {FLIGHT_TIME_STEP:g} s grid)":
               lambda: zem_zev_guidance(test.problem, x0, xt)}
    if model is not None:
        answers[getattr(model, "name", "TRC")] = lambda: model.predict(x0, xt)  # an ONNX model names itself
    if hasattr(model, "predict_corrected"):  # an ONNX model has the network only
        answers["TRC + correction"] = lambda: model.predict_corrected(x0, xt)
        answers[checked_correction_name()] = lambda: model.predict_corrected(x0, xt, accept_within=ACCEPT_WITHIN)
    answers["oracle (cone program)"] = lambda: (test.control_sequences, test.time_horizons)
    rows = [{"controller": name, **landing_metrics(score_landings(test, *answer()))} for name, answer in answers.items()]
    return rows, format_landing_table(rows)

