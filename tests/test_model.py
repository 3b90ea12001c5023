"""TinyRecursiveControl: sizes, bounds, the recursion's bookkeeping, and its error feedback."""

import numpy as np
import pytest
import torch

from trc_lib import TinyRecursiveControl
from trc_lib.data import make_problem
from trc_lib.model import ModelConfig


@pytest.mark.parametrize("size, target", [("small", 105_000), ("medium", 530_000), ("large", 2_600_000)])
def test_preset_sizes_match_the_guide_within_15_percent(size, target):
    model = getattr(TinyRecursiveControl, f"create_{size}")()
    assert abs(model.num_parameters() - target) / target < 0.15


def test_custom_latent_dim_and_outer_cycles_build_the_requested_model():
    model = TinyRecursiveControl.create("medium", latent_dim=256, num_outer_cycles=5)
    assert model.config.latent_dim == 256 and model.config.num_outer_cycles == 5
    assert model.net[0].down.out_features == 256
    out = model(torch.zeros(3, 2), torch.ones(3, 2))
    assert out.shape == (model.config.num_supervision_steps, 3, 15, 1)


def test_unknown_size_is_refused():
    with pytest.raises(ValueError, match="huge"):
        TinyRecursiveControl.create("huge")


def test_controls_respect_the_bound_by_construction_even_for_wild_inputs():
    torch.manual_seed(0)
    model = TinyRecursiveControl.create("small")
    for p in model.parameters():  # large random weights push the answer far into saturation
        torch.nn.init.normal_(p, std=3.0)
    out = model(100 * torch.randn(50, 2), 100 * torch.randn(50, 2))
    assert torch.isfinite(out).all()
    assert out.abs().max() <= model.control_bound


def test_forward_returns_every_refinement_and_predict_returns_the_last():
    torch.manual_seed(0)
    model = TinyRecursiveControl.create("small")
    torch.nn.init.normal_(model.decode.weight, std=0.1)  # so refinements differ from zero
    x0, xt = np.random.default_rng(0).uniform(-2, 2, (2, 4, 2))
    refinements = model.predict_refinements(x0, xt)
    assert refinements.shape == (model.config.num_supervision_steps, 4, 15, 1)
    assert not np.allclose(refinements[0], refinements[-1])
    np.testing.assert_allclose(model.predict(x0, xt), refinements[-1])
    assert model.predict(x0, xt).dtype == np.float64


def test_more_supervision_steps_can_be_run_at_inference():
    model = TinyRecursiveControl.create("small")
    out = model(torch.zeros(2, 2), torch.ones(2, 2), num_supervision_steps=5)
    assert out.shape[0] == 5


def test_only_the_last_recursion_of_a_supervision_step_carries_gradient():
    """TRM's deep recursion: T-1 recursions without gradient, then one with."""
    model = TinyRecursiveControl.create("small", num_outer_cycles=3)
    calls = []
    original = model.recursion

    def spy(*args):
        calls.append(torch.is_grad_enabled())
        return original(*args)

    model.recursion = spy
    x0 = torch.randn(4, 2)
    carry, controls = model.supervision_step(x0, torch.randn(4, 2), model.initial_carry(4))
    assert calls == [False, False, True]
    assert controls.requires_grad


def test_error_feedback_makes_the_answer_depend_on_the_simulated_miss():
    """With feedback, changing the dynamics the model simulates changes its answer."""
    torch.manual_seed(0)
    model = TinyRecursiveControl.create("small")
    torch.nn.init.normal_(model.decode.weight, std=0.1)
    x0, xt = torch.randn(4, 2), torch.randn(4, 2)
    before = model(x0, xt)[-1]
    exact = model.terminal_states
    model.terminal_states = lambda x0, u: 2.0 * exact(x0, u)  # other dynamics, the same network
    after = model(x0, xt)[-1]
    assert not torch.allclose(before, after)
    no_feedback = TinyRecursiveControl(ModelConfig(error_feedback=False))
    assert no_feedback.embed_error is None


def test_terminal_states_follow_the_exact_dynamics():
    problem = make_problem()
    model = TinyRecursiveControl.create("small", problem=problem)
    rng = np.random.default_rng(1)
    x0, u = rng.uniform(-2, 2, (5, 2)), rng.uniform(-4, 4, (5, 15, 1))
    exact = problem.system.rollout(x0, u)[:, -1]
    got = model.terminal_states(torch.tensor(x0, dtype=torch.float32), torch.tensor(u, dtype=torch.float32))
    np.testing.assert_allclose(got.numpy(), exact, atol=1e-4)


def test_miss_loss_is_the_squared_miss_near_the_target_and_logarithmic_far_from_it():
    problem = make_problem()
    model = TinyRecursiveControl.create("small", problem=problem, state_scale=2.0)
    x0 = torch.tensor([[1.0, 0.0]])
    u = torch.zeros(1, 15, 1)  # x'' = 0 from rest: x_N = x0, so the miss is x0 - x*
    near = model.miss_loss(x0, x0 - torch.tensor([[3e-3, 4e-3]]), u)  # a miss of 5e-3
    assert float(near) == pytest.approx(5e-3 ** 2 / 2.0 ** 2, rel=3e-3)
    far = [float(model.miss_loss(x0, x0 - torch.tensor([[m, 0.0]]), u)) for m in (10.0, 100.0)]
    assert far[0] < 1e-3 * 10.0 ** 2 / 2.0 ** 2  # the square would be 25
    assert far[1] - far[0] == pytest.approx(0.1 ** 2 * 2 * np.log(10.0) / 2.0 ** 2, rel=1e-3)  # log m


