"""Benchmark: TRC against the fastest optimizers a speed-minded user would pick (Van der Pol, the pendulum).

    make anchors                                    # installs acados (comma-deps-acados), CasADi kept
    python benchmarks/anchors.py [--task vanderpol|pendulum] [--problems 50] [--epochs 100] [--cases 20]

The task is frontier.py's (Van der Pol: T = 5 s, N = 50, |u| <= 2, from [-2, 2]^2 to the origin;
the pendulum: T = 5 s, N = 50, |u| <= 3, from near hanging to upright; both with four RK4
substeps, x_N = x* exactly, minimizing dt sum((x - x*)'Q(x - x*) + u'Ru)); the model is its small
one (trained there, or here with --epochs when missing). Timed in one run, on the first
--problems test problems, one problem after another on one core, each optimizer cold from each of
the task's starts (label_starts, the oracle's own: one for Van der Pol, three for the pendulum,
whose swing-up has two local optima), keeping the best answer that reaches x*. IPOPT's first
guess of the states is the rollout of the start's controls; fatrop and acados are timed with that
guess and with zero states, since either may suit a solver better:

- IPOPT on the compiled NLP (the project's oracle);
- fatrop, CasADi's structure-exploiting interior point (variables declared stage by stage,
  structure_detection auto);
- acados, SQP with Gauss-Newton Hessians and HPIPM (partial condensing, its ROBUST mode: the
  default BALANCE was slower here, SPEED failed its QPs), ERK with four stages and four steps per
  interval (the same RK4), the terminal equality as an exact L1 penalty (weight 1e3; hard, the
  first QP is infeasible on some cold starts); timed by acados' own clock (time_tot, no Python);
- TRC: the small model halting at 0.01 (predict, batch 1; on the pendulum followed by Newton
  steps where it misses, as its frontier page's best row), and per problem at batch 10,000.

Each answer is played through the task's exact numpy rollout: success (||x_N - x*|| < 0.1) and
the cost gap (J - J_IPOPT) / J_IPOPT. Then closed loop (studies/closed_loop.py, the beyond.py
study's setting: re-plan from the measured state at every step, 2N steps, Gaussian state noise of
std 0.02 after each step, the same noise for every planner): TRC against acados' real-time
iteration (SQP_RTI: one Gauss-Newton QP per re-plan, warm-started from the previous plan shifted
by one step; its first plan a cold SQP solve, untimed): time per re-plan, closed-loop cost, final
error, failures. Writes docs/results/anchors_TASK.md. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import os
import sys
import time
from pathlib import Path

import numpy as np

from trc_lib import load_model, read_dataset
from trc_lib.baselines import OracleController
from trc_lib.compare import TRCController
from trc_lib.evaluate import time_inference
from trc_lib.studies.closed_loop import simulate
from trc_lib.studies.projection import REACHED, ProjectedController

import frontier
from results_page import write_page

ROOT = Path(__file__).resolve().parents[1]
L1_WEIGHT = 1e3  # acados' exact penalty on the terminal miss: larger than any multiplier of x_N = x* here
TASKS = {"vanderpol": "Van der Pol", "pendulum": "The pendulum swing-up"}
STATES_FROM = {"rollout": "states from the start's rollout", "zero": "states from zero"}
STARTS = {"vanderpol": "zero controls", "pendulum": "zero torque, and pumping either way first"}


def acados_template():
    """acados_template from the comma-deps-acados wheel, made to run (../shared notes: the
    source-tree layout it expects, and its libraries loaded before its solver's)."""
    try:
        import acados
    except ImportError:
        sys.exit("anchors.py: acados is not installed; run `make anchors` (the comma-deps-acados wheel)")
    import casadi
    if not casadi.has_nlpsol("ipopt"):
        sys.exit("anchors.py: the acados wheel replaced CasADi with its slim copy; run `make anchors` again")
    tree = ROOT / "outputs" / "benchmark" / "anchors" / "acados_tree"
    if not tree.exists():
        (tree / "interfaces" / "acados_template").mkdir(parents=True)
        for name, target in (("include", acados.INCLUDE_DIR), ("lib", acados.LIB_DIR), ("bin", acados.BIN_DIR)):
            (tree / name).symlink_to(target)
        (tree / "interfaces" / "acados_template" / "acados_template").symlink_to(acados.TEMPLATE_DIR)
    os.environ["ACADOS_SOURCE_DIR"] = str(tree)
    for library in ("libblasfeo.so", "libhpipm.so", "libqpOASES_e.so.3.1", "libacados.so"):
        ctypes.CDLL(os.path.join(acados.LIB_DIR, library), mode=ctypes.RTLD_GLOBAL)
    sys.path.insert(0, os.path.dirname(acados.TEMPLATE_DIR))
    import acados_template
    return acados_template


def acados_solver(problem, real_time: bool):
    """An acados OCP solver of the task (see the module docstring); real_time: SQP_RTI. The target
    x* is set per solve (acados_solve)."""
    import casadi as ca
    at = acados_template()
    system = problem.system
    n, m = system.state_dim, system.control_dim
    Q, R, _ = problem.objective.matrices()
    x, u = ca.SX.sym("x", n), ca.SX.sym("u", m)
    f = system.casadi_vector_field()(x, u)  # the task's own, written once
    model = at.AcadosModel()
    model.name = f"{problem.name}_{'rti' if real_time else 'sqp'}"
    model.x, model.u, model.xdot = x, u, ca.SX.sym("xdot", n)
    model.f_expl_expr, model.f_impl_expr = f, model.xdot - f
    ocp = at.AcadosOcp()
    ocp.model = model
    ocp.dims.N = system.num_steps
    ocp.solver_options.tf = system.time_horizon
    ocp.cost.cost_type = ocp.cost.cost_type_e = "LINEAR_LS"
    # acados scales each stage's 0.5 ||y - y_ref||_W^2 by its interval dt: W = 2 diag(Q, R) gives
    # dt ((x - x*)'Q(x - x*) + u'Ru)
    ocp.cost.Vx, ocp.cost.Vu = np.vstack([np.eye(n), np.zeros((m, n))]), np.vstack([np.zeros((n, m)), np.eye(m)])
    ocp.cost.W, ocp.cost.yref = 2 * np.block([[Q, np.zeros((n, m))], [np.zeros((m, n)), R]]), np.zeros(n + m)
    ocp.cost.Vx_e, ocp.cost.W_e, ocp.cost.yref_e = np.eye(n), np.zeros((n, n)), np.zeros(n)
    ocp.constraints.lbu, ocp.constraints.ubu = problem.control_lower.copy(), problem.control_upper.copy()
    ocp.constraints.idxbu = np.arange(m)
    ocp.constraints.x0 = np.zeros(n)
    ocp.constraints.lbx_e, ocp.constraints.ubx_e, ocp.constraints.idxbx_e = np.zeros(n), np.zeros(n), np.arange(n)
    ocp.constraints.idxsbx_e = np.arange(n)
    ocp.cost.zl_e = ocp.cost.zu_e = L1_WEIGHT * np.ones(n)
    ocp.cost.Zl_e = ocp.cost.Zu_e = np.zeros(n)
    options = ocp.solver_options
    options.integrator_type, options.sim_method_num_stages, options.sim_method_num_steps = "ERK", 4, system.substeps
    options.hessian_approx, options.nlp_solver_type = "GAUSS_NEWTON", "SQP_RTI" if real_time else "SQP"
    options.qp_solver, options.hpipm_mode = "PARTIAL_CONDENSING_HPIPM", "ROBUST"
    options.nlp_solver_max_iter, options.tol = 200, 1e-8
    folder = ROOT / "outputs" / "benchmark" / "anchors" / model.name
    folder.mkdir(parents=True, exist_ok=True)
    ocp.code_export_directory = str(folder / "c_generated_code")
    return at.AcadosOcpSolver(ocp, json_file=str(folder / "ocp.json"))


def acados_solve(solver, x0: np.ndarray, xt: np.ndarray, states: np.ndarray, controls: np.ndarray) -> tuple[np.ndarray, float]:
    """(controls [N, m], seconds by acados' own clock) of one solve from x0 to x*, started from
    states [N + 1, n] and controls [N, m]."""
    N, m = controls.shape
    for k in range(N + 1):
        solver.set(k, "x", states[k])
    for k in range(N):
        solver.set(k, "u", controls[k])
        solver.set(k, "yref", np.concatenate([xt, np.zeros(m)]))
    solver.set(N, "lbx", xt)
    solver.set(N, "ubx", xt)
    solver.set(0, "lbx", x0)
    solver.set(0, "ubx", x0)
    solver.solve()
    return np.array([solver.get(k, "u") for k in range(N)]), float(np.ravel(solver.get_stats("time_tot"))[0])


def best_of_starts(problem, solve, x0: np.ndarray, xt: np.ndarray, states_from: str = "rollout") -> tuple[np.ndarray, float]:
    """(controls [N, m], seconds) of a local solver run from each of the task's starts (the
    oracle's: label_starts), keeping the answer that reaches x* (miss < REACHED) at the lowest
    cost; the seconds are all the starts' together. solve(x0, xt, states, controls) -> (u, s).
    states_from: the states' first guess, "rollout" of the start's controls (as the oracle's) or "zero"."""
    best, total = None, 0.0
    for start in problem.label_starts():
        states = problem.system.rollout(x0[None], start[None])[0]
        if states_from == "zero":
            states = np.zeros_like(states)
        controls, seconds = solve(x0, xt, states, start)
        total += seconds
        rolled = problem.system.rollout(x0[None], controls[None])
        key = (float(np.linalg.norm(rolled[0, -1] - xt)) >= REACHED, float(problem.cost(rolled, controls[None], xt[None])[0]))
        if best is None or key < best[0]:
            best = (key, controls)
    return best[1], total


def fatrop_solver(problem):
    """solve(x0, xt, states, controls) -> (controls [N, m], seconds): fatrop on the task's NLP,
    variables declared stage by stage, started from the given guess."""
    import casadi as ca
    from trc_lib.oracles.labels import make_optimizer
    system = problem.system
    N, n, m = system.num_steps, system.state_dim, system.control_dim
    Q, R, _ = problem.objective.matrices()
    step = make_optimizer(problem).F  # the oracle's own interval: the task's RK4 substeps, as CasADi
    opti = ca.Opti()
    X, U = [], []
    for k in range(N + 1):
        X.append(opti.variable(n))
        if k < N:
            U.append(opti.variable(m))
    start, target = opti.parameter(n), opti.parameter(n)
    cost = 0
    for k in range(N):
        opti.subject_to(X[k + 1] == step(X[k], U[k]))
        if k == 0:
            opti.subject_to(X[0] == start)
        opti.subject_to(opti.bounded(problem.control_lower, U[k], problem.control_upper))
        e = X[k] - target
        cost += system.dt * (ca.bilin(Q, e, e) + ca.bilin(R, U[k], U[k]))
    opti.subject_to(X[N] == target)
    opti.minimize(cost)
    opti.solver("fatrop", {"structure_detection": "auto", "expand": True, "print_time": False,
                           "fatrop": {"print_level": 0, "tol": 1e-9}})
    # the decision variables as inputs: their values are the initial guess
    function = opti.to_function(f"fatrop_{problem.name}", [start, target, *X, *U], [ca.horzcat(*U)])

    def solve(x0, xt, states, controls):
        started = time.perf_counter()
        u = function(x0, xt, *states, *controls)
        return np.asarray(u).T.reshape(N, m), time.perf_counter() - started
    return solve


def scores(problem, x0, xt, controls, reference_costs) -> dict:
    states = problem.system.rollout(x0, controls)
    miss = np.linalg.norm(states[:, -1] - xt, axis=1)
    gap = (problem.cost(states, controls, xt) - reference_costs) / reference_costs
    return {"success": float((miss < 0.1).mean()), "median_gap": float(np.median(gap))}


class RealTimeIteration:
    """acados SQP_RTI as a closed-loop planner: for each case its own last plan, shifted by one
    step, warm-starts one Gauss-Newton QP from the measured state; a case's first plan is a full
    cold SQP solve from the task's starts (untimed: real-time iterations assume a converged start).
    plan_seconds: acados' own time of every timed iteration."""

    def __init__(self, problem, cases: int, first_plan):
        self.problem, self.solver = problem, acados_solver(problem, real_time=True)
        self.first_plan, self.plans = first_plan, [None] * cases
        self.plan_seconds = []

    def __call__(self, x, x_target):
        out = np.zeros((len(x), self.problem.system.num_steps, self.problem.system.control_dim))
        for i, x0 in enumerate(x):
            plan = self.plans[i]
            if plan is None:
                us = self.first_plan(x0, x_target[i])
                xs = self.problem.system.rollout(x0[None], us[None])[0]
            else:  # the last plan, one step on (its last control and state repeated)
                xs, us = np.vstack([plan[0][1:], plan[0][-1:]]), np.vstack([plan[1][1:], plan[1][-1:]])
                us, seconds = acados_solve(self.solver, x0, x_target[i], xs, us)
                self.plan_seconds.append(seconds)
                xs = np.array([self.solver.get(k, "x") for k in range(len(us) + 1)])
            self.plans[i] = (xs, us)
            out[i] = us
        return out


def trc_controller(task: str, model, problem, tolerance: float = 0.01):
    """TRC as the task's frontier page scores it at its best success: the network halting at the
    tolerance; on the pendulum, whose network alone misses a few swing-ups, followed by at most
    10 Newton steps where it misses by the tolerance or more. (name, predict)."""
    if task == "vanderpol":
        return f"TRC small, halting at {tolerance:g}", lambda a, b: model.predict(a, b, tolerance=tolerance)
    polished = ProjectedController(TRCController(model, tolerance=tolerance), problem, 10, every_refinement=False,
                                   tolerance=tolerance)
    return f"TRC small, halting at {tolerance:g}, + Newton (10) where it misses", polished.predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="vanderpol", choices=list(TASKS), help="the task (default %(default)s)")
    parser.add_argument("--problems", type=int, default=50, help="test problems each solver is timed on (default %(default)s)")
    parser.add_argument("--cases", type=int, default=20, help="closed-loop cases (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=100, help="epochs, if the model must be trained (default %(default)s)")
    parser.add_argument("--large_batch", type=int, default=10000, help="TRC's large batch (default %(default)s)")
    args = parser.parse_args()
    for name in ("problems", "cases", "epochs", "large_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    acados_template()  # before any work: a missing extra stops here
    task = args.task
    folder = frontier.OUT / task
    train_path = frontier.dataset(folder / "train", 10000, frontier.TRAIN_SEED, frontier.TASKS[task])
    test = read_dataset(frontier.dataset(folder / "test", 1000, frontier.TEST_SEED, frontier.TASKS[task]))
    args.retrain = False
    model = load_model(frontier.trained(task, "small", train_path, args))
    problem = test.problem
    N, starts = problem.system.num_steps, len(problem.label_starts())
    P = min(args.problems, len(test))
    x0, xt = test.initial_states[:P], test.target_states[:P]
    labels = problem.cost(problem.system.rollout(x0, test.control_sequences[:P]), test.control_sequences[:P], xt)

    rows = []
    ipopt = OracleController(problem)
    ipopt.predict(x0[:1], xt[:1])  # builds and compiles the NLP
    times, answers = [], []
    for i in range(P):
        started = time.perf_counter()
        answers.append(ipopt.predict(x0[i:i + 1], xt[i:i + 1])[0])
        times.append(time.perf_counter() - started)
    rows.append(("IPOPT, compiled NLP (the oracle)", np.median(times), np.array(answers)))
    fatrop, sqp = fatrop_solver(problem), functools.partial(acados_solve, acados_solver(problem, False))
    for name, solve in (("fatrop (CasADi)", fatrop), ("acados SQP, cold (its own clock)", sqp)):
        for states_from in STATES_FROM:  # the state guess that suits each solver here: both are timed
            best_of_starts(problem, solve, x0[0], xt[0], states_from)  # warm-up
            solved = [best_of_starts(problem, solve, x0[i], xt[i], states_from) for i in range(P)]
            rows.append((f"{name}, {STATES_FROM[states_from]}", np.median([seconds for _, seconds in solved]),
                         np.array([u for u, _ in solved])))
    trc_name, predict = trc_controller(task, model, problem)
    trc_one = time_inference(predict, x0, xt, 1)["median_ms"] / 1e3
    rows.append((f"{trc_name} (batch 1)", trc_one, predict(x0, xt)))
    trc_large = time_inference(predict, test.initial_states, test.target_states, args.large_batch, repeats=5)
    optimizers = rows[:-1]
    fastest = min(optimizers, key=lambda r: r[1])
    fastest_fatrop = min((r for r in optimizers if r[0].startswith("fatrop")), key=lambda r: r[1])
    fastest_acados = min((r for r in optimizers if r[0].startswith("acados")), key=lambda r: r[1])
    cores = os.cpu_count()

    system = problem.system
    lines = [f"{TASKS[task]} (T = {system.time_horizon:g} s, N = {N}, controls within "
             f"{problem.control_limits.tolist()}), the first {P} test problems of frontier.py (seed {frontier.TEST_SEED}), "
             f"on one core. Every optimizer starts cold from the task's {starts} start{'s' if starts > 1 else ''} "
             f"(`label_starts`: {STARTS[task]}) and keeps the best answer that reaches x*; its time is "
             f"all the starts' together. IPOPT's first guess of the states is the rollout of the start's controls; "
             f"fatrop and acados are timed with that guess and with zero states. Success: ||x_N - x*|| < 0.1 through the exact rollout; gap: "
             "(J - J_IPOPT) / J_IPOPT.", "",
             "| solver | success | median gap to IPOPT | time per problem, batch 1 (ms) | TRC faster by |",
             "|---|---|---|---|---|"]
    for name, seconds, controls in rows:
        s = scores(problem, x0, xt, controls, labels)
        ratio = "-" if name.startswith("TRC") else f"{seconds / trc_one:.1f}x"
        lines.append(f"| {name} | {s['success']:.1%} | {s['median_gap']:.2e} | {1e3 * seconds:.3f} | {ratio} |")
    per_problem = trc_large["us_per_problem"]
    lines += ["", f"TRC at batch {args.large_batch:,}: {per_problem:.1f} us per problem on {cores} cores; the fastest "
                  f"optimizer here, {fastest[0]}, on every core at perfect scaling: {1e3 * fastest[1] / cores * 1e3:.1f} "
                  f"us per problem: TRC {1e6 * fastest[1] / cores / per_problem:.0f}x faster.",
              f"Bars: TRC at batch 1 >= 10x faster than a cold acados solve and than fatrop: "
              f"{fastest_acados[1] / trc_one:.1f}x and {fastest_fatrop[1] / trc_one:.1f}x (each from its faster state guess) "
              f"({'met' if min(fastest_acados[1], fastest_fatrop[1]) / trc_one >= 10 else 'MISSED'}); per problem at "
              f"{args.large_batch:,} >= 100x the fastest optimizer: {1e6 * fastest[1] / cores / per_problem:.0f}x "
              f"({'met' if 1e6 * fastest[1] / cores / per_problem >= 100 else 'MISSED'}).", ""]

    cases = min(args.cases, len(test))
    start, target = test.initial_states[-cases:], test.target_states[-cases:]
    run = dict(replan_every=1, disturbance_std=0.02, seed=0)
    rti = RealTimeIteration(problem, cases, lambda a, b: best_of_starts(problem, sqp, a, b)[0])
    closed = {"acados SQP_RTI (one warm iteration per re-plan)": simulate(problem, rti, start, target, **run)}
    one_at_a_time = lambda a, b: np.concatenate([predict(a[i:i + 1], b[i:i + 1]) for i in range(len(a))])
    closed[f"{trc_name} (batch 1 per re-plan)"] = simulate(problem, one_at_a_time, start, target, **run)
    trc_plan = time_inference(predict, start, target, 1)["median_ms"]
    lines += [f"## Closed loop: re-planning at every step ({cases} cases, 2N = {2 * N} steps, "
              "state noise of std 0.02 after each step; the real-time iteration's first plan is a cold SQP solve, untimed)", "",
              "| planner | time per re-plan (ms) | closed-loop cost, median | final error, median | failures (final error >= 0.1) |",
              "|---|---|---|---|---|"]
    costs = {}
    for name, result in closed.items():
        summary = result.summary()
        per_plan = 1e3 * np.median(rti.plan_seconds) if name.startswith("acados") else trc_plan
        costs[name] = summary["cost"]["median"]
        lines.append(f"| {name} | {per_plan:.3f} | {summary['cost']['median']:.4f} | "
                     f"{summary['terminal_error_at_end']['median']:.2e} | "
                     f"{int(round((1 - summary['success_rate_at_end']) * cases))} |")
    # where TRC was asked to plan from: its network knows the box of the training set's x_0 only
    seen = read_dataset(train_path).initial_states
    low, high = seen.min(axis=0), seen.max(axis=0)
    visited = closed[f"{trc_name} (batch 1 per re-plan)"].states[:, :-1].reshape(-1, problem.state_dim)
    outside = float(np.mean(np.any((visited < low) | (visited > high), axis=1)))
    lines += ["", f"States TRC re-planned from that lie outside the box of its training set's initial states "
                  f"({np.round(np.stack([low, high], axis=1), 2).tolist()}): {outside:.0%}."]
    rti_ms = 1e3 * np.median(rti.plan_seconds)
    (rti_cost, trc_cost) = costs.values()
    lines += ["", f"Bar: TRC's re-plan no slower than one real-time iteration ({trc_plan:.3f} against {rti_ms:.3f} ms: "
                  f"{'met' if trc_plan <= rti_ms else 'MISSED'}) at a closed-loop cost within 1% of it "
                  f"({trc_cost / rti_cost - 1:+.2%}: {'met' if trc_cost <= 1.01 * rti_cost else 'MISSED'})."]
    body = "\n".join(lines)
    print(body)
    write_page(f"anchors_{task}", f"{TASKS[task]}: TRC against IPOPT, fatrop and acados", body)


if __name__ == "__main__":
    main()
