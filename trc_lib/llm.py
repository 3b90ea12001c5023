"""Compare with your LLM: the test cases as prompts out, the model's text answers back in.

    trc prompts --test_data data/lqr_test/lqr_dataset.npz --output prompts.jsonl [--template FILE]
    (run the prompts through any LLM, keep its raw text)
    trc compare ... --external "my LLM=answers.jsonl"

prompts.jsonl holds one JSON object per test case: {"id", "prompt", "initial_state",
"target_state", "num_steps", "control_dim"}. answers.jsonl holds one per answered case:
{"id": the prompt's id, "answer": the model's raw text} and, when measured, "latency_ms" (that
answer's wall time), "memory_bytes" (peak memory of the model) and "num_parameters".

The numbers are read from the text as a model writes them: a JSON list (nested for several
controls per step), inside a code fence or prose, or failing that every number in the text.
An answer that yields no sequence of the right length, or a case with no answer line, is
scored as a failure and listed with its id and the reason; it never stops the comparison.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import numpy as np

from .data import ControlDataset
from .errors import TRCError
from .files import check_input

DEFAULT_TEMPLATE = """\
You are the controller of an optimal control problem. Compute the whole control sequence.

System: {system}. {dynamics}
Horizon: T = {time_horizon} s in N = {num_steps} steps of dt = {dt} s; the controls are held
constant over each step.
Controls: {control_dim} per step, each within {control_bounds}.
Objective: {objective}
Initial state x0 = {initial_state}
Target state x* = {target_state}

Reply with {answer_format}.
"""

# The placeholders a template may use (DEFAULT_TEMPLATE uses them all).
FIELDS = ("system", "dynamics", "time_horizon", "num_steps", "dt", "control_dim", "control_bound", "control_bounds",
          "objective", "initial_state", "target_state", "answer_format")

NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def describe_dynamics(system) -> str:
    """The dynamics in words, from the system's own description."""
    if system.name == "double_integrator":
        return ("State x = [position, velocity]; position'' = u (exact: velocity and position integrate "
                "u held constant over each step).")
    from .task import Task
    summary = " ".join((type(system).__doc__ or "").split("\n\n")[0].split())
    # the task's own numbers (mu, a mass), not the interface's fields
    parameters = {k: getattr(system, k) for k in type(system).parameter_names() if k not in Task.parameter_names()}
    listed = ", ".join(f"{k} = {v:g}" for k, v in parameters.items())
    return (f"{summary}{' Parameters: ' + listed + '.' if listed else ''} Integrated by classic RK4 with "
            f"{system.substeps} substeps per step.")


def prompt_fields(test: ControlDataset, index: int) -> dict:
    """The placeholder values of test case `index`."""
    problem, system = test.problem, test.problem.system
    N, m = test.control_sequences.shape[1:]
    vector = lambda v: "[" + ", ".join(f"{x:.6g}" for x in v) + "]"
    answer_format = (f"a JSON list of N = {N} numbers, u_0 to u_{N - 1}" if m == 1 else
                     f"a JSON list of N = {N} lists of {m} numbers, [u_0, ..., u_{N - 1}]")
    return {"system": system.name.replace("_", " "), "dynamics": describe_dynamics(system),
            "time_horizon": f"{system.time_horizon:g}", "num_steps": N, "dt": f"{system.dt:.6g}",
            "control_dim": m, **_bounds(problem),
            "objective": problem.objective.formula + f", Q = {problem.objective.Q}, "
                         f"R = {problem.objective.R}, Q_f = {problem.objective.Q_f}",
            "initial_state": vector(test.initial_states[index]), "target_state": vector(test.target_states[index]),
            "answer_format": answer_format}


def _bounds(task) -> dict:
    """control_bound: u_max where every control lies in [-u_max, u_max]; control_bounds: the
    interval(s) in words ("[-4, 4]", or "left thrust in [0, 10], right thrust in [0, 10]")."""
    if task.symmetric_bounds:
        bound = f"{task.control_bound:g}"
        return {"control_bound": bound, "control_bounds": f"[-{bound}, {bound}]"}
    described = ", ".join(f"{name} in [{lo:g}, {hi:g}]" for name, (lo, hi) in zip(task.control_names,
                                                                                task.control_limits))
    return {"control_bound": "(one per control: " + described + ")", "control_bounds": described}


