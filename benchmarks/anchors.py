"""Benchmark: TRC against the fastest optimizers a speed-minded user would pick, on Van der Pol.

    make anchors                                    # installs acados (comma-deps-acados), CasADi kept
    python benchmarks/anchors.py [--problems 50] [--epochs 100] [--cases 20]

The task is frontier.py's Van der Pol (T = 5 s, N = 50, four RK4 substeps, |u| <= 2, from
[-2, 2]^2 to the origin exactly at t = T, minimizing dt sum(|x|^2 + u^2)); the model is its small
one (trained there, or here with --epochs when missing). Timed in one run, on the first
--problems test problems, each solver cold (zero controls), one problem after another on one core:

- IPOPT on the compiled NLP (the project's oracle);
- fatrop, CasADi's structure-exploiting interior point (variables declared stage by stage,
  structure_detection auto);
- acados, SQP with Gauss-Newton Hessians and HPIPM (partial condensing, its ROBUST mode: the
  default BALANCE was slower here, SPEED failed its QPs), ERK with four stages and four steps per
  interval (the same RK4), the terminal equality as an exact L1 penalty (weight 1e3; hard, the
  first QP is infeasible on some cold starts); timed by acados' own clock (time_tot, no Python);
- TRC: the small model halting at 0.01 (predict, batch 1), and per problem at batch 10,000.

Each answer is played through the task's exact numpy rollout: success (||x_N - x*|| < 0.1) and
the cost gap (J - J_IPOPT) / J_IPOPT. Then closed loop (studies/closed_loop.py, the beyond.py
study's setting: re-plan from the measured state at every step, 2N steps, Gaussian state noise of
std 0.02 after each step, the same noise for every planner): TRC against acados' real-time
iteration (SQP_RTI: one Gauss-Newton QP per re-plan, warm-started from the previous plan shifted
by one step): time per re-plan, closed-loop cost, final error, failures. Writes
docs/results/anchors_vanderpol.md. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time
from pathlib import Path

import numpy as np

from trc_lib import load_model, read_dataset
from trc_lib.baselines import OracleController
from trc_lib.evaluate import time_inference
from trc_lib.studies.closed_loop import simulate

import frontier
from results_page import write_page

ROOT = Path(__file__).resolve().parents[1]
L1_WEIGHT = 1e3  # acados' exact penalty on the terminal miss: larger than any multiplier of x_N = x* here


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
    """An acados OCP solver of the task (see the module docstring); real_time: SQP_RTI."""
    import casadi as ca
    at = acados_template()
    system = problem.system
    x, u = ca.SX.sym("x", 2), ca.SX.sym("u", 1)
    f = system.casadi_vector_field()(x, u)  # the task's own, written once
    model = at.AcadosModel()
    model.name = "vdp_rti" if real_time else "vdp_sqp"
    model.x, model.u, model.xdot = x, u, ca.SX.sym("xdot", 2)
    model.f_expl_expr, model.f_impl_expr = f, model.xdot - f
    ocp = at.AcadosOcp()
    ocp.model = model
    ocp.dims.N = system.num_steps
    ocp.solver_options.tf = system.time_horizon
    ocp.cost.cost_type = ocp.cost.cost_type_e = "LINEAR_LS"
    # acados scales each stage's 0.5 ||y - y_ref||_W^2 by its interval dt: W = 2 I gives dt (|x|^2 + u^2)
    ocp.cost.Vx, ocp.cost.Vu = np.vstack([np.eye(2), np.zeros((1, 2))]), np.array([[0.0], [0.0], [1.0]])
    ocp.cost.W, ocp.cost.yref = 2 * np.eye(3), np.zeros(3)
    ocp.cost.Vx_e, ocp.cost.W_e, ocp.cost.yref_e = np.eye(2), np.zeros((2, 2)), np.zeros(2)
    bound = problem.control_bound
    ocp.constraints.lbu, ocp.constraints.ubu, ocp.constraints.idxbu = np.array([-bound]), np.array([bound]), np.array([0])
    ocp.constraints.x0 = np.zeros(2)
    ocp.constraints.lbx_e, ocp.constraints.ubx_e, ocp.constraints.idxbx_e = np.zeros(2), np.zeros(2), np.array([0, 1])
    ocp.constraints.idxsbx_e = np.array([0, 1])
    ocp.cost.zl_e = ocp.cost.zu_e = L1_WEIGHT * np.ones(2)
    ocp.cost.Zl_e = ocp.cost.Zu_e = np.zeros(2)
    options = ocp.solver_options
    options.integrator_type, options.sim_method_num_stages, options.sim_method_num_steps = "ERK", 4, system.substeps
    options.hessian_approx, options.nlp_solver_type = "GAUSS_NEWTON", "SQP_RTI" if real_time else "SQP"
    options.qp_solver, options.hpipm_mode = "PARTIAL_CONDENSING_HPIPM", "ROBUST"
    options.nlp_solver_max_iter, options.tol = 200, 1e-8
    folder = ROOT / "outputs" / "benchmark" / "anchors" / model.name
    folder.mkdir(parents=True, exist_ok=True)
    ocp.code_export_directory = str(folder / "c_generated_code")
    return at.AcadosOcpSolver(ocp, json_file=str(folder / "ocp.json"))


def acados_cold(solver, x0: np.ndarray, N: int) -> tuple[np.ndarray, float]:
    """(controls [N, 1], seconds by acados' clock) of one cold solve from zero controls."""
    for k in range(N + 1):
        solver.set(k, "x", np.zeros(2))
    for k in range(N):
        solver.set(k, "u", np.zeros(1))
    solver.set(0, "lbx", x0)
    solver.set(0, "ubx", x0)
    solver.solve()
    return np.array([solver.get(k, "u") for k in range(N)]), float(np.ravel(solver.get_stats("time_tot"))[0])


def fatrop_solver(problem):
    """f(x0) -> controls [N, 1]: fatrop on the task's NLP, variables declared stage by stage."""
    import casadi as ca
    from trc_lib.oracles.labels import make_optimizer
    system = problem.system
    N = system.num_steps
    step = make_optimizer(problem).F  # the oracle's own interval: the task's RK4 substeps, as CasADi
    opti = ca.Opti()
    X, U = [], []
    for k in range(N + 1):
        X.append(opti.variable(2))
        if k < N:
            U.append(opti.variable(1))
    start = opti.parameter(2)
    cost = 0
    for k in range(N):
        opti.subject_to(X[k + 1] == step(X[k], U[k]))
        if k == 0:
            opti.subject_to(X[0] == start)
        opti.subject_to(opti.bounded(-problem.control_bound, U[k], problem.control_bound))
        cost += system.dt * (ca.sumsqr(X[k]) + ca.sumsqr(U[k]))
    opti.subject_to(X[N] == 0)
    opti.minimize(cost)
    opti.solver("fatrop", {"structure_detection": "auto", "expand": True, "print_time": False,
                           "fatrop": {"print_level": 0, "tol": 1e-9}})
    solve = opti.to_function("fatrop_vdp", [start], [ca.horzcat(*U)])
    return lambda x0: np.asarray(solve(x0)).reshape(N, 1)


def scores(problem, x0, xt, controls, reference_costs) -> dict:
    states = problem.system.rollout(x0, controls)
    miss = np.linalg.norm(states[:, -1] - xt, axis=1)
    gap = (problem.cost(states, controls, xt) - reference_costs) / reference_costs
    return {"success": float((miss < 0.1).mean()), "median_gap": float(np.median(gap))}


class RealTimeIteration:
    """acados SQP_RTI as a closed-loop planner: for each case its own last plan, shifted by one
    step, warm-starts one Gauss-Newton QP from the measured state. plan_seconds: acados' own
    time of every iteration."""

    def __init__(self, problem, cases: int):
        self.solver, self.N = acados_solver(problem, real_time=True), problem.system.num_steps
        self.plans = [None] * cases
        self.plan_seconds = []

    def __call__(self, x, x_target):
        out = np.zeros((len(x), self.N, 1))
        for i, x0 in enumerate(x):
            plan = self.plans[i]
            if plan is not None:  # the last plan, one step on (its last control and state repeated)
                xs, us = np.vstack([plan[0][1:], plan[0][-1:]]), np.vstack([plan[1][1:], plan[1][-1:]])
            else:
                xs, us = np.zeros((self.N + 1, 2)), np.zeros((self.N, 1))
            for k in range(self.N + 1):
                self.solver.set(k, "x", xs[k])
            for k in range(self.N):
                self.solver.set(k, "u", us[k])
            self.solver.set(0, "lbx", x0)
            self.solver.set(0, "ubx", x0)
            self.solver.solve()
            self.plan_seconds.append(float(np.ravel(self.solver.get_stats("time_tot"))[0]))
            us = np.array([self.solver.get(k, "u") for k in range(self.N)])
            self.plans[i] = (np.array([self.solver.get(k, "x") for k in range(self.N + 1)]), us)
            out[i] = us
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=50, help="test problems each solver is timed on (default %(default)s)")
    parser.add_argument("--cases", type=int, default=20, help="closed-loop cases (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=100, help="epochs, if the model must be trained (default %(default)s)")
    parser.add_argument("--large_batch", type=int, default=10000, help="TRC's large batch (default %(default)s)")
    args = parser.parse_args()
    acados_template()  # before any work: a missing extra stops here
    options = frontier.TASKS["vanderpol"]
    folder = frontier.OUT / "vanderpol"
    train_path = frontier.dataset(folder / "train", 10000, frontier.TRAIN_SEED, options)
    test = read_dataset(frontier.dataset(folder / "test", 1000, frontier.TEST_SEED, options))
    args.retrain = False
    model = load_model(frontier.trained("vanderpol", "small", train_path, args))
    problem = test.problem
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
    fatrop = fatrop_solver(problem)
    fatrop(x0[0])
    times, answers = [], []
    for i in range(P):
        started = time.perf_counter()
        answers.append(fatrop(x0[i]))
        times.append(time.perf_counter() - started)
    rows.append(("fatrop (CasADi)", np.median(times), np.array(answers)))
    sqp = acados_solver(problem, real_time=False)
    acados_cold(sqp, x0[0], problem.system.num_steps)
    solved = [acados_cold(sqp, x0[i], problem.system.num_steps) for i in range(P)]
    rows.append(("acados SQP, cold (its own clock)", np.median([s[1] for s in solved]), np.array([s[0] for s in solved])))
    predict = lambda a, b: model.predict(a, b, tolerance=0.01)
    trc_one = time_inference(predict, x0, xt, 1)["median_ms"] / 1e3
    rows.append(("TRC small, halting at 0.01 (batch 1)", trc_one, predict(x0, xt)))
    trc_large = time_inference(predict, test.initial_states, test.target_states, args.large_batch, repeats=5)
    fastest = min(rows[:3], key=lambda r: r[1])
    cores = os.cpu_count()

    lines = [f"Van der Pol (T = {problem.system.time_horizon:g} s, N = {problem.system.num_steps}, |u| <= "
             f"{problem.control_bound:g}), the first {P} test problems of frontier.py (seed {frontier.TEST_SEED}), every "
             "solver cold from zero controls on one core; TRC the small model halting at 0.01. Success: "
             "||x_N - x*|| < 0.1 through the exact rollout; gap: (J - J_IPOPT) / J_IPOPT.", "",
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
              f"{rows[2][1] / trc_one:.1f}x and {rows[1][1] / trc_one:.1f}x "
              f"({'met' if min(rows[2][1], rows[1][1]) / trc_one >= 10 else 'MISSED'}); per problem at "
              f"{args.large_batch:,} >= 100x the fastest optimizer: {1e6 * fastest[1] / cores / per_problem:.0f}x "
              f"({'met' if 1e6 * fastest[1] / cores / per_problem >= 100 else 'MISSED'}).", ""]

    cases = min(args.cases, len(test))
    start, target = test.initial_states[-cases:], test.target_states[-cases:]
    run = dict(replan_every=1, disturbance_std=0.02, seed=0)
    rti = RealTimeIteration(problem, cases)
    closed = {"acados SQP_RTI (one warm iteration per re-plan)": simulate(problem, rti, start, target, **run)}
    one_at_a_time = lambda a, b: np.concatenate([model.predict(a[i:i + 1], b[i:i + 1]) for i in range(len(a))])
    closed["TRC small (every refinement, batch 1 per re-plan)"] = simulate(problem, one_at_a_time, start, target, **run)
    trc_plan = time_inference(model.predict, start, target, 1)["median_ms"]
    lines += [f"## Closed loop: re-planning at every step ({cases} cases, 2N = {2 * problem.system.num_steps} steps, "
              "state noise of std 0.02 after each step)", "",
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
    rti_ms = 1e3 * np.median(rti.plan_seconds)
    (rti_cost, trc_cost) = costs.values()
    lines += ["", f"Bar: TRC's re-plan no slower than one real-time iteration ({trc_plan:.3f} against {rti_ms:.3f} ms: "
                  f"{'met' if trc_plan <= rti_ms else 'MISSED'}) at a closed-loop cost within 1% of it "
                  f"({trc_cost / rti_cost - 1:+.2%}: {'met' if trc_cost <= 1.01 * rti_cost else 'MISSED'})."]
    body = "\n".join(lines)
    print(body)
    write_page("anchors_vanderpol", "Van der Pol: TRC against IPOPT, fatrop and acados", body)


if __name__ == "__main__":
    main()
