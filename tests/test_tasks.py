"""The nonlinear tasks end to end at small size: problems, IPOPT-labelled datasets that are
checked when read, the model's error feedback, training, scoring, the CLI and generalization."""

import dataclasses
import functools

import numpy as np
import pytest
import torch

from trc_lib import compare as compare_module
from trc_lib.interfaces import workflow
from trc_lib.interfaces.cli import main
from trc_lib.data import generate_dataset, read_dataset, save_dataset
from trc_lib.oracles import optimum, oracle_of
from trc_lib.errors import TRCError
from trc_lib.evaluate import score_controls, time_inference
from trc_lib.model import TinyRecursiveControl
from trc_lib.tasks import make_problem

SHORT = dict(num_steps=10, time_horizon=2.0)  # a short Van der Pol task: IPOPT solves it in a few ms


@pytest.fixture(scope="module")
def vanderpol_set():
    problem = make_problem(system="vanderpol", **SHORT)
    return generate_dataset(problem, 24, seed=3, state_range=(-1.0, 1.0), target_range=(0.0, 0.0), workers=1)


def test_each_system_has_its_documented_default_problem():
    di, vdp, pendulum = (make_problem(system=s) for s in ("double_integrator", "vanderpol", "pendulum"))
    assert (di.num_steps, di.control_bound, di.objective.name) == (15, 4.0, "min_energy")
    assert (vdp.num_steps, vdp.control_bound, vdp.system.mu, vdp.system.substeps) == (50, 2.0, 1.0, 4)
    assert vdp.objective.terminal_constraint and vdp.objective.name == "quadratic"
    # the pendulum's torque cannot hold it out horizontally, let alone lift it: it must pump
    assert pendulum.control_bound < pendulum.system.mass * pendulum.system.gravity * pendulum.system.length
    assert make_problem(system="vanderpol", mu=0.5).system.mu == 0.5


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(system="vanderpol", controller="lqr"), "unknown controller 'lqr' for vanderpol"),
    (dict(system="double_integrator", mu=2.0), "double_integrator has no parameter ['mu']"),
    (dict(system="cartpole"), "'cartpole': not a built-in task"),
])
def test_bad_task_options_are_named(kwargs, fragment):
    with pytest.raises((ValueError, TRCError)) as error:
        make_problem(**kwargs)
    assert fragment in str(error.value)


def test_pendulum_starts_pump_both_ways():
    starts = make_problem(system="pendulum").label_starts()
    assert starts.shape == (3, 50, 1)
    np.testing.assert_array_equal(starts[1], -starts[2])
    assert np.abs(starts[1]).max() == 3.0


def test_vanderpol_labels_reach_the_origin_and_survive_a_round_trip(vanderpol_set, tmp_path):
    assert np.abs(vanderpol_set.target_states).max() == 0.0  # target fixed at the origin
    miss = np.linalg.norm(vanderpol_set.state_trajectories[:, -1], axis=1)
    assert miss.max() < 1e-6
    assert np.abs(vanderpol_set.terminal_multipliers).max() > 0  # the cost gap needs them
    path = save_dataset(vanderpol_set, tmp_path / "vdp.npz")
    again = read_dataset(path)
    np.testing.assert_array_equal(again.control_sequences, vanderpol_set.control_sequences)
    assert again.metadata["oracle"].startswith("IPOPT")


def test_suboptimal_nonlinear_labels_are_refused(vanderpol_set):
    # feasible but worse labels for the same pairs: the optimum under a tighter bound
    tight_problem = vanderpol_set.problem.replace(control_bounds=((-0.8, 0.8),))
    tight, solved = optimum(tight_problem, vanderpol_set.initial_states, vanderpol_set.target_states, workers=1)
    keep = np.flatnonzero(solved)
    assert len(keep) >= 5
    claimed = vanderpol_set.subset(keep)
    claimed.control_sequences, claimed.state_trajectories = tight.control_sequences[keep], tight.state_trajectories[keep]
    claimed.costs, claimed.path = tight.costs[keep], "claimed.npz"
    assert np.all(claimed.costs >= vanderpol_set.costs[keep] - 1e-9)
    assert np.any(claimed.costs > vanderpol_set.costs[keep] * 1.01)
    with pytest.raises(TRCError, match="claimed.npz: IPOPT improves the stored labels"):
        oracle_of(claimed.problem).verify(claimed, num_spot_checks=len(claimed))
    oracle_of(vanderpol_set.problem).verify(vanderpol_set, num_spot_checks=len(vanderpol_set))  # the real ones pass


def test_inconsistent_nonlinear_files_are_refused(vanderpol_set, tmp_path):
    broken = vanderpol_set.subset(np.arange(len(vanderpol_set)))
    broken.state_trajectories = broken.state_trajectories.copy()
    broken.state_trajectories[0, 3] += 0.1
    path = save_dataset(broken, tmp_path / "broken.npz")
    with pytest.raises(TRCError, match="broken.npz: 'state_trajectories' are not the rollout"):
        read_dataset(path)


