"""forward.c, the CPU inference path: the eager PyTorch forward's answers to float32 round-off
(1e-5 x max(1, u_max), the tolerance of the ONNX export's check), at every batch it serves and on every build."""

import copy
import os
import re

import numpy as np
import pytest
import torch

from trc_lib import TinyRecursiveControl
from trc_lib.fast.forward import FAST_FORWARD_MAX_BATCH, SMALL_NET_MAX_BATCH, FastForward, pytorch_only
from trc_lib.tasks import make_problem


def moving_model(system, **overrides):
    """A tiny model whose refinements differ (the decoder starts at zero, so perturb it)."""
    torch.manual_seed(0)
    model = TinyRecursiveControl.create("small", problem=make_problem(system=system), **overrides).eval()
    torch.nn.init.normal_(model.decode.weight, std=0.05, generator=torch.Generator().manual_seed(1))
    return model


@pytest.mark.parametrize("system, overrides", [
    ("double_integrator", {}),
    ("double_integrator", {"error_feedback": False, "num_layers": 3}),
    ("vanderpol", {}),
    ("pendulum", {"latent_dim": 32, "num_inner_cycles": 2, "num_outer_cycles": 3, "num_supervision_steps": 4}),
])
def test_matches_the_eager_forward(system, overrides):
    model = moving_model(system, **overrides)
    rng = np.random.default_rng(0)
    x0, xt = (torch.tensor(rng.uniform(-1, 1, (7, 2)), dtype=torch.float32) for _ in range(2))
    engine = FastForward.of(model)
    assert engine is not None
    with torch.no_grad():
        expected = model(x0, xt)
    got = engine(x0, xt)
    assert got.shape == expected.shape
    assert expected.abs().max() > 0.01  # the answers are not trivially zero
    # float32 round-off, relative to the controls' scale as in export.py's parity check
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * max(1.0, model.control_bound))


def test_a_task_with_bounds_of_its_own_matches_the_eager_forward():
    """The quadrotor's thrusts lie in [0, 10] N: forward.c reads each control's center and
    half-width, u = c + h tanh(y / h), in the answer, the features, the feedback and halting."""
    from pathlib import Path
    quadrotor = f"{Path(__file__).resolve().parents[1] / 'notebooks' / 'planar_quadrotor.py'}:PlanarQuadrotor"
    torch.manual_seed(0)
    model = TinyRecursiveControl.create("small", problem=make_problem(system=quadrotor), latent_dim=32).eval()
    torch.nn.init.normal_(model.decode.weight, std=0.05, generator=torch.Generator().manual_seed(1))
    x0, xt = model.problem.draw_problems(np.random.default_rng(0), 5)
    engine = FastForward.of(model)
    assert engine is not None
    with torch.no_grad():
        expected = model(torch.tensor(x0, dtype=torch.float32), torch.tensor(xt, dtype=torch.float32))
    got = engine(torch.tensor(x0, dtype=torch.float32), torch.tensor(xt, dtype=torch.float32))
    assert ((expected > 0) & (expected < 10)).all() and expected.std() > 0.1
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * model.answer_scale())
    tolerance = float(np.median(model.predict_anytime(x0, xt, tolerance=1e9).terminal_errors))
    refinements, used, _ = engine.run(torch.tensor(x0, dtype=torch.float32), torch.tensor(xt, dtype=torch.float32),
                                      tolerance)
    from trc_lib.fast.forward import pytorch_only
    in_pytorch = pytorch_only(model.predict_anytime)(x0, xt, tolerance)
    np.testing.assert_array_equal(used.numpy(), in_pytorch.refinements)


@pytest.mark.parametrize("system, overrides", [("double_integrator", {}), ("vanderpol", {"latent_dim": 72})])
def test_half_weights_match_the_eager_forward_on_the_same_rounded_weights(system, overrides):
    """set_inference_precision("float16"): forward.c streams the shared net's weights in IEEE half
    precision; PyTorch (large batches, no compiler) computes from the same weights rounded in
    place for the call, and restores them. Both agree to float32 round-off; float32 does not."""
    model = moving_model(system, **overrides)
    engine = FastForward.of(model, "float16")
    if engine is None:
        pytest.skip("no C compiler with F16C")
    rng = np.random.default_rng(0)
    x0, xt = rng.uniform(-1, 1, (5, 2)), rng.uniform(-1, 1, (5, 2))
    full = model.predict_refinements(x0, xt)
    model.set_inference_precision("float16")
    fast = model.predict_refinements(x0, xt)  # forward.c, half weights
    before = [p.detach().clone() for p in model.parameters()]
    from trc_lib.fast.forward import pytorch_only
    eager = pytorch_only(model.predict_refinements)(x0, xt)  # PyTorch on rounded weights
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # restored
    np.testing.assert_allclose(fast, eager, rtol=0, atol=1e-5 * max(1.0, model.control_bound))
    assert np.abs(fast - full).max() > 1e-5 * max(1.0, model.control_bound)  # half precision is not float32


