"""Reward fine-tuning (reward.py, studies/reward_finetune.py, `trc finetune --reward`): the user's
reward in its two forms, checked answers, GRPO raising a held-out reward, resume, bad input."""

import json
import os

import numpy as np
import pytest
import torch

from trc_lib.errors import TRCError
from trc_lib.interfaces.cli import main
from trc_lib.llm import DEFAULT_TEMPLATE, answer_text, parse_answer, prompts
from trc_lib.reward import ARRAYS, TEXT, Reward
from trc_lib.tasks import make_problem

REWARDS = '''
import json, os
import numpy as np

def smooth_text(prompts, completions, **kwargs):
    """Written for an LLM: the JSON list it asked for, rewarded for small steps between controls."""
    out = []
    for text in completions:
        u = json.loads(text[text.rindex("["):text.rindex("]") + 1])
        out.append(-sum(abs(a - b) for a, b in zip(u, u[1:])))
    return out

def seen(prompts, completions, initial_state, **kwargs):
    with open(os.environ["TRC_TEST_SEEN"], "w") as fh:
        json.dump({"prompts": prompts, "completions": completions, "initial_state": initial_state}, fh)
    return [0.0] * len(completions)

def small_arrays(initial_states, target_states, controls, **kwargs):
    return -np.square(controls).sum((1, 2))

def raises(initial_states, target_states, controls):
    raise RuntimeError("my simulator broke")

def short(initial_states, target_states, controls):
    return np.zeros(len(controls) - 1)

def words(initial_states, target_states, controls):
    return ["good"] * len(controls)

def nan_at_three(initial_states, target_states, controls):
    r = np.zeros(len(controls))
    r[3] = np.nan
    return r

def fails_later(initial_states, target_states, controls, **kwargs):
    calls = int(os.environ.get("TRC_TEST_CALLS", "0")) + 1
    os.environ["TRC_TEST_CALLS"] = str(calls)
    if calls > int(os.environ.get("TRC_TEST_FAIL_AFTER", "1000000")):
        raise RuntimeError("interrupted")
    return -np.square(controls).sum((1, 2))

def no_signature(x, y):
    return [0.0]
'''


@pytest.fixture
def reward_file(tmp_path):
    path = tmp_path / "rewards.py"
    path.write_text(REWARDS)
    return path


@pytest.mark.parametrize("m", [1, 2])
def test_an_answer_written_as_the_prompts_ask_reads_back(m, rng):
    controls = rng.normal(size=(7, m)) * 3
    text = answer_text(controls)
    parsed, why = parse_answer(text, 7, m)
    assert why is None
    np.testing.assert_allclose(parsed, controls, rtol=1e-5)
    assert isinstance(json.loads(text)[0], float if m == 1 else list)


def test_the_form_is_read_from_the_signature(reward_file):
    assert Reward.load(f"{reward_file}:smooth_text").form == TEXT
    assert Reward.load(f"{reward_file}:small_arrays").form == ARRAYS
    with pytest.raises(TRCError, match=r"no_signature: takes \(x, y\); a reward takes \(prompts, completions"):
        Reward.load(f"{reward_file}:no_signature")
    with pytest.raises(TRCError, match=r"no function missing \(its functions: .*smooth_text"):
        Reward.load(f"{reward_file}:missing")
    with pytest.raises(TRCError, match="no such reward file"):
        Reward.load(f"{reward_file.parent / 'nowhere.py'}:smooth_text")
    with pytest.raises(TRCError, match="expected FILE.py:function"):
        Reward.load("rewards:smooth_text")


@pytest.mark.parametrize("name, message", [
    ("raises", r"reward .*:raises, epoch 1, batch 1 \(problems \d+ to \d+\): raised RuntimeError: my simulator broke"),
    ("short", r"batch 1: returned 7 values of shape \[7\], expected one number per answer \(8\)"),
    ("words", r"batch 1: returned list that is not 8 numbers"),
    ("nan_at_three", r"batch 1: returned nan for problem 13 \(answer 3 of the batch\)"),
])
def test_a_bad_reward_is_named_with_its_batch_and_problem(reward_file, name, message):
    reward = Reward.load(f"{reward_file}:{name}")
    x = np.zeros((8, 2))
    with pytest.raises(TRCError, match=message):
        reward(x, x, np.zeros((8, 5, 1)), None, indices=np.arange(10, 18), batch="epoch 1, batch 1")


def test_a_text_reward_sees_trc_prompts_own_prompts_and_readable_answers(reward_file, test_set, tmp_path, monkeypatch):
    monkeypatch.setenv("TRC_TEST_SEEN", str(tmp_path / "seen.json"))
    records = prompts(test_set, DEFAULT_TEMPLATE)[:3]
    controls = np.random.default_rng(1).uniform(-1, 1, (3, *test_set.control_sequences.shape[1:]))
    for conversational in (False, True):
        reward = Reward.load(f"{reward_file}:seen", conversational=conversational)
        reward(test_set.initial_states[:3], test_set.target_states[:3], controls, test_set.problem,
               prompts=[r["prompt"] for r in records], indices=np.arange(3))
        seen = json.loads((tmp_path / "seen.json").read_text())
        if conversational:
            assert seen["prompts"][0] == [{"role": "user", "content": records[0]["prompt"]}]
            assert seen["completions"][0][0]["role"] == "assistant"
            text = seen["completions"][0][0]["content"]
        else:
            assert seen["prompts"] == [r["prompt"] for r in records]
            text = seen["completions"][0]
        np.testing.assert_allclose(parse_answer(text, *controls.shape[1:])[0], controls[0], rtol=1e-5)
        np.testing.assert_allclose(seen["initial_state"], test_set.initial_states[:3])


