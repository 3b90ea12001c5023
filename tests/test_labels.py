"""IPOPT labels for nonlinear problems, in parallel: the same answers as serial, optimal and feasible."""

import shutil

import numpy as np
import pytest

from trc_lib.oracles.labels import make_optimizer, solve_nonlinear, vanderpol_problem
from trc_lib.tasks import task_from_dict


@pytest.fixture(scope="module")
def problem():
    return vanderpol_problem(num_steps=20)


def test_van_der_pol_problem_survives_a_round_trip_through_its_dict(problem):
    assert task_from_dict(problem.to_dict()) == problem


def test_parallel_labels_equal_serial_ones_and_reach_the_target(problem):
    rng = np.random.default_rng(0)
    x0, xt = rng.uniform(-1.5, 1.5, (12, 2)), np.zeros((12, 2))
    parallel, ok_parallel = solve_nonlinear(problem, x0, xt, workers=2, chunk_size=4, progress=False)
    serial, ok_serial = solve_nonlinear(problem, x0, xt, workers=1, progress=False)
    np.testing.assert_array_equal(parallel.control_sequences, serial.control_sequences)
    assert ok_parallel.all() and ok_serial.all()
    assert np.abs(parallel.state_trajectories[:, -1] - xt).max() < 1e-6
    assert np.abs(parallel.control_sequences).max() <= problem.control_bound + 1e-9


def test_labels_cost_what_the_problem_says_and_no_other_start_does_better(problem):
    x0, xt = np.array([[1.0, -0.5]]), np.zeros((1, 2))
    solution, ok = solve_nonlinear(problem, x0, xt, workers=1, progress=False)
    states = problem.system.rollout(x0, solution.control_sequences)
    np.testing.assert_allclose(solution.costs, problem.cost(states, solution.control_sequences, xt), rtol=1e-12)
    # another start finds no cheaper feasible answer
    optimizer = make_optimizer(problem)
    other = optimizer.solve(x0[0], xt[0], initial_guesses=[np.full((problem.num_steps, 1), 0.5)])
    assert ok.all() and other.cost >= solution.costs[0] - 1e-6


def test_an_unreachable_target_is_reported_as_unsolved(problem):
    _, ok = solve_nonlinear(problem, np.array([[0.0, 0.0]]), np.array([[40.0, 0.0]]), workers=1, progress=False)
    assert not ok.any()


def _compiled_in_workers():
    import trc_lib.oracles.labels as labels
    return labels._worker_optimizer is not None and labels._worker_optimizer.compiled


def test_large_batches_compile_the_nlp_once_per_worker_and_get_the_same_labels(problem, monkeypatch, tmp_path):
    import trc_lib.oracles.labels as labels
    from trc_lib.oracles.workers import _local_client
    monkeypatch.chdir(tmp_path)  # CasADi's JIT writes into the working directory: nothing may be left there
    rng = np.random.default_rng(1)
    x0, xt = rng.uniform(-1.5, 1.5, (8, 2)), np.zeros((8, 2))
    # start from no optimizer, whatever an earlier test left; both are restored together afterwards
    monkeypatch.setattr(labels, "_worker_optimizer", None)
    monkeypatch.setattr(labels, "_worker_problem", None)
    interpreted, _ = solve_nonlinear(problem, x0, xt, workers=1, chunk_size=2, progress=False)
    assert not labels._worker_optimizer.compiled  # 8 problems: below the threshold
    monkeypatch.setattr(labels, "COMPILE_FROM_PROBLEMS_PER_PROCESS", 4)
    compiled, ok = solve_nonlinear(problem, x0, xt, workers=1, chunk_size=2, progress=False)
    has_gcc = shutil.which("gcc") is not None
    assert labels._worker_optimizer.compiled == has_gcc  # compiled where CasADi's JIT finds gcc
    np.testing.assert_array_equal(compiled.control_sequences, interpreted.control_sequences)
    # two Dask workers: 4 problems each reach the threshold, so each compiles its own NLP
    on_workers, ok_workers = solve_nonlinear(problem, x0, xt, workers=2, chunk_size=2, progress=False)
    assert set(_local_client(2).run(_compiled_in_workers).values()) == {has_gcc}
    assert ok.all() and ok_workers.all() and not list(tmp_path.iterdir())
    np.testing.assert_array_equal(on_workers.control_sequences, interpreted.control_sequences)


def test_without_a_c_compiler_the_optimizer_falls_back_to_the_interpreter(problem, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # CasADi's JIT finds no gcc
    optimizer = make_optimizer(problem, compiled=True)
    assert not optimizer.compiled
    assert optimizer.solve(np.array([1.0, -0.5]), np.zeros(2)).success