def test_predict_uses_it_for_small_batches_and_follows_new_weights(monkeypatch):
    model = moving_model("vanderpol")
    x0, xt = np.array([[0.5, -0.2]]), np.zeros((1, 2))
    calls = []
    original = FastForward.run_numpy  # predict's numpy-in, numpy-out path into forward.c
    monkeypatch.setattr(FastForward, "run_numpy", lambda self, *a: calls.append(1) or original(self, *a))
    first = model.predict(x0, xt)
    with torch.no_grad():
        model.decode.weight.mul_(2.0)  # in place, as an optimizer step or load_state_dict does
    second = model.predict(x0, xt)
    assert len(calls) == 2 and not np.allclose(first, second)
    with torch.no_grad():
        eager = model(torch.tensor(x0, dtype=torch.float32), torch.tensor(xt, dtype=torch.float32))[-1]
    np.testing.assert_allclose(second, eager.double().numpy(), atol=2e-5)
    model.net[1].down.weight = torch.nn.Parameter(model.net[1].down.weight.detach() * 0.5)  # a new tensor
    third = model.predict(x0, xt)
    with torch.no_grad():
        eager = model(torch.tensor(x0, dtype=torch.float32), torch.tensor(xt, dtype=torch.float32))[-1]
    assert len(calls) == 3 and not np.allclose(second, third)
    np.testing.assert_allclose(third, eager.double().numpy(), atol=2e-5)
    model.predict(np.zeros((FAST_FORWARD_MAX_BATCH + 1, 2)), np.zeros((FAST_FORWARD_MAX_BATCH + 1, 2)))
    assert len(calls) == 4  # a small net runs in C up to SMALL_NET_MAX_BATCH
    model.predict(np.zeros((SMALL_NET_MAX_BATCH + 1, 2)), np.zeros((SMALL_NET_MAX_BATCH + 1, 2)))
    assert len(calls) == 4  # and in PyTorch beyond
    copy.deepcopy(model).predict(x0, xt)  # a copy gets an engine of its own
    assert len(calls) == 5


def test_without_a_compiler_predict_runs_pytorch(monkeypatch):
    import trc_lib.fast.forward as fast_forward
    monkeypatch.setattr(fast_forward, "_LIBRARY", False)  # as after a failed compile
    monkeypatch.setattr(fast_forward, "_ENGINES", fast_forward.weakref.WeakKeyDictionary())
    model = moving_model("vanderpol")
    assert FastForward.of(model) is None
    x0, xt = np.array([[0.5, -0.2]]), np.zeros((1, 2))
    with torch.no_grad():
        eager = model(torch.tensor(x0, dtype=torch.float32), torch.tensor(xt, dtype=torch.float32))[-1]
    np.testing.assert_array_equal(model.predict(x0, xt), eager.double().numpy())


@pytest.mark.parametrize("system, overrides", [("double_integrator", {}), ("vanderpol", {}),
                                               ("vanderpol", {"error_feedback": False})])
