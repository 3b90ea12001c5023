"""The general trajectory optimizer (direct multiple shooting, CasADi + IPOPT): checked against
an analytic optimum (Bryson-Denham), CasADi's documented Van der Pol example, an independent
numpy RK4, finite differences of J*, and problems built to have several optima or none."""

import casadi as ca
import numpy as np
import pytest

from trc_lib.oracles.shooting import CONVERGED, TrajectoryOptimizer

# ---------------------------------------------------------------------------------------------
# the problems, written from their statements
# ---------------------------------------------------------------------------------------------


def double_integrator(x, u):
    """x'' = u with x = [position, velocity]."""
    return ca.vertcat(x[1], u[0])


def van_der_pol(x, u):
    """CasADi's example: x1' = (1 - x2^2) x1 - x2 + u, x2' = x1."""
    return ca.vertcat((1 - x[1] ** 2) * x[0] - x[1] + u[0], x[0])


def van_der_pol_numpy(x, u):
    """The same right-hand side on numpy arrays [B, 2], [B, 1], written independently of CasADi."""
    return np.stack([(1 - x[:, 1] ** 2) * x[:, 0] - x[:, 1] + u[:, 0], x[:, 0]], axis=1)


def bryson_denham(N):
    """min 1/2 int_0^1 u^2 dt, x'' = u, x(0) = x(1) = 0, v(0) = 1, v(1) = -1, x <= 1/9 (at the nodes)."""
    return TrajectoryOptimizer(double_integrator, 2, 1, time_horizon=1.0, num_steps=N,
                               stage_cost=lambda x, u: 0.5 * u[0] ** 2, state_upper=[1 / 9, np.inf])


def van_der_pol_example(**options):
    """CasADi's direct_multiple_shooting.py: T = 10, N = 20, 4 RK4 steps per interval, |u| <= 1,
    x1 >= -0.25, no terminal constraint; its objective is integrated along the RK4 steps."""
    settings = dict(substeps=4, stage_cost=lambda x, u: x[0] ** 2 + x[1] ** 2 + u[0] ** 2,
                    terminal_constraint=False, control_lower=-1.0, control_upper=1.0,
                    state_lower=[-0.25, -np.inf], cost_quadrature="rk4")
    settings.update(options)
    return TrajectoryOptimizer(van_der_pol, 2, 1, time_horizon=10.0, num_steps=20, **settings)


G, LENGTH, MASS = 9.81, 1.0, 1.0


def pendulum(x, u):
    """theta'' = -(g / l) sin(theta) + u / (m l^2), x = [theta, omega]."""
    return ca.vertcat(x[1], -(G / LENGTH) * ca.sin(x[0]) + u[0] / (MASS * LENGTH**2))


@pytest.fixture(scope="module")
def bryson_denham_solutions():
    x0, target = np.array([0.0, 1.0]), np.array([0.0, -1.0])
    return {N: bryson_denham(N).solve(x0, target) for N in (50, 400)}


@pytest.fixture(scope="module")
def van_der_pol_optimizer():
    return van_der_pol_example()


# ---------------------------------------------------------------------------------------------
# 1. Bryson-Denham
# ---------------------------------------------------------------------------------------------


def test_bryson_denham_discrete_optimum_matches_the_known_values(bryson_denham_solutions):
    """J* = 4 in continuous time; with piecewise-constant u and x <= 1/9 at the nodes, about
    4.003 at N = 50 and 4.0001 at N = 400 (the project's issue)."""
    assert all(r.success for r in bryson_denham_solutions.values())
    assert bryson_denham_solutions[50].cost == pytest.approx(4.003, rel=1e-3)
    assert bryson_denham_solutions[400].cost == pytest.approx(4.0001, rel=1e-4)


def test_bryson_denham_cost_falls_toward_4_from_above_as_N_grows(bryson_denham_solutions):
    J50, J400 = bryson_denham_solutions[50].cost, bryson_denham_solutions[400].cost
    assert J400 < J50
    assert J50 >= 4 - 1e-9 and J400 >= 4 - 1e-9


