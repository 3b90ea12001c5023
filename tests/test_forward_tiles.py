"""forward.c's large-batch path on Intel AMX (set_inference_precision("bfloat16") on the CPU): groups
of problems through the whole recursion, the shared net, the answer's embedding and the decoder
in bfloat16 tiles summed in float32. Skipped where the CPU or Linux offers no AMX."""

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trc_lib import TinyRecursiveControl
from trc_lib import model as model_module
from trc_lib.fast.forward import FastForward, pytorch_only
from trc_lib.tasks import make_problem


def moving_model(system="double_integrator", size="small", **overrides):
    """A model whose refinements move (the decoder starts at zero, so perturb it)."""
    torch.manual_seed(0)
    model = TinyRecursiveControl.create(size, problem=make_problem(system=system), **overrides).eval()
    torch.nn.init.normal_(model.decode.weight, std=0.05, generator=torch.Generator().manual_seed(1))
    if FastForward.of(model, "bfloat16") is None:
        pytest.skip("no AMX here (or no C compiler)")
    return model.set_inference_precision("bfloat16")


def bf16(t: torch.Tensor) -> torch.Tensor:
    return t.bfloat16().float()


@contextlib.contextmanager
def tile_arithmetic(model):
    """The eager forward with the tiles' arithmetic: the shared net's products, the answer's
    embedding and the decoder on bfloat16-rounded inputs and weights, summed in float32; all else float32."""
    def block(self, h):
        gate, up = F.linear(bf16(h), bf16(self.gate_up.weight)).chunk(2, dim=-1)
        return F.rms_norm(h + F.linear(bf16(F.silu(gate) * up), bf16(self.down.weight)), h.shape[-1:])

    original = model_module.SwiGLUBlock.forward
    model_module.SwiGLUBlock.forward = block
    for layer in (model.embed_controls, model.decode):
        layer.forward = lambda x, layer=layer: F.linear(bf16(x), bf16(layer.weight))
    try:
        yield
    finally:
        model_module.SwiGLUBlock.forward = original
        for layer in (model.embed_controls, model.decode):
            del layer.forward


def bfloat16_products(model, initial_states, target_states) -> np.ndarray:
    """predict_refinements in tile_arithmetic, through PyTorch."""
    model.set_inference_precision("float32")
    try:
        with tile_arithmetic(model):
            return pytorch_only(model.predict_refinements)(initial_states, target_states)
    finally:
        model.set_inference_precision("bfloat16")


@pytest.mark.parametrize("system", ["double_integrator", "vanderpol"])
def test_one_recursion_is_the_bfloat16_arithmetic(system):
    """One recursion, so a bfloat16 rounding that float32 round-off tips cannot grow through the
    next ones: the tiles and the emulation agree to float32 round-off; float32 itself does not."""
    model = moving_model(system, num_supervision_steps=1, num_outer_cycles=1, num_inner_cycles=1)
    rng = np.random.default_rng(0)
    x0, xt = rng.uniform(-1, 1, (40, 2)), rng.uniform(-1, 1, (40, 2))
    tiles = model.predict_refinements(x0, xt)
    expected = bfloat16_products(model, x0, xt)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(tiles, expected, rtol=0, atol=1e-5 * max(1.0, model.control_bound))
    float32 = pytorch_only(model.set_inference_precision("float32").predict_refinements)(x0, xt)
    assert np.abs(tiles - float32).max() > 1e-4