def test_model_is_built_for_the_problem_it_is_given():
    problem = make_problem(num_steps=10, time_horizon=2.0, control_bound=1.5)
    model = TinyRecursiveControl.create_small(problem=problem)
    out = model(torch.zeros(2, 2), torch.ones(2, 2))
    assert out.shape[-2:] == (10, 1) and out.abs().max() <= 1.5


def test_compiled_inference_gives_the_same_answers():
    """model.compile_inference() (torch.compile) is a speed option only. A one-recursion model
    keeps the compile time of this test to a few seconds."""
    model = TinyRecursiveControl.create("small", latent_dim=16, num_supervision_steps=1, num_outer_cycles=1,
                                        num_inner_cycles=1).eval()
    torch.nn.init.normal_(model.decode.weight, std=0.1)
    x0, xt = np.random.default_rng(0).uniform(-2, 2, (2, 5, 2))
    eager = model.predict(x0, xt)
    assert model.compile_inference() is model
    compiled, calls = model._compiled_forward, []
    model._compiled_forward = lambda *args: calls.append(1) or compiled(*args)
    np.testing.assert_allclose(model.predict(x0, xt), eager, atol=1e-5, rtol=0)
    assert calls == [1]  # the compiled forward answered, not forward.c


def test_bfloat16_inference_is_close_to_float32_and_really_changes_the_arithmetic():
    """set_inference_precision("bfloat16") runs the matrix products in bfloat16: the answers move
    (by about bfloat16's 8 significant bits), stay within the bound, and float32 comes back exactly."""
    model = TinyRecursiveControl.create("small", latent_dim=32).eval()
    torch.nn.init.normal_(model.decode.weight, std=0.1)
    x0, xt = np.random.default_rng(0).uniform(-2, 2, (2, 64, 2))
    float32 = model.predict(x0, xt)
    bfloat16 = model.set_inference_precision("bfloat16").predict(x0, xt)
    difference = np.abs(bfloat16 - float32).max()
    assert 0 < difference < 0.05 * model.control_bound
    assert np.abs(bfloat16).max() <= model.control_bound
    np.testing.assert_array_equal(model.set_inference_precision("float32").predict(x0, xt), float32)
    with pytest.raises(ValueError, match="unknown precision 'float64'"):
        model.set_inference_precision("float64")


def _untrained_answers_that_move(system):
    """A tiny model whose refinements differ (the decoder starts at zero, so perturb it)."""
    model = TinyRecursiveControl.create("small", problem=make_problem(system=system), latent_dim=16)
    torch.nn.init.normal_(model.decode.weight, std=0.05, generator=torch.Generator().manual_seed(0))
    rng = np.random.default_rng(4)
    return model, rng.uniform(-1, 1, (40, 2)), np.zeros((40, 2))


@pytest.mark.parametrize("system", ["double_integrator", "vanderpol"])
def test_halting_stops_each_problem_at_its_first_answer_within_tolerance(system):
    model, x0, xt = _untrained_answers_that_move(system)
    refinements = model.predict_refinements(x0, xt)                                   # [R, B, N, m]
    errors = np.linalg.norm(model.problem.system.rollout(
        np.tile(x0, (len(refinements), 1)), refinements.reshape(-1, *refinements.shape[2:]))[:, -1]
        - np.tile(xt, (len(refinements), 1)), axis=1).reshape(len(refinements), -1)  # [R, B]
    tolerance = float(np.median(errors[0]))  # about half the problems stop after the first step
    answer = model.predict_anytime(x0, xt, tolerance=tolerance)
    expected_steps = np.where((errors < tolerance).any(0), (errors < tolerance).argmax(0) + 1, len(refinements))
    np.testing.assert_array_equal(answer.refinements, expected_steps)
    rows = np.arange(len(x0))
    np.testing.assert_allclose(answer.controls, refinements[expected_steps - 1, rows], atol=1e-5)
    np.testing.assert_allclose(answer.terminal_errors, errors[expected_steps - 1, rows], rtol=1e-4, atol=1e-5)
    assert 1 <= answer.refinements.mean() < len(refinements)
    np.testing.assert_allclose(model.predict(x0, xt, tolerance=tolerance), answer.controls)


def test_halting_with_no_tolerance_reached_runs_every_step_and_checks_its_arguments():
    model, x0, xt = _untrained_answers_that_move("vanderpol")
    answer = model.predict_anytime(x0, xt, tolerance=1e-9, max_refinements=5)
    assert (answer.refinements == 5).all()
    with torch.no_grad():
        five_steps = model(torch.tensor(x0, dtype=torch.float32), torch.tensor(xt, dtype=torch.float32),
                           num_supervision_steps=5)[-1].double().numpy()
    np.testing.assert_allclose(answer.controls, five_steps, atol=1e-5)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="tolerance must be a positive number"):
            model.predict_anytime(x0, xt, tolerance=bad)
    with pytest.raises(ValueError, match="max_refinements must be a positive integer"):
        model.predict_anytime(x0, xt, tolerance=0.1, max_refinements=0)
