"""The oracle is exact: checked against closed forms, Riccati recursions and general-purpose solvers
(scipy's SLSQP and linprog, python-control's dlqr) written independently of the library."""

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize

from trc_lib.oracles import closed_form
from trc_lib.data import make_problem
from trc_lib.tasks import DoubleIntegrator


# ---------------------------------------------------------------------------------------------
# independent helpers: the double integrator and the objective, written from the problem statement
# ---------------------------------------------------------------------------------------------

def exact_matrices(T=5.0, N=15):
    dt = T / N
    return np.array([[1.0, dt], [0.0, 1.0]]), np.array([[dt**2 / 2], [dt]]), dt


def affine_trajectory_maps(A, B, N):
    """S0 [N+1, n, n], Su [N+1, n, N] with x_k = S0_k x0 + Su_k u, built step by step."""
    n = A.shape[0]
    S0, Su = [np.eye(n)], [np.zeros((n, N))]
    for k in range(N):
        S0.append(A @ S0[-1])
        nxt = A @ Su[-1]
        nxt[:, k] += B[:, 0]
        Su.append(nxt)
    return np.array(S0), np.array(Su)


def slsqp_optimum(x0, xt, u_max, Q, R, Qf, terminal_constraint, T=5.0, N=15):
    """min dt*sum(e'Qe + R u^2) + e_N'Qf e_N over |u| <= u_max (and x_N = x* if asked), by SLSQP."""
    A, B, dt = exact_matrices(T, N)
    S0, Su = affine_trajectory_maps(A, B, N)
    r = float(np.asarray(R).reshape(-1)[0])

    def errors(u):
        return S0 @ x0 + Su @ u - xt                      # [N+1, n]

    def cost(u):
        e = errors(u)
        return dt * (np.einsum("ki,ij,kj->", e[:N], Q, e[:N]) + r * u @ u) + e[N] @ Qf @ e[N]

    def grad(u):
        e = errors(u)
        return 2 * dt * np.einsum("kip,ij,kj->p", Su[:N], Q, e[:N]) + 2 * dt * r * u + 2 * Su[N].T @ Qf @ e[N]

    constraints = []
    if terminal_constraint:
        constraints = [{"type": "eq", "fun": lambda u: errors(u)[N], "jac": lambda u: Su[N]}]
    result = scipy.optimize.minimize(cost, np.zeros(N), jac=grad, method="SLSQP", bounds=[(-u_max, u_max)] * N,
                                     constraints=constraints, options={"ftol": 1e-14, "maxiter": 1000})
    assert result.success, result.message
    return result.x, cost(result.x)


def lagrangian(problem, solution, x0, xt, u):
    """J(u) + mu . (x_N(u) - x*) for controls u [B, N, 1] (one per sample)."""
    states = problem.system.rollout(x0, u)
    return problem.cost(states, u, xt) + np.einsum("bi,bi->b", solution.terminal_multipliers, states[:, -1] - xt)


@pytest.fixture(scope="module")
def default_problem():
    return make_problem()


@pytest.fixture(scope="module")
def wide_samples(default_problem):
    """Reachable pairs from [-5, 5]^4, where the bound |u| <= 4 binds on a sizeable share."""
    rng = np.random.default_rng(7)
    x0, xt = rng.uniform(-5, 5, size=(2, 600, 2))
    keep = closed_form.reachability_margin(default_problem, x0, xt) > 1e-6
    return x0[keep], xt[keep]


# ---------------------------------------------------------------------------------------------
# minimum energy with a terminal constraint (the default)
# ---------------------------------------------------------------------------------------------

def test_oracle_reaches_every_target(default_problem):
    rng = np.random.default_rng(1)
    x0, xt = rng.uniform(-2, 2, size=(2, 2000, 2))
    solution = closed_form.solve(default_problem, x0, xt)
    assert solution.control_sequences.shape == (2000, 15, 1)
    assert solution.state_trajectories.shape == (2000, 16, 2)
    np.testing.assert_array_equal(solution.state_trajectories[:, 0], x0)
    assert np.abs(solution.state_trajectories[:, -1] - xt).max() < 1e-8
    # the stored trajectory is the rollout of the stored controls
    np.testing.assert_allclose(default_problem.system.rollout(x0, solution.control_sequences),
                               solution.state_trajectories, atol=1e-12)
    # the cost is the minimum energy dt * sum u^2
    np.testing.assert_allclose(solution.costs, default_problem.dt * (solution.control_sequences ** 2).sum(axis=(1, 2)),
                               rtol=1e-12)