def read_template(path) -> str:
    """A prompt template file, checked: it may use only FIELDS as placeholders."""
    path = check_input(path, "template")
    try:
        template = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise TRCError(f"template {path}: cannot read it ({type(e).__name__})") from None
    check_template(template, f"template {path}")
    return template


def check_template(template: str, where: str = "template") -> None:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise TRCError(f"{where}: not a valid template ({e}; write a literal brace as {{{{ or }}}})") from None
    unknown = sorted(names - set(FIELDS))
    if unknown:
        raise TRCError(f"{where}: unknown placeholder {{{unknown[0]}}}; the known ones are "
                       f"{', '.join('{' + f + '}' for f in FIELDS)}")


def prompts(test: ControlDataset, template: str = DEFAULT_TEMPLATE) -> list[dict]:
    """One prompt record per test case (what prompts.jsonl holds)."""
    check_template(template)
    N, m = test.control_sequences.shape[1:]
    return [{"id": i, "prompt": template.format(**prompt_fields(test, i)),
             "initial_state": test.initial_states[i].tolist(), "target_state": test.target_states[i].tolist(),
             "num_steps": int(N), "control_dim": int(m)} for i in range(len(test))]


def write_jsonl(path, records) -> Path:
    """One JSON object per line, written to a temporary file and renamed."""
    from .files import atomic_path
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def answer_text(controls) -> str:
    """One answer [N, m] written as the prompts ask for it (answer_format): a JSON list of N
    numbers, or of N lists of m numbers, each to 6 significant digits. What TRC's own answers
    look like to a reward written for an LLM's (reward.py); parse_answer reads it back."""
    values = np.asarray(controls, dtype=np.float64)
    rounded = [[float(f"{x:.6g}") for x in row] for row in values]
    return json.dumps([row[0] for row in rounded] if values.shape[1] == 1 else rounded)


# ---- answers in ----------------------------------------------------------------------------

def _bracketed(text: str) -> list[str]:
    """The outermost [...] groups of `text`, in order."""
    groups, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c == "[":
            if depth == 0:
                start = i
            depth += 1
        elif c == "]" and depth > 0:
            depth -= 1
            if depth == 0:
                groups.append(text[start:i + 1])
    return groups


def parse_answer(text, num_steps: int, control_dim: int):
    """(controls [N, m], None) read from a model's text answer, or (None, the reason it cannot be).

    Tried in turn: the last JSON list in the text with N m numbers (nested or flat), then every
    number in the text, if there are exactly N m of them.
    """
    if not isinstance(text, str) or not text.strip():
        return None, "empty answer"
    expected = num_steps * control_dim
    for group in reversed(_bracketed(text)):
        try:
            values = np.asarray(json.loads(group), dtype=np.float64).ravel()
        except (ValueError, TypeError):
            continue
        if values.size == expected:
            return (values.reshape(num_steps, control_dim), None) if np.isfinite(values).all() else \
                (None, "a list with NaN or inf")
    numbers = NUMBER.findall(text)
    if len(numbers) != expected:
        return None, f"found {len(numbers)} numbers, expected {expected}"
    values = np.asarray([float(x) for x in numbers])
    return (values.reshape(num_steps, control_dim), None) if np.isfinite(values).all() else \
        (None, "a number out of range")


