"""Compare with your LLM: prompts out, text answers in, unreadable answers counted, never a crash."""

import json

import numpy as np
import pytest

from trc_lib.interfaces.cli import main
from trc_lib.errors import TRCError
from trc_lib.llm import FIELDS, TextAnswers, example_answers, parse_answer, prompts, write_jsonl
from trc_lib.compare import compare_controllers, format_table


@pytest.mark.parametrize("text", ["[1, 2.5, -3e-1]", "```json\n[1, 2.5, -0.3]\n```",
                                  "Sure! For N = 3 steps the sequence is [1.0, 2.5, -0.30]. Good luck.",
                                  "1, then 2.5 and finally -.3", "[[1], [2.5], [-0.3]]"])
def test_numbers_are_read_as_models_write_them(text):
    controls, reason = parse_answer(text, 3, 1)
    assert reason is None
    np.testing.assert_allclose(controls[:, 0], [1, 2.5, -0.3])


def test_several_controls_per_step_come_nested_or_flat():
    for text in ["[[1, 2], [3, 4]]", "[1, 2, 3, 4]"]:
        controls, _ = parse_answer(text, 2, 2)
        np.testing.assert_array_equal(controls, [[1, 2], [3, 4]])


@pytest.mark.parametrize("text, reason", [("", "empty answer"), (None, "empty answer"),
                                          ("[1, 2]", "found 2 numbers, expected 3"),
                                          ('["push", "push", "pull"]', "found 0 numbers, expected 3"),
                                          ("I need more information.", "found 0 numbers, expected 3"),
                                          ("[1, NaN, 2]", "a list with NaN or inf")])
def test_unreadable_answers_say_why(text, reason):
    assert parse_answer(text, 3, 1) == (None, reason)


def test_prompts_state_the_problem_and_the_answer_format(test_set):
    records = prompts(test_set)
    assert len(records) == len(test_set) and records[7]["id"] == 7
    text = records[7]["prompt"]
    x0 = test_set.initial_states[7]
    assert f"x0 = [{x0[0]:.6g}, {x0[1]:.6g}]" in text
    assert "a JSON list of N = 15 numbers" in text and "[-4, 4]" in text and "position'' = u" in text
    assert not any("{" + name + "}" in text for name in FIELDS)  # every placeholder filled


def test_a_template_with_an_unknown_placeholder_is_refused_in_one_line(tmp_path, test_path, capsys):
    template = tmp_path / "t.txt"
    template.write_text("Start at {initial_state}, steer with {magic}.")
    assert main(["prompts", "--test_data", str(test_path), "--template", str(template),
                 "--output", str(tmp_path / "p.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "unknown placeholder {magic}" in err and str(template) in err and "Traceback" not in err
    assert not (tmp_path / "p.jsonl").exists()


def test_prompts_out_answers_in_side_by_side(tmp_path, test_path, test_set, trained_dir, capsys):
    prompts_path = tmp_path / "prompts.jsonl"
    assert main(["prompts", "--test_data", str(test_path), "--output", str(prompts_path)]) == 0
    lines = prompts_path.read_text().splitlines()
    assert len(lines) == len(test_set) and json.loads(lines[0])["num_steps"] == 15
    # the shipped text controller: the optimum with two decimals, every 50th answer malformed
    answers = example_answers(test_set)
    del answers[10]  # and one case left unanswered
    write_jsonl(tmp_path / "answers.jsonl", answers)
    output = tmp_path / "compared.json"
    assert main(["compare", "--test_data", str(test_path), "--trc_checkpoint", str(trained_dir / "best_model.pt"),
                 "--external", f"text model={tmp_path / 'answers.jsonl'}", "--output", str(output)]) == 0
    table = capsys.readouterr().out
    row = next(r for r in json.loads(output.read_text())["controllers"] if r["name"] == "text model")
    assert row["unanswered"] == 3  # ids 10 (no line), 49 and 99 (malformed)
    assert [f["id"] for f in row["failures"]] == [10, 49, 99]
    assert row["failures"][0]["reason"] == "no answer line"
    assert row["success_rate"] == pytest.approx(0.97)  # two decimals still land; the unanswered fail
    assert row["reported_latency_ms"] == 100.0 and row["memory_bytes"] == 6 * 10 ** 9
    assert row["num_parameters"] == 3 * 10 ** 9
    line = next(line for line in table.splitlines() if line.startswith("| text model |"))
    assert "| 3,000,000,000 | 5.6 GiB | 97.0% | 3 |" in line and "100.000 (reported)" in line
    trc = next(line for line in table.splitlines() if line.startswith("| TRC |"))
    assert "KiB" in trc or "MiB" in trc  # TRC's own memory beside it


@pytest.mark.parametrize("content, message", [
    ("not json\n", "line 1: not a JSON object"),
    ('{"id": 0, "answer": "[1]"}\n{"id": 0, "answer": "[2]"}\n', "line 2: a second answer for id 0"),
    ('{"id": 500, "answer": "[1]"}\n', "line 1: 'id' must be a test case number from 0 to 99"),
    ('{"id": 0, "answer": "[1]", "latency_ms": "fast"}\n', "line 1: 'latency_ms' must be a non-negative number"),
])
def test_a_malformed_answers_file_is_named_with_its_line(tmp_path, test_set, content, message):
    path = tmp_path / "answers.jsonl"
    path.write_text(content)
    with pytest.raises(TRCError, match=message):
        TextAnswers("llm", path, test_set)


def test_answers_that_are_all_prose_count_as_failures_not_as_a_bad_file(tmp_path, test_set):
    """docs/llm.md: an answer that cannot be read counts as a failure; so does a file of them."""
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(f'{{"id": {i}, "answer": "I would push gently."}}\n' for i in range(len(test_set))))
    answers = TextAnswers("llm", path, test_set)
    assert not answers.answered.any() and len(answers.failures) == len(test_set)
    row = compare_controllers(test_set, [answers], untimed={"llm"})[0]
    assert row["unanswered"] == len(test_set) and row["success_rate"] == 0.0
    assert "| llm |" in format_table([row])
