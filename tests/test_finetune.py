"""The sub-optimal teacher (teacher.py) and fine-tuning on the true objective (finetune.py)."""

import numpy as np
import pytest
import scipy.linalg
import torch

from trc_lib.oracles import closed_form
from trc_lib.data import generate_dataset
from trc_lib.evaluate import score_controls
from trc_lib.studies.finetune import finetune, measure, trajectory_cost
from trc_lib.model import TinyRecursiveControl
from trc_lib.tasks import make_problem
from trc_lib.studies.teacher import LABELS, clipped_lqr_labels, linearize

torch.set_num_threads(1)


def vanderpol_short():
    # 4 s (not the default 5) and 20 steps: quick to label, and every sample still reachable
    return make_problem(system="vanderpol", num_steps=20, time_horizon=4.0)


def test_linearization_of_vanderpol_is_the_exact_zero_order_hold_at_the_origin():
    problem = make_problem(system="vanderpol", mu=0.7)
    A, B = linearize(problem, np.zeros(2))
    block = np.zeros((3, 3))
    block[:2, :2], block[:2, 2:] = [[0.0, 1.0], [-1.0, 0.7]], [[0.0], [1.0]]
    expected = scipy.linalg.expm(problem.dt * block)
    np.testing.assert_allclose(A, expected[:2, :2], rtol=0, atol=1e-12)
    np.testing.assert_allclose(B, expected[:2, 2:], rtol=0, atol=1e-12)


def test_teacher_on_vanderpol_is_feasible_ish_and_worse_than_ipopt():
    problem = vanderpol_short()
    ipopt = generate_dataset(problem, 20, seed=0, state_range=(-2.0, 2.0), target_range=(0.0, 0.0), workers=1)
    teacher = clipped_lqr_labels(problem, ipopt.initial_states, ipopt.target_states, ipopt.metadata)
    assert teacher.metadata["labels"] == LABELS and teacher.metadata["problem"] == problem.to_dict()
    assert teacher.control_sequences.shape == ipopt.control_sequences.shape
    assert np.abs(teacher.control_sequences).max() <= problem.control_bound
    np.testing.assert_allclose(teacher.state_trajectories,
                               problem.system.rollout(teacher.initial_states, teacher.control_sequences), atol=1e-10)
    np.testing.assert_allclose(teacher.costs, problem.cost(teacher.state_trajectories, teacher.control_sequences,
                                                           teacher.target_states), rtol=1e-12)
    assert not teacher.terminal_multipliers.any()

    scores = score_controls(ipopt, teacher.control_sequences)
    # feasible-ish: the terminal weight stands in for x_N = x*, so most land on the target
    assert np.median(scores["terminal_error"]) < 1e-2 and scores["success"].mean() >= 0.8
    # sub-optimal: above IPOPT's optimum on average, and never meaningfully below it
    reached = scores["success"]
    assert np.mean(teacher.costs[reached] / ipopt.costs[reached]) > 1.01
    assert scores["cost_gap"].mean() > 0.01 and scores["cost_gap"].min() > -1e-3


def test_clipped_lqr_on_the_double_integrator_keeps_a_tiny_bound():
    problem = make_problem(controller="lqr", control_bound=0.1)
    x0 = np.random.default_rng(0).uniform(-2, 2, size=(30, 2))
    teacher = clipped_lqr_labels(problem, x0, np.zeros_like(x0))
    u = np.abs(teacher.control_sequences)
    assert u.max() <= 0.1 and np.isclose(u, 0.1, rtol=0, atol=1e-12).mean() > 0.2  # clipped, often
    np.testing.assert_allclose(teacher.state_trajectories, problem.system.rollout(x0, teacher.control_sequences),
                               atol=1e-12)


def test_clipped_lqr_with_a_huge_bound_is_the_exact_finite_horizon_lqr():
    # stage dt (x'Qx + u'Ru), terminal x'Q_f x, as in task.py; targets at rest are equilibria
    problem = make_problem(controller="lqr", control_bound=1e6, lqr_Q=(1.0, 0.5), lqr_R=(0.2,), lqr_Qf=(10.0, 3.0))
    rng = np.random.default_rng(1)
    x0 = rng.uniform(-2, 2, size=(25, 2))
    targets = np.stack([rng.uniform(-2, 2, size=25), np.zeros(25)], axis=1)
    teacher = clipped_lqr_labels(problem, x0, targets)
    exact = closed_form.solve(problem, x0, targets)
    assert not exact.bound_active.any()
    np.testing.assert_allclose(teacher.control_sequences, exact.control_sequences, rtol=0, atol=1e-9)
    np.testing.assert_allclose(teacher.costs, exact.costs, rtol=1e-10)