def test_oracle_equals_the_minimum_norm_closed_form_when_no_bound_binds(default_problem):
    """u = G^T (G G^T)^-1 (x* - A^N x0)."""
    rng = np.random.default_rng(2)
    x0, xt = rng.uniform(-2, 2, size=(2, 500, 2))
    solution = closed_form.solve(default_problem, x0, xt)
    free = ~solution.bound_active
    assert free.sum() > 400
    A, B, _ = exact_matrices()
    G = np.hstack([np.linalg.matrix_power(A, 14 - j) @ B for j in range(15)])
    b = xt - x0 @ np.linalg.matrix_power(A, 15).T
    minimum_norm = np.linalg.solve(G @ G.T, b.T).T @ G                # rows of G^T (G G^T)^-1 b, [B, 15]
    np.testing.assert_allclose(solution.control_sequences[free, :, 0], minimum_norm[free], rtol=0, atol=1e-9)
    assert np.abs(minimum_norm[free]).max() <= 4.0


def test_bound_binds_on_a_share_of_wide_samples(default_problem, wide_samples):
    """Sanity of the setup the next test relies on: roughly one in six reachable pairs hit the bound."""
    solution = closed_form.solve(default_problem, *wide_samples)
    share = solution.bound_active.mean()
    assert 0.08 < share < 0.3
    assert np.abs(solution.control_sequences).max() <= 4.0 + 1e-12


def test_bounded_min_energy_costs_match_slsqp(default_problem, wide_samples):
    x0, xt = wide_samples
    solution = closed_form.solve(default_problem, x0, xt)
    active = np.flatnonzero(solution.bound_active)[:30]
    assert len(active) == 30
    Q = np.zeros((2, 2))
    for i in active:
        u_ref, cost_ref = slsqp_optimum(x0[i], xt[i], 4.0, Q, [[1.0]], Q, terminal_constraint=True)
        assert solution.costs[i] == pytest.approx(cost_ref, rel=1e-6)
        # the bound really is active, and binding: the unbounded optimum would be cheaper and leave the box
        assert np.isclose(np.abs(solution.control_sequences[i]).max(), 4.0, rtol=0, atol=1e-12)
    # every control of every sample stays within the bound, and every target is still reached
    assert np.abs(solution.control_sequences).max() <= 4.0 + 1e-12
    assert np.abs(solution.state_trajectories[:, -1] - xt).max() < 1e-8


def test_bound_active_costs_exceed_the_unbounded_optimum(default_problem, wide_samples):
    """Where the bound binds, the unconstrained least-norm solution leaves the box and is cheaper."""
    x0, xt = wide_samples
    solution = closed_form.solve(default_problem, x0, xt)
    unbounded = closed_form.solve(make_problem(control_bound=1e6), x0, xt)
    active = solution.bound_active
    assert (np.abs(unbounded.control_sequences[active]).max(axis=(1, 2)) > 4.0).all()
    assert (solution.costs[active] > unbounded.costs[active]).all()
    np.testing.assert_allclose(solution.costs[~active], unbounded.costs[~active], rtol=1e-10)


def test_reachability_margin_agrees_with_an_lp_feasibility_check(default_problem):
    rng = np.random.default_rng(3)
    x0 = rng.uniform(-5, 5, size=(150, 2))
    xt = rng.uniform(-12, 12, size=(150, 2))
    margin = closed_form.reachability_margin(default_problem, x0, xt)
    A, B, _ = exact_matrices()
    G = np.hstack([np.linalg.matrix_power(A, 14 - j) @ B for j in range(15)])
    b = xt - x0 @ np.linalg.matrix_power(A, 15).T
    checked = {True: 0, False: 0}
    for i in np.flatnonzero(np.abs(margin) >= 1e-6):
        lp = scipy.optimize.linprog(np.zeros(15), A_eq=G, b_eq=b[i], bounds=[(-4.0, 4.0)] * 15, method="highs")
        assert lp.status in (0, 2), lp.message
        feasible = lp.status == 0
        assert feasible == (margin[i] > 0), (i, margin[i], lp.message)
        checked[feasible] += 1
    assert checked[True] > 20 and checked[False] > 20  # both kinds of sample were exercised


def test_reachability_margin_is_the_relative_slack_of_the_bound(default_problem):
    """b is reachable with bound u_max * (1 - margin) and no less: the margin is a gauge, not just a sign."""
    rng = np.random.default_rng(4)
    x0, xt = rng.uniform(-4, 4, size=(2, 10, 2))
    margin = closed_form.reachability_margin(default_problem, x0, xt)
    A, B, _ = exact_matrices()
    G = np.hstack([np.linalg.matrix_power(A, 14 - j) @ B for j in range(15)])
    b = xt - x0 @ np.linalg.matrix_power(A, 15).T
    for i in range(10):
        needed = 4.0 * (1 - margin[i])
        for factor, feasible in ((1 + 1e-4, True), (1 - 1e-4, False)):
            bound = needed * factor
            lp = scipy.optimize.linprog(np.zeros(15), A_eq=G, b_eq=b[i], bounds=[(-bound, bound)] * 15,
                                        method="highs")
            assert (lp.status == 0) == feasible, (i, margin[i], factor)