def test_bryson_denham_solution_meets_its_constraints(bryson_denham_solutions):
    for result in bryson_denham_solutions.values():
        np.testing.assert_allclose(result.states[0], [0.0, 1.0], atol=0)
        np.testing.assert_allclose(result.states[-1], [0.0, -1.0], atol=1e-7)
        assert result.states[:, 0].max() <= 1 / 9  # IPOPT's answer lies inside, not 1e-8 outside
        assert result.states[:, 0].max() >= 1 / 9 - 1e-6  # the state constraint is active
        assert result.controls.shape == (len(result.states) - 1, 1)


# ---------------------------------------------------------------------------------------------
# 2. CasADi's Van der Pol example
# ---------------------------------------------------------------------------------------------


def test_van_der_pol_reproduces_casadis_documented_optimum(van_der_pol_optimizer):
    result = van_der_pol_optimizer.solve([0.0, 1.0])
    assert result.success
    assert result.cost == pytest.approx(3.7330, rel=1e-3)
    assert result.terminal_multipliers is None  # the example has no terminal constraint
    assert np.abs(result.controls).max() <= 1.0
    assert result.states[:, 0].min() >= -0.25 - 1e-7


# ---------------------------------------------------------------------------------------------
# 3. several local optima: pendulum swing-up with a torque too weak to lift it directly
# ---------------------------------------------------------------------------------------------


