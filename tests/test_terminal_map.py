"""The compiled terminal map: exact against the numpy rollout, exact derivatives, a fallback."""

import numpy as np
import pytest
import torch

from trc_lib.tasks import make_problem
from trc_lib.fast.compiled_rollout import CompiledTerminalMap
from trc_lib.terminal_map import system_key, terminal_map, terminal_state


@pytest.fixture(params=["vanderpol", "pendulum"])
def system(request):
    return make_problem(system=request.param).system


def random_problems(system, B, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-2, 2, (B, system.state_dim)), rng.uniform(-3, 3, (B, system.num_steps, system.control_dim))


def test_matches_the_float64_rollout(system):
    x0, u = random_problems(system, 50)
    exact = system.rollout(x0, u)[:, -1]
    mapped = terminal_map(system)
    assert mapped.compiled
    compiled = mapped.terminal_states(torch.tensor(x0), torch.tensor(u)).numpy()
    if system.name == "vanderpol":  # +, -, * only: the numpy rollout's operations in its order, bit for bit
        np.testing.assert_array_equal(compiled, exact)
    else:  # numpy's sin may be its own SIMD one, a last bit away from the C library's
        np.testing.assert_allclose(compiled, exact, rtol=0, atol=1e-12)
    in_float32 = terminal_state(torch.tensor(x0, dtype=torch.float32), torch.tensor(u, dtype=torch.float32), system)
    assert in_float32.dtype == torch.float32
    # the inputs are rounded to float32 first; the rollout itself is float64
    rounded = system.rollout(x0.astype(np.float32), u.astype(np.float32))[:, -1]
    np.testing.assert_allclose(in_float32.numpy(), rounded, rtol=1e-6, atol=1e-6)


def test_large_batches_split_over_threads_give_the_same_answers(system, monkeypatch):
    x0, u = random_problems(system, 3000, seed=1)
    one_by_one = np.concatenate([terminal_map(system).terminal_states(torch.tensor(x0[i:i + 1]), torch.tensor(u[i:i + 1]))
                                 for i in range(0, 3000, 97)])
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    threaded = terminal_map(system).terminal_states(torch.tensor(x0), torch.tensor(u)).numpy()
    np.testing.assert_array_equal(threaded[::97], one_by_one)  # every lane and every chunk: the same arithmetic
    np.testing.assert_allclose(threaded, system.rollout(x0, u)[:, -1], rtol=0, atol=1e-12)


def test_gradient_is_the_exact_derivative(system):
    x0, u = random_problems(system, 8, seed=2)
    x0 = torch.tensor(x0, requires_grad=True)
    u = torch.tensor(u, requires_grad=True)
    weights = torch.randn(8, system.state_dim, dtype=torch.float64)
    (terminal_state(x0, u, system) * weights).sum().backward()
    compiled = x0.grad.clone(), u.grad.clone()
    x0.grad, u.grad = None, None
    (system.terminal_state_torch(x0, u) * weights).sum().backward()  # autograd through the eager rollout
    torch.testing.assert_close(compiled[0], x0.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(compiled[1], u.grad, rtol=1e-10, atol=1e-10)


def test_the_jacobian_in_one_call_is_each_components_reverse_pass():
    """jacobian() runs the forward pass once and reverse passes from its stored states: the same
    numbers, bit for bit, as one reverse pass per component (a task with n = 6, m = 2), and x_N
    from the same call is terminal_states' own. 17 problems: a block of lanes and one alone."""
    from pathlib import Path

    from trc_lib.tasks import load_task
    task = load_task(f"{Path(__file__).resolve().parents[1] / 'notebooks' / 'planar_quadrotor.py'}:PlanarQuadrotor")
    mapped = terminal_map(task.system)
    B = 17
    x0, u = (torch.tensor(a) for a in random_problems(task.system, B))
    rows = [mapped.vjp(x0, u, torch.eye(6, dtype=torch.float64)[i].expand(B, 6).contiguous())[1].reshape(B, -1)
            for i in range(6)]
    assert torch.equal(mapped.jacobian(x0, u), torch.stack(rows, dim=1))
    x_N, J = mapped.terminal_states_and_jacobian_array(x0.numpy(), u.numpy())
    assert np.array_equal(J, torch.stack(rows, dim=1).numpy())
    assert np.array_equal(x_N, mapped.terminal_states(x0, u).numpy())


def test_is_one_op_under_torch_compile(system):
    x0, u = (torch.tensor(a, dtype=torch.float32) for a in random_problems(system, 4, seed=3))
    key = system_key(system)  # as the model does: json is not traceable
    miss = lambda x0, u: terminal_state(x0, u, system, key).square().sum(-1)
    compiled = torch.compile(miss, backend="aot_eager", fullgraph=True)  # fullgraph: no graph break
    torch.testing.assert_close(compiled(x0, u), miss(x0, u))


def test_without_a_compiler_the_eager_rollout_stands_in(monkeypatch, tmp_path):
    system = make_problem(system="vanderpol", num_steps=10).system
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("TRC_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="no working C compiler"):
        fallback = CompiledTerminalMap(system)
    assert not fallback.compiled
    x0, u = random_problems(system, 5)
    np.testing.assert_allclose(fallback.terminal_states(torch.tensor(x0), torch.tensor(u)).numpy(), system.rollout(x0, u)[:, -1], atol=1e-12)
    grad_x0, grad_u = fallback.vjp(torch.tensor(x0), torch.tensor(u), torch.ones(5, 2, dtype=torch.float64))
    assert grad_u.shape == u.shape and torch.isfinite(grad_u).all()
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("system, calls", [("vanderpol", False), ("pendulum", True)])
def test_side_by_side_and_one_at_a_time_give_the_same_numbers(system, calls):
    """The width compiled_rollout chooses (one at a time where the interval calls the math library)
    changes the speed only: 16 lanes and 1 agree bit for bit on x_N, a VJP and the Jacobian."""
    from trc_lib.fast.compiled_rollout import LANES, calls_math_library, interval_functions
    task = make_problem(system=system)
    assert calls_math_library(interval_functions(task.system)[1]) == calls
    x0, u = (torch.tensor(a) for a in random_problems(task.system, LANES + 1))
    seed = torch.randn(LANES + 1, task.system.state_dim, dtype=torch.float64)
    answers = []
    for lanes in (LANES, 1):
        mapped = CompiledTerminalMap(task.system, lanes)
        answers.append((mapped.terminal_states(x0, u), mapped.vjp(x0, u, seed)[1], mapped.jacobian(x0, u)))
    assert all(torch.equal(a, b) for a, b in zip(*answers))


def test_a_batch_split_over_threads_gives_each_problems_own_jacobian():
    """terminal_states_and_jacobian_array from PARALLEL_FROM problems on runs in chunks on the
    threads, in one call per chunk: x_N and J bit for bit each problem's alone."""
    from trc_lib.fast.compiled_rollout import PARALLEL_FROM
    task = make_problem(system="pendulum")
    mapped = terminal_map(task.system)
    x0, u = random_problems(task.system, PARALLEL_FROM + 3)
    x_N, J = mapped.terminal_states_and_jacobian_array(x0, u)
    alone = [mapped.terminal_states_and_jacobian_array(x0[i:i + 1], u[i:i + 1]) for i in range(len(x0))]
    assert np.array_equal(x_N, np.concatenate([a[0] for a in alone]))
    assert np.array_equal(J, np.concatenate([a[1] for a in alone]))