def test_solve_raises_for_an_unreachable_target(default_problem):
    x0 = np.array([[0.0, 0.0], [0.0, 0.0]])
    xt = np.array([[1.0, 0.0], [100.0, 0.0]])  # 100 m in 5 s with |u| <= 4 is impossible
    assert closed_form.reachability_margin(default_problem, x0, xt)[1] < 0
    with pytest.raises(ValueError, match="not reachable"):
        closed_form.solve(default_problem, x0, xt)


# ---------------------------------------------------------------------------------------------
# LQR tracking without a terminal constraint
# ---------------------------------------------------------------------------------------------

def riccati_tracking(A, B, dt, Q, R, Qf, x0, xt, N):
    """Finite-horizon LQR for e = x - x* via the augmented state z = [e, 1]: e' = A e + B u + (A - I) x*.

    Returns (optimal costs [B], controls [B, N]) from the backward recursion and a forward pass.
    """
    n = A.shape[0]
    costs, controls = [], []
    for x0_i, xt_i in zip(x0, xt):
        Az = np.block([[A, ((A - np.eye(n)) @ xt_i)[:, None]], [np.zeros((1, n)), np.ones((1, 1))]])
        Bz = np.vstack([B, np.zeros((1, B.shape[1]))])
        Qz = np.zeros((n + 1, n + 1))
        Qz[:n, :n] = dt * Q
        P = np.zeros((n + 1, n + 1))
        P[:n, :n] = Qf
        gains = []
        for _ in range(N):
            S = dt * R + Bz.T @ P @ Bz
            K = np.linalg.solve(S, Bz.T @ P @ Az)
            P = Qz + Az.T @ P @ (Az - Bz @ K)
            P = (P + P.T) / 2
            gains.append(K)
        gains.reverse()
        z = np.append(x0_i - xt_i, 1.0)
        costs.append(z @ P @ z)
        u = []
        for K in gains:
            u.append(-(K @ z)[0])
            z = Az @ z + Bz[:, 0] * u[-1]
        controls.append(u)
    return np.array(costs), np.array(controls)


def test_lqr_oracle_costs_equal_a_backward_riccati_recursion():
    """Arbitrary (moving) targets: the affine term (A - I) x* is handled by the augmented state."""
    problem = make_problem(controller="lqr", control_bound=1e3)
    rng = np.random.default_rng(5)
    x0, xt = rng.uniform(-2, 2, size=(2, 40, 2))
    solution = closed_form.solve(problem, x0, xt)
    assert not solution.bound_active.any()
    np.testing.assert_array_equal(solution.terminal_multipliers, 0.0)
    A, B, dt = exact_matrices()
    Q, R, Qf = np.diag([1.0, 1.0]), np.array([[0.1]]), np.diag([100.0, 100.0])
    costs, controls = riccati_tracking(A, B, dt, Q, R, Qf, x0, xt, 15)
    np.testing.assert_allclose(solution.costs, costs, rtol=1e-6)
    np.testing.assert_allclose(solution.control_sequences[..., 0], controls, rtol=1e-6, atol=1e-8)


def test_lqr_oracle_follows_other_weights_and_horizons():
    """Not tuned to the defaults: other Q, R, Q_f and N give the Riccati answer too."""
    problem = make_problem(num_steps=9, time_horizon=3.0, controller="lqr", control_bound=1e3,
                           lqr_Q=(2.0, 0.0), lqr_R=(0.5,), lqr_Qf=(10.0, 1.0))
    rng = np.random.default_rng(6)
    x0, xt = rng.uniform(-2, 2, size=(2, 20, 2))
    solution = closed_form.solve(problem, x0, xt)
    A, B, dt = exact_matrices(3.0, 9)
    costs, _ = riccati_tracking(A, B, dt, np.diag([2.0, 0.0]), np.array([[0.5]]), np.diag([10.0, 1.0]), x0, xt, 9)
    np.testing.assert_allclose(solution.costs, costs, rtol=1e-6)