def test_multiple_starts_find_several_optima_and_keep_the_best():
    """From hanging at rest to upright in 5 s with |u| <= 0.7 m g l: the first push decides how
    the pendulum is pumped, and pushing right first or left first ends in different local optima."""
    u_max = 0.7 * MASS * G * LENGTH  # below m g l: the pendulum cannot be lifted directly
    optimizer = TrajectoryOptimizer(pendulum, 2, 1, time_horizon=5.0, num_steps=50, substeps=2,
                                    stage_cost=lambda x, u: u[0] ** 2,
                                    control_lower=-u_max, control_upper=u_max)
    N = optimizer.num_steps
    push_right, push_left = np.full((N, 1), u_max), np.full((N, 1), -u_max)
    result = optimizer.solve([0.0, 0.0], [np.pi, 0.0], initial_guesses=[push_right, push_left],
                             num_random_starts=2, seed=0)
    assert result.success
    assert len(result.start_costs) == 4
    succeeded = result.start_costs[result.start_success]
    assert len(succeeded) >= 2
    assert result.cost == succeeded.min()
    assert result.cost == result.start_costs[result.best_start]
    np.testing.assert_array_equal(result.controls, result.start_controls[result.best_start])
    # the two pushes end in two different optima: costs apart, first moves in opposite directions
    assert len(result.local_optimum_costs()) >= 2, result.start_costs
    assert result.start_success[:2].all()
    assert abs(result.start_costs[0] - result.start_costs[1]) > 0.05 * result.cost
    assert np.sign(result.start_controls[0, 0, 0]) != np.sign(result.start_controls[1, 0, 0])
    np.testing.assert_allclose(result.states[-1], [np.pi, 0.0], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# 4. failure is reported, not hidden
# ---------------------------------------------------------------------------------------------


def test_unreachable_target_is_reported_as_failure():
    """|u| <= 1 for 1 s moves a resting double integrator at most 0.5; the target is at 10."""
    optimizer = TrajectoryOptimizer(double_integrator, 2, 1, time_horizon=1.0, num_steps=20,
                                    stage_cost=lambda x, u: u[0] ** 2, control_lower=-1, control_upper=1)
    result = optimizer.solve([0.0, 0.0], [10.0, 0.0], num_random_starts=2, seed=1)
    assert not result.success
    assert not result.start_success.any()
    assert result.status not in CONVERGED
    assert result.constraint_violation > 1e-3
    # what comes back is still the honest rollout of the returned controls, within the bound
    np.testing.assert_allclose(result.states, optimizer.rollout([0.0, 0.0], result.controls), atol=1e-12)
    assert np.abs(result.controls).max() <= 1.0


def test_converged_status_alone_does_not_make_a_success():
    """IPOPT told to accept anything stops at once and says Solve_Succeeded; the check on the
    integrator still sees that the target is missed."""
    lenient = {"tol": 1e6, "dual_inf_tol": 1e6, "constr_viol_tol": 1e6, "compl_inf_tol": 1e6}
    optimizer = TrajectoryOptimizer(double_integrator, 2, 1, time_horizon=1.0, num_steps=10,
                                    stage_cost=lambda x, u: u[0] ** 2, ipopt_options=lenient)
    result = optimizer.solve([0.0, 0.0], [1.0, 0.0])
    assert result.status in CONVERGED
    assert not result.success
    assert result.constraint_violation > 0.1


def test_feasible_but_unconverged_is_not_a_success():
    """Without state bounds or a terminal constraint every control in the box is feasible; stopped
    before its first iteration, IPOPT returns the start (zero controls and their rollout, which
    pass every check), and only its status tells that this is no optimum."""
    optimizer = van_der_pol_example(state_lower=None, max_iterations=0)
    result = optimizer.solve([0.0, 1.0])
    assert result.status == "Maximum_Iterations_Exceeded"
    assert result.constraint_violation <= optimizer.feasibility_tolerance
    assert not result.success
    assert result.cost > van_der_pol_example(state_lower=None).solve([0.0, 1.0]).cost


def test_solving_prints_nothing(capfd):
    """No IPOPT banner, iteration log or timing table, and no CasADi warnings about NaN met on
    the way, at the file-descriptor level."""
    van_der_pol_example().solve([0.0, 1.0], num_random_starts=1, seed=0)
    TrajectoryOptimizer(double_integrator, 2, 1, time_horizon=1.0, num_steps=5, control_lower=-1,
                        control_upper=1).solve([0.0, 0.0], [10.0, 0.0])  # a failing solve too
    # x' = x^2 + u blows up in finite time unless u holds it: IPOPT's trial points overflow
    blowing_up = TrajectoryOptimizer(lambda x, u: x[0] ** 2 + u[0], 1, 1, time_horizon=5.0, num_steps=10,
                                     stage_cost=lambda x, u: u[0] ** 2, terminal_cost=lambda x: x[0] ** 2,
                                     terminal_constraint=False, control_lower=-1, control_upper=5)
    result = blowing_up.solve([1.0], initial_guesses=np.full((10, 1), 5.0))
    # a draining tank x' = -sqrt(x) + u empties from the zero-control start: sqrt'(0) is infinite
    draining = TrajectoryOptimizer(lambda x, u: -ca.sqrt(x[0]) + u[0], 1, 1, time_horizon=2.0, num_steps=10,
                                   stage_cost=lambda x, u: u[0] ** 2, control_lower=0, control_upper=1)
    failed = draining.solve([1.0], [0.01])
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert result.success and result.cost == pytest.approx(6.0, rel=1e-6)  # u = -1 holds x = 1
    assert failed.status == "Invalid_Number_Detected" and not failed.success


# ---------------------------------------------------------------------------------------------
# 5. one integrator, in numpy and in CasADi
# ---------------------------------------------------------------------------------------------


def rk4_numpy(x, u, dt, substeps, with_cost=False):
    """Classic RK4 of the Van der Pol ODE, written out in numpy; with_cost: also the integral of
    x1^2 + x2^2 + u^2 over the interval, as an extra state of the same RK4 (CasADi's example)."""
    h = dt / substeps
    augmented = lambda z: np.concatenate([van_der_pol_numpy(z[:, :2], u),
                                          (z[:, 0] ** 2 + z[:, 1] ** 2 + u[:, 0] ** 2)[:, None]], axis=1)
    z = np.concatenate([x, np.zeros((len(x), 1))], axis=1)
    for _ in range(substeps):
        k1 = augmented(z)
        k2 = augmented(z + h / 2 * k1)
        k3 = augmented(z + h / 2 * k2)
        k4 = augmented(z + h * k3)
        z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return (z[:, :2], z[:, 2]) if with_cost else z[:, :2]


def test_numpy_step_equals_an_independent_rk4_and_the_casadi_function(van_der_pol_optimizer):
    optimizer, rng = van_der_pol_optimizer, np.random.default_rng(0)
    x, u = rng.uniform(-2, 2, size=(64, 2)), rng.uniform(-1, 1, size=(64, 1))
    stepped = optimizer.step(x, u)
    np.testing.assert_allclose(stepped, rk4_numpy(x, u, optimizer.dt, 4), rtol=0, atol=1e-12)
    # one sample at a time through the CasADi Function the NLP is built from
    one_by_one = np.stack([optimizer.F(x[b], u[b]).full().ravel() for b in range(len(x))])
    np.testing.assert_allclose(stepped, one_by_one, rtol=0, atol=1e-12)
    # the same Function on symbols: the expression the NLP differentiates
    xs, us = ca.SX.sym("x", 2), ca.SX.sym("u", 1)
    symbolic = ca.Function("symbolic", [xs, us], [optimizer.F(xs, us)])
    np.testing.assert_allclose(symbolic(x[0], u[0]).full().ravel(), stepped[0], rtol=0, atol=1e-12)


def test_rollout_is_repeated_steps_and_returned_states_are_the_rollout(van_der_pol_optimizer):
    optimizer, rng = van_der_pol_optimizer, np.random.default_rng(1)
    x0, u = rng.uniform(-1, 1, size=(5, 2)), rng.uniform(-1, 1, size=(5, optimizer.num_steps, 1))
    states = optimizer.rollout(x0, u)
    assert states.shape == (5, optimizer.num_steps + 1, 2)
    x, J = x0, np.zeros(len(x0))
    for k in range(optimizer.num_steps):
        x, l_k = rk4_numpy(x, u[:, k], optimizer.dt, 4, with_cost=True)
        J += l_k
        np.testing.assert_allclose(states[:, k + 1], x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(optimizer.cost(x0, u), J, rtol=1e-12)
    result = optimizer.solve([0.0, 1.0])
    np.testing.assert_array_equal(result.states, optimizer.rollout([0.0, 1.0], result.controls))
    assert result.cost == pytest.approx(optimizer.cost([0.0, 1.0], result.controls), rel=1e-14)


# ---------------------------------------------------------------------------------------------
# 6. the terminal multipliers price the target: dJ*/dx* = -mu
# ---------------------------------------------------------------------------------------------


def test_terminal_multipliers_are_the_sensitivity_of_the_optimal_cost_to_the_target():
    """Van der Pol steered to x(10) = x* (CasADi's variant with a terminal constraint), rectangle
    rule; central differences of J* in each component of x* against -mu."""
    optimizer = TrajectoryOptimizer(van_der_pol, 2, 1, time_horizon=10.0, num_steps=20, substeps=4,
                                    stage_cost=lambda x, u: x[0] ** 2 + x[1] ** 2 + u[0] ** 2,
                                    control_lower=-1.0, control_upper=1.0,
                                    ipopt_options={"tol": 1e-12})
    x0, target = np.array([0.0, 1.0]), np.array([0.1, -0.1])
    nominal = optimizer.solve(x0, target)
    assert nominal.success
    mu = nominal.terminal_multipliers
    assert mu.shape == (2,) and np.abs(mu).min() > 1e-2  # both components matter
    eps = 1e-4
    for i in range(2):
        e = np.zeros(2)
        e[i] = eps
        # warm-started from the nominal optimum, so both stay on its branch
        plus = optimizer.solve(x0, target + e, initial_guesses=nominal.controls)
        minus = optimizer.solve(x0, target - e, initial_guesses=nominal.controls)
        assert plus.success and minus.success
        slope = (plus.cost - minus.cost) / (2 * eps)
        assert slope == pytest.approx(-mu[i], rel=1e-3)


# ---------------------------------------------------------------------------------------------
# reuse across problems
# ---------------------------------------------------------------------------------------------


def test_solve_batch_reuses_one_nlp_and_matches_solve():
    optimizer = bryson_denham(20)
    x0 = np.array([[0.0, 1.0], [0.0, 0.5], [0.05, 0.8]])
    targets = np.array([[0.0, -1.0], [0.0, -0.5], [0.0, -1.0]])
    batch = optimizer.solve_batch(x0, targets)
    assert batch.controls.shape == (3, 20, 1) and batch.states.shape == (3, 21, 2)
    assert batch.success.all()
    assert batch.terminal_multipliers.shape == (3, 2)
    for b in range(3):
        single = optimizer.solve(x0[b], targets[b])
        assert batch.costs[b] == pytest.approx(single.cost, rel=1e-9)
    assert len(set(np.round(batch.costs, 6))) == 3  # the parameters really change the problem