def test_teacher_refuses_a_target_that_is_not_an_equilibrium():
    problem = make_problem(controller="lqr")
    with pytest.raises(ValueError, match="not an equilibrium"):
        clipped_lqr_labels(problem, np.zeros((2, 2)), np.array([[0.0, 0.0], [1.0, 0.5]]))  # moving target


def test_trajectory_cost_is_the_problems_objective():
    problem = vanderpol_short()
    rng = np.random.default_rng(2)
    x0, xt = rng.uniform(-2, 2, size=(5, 2)), np.zeros((5, 2))
    u = rng.uniform(-2, 2, size=(5, 20, 1))
    cost, miss = trajectory_cost(problem, *(torch.as_tensor(a) for a in (x0, xt, u)))
    states = problem.system.rollout(x0, u)
    np.testing.assert_allclose(cost.numpy(), problem.cost(states, u, xt), rtol=1e-10)
    np.testing.assert_allclose(miss.numpy(), states[:, -1] - xt, atol=1e-10)


def tiny_model(problem):
    torch.manual_seed(0)
    return TinyRecursiveControl.create("small", problem=problem, latent_dim=16)


@pytest.mark.parametrize("problem", [make_problem(), vanderpol_short()], ids=["double_integrator", "vanderpol"])
def test_finetuning_lowers_the_true_objective_on_its_training_problems(problem):
    rng = np.random.default_rng(3)
    x0 = rng.uniform(-1, 1, size=(96, 2))
    train = clipped_lqr_labels(problem, x0, np.zeros_like(x0))
    model = tiny_model(problem)
    history = finetune(model, train.subset(np.arange(64)), train.subset(np.arange(64, 96)), epochs=4, lr=3e-3,
                       batch_size=16, progress=False, log=lambda *_: None)
    after = measure(model, train.subset(np.arange(64)), history["cost_scale"], history["terminal_penalty"])
    assert after["loss"] < 0.5 * history["initial"]["loss"]
    assert history["epoch"] == [1, 2, 3, 4] and len(history["val_terminal_error"]) == 4
    assert all(np.isfinite(history[key]).all() for key in ("loss", "cost", "val_cost", "val_terminal_error"))


def test_finetuning_never_reads_the_label_controls():
    problem = make_problem()
    x0 = np.random.default_rng(4).uniform(-1, 1, size=(32, 2))
    train = clipped_lqr_labels(problem, x0, np.zeros_like(x0))
    scrambled = clipped_lqr_labels(problem, x0, np.zeros_like(x0))
    scrambled.control_sequences[:] = np.nan  # only the labels' mean cost (the scale J_ref) is read
    scrambled.state_trajectories[:] = np.nan
    histories = [finetune(tiny_model(problem), data, epochs=2, batch_size=8, progress=False, log=lambda *_: None)
                 for data in (train, scrambled)]
    assert histories[0]["loss"] == histories[1]["loss"]


@pytest.mark.parametrize("kwargs, message", [({"epochs": 0}, "epochs"), ({"epochs": 1.5}, "epochs"),
                                             ({"terminal_penalty": -1.0}, "terminal_penalty"),
                                             ({"lr": 0.0}, "lr"), ({"batch_size": 0}, "batch_size"),
                                             ({"cost_scale": 0.0}, "cost_scale")])
def test_finetune_refuses_bad_arguments(kwargs, message):
    problem = make_problem()
    x0 = np.zeros((4, 2)) + 0.5
    with pytest.raises(ValueError, match=message):
        finetune(tiny_model(problem), clipped_lqr_labels(problem, x0, np.zeros_like(x0)), progress=False, **kwargs)


def test_finetune_refuses_data_from_another_problem():
    x0 = np.zeros((4, 2)) + 0.5
    data = clipped_lqr_labels(make_problem(controller="lqr"), x0, np.zeros_like(x0))
    with pytest.raises(ValueError, match="does not match"):
        finetune(tiny_model(make_problem()), data, progress=False)


def test_trc_finetune_writes_a_loadable_checkpoint(trained_dir, train_path, tmp_path, capsys):
    from trc_lib import load_model
    from trc_lib.interfaces.cli import main
    out = tmp_path / "finetuned"
    assert main(["finetune", "--checkpoint", str(trained_dir / "best_model.pt"), "--data", str(train_path),
                 "--epochs", "1", "--output_dir", str(out), "--no_progress", "--device", "cpu"]) == 0
    model = load_model(out / "finetuned_model.pt")
    assert model.predict(np.zeros((1, 2)), np.ones((1, 2))).shape == (1, 15, 1)
    assert "fine-tuned 1 epochs" in capsys.readouterr().out
    assert main(["finetune", "--checkpoint", str(tmp_path / "missing.pt"), "--data", str(train_path)]) == 2
    assert "missing.pt: no such checkpoint file" in capsys.readouterr().err