def run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_trc_finetune_reward_raises_a_text_reward_on_held_out_problems(reward_file, trained_dir, train_path,
                                                                       tmp_path, capsys):
    """The bar's shape at quick sizes: a TRL-style reward, through the command line, no change to
    the package; the result is a normal checkpoint."""
    checkpoint = trained_dir / "best_model.pt"
    before = checkpoint.read_bytes()
    out = tmp_path / "reward_run"
    code, stdout, err = run_cli(["finetune", "--checkpoint", str(checkpoint), "--data", str(train_path), "--reward",
                                 f"{reward_file}:smooth_text", "--epochs", "2", "--output_dir", str(out),
                                 "--no_progress", "--lr", "3e-4"], capsys)
    assert code == 0, err
    history = json.loads((out / "reward_finetune_stats.json").read_text())
    assert history["val_reward"][-1] > history["initial"]["reward"]
    assert history["reward_calls"] >= 2 and history["answers_scored"] > 0
    assert (out / "reward_curves.png").stat().st_size > 0
    assert checkpoint.read_bytes() == before  # the starting checkpoint untouched
    code, stdout, err = run_cli(["evaluate", "--checkpoint", str(out / "finetuned_model.pt"), "--test_data",
                                 str(train_path), "--output", str(tmp_path / "scores.json")], capsys)
    assert code == 0, err


def test_a_reward_that_breaks_stops_in_one_line_and_resume_goes_on(reward_file, trained_dir, train_path, tmp_path,
                                                                   capsys, monkeypatch):
    checkpoint = trained_dir / "best_model.pt"
    out = tmp_path / "interrupted"
    argv = ["finetune", "--checkpoint", str(checkpoint), "--data", str(train_path), "--reward",
            f"{reward_file}:fails_later", "--epochs", "2", "--output_dir", str(out), "--no_progress",
            "--batch_size", "120"]
    monkeypatch.setenv("TRC_TEST_CALLS", "0")
    monkeypatch.setenv("TRC_TEST_FAIL_AFTER", "5")  # epoch 1: 3 batches and the held-out check; then it breaks
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and "fails_later, epoch 2, batch 1" in err and "raised RuntimeError: interrupted" in err
    assert sorted(p.name for p in out.iterdir()) == ["reward_finetune_state.pt"]  # epoch 1 kept, nothing else
    monkeypatch.setenv("TRC_TEST_FAIL_AFTER", "1000000")
    code, _, err = run_cli(argv + ["--resume"], capsys)
    assert code == 0, err
    history = json.loads((out / "reward_finetune_stats.json").read_text())
    assert history["epoch"] == [1, 2]
    code, _, err = run_cli(argv[:-2] + ["--batch_size", "60", "--resume"], capsys)
    assert code == 2 and "had --batch_size = 120, not 60" in err


@pytest.mark.parametrize("extra, message", [
    (["--reward", "{file}:no_signature"], "a reward takes (prompts, completions"),
    (["--reward", "{file}:small_arrays", "--group_size", "3"], "group_size must be an even integer"),
    (["--reward", "{file}:small_arrays", "--template", "{file}"], "--template applies to a text reward"),
    (["--resume"], "--resume is an option of the reward route"),
    (["--reward", "{file}:small_arrays", "--resume"], "resume: no run to resume"),
])
def test_bad_reward_options_are_refused_before_any_work(reward_file, trained_dir, train_path, tmp_path, capsys,
                                                        extra, message):
    out = tmp_path / "refused"
    argv = ["finetune", "--checkpoint", str(trained_dir / "best_model.pt"), "--data", str(train_path),
            "--output_dir", str(out), "--no_progress", *[e.format(file=reward_file) for e in extra]]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not out.exists() or not any(out.iterdir())


def test_grpo_moves_the_answer_towards_a_reward_of_arrays(reward_file, train_path):
    """The method alone: a reward for small controls lowers the answers' size, and the KL grows
    from zero as the policy leaves the imitation model."""
    from trc_lib.data import load_dataset
    from trc_lib.studies.reward_finetune import reward_finetune
    from trc_lib import TinyRecursiveControl
    train, val = load_dataset(train_path, val_fraction=0.2, seed=0)
    torch.manual_seed(0)
    model = TinyRecursiveControl.for_training_set("small", train, latent_dim=32)
    with torch.no_grad():
        model.decode.weight.normal_(std=0.05)
    before = np.square(model.predict(val.initial_states, val.target_states)).mean()
    history = reward_finetune(model, Reward.load(f"{reward_file}:small_arrays"), train, val, epochs=2, lr=1e-3,
                              progress=False)
    after = np.square(model.predict(val.initial_states, val.target_states)).mean()
    assert after < before and history["val_reward"][-1] > history["initial"]["reward"]
    assert 0 < history["kl"][0] and np.all(np.isfinite(history["kl"]))
