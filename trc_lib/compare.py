"""Evaluate several controllers on the same test cases with the same metrics, and tabulate."""

from __future__ import annotations

import numpy as np

from .data import ControlDataset
from .evaluate import metrics, score_controls, summarize, time_inference


class TRCController:
    """A trained model in the controller interface of baselines.py (predicts on `device`).

    tolerance: halt each problem once its simulated terminal error is below it (predict_anytime);
    refinements_used [B] then holds the supervision steps each problem of the last call used.
    """

    def __init__(self, model, device="cpu", tolerance: float | None = None):
        self.model, self.device, self.tolerance = model, device, tolerance
        self.name = "TRC" if tolerance is None else f"TRC (halting at {tolerance:g})"
        self.num_parameters, self.memory_bytes = model_size(model)
        self.refinements_used = None

    def predict(self, initial_states, target_states):
        if self.tolerance is None:
            controls = self.model.predict(initial_states, target_states, device=self.device)
            self.refinements_used = np.full(len(controls), self.model.config.num_supervision_steps)
            return controls
        answer = self.model.predict_anytime(initial_states, target_states, self.tolerance, device=self.device)
        self.refinements_used = answer.refinements
        return answer.controls

    def predict_refinements(self, initial_states, target_states):
        """[N_sup, B, N, m]: the answer after each supervision step (the last is predict's)."""
        return self.model.predict_refinements(initial_states, target_states, device=self.device)


class RefinementStep:
    """TRC's answer after supervision step r (1-based) of R, as a controller of its own.

    final: the controller giving the last step (for its size); refinements: [R, B, N, m].
    """

    def __init__(self, final, step: int, refinements: np.ndarray):
        self.name = f"TRC after step {step}/{len(refinements)}"
        self.num_parameters, self.memory_bytes = final.num_parameters, final.memory_bytes
        self._controls = refinements[step - 1]

    def predict(self, initial_states, target_states):
        return self._controls


def model_size(model) -> tuple[int, int]:
    """(parameter count, bytes of parameters and buffers) of a torch model."""
    tensors = [*model.parameters(), *model.buffers()]
    return (sum(p.numel() for p in model.parameters()),
            sum(t.numel() * t.element_size() for t in tensors))


def evaluate_controller(controller, test: ControlDataset, success_threshold: float = 0.1,
                        solution=None, timing: bool = True, batch_sizes=(1, 1000)) -> dict:
    """One row: name, size, metrics and (unless timing is False) inference times."""
    controls = controller.predict(test.initial_states, test.target_states)
    scores = score_controls(test, controls, success_threshold, solution, getattr(controller, "answered", None))
    row = {"name": controller.name, "num_parameters": controller.num_parameters,
           "memory_bytes": controller.memory_bytes, **metrics(scores, success_threshold)}
    if getattr(controller, "failures", None):  # a text model's unreadable answers, by test case id
        row["failures"] = [{"id": int(case), "reason": reason} for case, reason in controller.failures]
    if getattr(controller, "reported_latency_ms", None) is not None:  # measured where it ran
        row["reported_latency_ms"] = controller.reported_latency_ms
    if getattr(controller, "refinements_used", None) is not None:  # the scoring call's, not the timing calls'
        row["refinements"] = summarize(controller.refinements_used)
    if timing:  # a controller may time fewer sizes (IPOPT: batch 1 only, 1,000 solves take minutes)
        sizes = getattr(controller, "timing_batch_sizes", batch_sizes)
        row["inference_time"] = {f"batch_{b}": time_inference(controller.predict, test.initial_states,
                                                               test.target_states, b) for b in sizes}
    return row


def compare_controllers(test: ControlDataset, controllers, success_threshold: float = 0.1,
                        untimed=(), progress=None) -> list[dict]:
    """Rows for every controller; controllers whose names are in `untimed` are not timed."""
    solution = test.optimum()
    rows = []
    for controller in controllers:
        if progress:
            progress(controller.name)
        rows.append(evaluate_controller(controller, test, success_threshold, solution,
                                        timing=controller.name not in untimed))
    return rows


def format_percent(fraction: float) -> str:
    """0.0123 -> '1.230%'; round-off's -1e-16 shows as 0.000%, not -0.000%."""
    return f"{round(100 * fraction, 3) + 0.0:.3f}%"


def format_table(rows: list[dict]) -> str:
    """A markdown table of the comparison rows."""
    header = ("| controller | params | memory | success | unanswered | terminal error mean / median "
              "| cost gap median / p90 | time batch 1 (ms) | time per problem at batch 1000 (us) | refinements (mean) |")
    lines = [header, "|" + "---|" * 10]
    for r in rows:
        params = "-" if r["num_parameters"] is None else f"{r['num_parameters']:,}"
        memory = "-" if r.get("memory_bytes") is None else format_bytes(r["memory_bytes"])
        times = r.get("inference_time")
        t1 = f"{times['batch_1']['median_ms']:.3f}" if times and "batch_1" in times else "-"
        if "reported_latency_ms" in r:
            t1 = f"{r['reported_latency_ms']:.3f} (reported)"
        t1000 = f"{times['batch_1000']['us_per_problem']:.2f}" if times and "batch_1000" in times else "-"
        used = f"{r['refinements']['mean']:.2f}" if "refinements" in r else "-"
        unanswered = str(r["unanswered"]) if "unanswered" in r else "-"
        lines.append(f"| {r['name']} | {params} | {memory} | {100 * r['success_rate']:.1f}% | {unanswered} "
                     f"| {r['terminal_error']['mean']:.2e} / {r['terminal_error']['median']:.2e} "
                     f"| {format_percent(r['cost_gap']['median'])} / {format_percent(r['cost_gap']['p90'])} | {t1} | {t1000} | {used} |")
    return "\n".join(lines)


def format_bytes(count: int) -> str:
    """1536 -> '1.5 KiB'."""
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"