def test_model_feeds_back_the_nonlinear_miss_and_trains(vanderpol_set, tmp_path, monkeypatch):
    problem = vanderpol_set.problem
    model = TinyRecursiveControl.create("small", problem=problem, latent_dim=16)
    x0 = torch.tensor(vanderpol_set.initial_states[:4], dtype=torch.float32)
    u = torch.zeros(4, problem.num_steps, 1)
    exact = problem.system.rollout(vanderpol_set.initial_states[:4], np.zeros((4, problem.num_steps, 1)))[:, -1]
    np.testing.assert_allclose(model.terminal_states(x0, u).numpy(), exact, rtol=1e-6, atol=1e-6)  # float32 round-off
    path = save_dataset(vanderpol_set, tmp_path / "train.npz")
    trained = workflow.train_model(path, output_dir=tmp_path / "out", model_size="small", epochs=2, latent_dim=16, progress=False,
                                   log=lambda *_: None)
    scores = score_controls(vanderpol_set, trained.predict(vanderpol_set.initial_states, vanderpol_set.target_states))
    assert np.isfinite(scores["cost_gap"]).all() and scores["terminal_error"].shape == (24,)
    # trc compare --newton_steps: the barely trained network's answer after one Newton step (from
    # the final answer, then earlier refinements for the problems still short) misses by less, never by more (test_projection.py checks convergence).
    # Timing is not checked here: one timed call per batch size instead of ~10 s of repeats.
    monkeypatch.setattr(compare_module, "time_inference", functools.partial(time_inference, repeats=1))
    rows = workflow.compare(path, trc_checkpoint=tmp_path / "out" / "best_model.pt", train_data=path, newton_steps=1,
                            log=lambda *_: None)
    trc = next(r for r in rows if r["name"] == "TRC")
    projected = next(r for r in rows if r["name"] == "TRC + Newton projection (1 step, earlier refinements as fallback starts)")
    assert projected["terminal_error"]["max"] <= trc["terminal_error"]["max"]
    assert projected["terminal_error"]["mean"] < 0.5 * trc["terminal_error"]["mean"]


def test_cli_generates_nonlinear_data_and_checks_the_system(tmp_path, capsys):
    out = tmp_path / "vdp"
    assert main(["generate", "--system", "vanderpol", "--num_samples", "6", "--num_steps", "10", "--time_horizon",
                 "2", "--output_dir", str(out), "--workers", "1", "--no_progress"]) == 0
    data = read_dataset(out)
    assert data.problem.system.name == "vanderpol" and len(data) == 6
    assert main(["train", "--system", "pendulum", "--data", str(out / "lqr_dataset.npz")]) == 2
    assert "holds vanderpol problems, not pendulum" in capsys.readouterr().err
    assert main(["generate", "--mu", "2", "--output_dir", str(tmp_path / "di")]) == 2
    assert "--mu is a parameter of --system vanderpol" in capsys.readouterr().err


def test_generalization_sweeps_mu_on_vanderpol(vanderpol_set):
    from trc_lib.studies.generalization import studies_for, sweep
    assert studies_for(vanderpol_set.problem) == ["box", "horizon", "mu"]
    zero = lambda x0, xt: np.zeros((len(x0), vanderpol_set.problem.num_steps, 1))
    rows = sweep({"zero": zero}, "mu", [0.5, 1.5], num_samples=4, train=vanderpol_set)
    assert [(r["value"], r["controller"]) for r in rows] == [(0.5, "zero"), (0.5, "oracle"), (1.5, "zero"),
                                                             (1.5, "oracle")]
    assert all(r["success_rate"] == 1.0 for r in rows if r["controller"] == "oracle")
    with pytest.raises(ValueError, match="does not apply to vanderpol"):
        sweep({"zero": zero}, "target_box", [1.0], train=vanderpol_set)


def test_hybrid_polishes_a_guess_into_the_optimum(vanderpol_set):
    from trc_lib.baselines import ZeroController
    from trc_lib.studies.hybrid import HybridController
    problem, cases = vanderpol_set.problem, vanderpol_set.subset(np.arange(4))
    converged = HybridController(ZeroController(problem), problem)
    assert converged.name == "zero + IPOPT (to convergence)"
    u = converged.predict(cases.initial_states, cases.target_states)
    assert converged.converged.all()
    np.testing.assert_allclose(score_controls(cases, u)["cost"], cases.costs, rtol=1e-5)
    one_step = HybridController(ZeroController(problem), problem, max_iterations=1)
    u1 = one_step.predict(cases.initial_states, cases.target_states)
    assert (one_step.iterations <= 1).all() and np.abs(u1).max() <= problem.control_bound
    with pytest.raises(ValueError, match="for the tasks IPOPT solves"):
        HybridController(ZeroController(make_problem()), make_problem())