def test_lqr_with_the_dare_terminal_weight_is_the_stationary_dlqr_feedback():
    """With Q_f = P from the discrete algebraic Riccati equation the finite-horizon optimum is the
    infinite-horizon feedback u_k = -K (x_k - x*) at every step (equilibrium targets: velocity 0)."""
    control = pytest.importorskip("control")
    A, B, dt = exact_matrices()
    Q, R = np.diag([1.0, 1.0]), np.array([[0.1]])
    P = scipy.linalg.solve_discrete_are(A, B, dt * Q, dt * R)
    K, _, _ = control.dlqr(A, B, dt * Q, dt * R)
    problem = DoubleIntegrator(control_bounds=((-1e3, 1e3),), Q=tuple(map(tuple, Q)), R=tuple(map(tuple, R)),
                               Q_f=tuple(map(tuple, P)), terminal_constraint=False, objective_name="lqr")
    rng = np.random.default_rng(8)
    x0 = rng.uniform(-2, 2, size=(25, 2))
    xt = np.column_stack([rng.uniform(-2, 2, 25), np.zeros(25)])
    solution = closed_form.solve(problem, x0, xt)
    errors = solution.state_trajectories[:, :-1] - xt[:, None, :]          # [B, N, 2]
    feedback = -np.einsum("ij,bkj->bki", K, errors)                        # [B, N, 1]
    np.testing.assert_allclose(solution.control_sequences, feedback, rtol=0, atol=1e-6)
    # and the optimal cost is the DARE value function (x0 - x*)' P (x0 - x*)
    e0 = x0 - xt
    np.testing.assert_allclose(solution.costs, np.einsum("bi,ij,bj->b", e0, P, e0), rtol=1e-6)


def _check_bounded_lqr_against_slsqp(control_bound, num_samples, seed):
    problem = make_problem(controller="lqr", control_bound=control_bound)
    rng = np.random.default_rng(seed)
    x0, xt = rng.uniform(-2, 2, size=(2, num_samples, 2))
    solution = closed_form.solve(problem, x0, xt)
    assert solution.bound_active.sum() >= num_samples // 2
    assert np.abs(solution.control_sequences).max() <= control_bound + 1e-12
    Q, Qf = np.diag([1.0, 1.0]), np.diag([100.0, 100.0])
    for i in range(num_samples):
        _, cost_ref = slsqp_optimum(x0[i], xt[i], control_bound, Q, [[0.1]], Qf, terminal_constraint=False)
        assert solution.costs[i] == pytest.approx(cost_ref, rel=1e-6), i


def test_bounded_lqr_costs_match_slsqp():
    """|u| <= 2 binds on most pairs from [-2, 2]^4."""
    _check_bounded_lqr_against_slsqp(2.0, 15, seed=12)


def test_bounded_lqr_oracle_solves_problems_where_the_bound_binds_hard():
    """|u| <= 0.5: every control saturates for a while. These are feasible, strictly convex QPs, so the
    oracle must answer them (a library bug makes its active-set iteration cycle on about 1 in 5)."""
    _check_bounded_lqr_against_slsqp(0.5, 15, seed=9)


# ---------------------------------------------------------------------------------------------
# the multiplier: why the evaluator can score a missed target honestly
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("box", [2.0, 5.0])
def test_lagrangian_is_never_below_the_optimum_within_the_bound(default_problem, box):
    """J(u) + mu . (x_N - x*) >= J* for every u with |u| <= u_max, by convexity and strong duality,
    including pairs where the bound is active (box 5)."""
    rng = np.random.default_rng(10)
    x0, xt = rng.uniform(-box, box, size=(2, 300, 2))
    keep = closed_form.reachability_margin(default_problem, x0, xt) > 1e-6
    x0, xt = x0[keep], xt[keep]
    solution = closed_form.solve(default_problem, x0, xt)
    if box == 5.0:
        assert solution.bound_active.sum() > 10
    assert np.abs(solution.terminal_multipliers).max() > 0
    floor = solution.costs * (1 - 1e-9)
    for trial in range(20):
        anywhere = rng.uniform(-4, 4, size=solution.control_sequences.shape)
        nearby = np.clip(solution.control_sequences + rng.normal(scale=10.0 ** -(trial % 5), size=anywhere.shape),
                         -4, 4)
        for u in (anywhere, nearby):
            assert (lagrangian(default_problem, solution, x0, xt, u) >= floor).all()
    # at the optimum itself the Lagrangian is exactly J*
    np.testing.assert_allclose(lagrangian(default_problem, solution, x0, xt, solution.control_sequences),
                               solution.costs, rtol=1e-10)


def test_plain_cost_can_beat_the_optimum_by_missing_the_target(default_problem):
    """Scaling u* down by 5% saves ~10% of the energy but misses the target: a plain cost gap would
    call it better than optimal, the Lagrangian does not."""
    rng = np.random.default_rng(11)
    x0, xt = rng.uniform(-2, 2, size=(2, 100, 2))
    solution = closed_form.solve(default_problem, x0, xt)
    u = 0.95 * solution.control_sequences
    states = default_problem.system.rollout(x0, u)
    plain = default_problem.cost(states, u, xt)
    moved = np.linalg.norm(states[:, -1] - xt, axis=1) > 1e-6
    assert moved.sum() > 90
    assert (plain[moved] < solution.costs[moved]).all()
    assert (lagrangian(default_problem, solution, x0, xt, u) >= solution.costs * (1 - 1e-9)).all()