class TextAnswers:
    """An LLM's (or any text model's) answers file as a controller for `compare`.

    After construction: control_sequences [B, N, m] (zeros where unanswered, never scored),
    answered [B] (bool), failures [(id, reason)], and what the file reported:
    latency_ms [B] (NaN where not given), memory_bytes and num_parameters (None when not given).
    """

    def __init__(self, name: str, path, test: ControlDataset):
        self.name, self.path = name, Path(path)
        B, N, m = test.control_sequences.shape
        self.control_sequences = np.zeros((B, N, m))
        self.answered = np.zeros(B, dtype=bool)
        self.latency_ms = np.full(B, np.nan)
        self.memory_bytes = self.num_parameters = None
        reasons, seen = {}, set()
        for number, record in self._records():
            where = f"{self.path}, line {number}"
            case = record.get("id")
            if not isinstance(case, int) or isinstance(case, bool) or not 0 <= case < B:
                raise TRCError(f"{where}: 'id' must be a test case number from 0 to {B - 1}, got {case!r}")
            if case in seen:
                raise TRCError(f"{where}: a second answer for id {case}")
            seen.add(case)
            controls, reason = parse_answer(record.get("answer"), N, m)
            if controls is None:
                reasons[case] = reason
            else:
                self.control_sequences[case], self.answered[case] = controls, True
            self._reported(record, case, where)
        for case in range(B):
            if case not in seen:
                reasons[case] = "no answer line"
        self.failures = sorted(reasons.items())  # counted as failures, as docs/llm.md says, even all of them

    def _records(self):
        check_input(self.path, "answers file")
        try:
            lines = self.path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise TRCError(f"{self.path}: unreadable answers file ({type(e).__name__})") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise TRCError(f"{self.path}, line {number}: not a JSON object ({e.msg})") from None
            if not isinstance(record, dict):
                raise TRCError(f"{self.path}, line {number}: expected a JSON object with 'id' and 'answer'")
            yield number, record

    def _reported(self, record: dict, case: int, where: str) -> None:
        for key in ("latency_ms", "memory_bytes", "num_parameters"):
            value = record.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise TRCError(f"{where}: '{key}' must be a non-negative number, got {value!r}")
            if key == "latency_ms":
                self.latency_ms[case] = value
            elif key == "memory_bytes":
                self.memory_bytes = max(self.memory_bytes or 0, int(value))
            elif self.num_parameters not in (None, int(value)):
                raise TRCError(f"{where}: 'num_parameters' {value} differs from an earlier line's {self.num_parameters}")
            else:
                self.num_parameters = int(value)

    @property
    def reported_latency_ms(self) -> float | None:
        """The median of the latencies the file reports (None if it reports none)."""
        given = self.latency_ms[np.isfinite(self.latency_ms)]
        return float(np.median(given)) if len(given) else None

    def predict(self, initial_states, target_states):
        if len(initial_states) != len(self.control_sequences):
            raise TRCError(f"{self.path}: holds answers for {len(self.control_sequences)} cases, "
                           f"asked for {len(initial_states)}")
        return self.control_sequences


def example_answers(test: ControlDataset, decimals: int = 2, malformed_every: int = 50) -> list[dict]:
    """What a text model might send back, deterministic, to try the whole path without an LLM.

    The optimum written with `decimals` decimals, in the shapes models answer in (a bare list,
    a code fence, a sentence around a list), with a made-up latency of 100 ms and 6 GB, the
    figures the guide expects of a fine-tuned 3B-parameter model; every `malformed_every`-th
    answer is malformed in turn: one control short, prose with no numbers, a list of words.
    """
    records = []
    N = test.control_sequences.shape[1]
    for i, u in enumerate(test.control_sequences):
        values = np.round(u, decimals)
        listed = json.dumps(values.ravel().tolist() if values.shape[1] == 1 else values.tolist())
        shapes = [listed, f"```json\n{listed}\n```", f"Here is the control sequence:\n{listed}\nIt respects the bound."]
        answer = shapes[i % 3]
        if malformed_every and i % malformed_every == malformed_every - 1:
            broken = [json.dumps(values.ravel()[:N - 1].tolist()),
                      "I cannot compute this without more information about the system.",
                      json.dumps(["push"] * N)]
            answer = broken[(i // malformed_every) % 3]
        records.append({"id": i, "answer": answer, "latency_ms": 100.0, "memory_bytes": 6 * 10 ** 9,
                        "num_parameters": 3 * 10 ** 9})
    return records