def test_halting_in_c_stops_where_pytorch_does(system, overrides):
    model = moving_model(system, **overrides)
    rng = np.random.default_rng(2)
    x0, xt = rng.uniform(-1, 1, (FAST_FORWARD_MAX_BATCH + 4, 2)), np.zeros((FAST_FORWARD_MAX_BATCH + 4, 2))
    first = model.predict_anytime(x0, xt, tolerance=1e9)  # every problem stops after one step
    tolerance = float(np.median(first.terminal_errors))
    in_pytorch = pytorch_only(model.predict_anytime)(x0, xt, tolerance=tolerance)
    refinements, used, errors = FastForward.of(model).run(torch.tensor(x0, dtype=torch.float32),
                                                          torch.tensor(xt, dtype=torch.float32), tolerance)
    np.testing.assert_array_equal(used.numpy(), in_pytorch.refinements)
    assert 1 <= used.float().mean() < model.config.num_supervision_steps
    np.testing.assert_allclose(refinements[-1].numpy(), in_pytorch.controls, atol=1e-5 * max(1.0, model.control_bound))
    np.testing.assert_allclose(errors.numpy(), in_pytorch.terminal_errors, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("system, overrides, half", [
    ("double_integrator", {"latent_dim": 72}, False),  # products of 4 x 64 + 32 and 2 x 64 + 16 rows
    ("vanderpol", {"latent_dim": 40}, False),          # no whole block of 64 in the down product
    ("double_integrator", {"latent_dim": 72}, True),
])
def test_a_team_of_threads_computes_the_same_bits(system, overrides, half):
    """forward.c's team shares out the rows of the shared net's products; every other step runs in
    every thread on the same numbers, so the answers, the halting and the errors are identical."""
    model = moving_model(system, **overrides)
    engine = FastForward.of(model, "float16" if half else "float32")
    if engine is None:
        pytest.skip("no C compiler (with F16C for half)")
    rng = np.random.default_rng(3)
    x0, xt = (torch.tensor(rng.uniform(-1, 1, (5, 2)), dtype=torch.float32) for _ in range(2))
    results = {}
    for threads in (1, 2, 3):
        engine.threads = threads
        results[threads] = [engine.run(x0, xt, 0.0)[0], *engine.run(x0, xt, 0.05)]
        engine.products_only(2)  # the floor's chain runs on the team too
    for threads in (2, 3):
        for got, expected in zip(results[threads], results[1]):
            assert torch.equal(got, expected)


def test_callers_in_several_threads_and_a_forked_child_get_their_answers():
    """One team at a time: a second caller meanwhile runs alone. A child forked after the team
    started has no workers; it starts its own instead of waiting for its parent's."""
    import multiprocessing
    import threading

    model = moving_model("double_integrator", latent_dim=72)
    engine = FastForward.of(model)
    engine.threads = 2
    rng = np.random.default_rng(4)
    x0, xt = rng.uniform(-1, 1, (3, 2)), rng.uniform(-1, 1, (3, 2))
    expected = engine.run_numpy(x0, xt)
    answers = []

    def caller():
        answers.extend(engine.run_numpy(x0, xt) for _ in range(50))

    callers = [threading.Thread(target=caller) for _ in range(3)]
    for c in callers:
        c.start()
    for c in callers:
        c.join(timeout=60)
    assert len(answers) == 150 and all(np.array_equal(a, expected) for a in answers)

    child = multiprocessing.get_context("fork").Process(target=_answer_in_a_child, args=(engine, x0, xt, expected))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung on its parent's team")
    assert child.exitcode == 0


def _answer_in_a_child(engine, x0, xt, expected):
    import os
    os._exit(0 if np.array_equal(engine.run_numpy(x0, xt), expected) else 1)


@pytest.fixture
def two_threads():
    """Two threads for PyTorch, hence for forward.c's split (the suite runs on one, conftest.py)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


@pytest.mark.parametrize("system, half", [("double_integrator", False), ("vanderpol", False), ("vanderpol", True)])
def test_problems_shared_between_threads_give_each_problem_its_own_answer(system, half, two_threads):
    """At batch 2 and over the threads take problems of their own (forward.c's split): every
    problem's answer is bit for bit the one it gets alone, whatever the batch and its neighbours."""
    model = moving_model(system)
    if half:
        model.set_inference_precision("float16")
    if FastForward.of(model, "float16" if half else "float32") is None:
        pytest.skip("this build has no C path for this precision (float16 needs F16C)")
    rng = np.random.default_rng(5)
    x0, xt = rng.uniform(-1, 1, (23, 2)), rng.uniform(-0.5, 0.5, (23, 2))
    batch = model.predict(x0, xt)
    engine = FastForward.of(model, "float16" if half else "float32")
    assert engine._prepared.split == 1 and engine._prepared.threads == 2  # the batch was split
    alone = np.concatenate([model.predict(x0[i:i + 1], xt[i:i + 1]) for i in range(len(x0))])
    np.testing.assert_array_equal(batch, alone)
    np.testing.assert_array_equal(model.predict(x0[:2], xt[:2]), alone[:2])
    anytime = model.predict_anytime(x0, xt, tolerance=1e9)
    np.testing.assert_array_equal(anytime.refinements, np.ones(len(x0)))


def test_a_net_with_a_team_runs_large_batches_in_pytorch(monkeypatch):
    """Which batches run in C: up to FAST_FORWARD_MAX_BATCH for a net with a team (its team at
    batch 1, then problems split), PyTorch beyond."""
    import trc_lib.fast.forward as fast_forward
    monkeypatch.setattr(fast_forward, "_ENGINES", fast_forward.weakref.WeakKeyDictionary())
    monkeypatch.setattr(fast_forward, "TEAM_ABOVE_BYTES", 1024)  # this small net now gets a team
    model = moving_model("double_integrator")
    engine = FastForward.of(model)
    assert engine.serves(1) and engine.serves(FAST_FORWARD_MAX_BATCH) and not engine.serves(FAST_FORWARD_MAX_BATCH + 1)
    calls = []
    original = FastForward.run_numpy
    monkeypatch.setattr(FastForward, "run_numpy", lambda self, *a: calls.append(len(a[0])) or original(self, *a))
    rng = np.random.default_rng(6)
    x0, xt = rng.uniform(-1, 1, (FAST_FORWARD_MAX_BATCH + 1, 2)), np.zeros((FAST_FORWARD_MAX_BATCH + 1, 2))
    large = model.predict(x0, xt)
    small = model.predict(x0[:5], xt[:5])
    assert calls == [5]
    np.testing.assert_allclose(small, large[:5], atol=1e-5 * max(1.0, model.control_bound))


BASELINE_SCRIPT = """
import sys, numpy as np, torch
from trc_lib import TinyRecursiveControl
from trc_lib.fast.forward import paths
from trc_lib.tasks import make_problem
torch.manual_seed(0)
model = TinyRecursiveControl.create("small", problem=make_problem(system=sys.argv[1])).eval()
with torch.no_grad():
    model.decode.weight.normal_(std=0.05)
rng = np.random.default_rng(3)
x0, xt = rng.uniform(-1, 1, (9, 2)), rng.uniform(-0.5, 0.5, (9, 2))
np.save(sys.argv[2], np.stack([model.predict(x0[:1], xt[:1])[0], *model.predict(x0, xt)]))
print(paths()["target"], "|", paths()["float32"])
"""


@pytest.mark.parametrize("system", ["double_integrator", "vanderpol"])
def test_the_baseline_x86_64_build_gives_the_same_answers(system, tmp_path):
    """$TRC_MARCH=x86-64 compiles the C without AVX (plain loops, no F16C): the answers equal
    the native build's to float32 round-off, at batch 1 and on shared threads."""
    import platform
    import subprocess
    import sys
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("an x86-64 build")
    answers = {}
    for march in ("native", "x86-64"):  # the native build from the usual cache, the baseline's made here
        env = {**os.environ, "TRC_MARCH": march}
        if march != "native":
            env["TRC_CACHE_DIR"] = str(tmp_path / march)
        done = subprocess.run([sys.executable, "-c", BASELINE_SCRIPT, system, str(tmp_path / f"{march}.npy")],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert f"-march={march}" in done.stdout
        answers[march] = np.load(tmp_path / f"{march}.npy")
    assert "plain loops" in done.stdout or "blocks of 64" not in done.stdout
    np.testing.assert_allclose(answers["x86-64"], answers["native"], rtol=0, atol=1e-5)
    assert np.abs(answers["native"]).max() > 1e-3  # the answers are not all zeros


def test_trc_info_names_the_paths(capsys):
    from trc_lib.interfaces.cli import main
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for row in ("cpu", "flags", "target", "float32", "float16", "bfloat16", "routing", "pytorch", "gpu"):
        assert re.search(rf"^{row}\s", out, re.M), row


def test_the_products_floor_runs_on_the_team_not_on_the_last_batch_split(two_threads):
    """products_only (benchmarks/performance.py's floor) times the team's products: a batch just
    answered with its problems split between threads must not leave its split and thread count."""
    model = moving_model("double_integrator")
    engine = FastForward.of(model)
    model.predict(np.zeros((5, 2)), np.ones((5, 2)))
    assert engine._prepared.split == 1
    engine.products_only(1)
    assert engine._prepared.split == 0 and engine._prepared.threads == engine.threads
