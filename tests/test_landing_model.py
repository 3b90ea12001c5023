"""The rocket-landing model: constraints by construction, the exact scan, the correction step, and
the pipeline (generate -> train -> evaluate) on a coarse landing."""

import json

import numpy as np
import pytest
import torch

from trc_lib.checkpoint import load_model
from trc_lib.data import read_dataset
from trc_lib.interfaces.cli import main
from trc_lib.tasks.rocket_landing.evaluate import landing_metrics, score_landings
from trc_lib.tasks.rocket_landing.model import LandingRecursiveControl
from trc_lib.tasks.rocket_landing.problem import RocketLanding, sample_problems

COARSE = RocketLanding(num_steps=10)


def raw_answers(landing, count, seed=0, spread=5.0):
    N = landing.num_steps
    return torch.randn(count, 4 * N + 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * spread


@pytest.mark.parametrize("pointing_angle", [None, 25.0])
def test_any_raw_answer_keeps_the_thrust_annulus_and_pointing_cone(pointing_angle):
    """Whatever the network writes, every interval's thrust stays within rho_1..rho_2 over the whole
    interval (and within the pointing cone), measured in float64 on the float32 answer."""
    landing = RocketLanding(num_steps=10, pointing_angle=pointing_angle)
    model = LandingRecursiveControl.create("small", landing=landing)
    x0, xt = sample_problems(np.random.default_rng(1), 500, landing)
    with torch.no_grad():
        answer, _, _ = model.read_answer(raw_answers(landing, 500).float(), torch.tensor(x0).float(),
                                         torch.tensor(xt).float())
    thrusts, time_horizons = model.split(answer.double().numpy())
    states = landing.rollout(x0, thrusts, time_horizons)
    violations = landing.constraint_violations(states, thrusts, time_horizons)
    assert violations["thrust_max"].max() == 0 and violations["thrust_min"].max() == 0
    if pointing_angle is not None:
        assert violations["pointing"].max() == 0
    magnitudes = np.linalg.norm(thrusts, axis=-1)
    assert magnitudes.min() < 1.01 * landing.vehicle.thrust_min and magnitudes.max() > 0.99 * landing.vehicle.thrust_max


def test_the_model_flies_the_exact_dynamics():
    model = LandingRecursiveControl.create("small", landing=COARSE)
    x0, _ = sample_problems(np.random.default_rng(2), 8, COARSE)
    with torch.no_grad():
        answer, landed = model.landing_of(raw_answers(COARSE, 8, spread=0.5), torch.tensor(x0))
    thrusts, time_horizons = model.split(answer.numpy())
    exact = COARSE.rollout(x0, thrusts, time_horizons)[:, -1, :6]
    np.testing.assert_allclose(landed.numpy(), exact, rtol=1e-10, atol=1e-8)
    # what training and validation measure from an answer: the same landing
    errors = model.landing_errors(torch.tensor(x0), torch.zeros(8, 7, dtype=torch.float64), answer)
    np.testing.assert_allclose(errors.numpy(), exact, rtol=1e-10, atol=1e-8)


def test_correction_lands_from_far_away_inside_the_glide_cone_and_keeps_the_annulus():
    """Gauss-Newton on the raw answer, from hovering straight up, lands within its tolerance (0.1 mm)
    with every node inside the glide cone (the exact float64 rollout says so)."""
    model = LandingRecursiveControl.create("small", landing=COARSE)
    x0, xt = sample_problems(np.random.default_rng(0), 16, COARSE)
    hover = torch.zeros(16, 4 * COARSE.num_steps + 1, dtype=torch.float64)
    y = model.correct(hover, torch.tensor(x0), torch.tensor(xt), iterations=12)
    with torch.no_grad():
        answer, landed = model.landing_of(y, torch.tensor(x0))
    assert np.abs(landed.numpy() - xt[:, :6]).max() < 1e-4
    thrusts, time_horizons = model.split(answer.numpy())
    violations = COARSE.constraint_violations(COARSE.rollout(x0, thrusts, time_horizons), thrusts, time_horizons)
    assert violations["thrust_max"].max() == 0 and violations["thrust_min"].max() == 0
    assert violations["glide_slope"].max() < 1e-4  # the last node is the pad, reached to 0.1 mm
    # the same Gauss-Newton without its glide rows lands under the cone: the rows are what keep it out
    base = np.full(16, model.config.scales["time"] / COARSE.num_steps)
    unguarded, landed = model.landing_gauss_newton(hover.numpy(), x0, base, True, xt, 12, 1e-4, modes=((True, False),))
    assert landed.all()
    with torch.no_grad():
        _, positions, _ = model.flight_of(torch.from_numpy(unguarded), torch.tensor(x0))
    assert model.glide_violations(positions, torch.tensor(xt)).max() > 1.0


def test_glide_violations_agree_with_the_rollout():
    """glide_violations (the training penalty's and the correction's) is the glide slope of the
    exact rollout, node for node."""
    model = LandingRecursiveControl.create("small", landing=COARSE)
    x0, xt = sample_problems(np.random.default_rng(5), 8, COARSE)
    with torch.no_grad():
        answer, positions, _ = model.flight_of(raw_answers(COARSE, 8, spread=1.0), torch.tensor(x0))
    thrusts, time_horizons = model.split(answer.numpy())
    states = COARSE.rollout(x0, thrusts, time_horizons)
    np.testing.assert_allclose(positions.numpy(), states[:, 1:, :3], rtol=1e-10, atol=1e-7)
    violations = model.glide_violations(positions, torch.tensor(xt)).numpy()
    assert violations.max() > 0  # random answers fly under the cone somewhere
    inner = states[:, 1:-1, :3] - xt[:, None, :3]
    expected = COARSE.glide_slope_tangent * np.linalg.norm(inner[..., :2], axis=-1) - inner[..., 2]
    np.testing.assert_allclose(violations, expected, atol=1e-6)
    # the training penalty sees them: the same answers cost more with the glide slope than without
    flat = LandingRecursiveControl.create("small", landing=RocketLanding(num_steps=10, glide_slope=0.0))
    with_glide = model.miss_loss(torch.tensor(x0), torch.tensor(xt), answer)
    without = flat.miss_loss(torch.tensor(x0), torch.tensor(xt), answer)
    positive = np.maximum(violations, 0)
    expected = np.mean(np.sum(np.arcsinh(positive) ** 2, axis=1)) / 6  # GLIDE_RESOLUTION 1 m
    np.testing.assert_allclose((with_glide - without).item(), expected, rtol=1e-6)
    assert expected > 0


def test_generate_train_evaluate(tmp_path):
    data, test, run = tmp_path / "train", tmp_path / "test", tmp_path / "run"
    for folder, count, seed in ((data, 24, 1), (test, 6, 2)):
        assert main(["generate", "--system", "rocket_landing", "--num_samples", str(count), "--seed", str(seed),
                     "--num_steps", "10", "--output_dir", str(folder), "--no_progress"]) == 0
    dataset = read_dataset(data)
    assert dataset.time_horizons.shape == (24,) and dataset.control_sequences.shape == (24, 10, 3)
    assert main(["train", "--system", "rocket_landing", "--data", str(data), "--output_dir", str(run),
                 "--model_size", "small", "--epochs", "2", "--no_progress"]) == 0
    model = load_model(run / "best_model.pt")
    assert isinstance(model, LandingRecursiveControl)
    thrusts, time_horizons = model.predict(dataset.initial_states[:3], dataset.target_states[:3])
    assert thrusts.shape == (3, 10, 3) and time_horizons.shape == (3,) and (time_horizons > 0).all()
    assert main(["evaluate", "--checkpoint", str(run / "best_model.pt"), "--test_data", str(test),
                 "--output", str(tmp_path / "evaluation.json")]) == 0
    rows = json.loads((tmp_path / "evaluation.json").read_text())["rows"]
    corrected, checked = rows[1], rows[2]
    assert corrected["success_rate"] == 1.0  # the correction step lands every case of this easy set
    assert corrected["violation_thrust_max"]["max"] == 0 and corrected["violation_thrust_min"]["max"] == 0
    # corrected where the network misses (every case, after two epochs): a success inside the cone
    assert checked["success_rate"] == 1.0 and checked["corrected_share"] > 0
    assert checked.get("violation_glide_slope", {"max": 0.0})["max"] <= 1.0
    # compare: ZEM/ZEV guidance, TRC, its correction and the oracle, in physical units
    assert main(["compare", "--test_data", str(test), "--trc_checkpoint", str(run / "best_model.pt"),
                 "--output", str(tmp_path / "compare.json")]) == 0
    compared = json.loads((tmp_path / "compare.json").read_text())["controllers"]
    assert [row["controller"].split(" ")[0] for row in compared] == ["ZEM/ZEV", "TRC", "TRC", "TRC", "oracle"]
    assert compared[-1]["success_rate"] == 1.0 and abs(compared[-1]["fuel_gap"]["max"]) < 1e-9


def test_scores_are_in_physical_units():
    """The oracle's own labels score as perfect: zero gap, success, no violation."""
    from trc_lib.tasks.rocket_landing.cone_program import solve_landings
    x0, xt = sample_problems(np.random.default_rng(4), 3, COARSE)
    labels = solve_landings(COARSE, x0, xt, workers=1, progress=False)

    class Test:  # the fields score_landings reads
        problem, initial_states, target_states = COARSE, x0, xt
        control_sequences, costs, time_horizons = labels.thrusts, labels.fuel, labels.time_horizons

        def __len__(self):
            return 3
    summary = landing_metrics(score_landings(Test(), labels.thrusts, labels.time_horizons))
    assert summary["success_rate"] == 1.0 and abs(summary["fuel_gap"]["max"]) < 1e-12
    assert summary["position_error"]["max"] < 1e-6 and summary["violation_glide_slope"]["max"] < 1e-6


@pytest.mark.parametrize("pointing_angle", [None, 20.0])
def test_forward_c_matches_the_eager_forward(pointing_angle):
    """forward.c's landing_read is the same arithmetic as read_answer: the refinements agree to
    float32 round-off, which three supervision steps of random weights amplify (thrusts to 1e-5 of
    rho_2, flight times to 1e-4 of themselves)."""
    from trc_lib.fast.forward import FastForward
    landing = RocketLanding(num_steps=12, pointing_angle=pointing_angle)
    torch.manual_seed(0)
    model = LandingRecursiveControl.create("small", landing=landing)
    with torch.no_grad():
        for parameter in model.parameters():  # the decoder starts at zero: give every weight a value
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(5)) * 0.05)
    x0, xt = sample_problems(np.random.default_rng(3), 5, landing)
    fast = FastForward.of(model)
    if fast is None:
        pytest.skip("no C compiler")
    x0_t, xt_t = torch.tensor(x0).float(), torch.tensor(xt).float()
    with torch.no_grad():
        eager = model(x0_t, xt_t)
    compiled = fast(x0_t, xt_t)
    assert compiled.shape == eager.shape == (3, 5, 3 * 12 + 1)
    assert (compiled[..., :-1] - eager[..., :-1]).abs().max() < 1e-5 * landing.vehicle.thrust_max
    assert ((compiled[..., -1] - eager[..., -1]).abs() / eager[..., -1]).max() < 1e-4
    thrusts, time_horizons = model.predict(x0[:1], xt[:1])  # batch 1 runs forward.c
    np.testing.assert_allclose(thrusts[0], compiled[-1, 0, :-1].reshape(12, 3).double().numpy())