@pytest.mark.parametrize("size", ["small", "large"])  # the large model's groups are 512 problems, not 32
def test_a_problem_gets_the_same_answer_in_any_batch_and_on_any_thread(size):
    model = moving_model(size=size)
    rng = np.random.default_rng(1)
    x0, xt = rng.uniform(-1, 1, (45, 2)), rng.uniform(-1, 1, (45, 2))
    together = model.predict_refinements(x0, xt)
    assert np.isfinite(together).all() and np.abs(together).max() > 0.1
    np.testing.assert_array_equal(model.predict_refinements(x0[7:8], xt[7:8])[:, 0], together[:, 7])
    np.testing.assert_array_equal(model.predict_refinements(x0[40:], xt[40:]), together[:, 40:])
    engine = FastForward.of(model, "bfloat16")
    threads = engine.threads
    try:
        engine.threads = 1
        np.testing.assert_array_equal(model.predict_refinements(x0, xt), together)
        engine.threads = 3  # more threads than groups of problems: some have none
        np.testing.assert_array_equal(model.predict_refinements(x0, xt), together)
    finally:
        engine.threads = threads


def test_halting_reports_the_exact_miss_and_keeps_the_full_answers():
    model = moving_model("vanderpol")
    rng = np.random.default_rng(2)
    x0, xt = rng.uniform(-1, 1, (70, 2)), rng.uniform(-1, 1, (70, 2))
    full = model.predict(x0, xt)
    tolerance = float(np.median(model.predict_anytime(x0, xt, tolerance=1e-9).terminal_errors))
    answer = model.predict_anytime(x0, xt, tolerance=tolerance)
    steps = model.config.num_supervision_steps
    assert 1 <= answer.refinements.min() and answer.refinements.max() == steps
    stopped = answer.refinements < steps
    assert stopped.any()
    assert (answer.terminal_errors[stopped] < tolerance).all()
    np.testing.assert_array_equal(answer.controls[~stopped], full[~stopped])
    with torch.no_grad():
        misses = model.terminal_errors(torch.tensor(x0, dtype=torch.float32), torch.tensor(xt, dtype=torch.float32),
                                       torch.tensor(answer.controls, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(answer.terminal_errors, misses, rtol=1e-4, atol=1e-5)


def test_other_precisions_and_pytorch_only_do_not_use_it(monkeypatch):
    model = moving_model()
    calls = []
    original = FastForward.run_numpy
    monkeypatch.setattr(FastForward, "run_numpy", lambda self, *a: calls.append(self.tiles) or original(self, *a))
    x0, xt = np.zeros((40, 2)), np.ones((40, 2))
    model.predict(x0, xt)
    assert calls == [True]
    pytorch_only(model.predict)(x0, xt)
    model.set_inference_precision("float32").predict(x0, xt)  # 40 problems: above forward.c's float32 batches
    assert calls == [True]


def test_the_landing_reads_its_answer_the_same_way():
    """The rocket landing's model (forward.c's landing_read) on tiles, one recursion as above. Its
    answer's features come from exp, tanh and Newton steps whose float32 round-off differs between
    C and PyTorch, and tips a few of their bfloat16 roundings: most thrusts agree to float32
    round-off, none by more than a few bfloat16 steps (4e-3 relative each)."""
    from trc_lib.tasks.rocket_landing.model import LandingRecursiveControl
    from trc_lib.tasks.rocket_landing.problem import RocketLanding, sample_problems
    landing = RocketLanding(num_steps=12)
    torch.manual_seed(0)
    model = LandingRecursiveControl.create("small", landing=landing, num_supervision_steps=1, num_outer_cycles=1,
                                           num_inner_cycles=1).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # the decoder starts at zero: give every weight a value
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(5)) * 0.05)
    engine = FastForward.of(model, "bfloat16")
    if engine is None:
        pytest.skip("no AMX here (or no C compiler)")
    x0, xt = (torch.tensor(a).float() for a in sample_problems(np.random.default_rng(3), 40, landing))
    with torch.no_grad(), tile_arithmetic(model):
        expected = model(x0, xt)
    tiles = engine(x0, xt)
    thrust_errors = (tiles[..., :-1] - expected[..., :-1]).abs() / landing.vehicle.thrust_max
    assert thrust_errors.median() < 1e-6 and thrust_errors.max() < 2e-3
    assert ((tiles[..., -1] - expected[..., -1]).abs() / expected[..., -1]).max() < 2e-3