def test_commands_not_written_for_the_landing_say_so(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["generate", "--system", "rocket_landing", "--num_samples", "4", "--num_steps", "10",
                 "--output_dir", str(data), "--no_progress"]) == 0
    capsys.readouterr()
    for command in (["compare", "--test_data", str(data), "--newton_steps", "2", "--trc_checkpoint", "x.pt"],
                    ["prompts", "--test_data", str(data), "--output", str(tmp_path / "p.jsonl")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "not available for rocket_landing" in err and "Traceback" not in err


def test_vehicle_parameters(tmp_path, capsys):
    """The landing's constraints and the vehicle's numbers are --parameter's, as any task's."""
    out = tmp_path / "v"
    assert main(["generate", "--system", "rocket_landing", "--num_samples", "2", "--num_steps", "10",
                 "--parameter", "wet_mass=1800", "throttle_max=0.9", "glide_slope=5", "--output_dir", str(out),
                 "--no_progress"]) == 0
    landing = read_dataset(out).problem
    assert landing.vehicle.wet_mass == 1800 and landing.vehicle.throttle_max == 0.9 and landing.glide_slope == 5
    capsys.readouterr()
    for bad, message in ((["--parameter", "thrust=3"], "rocket_landing has no parameter ['thrust']"),
                         (["--parameter", "wet_mass=heavy"], "'heavy' is not a number"),
                         (["--parameter", "dry_mass=2000"], "dry_mass (2000) must be below wet_mass"),
                         (["--parameter", "glide_slope=95"], "glide_slope must be in [0, 90) degrees")):
        assert main(["generate", "--system", "rocket_landing", "--output_dir", str(tmp_path / "x"), *bad]) == 2
        error = capsys.readouterr().err
        assert message in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    assert main(["generate", "--system", "vanderpol", "--parameter", "wet_mass=1800",
                 "--output_dir", str(tmp_path / "y")]) == 2
    assert "vanderpol has no parameter ['wet_mass']" in capsys.readouterr().err


def test_compiled_flight_jacobian_matches_autograd():
    """landing_flight.c's forward-mode derivatives are PyTorch's reverse-mode ones, to round-off."""
    from trc_lib.tasks.rocket_landing.flight import _library, flight_jacobian
    if _library() is None:
        pytest.skip("no C compiler")
    model = LandingRecursiveControl.create("small", landing=COARSE)
    x0, _ = sample_problems(np.random.default_rng(6), 5, COARSE)
    raw = np.random.default_rng(7).normal(0.0, 0.7, (5, COARSE.num_steps, 4))
    dt, ddt = np.full(5, 4.0), np.array([4.0, 1.0, 0.5, 2.0, 3.0])
    compiled = flight_jacobian(model, x0, raw, dt, ddt)
    reference = flight_jacobian(model, x0, raw, dt, ddt, compiled=False)
    for ours, theirs in zip(compiled, reference):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9 * np.abs(theirs).max())
    flight_only = flight_jacobian(model, x0, raw, dt, ddt, jacobian=False)
    for ours, theirs in zip(flight_only[:3], reference[:3]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9 * np.abs(theirs).max())
    assert flight_only[3] is None and flight_only[4] is None


@pytest.mark.parametrize("pointing_angle", [None, 25.0])
def test_raw_answer_inverts_the_reading(pointing_angle):
    """raw_answer(landing_of(y)) reads back as the same thrusts and flight time (what lets the
    correction start from the compiled forward's answer)."""
    landing = RocketLanding(num_steps=10, pointing_angle=pointing_angle)
    model = LandingRecursiveControl.create("small", landing=landing)
    x0, _ = sample_problems(np.random.default_rng(8), 6, landing)
    with torch.no_grad():
        answer, _ = model.landing_of(raw_answers(landing, 6, spread=1.0), torch.tensor(x0))
    thrusts, time_horizons = model.split(answer.numpy())
    y = model.raw_answer(x0, thrusts, time_horizons)
    with torch.no_grad():
        again, _ = model.landing_of(torch.from_numpy(y), torch.tensor(x0))
    np.testing.assert_allclose(again.numpy(), answer.numpy(), rtol=1e-9, atol=1e-6)


def test_landing_miss_and_thrust_fractions_match_numpy():
    """The compiled check of a flight (landing_miss) is the rollout's miss and scoring's glide
    violation; the compiled inverse of the magnitudes is the numpy loop's, to round-off."""
    from trc_lib.tasks.rocket_landing import flight as landing_flight
    if landing_flight._library() is None:
        pytest.skip("no C compiler")
    model = LandingRecursiveControl.create("small", landing=COARSE)
    x0, xt = sample_problems(np.random.default_rng(9), 6, COARSE)
    with torch.no_grad():
        answer, _ = model.landing_of(raw_answers(COARSE, 6, spread=1.0), torch.tensor(x0))
    thrusts, time_horizons = model.split(answer.numpy())
    miss, glide = landing_flight.landing_miss(COARSE, x0, thrusts, time_horizons, xt)
    states = COARSE.rollout(x0, thrusts, time_horizons)
    np.testing.assert_allclose(miss, states[:, -1, :6] - xt[:, :6], rtol=1e-12, atol=1e-9)
    violation = COARSE.constraint_violations(states, thrusts, time_horizons)["glide_slope"]
    np.testing.assert_allclose(np.maximum(glide, 0), violation, rtol=1e-12, atol=1e-9)
    masses, magnitudes, dt = x0[:, 6], np.linalg.norm(thrusts, axis=-1), time_horizons / COARSE.num_steps
    compiled = landing_flight.thrust_fractions(COARSE, masses, magnitudes, dt, 3, 1e-5)
    library, landing_flight._LIBRARY = landing_flight._LIBRARY, False  # the numpy fallbacks
    try:
        np.testing.assert_allclose(landing_flight.thrust_fractions(COARSE, masses, magnitudes, dt, 3, 1e-5), compiled,
                                   rtol=1e-12, atol=1e-12)
        again = landing_flight.landing_miss(COARSE, x0, thrusts, time_horizons, xt)
    finally:
        landing_flight._LIBRARY = library
    np.testing.assert_allclose(again[0], miss, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(again[1], glide, rtol=1e-12, atol=1e-9)


def test_the_correction_runs_only_where_the_flight_misses():
    """accept_within keeps every answer whose exact flight lands within it and corrects the rest:
    generous bounds give the network's answer, zero bounds the answer corrected everywhere."""
    model = LandingRecursiveControl.create("small", landing=COARSE)
    x0, xt = sample_problems(np.random.default_rng(10), 4, COARSE)
    network = model.predict(x0, xt)
    everywhere = model.predict_corrected(x0, xt, iterations=12)
    kept = model.predict_corrected(x0, xt, iterations=12, accept_within=(1e9, 1e9, 1e9))
    for ours, theirs in zip(kept, network):
        np.testing.assert_array_equal(ours, theirs)
    for ours, theirs in zip(model.predict_corrected(x0, xt, iterations=12, accept_within=(0.0, 0.0, 0.0)), everywhere):
        np.testing.assert_array_equal(ours, theirs)
    accepted = model.accepted(x0, xt, *network, (5.0, 1.0, 1.0))
    mixed = model.predict_corrected(x0, xt, iterations=12, accept_within=(5.0, 1.0, 1.0))
    assert not accepted.all()  # an untrained network misses
    np.testing.assert_array_equal(mixed[0][accepted], network[0][accepted])
    np.testing.assert_allclose(mixed[0][~accepted], everywhere[0][~accepted], rtol=1e-9, atol=1e-6)
    with pytest.raises(ValueError, match="accept_within"):
        model.predict_corrected(x0, xt, accept_within=(5.0, -1.0, 1.0))


def test_export_to_onnx_and_evaluate_it(tmp_path, capsys):
    """trc export writes the landing model (its scan unrolled) and ONNX Runtime answers as PyTorch
    does, as (thrusts, time_horizons); trc evaluate scores the ONNX file (the network alone: the
    correction step needs the PyTorch model)."""
    from trc_lib.checkpoint import save_checkpoint
    from trc_lib.export import OnnxController
    tiny = RocketLanding(num_steps=2)
    torch.manual_seed(0)
    model = LandingRecursiveControl.create("small", landing=tiny, latent_dim=16, num_supervision_steps=2,
                                           num_outer_cycles=1, num_inner_cycles=1)
    with torch.no_grad():
        model.decode.weight.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(1))
    save_checkpoint(tmp_path / "tiny.pt", model, model.state_dict())
    assert main(["export", "--checkpoint", str(tmp_path / "tiny.pt"), "--output", str(tmp_path / "tiny.onnx")]) == 0
    onnx = OnnxController(tmp_path / "tiny.onnx")
    x0, xt = sample_problems(np.random.default_rng(9), 5, tiny)
    (thrusts, time_horizons), (expected_thrusts, expected_times) = onnx.predict(x0, xt), model.predict(x0, xt)
    assert thrusts.shape == (5, 2, 3) and time_horizons.shape == (5,)
    np.testing.assert_allclose(thrusts, expected_thrusts, rtol=0, atol=1e-4 * tiny.vehicle.thrust_max)
    np.testing.assert_allclose(time_horizons, expected_times, rtol=1e-4)
    data = tmp_path / "test"
    assert main(["generate", "--system", "rocket_landing", "--num_samples", "3", "--num_steps", "2",
                 "--output_dir", str(data), "--no_progress"]) == 0
    assert main(["evaluate", "--checkpoint", str(tmp_path / "tiny.onnx"), "--test_data", str(data),
                 "--output", str(tmp_path / "evaluation.json")]) == 0
    rows = json.loads((tmp_path / "evaluation.json").read_text())["rows"]
    assert [row["controller"] for row in rows] == ["TRC (ONNX Runtime)"]
    assert main(["compare", "--test_data", str(data), "--trc_checkpoint", str(tmp_path / "tiny.onnx"),
                 "--output", str(tmp_path / "compare.json")]) == 0
    rows = json.loads((tmp_path / "compare.json").read_text())["controllers"]
    assert [row["controller"].split(" (")[0] for row in rows] == ["ZEM/ZEV guidance", "TRC", "oracle"]


def test_objective_is_the_rollouts_fuel_and_miss_and_finetune_runs_on_it(tmp_path):
    """objective(): the fuel of the exact rollout, and zero miss for the oracle's own landings; trc
    finetune trains on it (fuel over the labels' mean fuel plus the penalty on the miss)."""
    from trc_lib.tasks.rocket_landing.cone_program import solve_landings
    model = LandingRecursiveControl.create("small", landing=COARSE)
    x0, xt = sample_problems(np.random.default_rng(10), 4, COARSE)
    labels = solve_landings(COARSE, x0, xt, workers=1, progress=False)
    answer = torch.cat([torch.tensor(labels.thrusts).flatten(1), torch.tensor(labels.time_horizons)[:, None]], dim=1)
    fuel, miss = model.objective(torch.tensor(x0), torch.tensor(xt), answer)
    np.testing.assert_allclose(fuel.numpy(), labels.fuel, rtol=1e-10)
    assert miss.shape == (4, 6 + COARSE.num_steps - 1) and miss.abs().max() < 1e-5
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["generate", "--system", "rocket_landing", "--num_samples", "20", "--num_steps", "10",
                 "--output_dir", str(data), "--no_progress"]) == 0
    assert main(["train", "--system", "rocket_landing", "--data", str(data), "--output_dir", str(run),
                 "--model_size", "small", "--epochs", "1", "--no_progress"]) == 0
    assert main(["finetune", "--checkpoint", str(run / "best_model.pt"), "--data", str(data), "--epochs", "2",
                 "--output_dir", str(tmp_path / "tuned"), "--no_progress"]) == 0
    history = json.loads((tmp_path / "tuned" / "finetune_stats.json").read_text())
    assert len(history["loss"]) == 2 and history["final"]["loss"] < history["initial"]["loss"]
    assert isinstance(load_model(tmp_path / "tuned" / "finetuned_model.pt"), LandingRecursiveControl)


def test_predict_refuses_a_mass_outside_the_vehicle_instead_of_answering_nan():
    """A lander with an empty tank (mass 0) once came back as NaN thrusts without a word."""
    model = LandingRecursiveControl.create("small", landing=COARSE)
    x0, xt = sample_problems(np.random.default_rng(0), 2, COARSE)
    x0[1, 6] = 0.0
    with pytest.raises(ValueError, match=r"initial_states\[1\]: mass 0 kg is outside the vehicle's"):
        model.predict(x0, xt)
    assert np.isfinite(model.predict(x0[:1], xt[:1])[0]).all()
