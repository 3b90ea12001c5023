"""The oracle of the nonlinear systems: IPOPT (shooting.py) from the task's starts, in parallel over cores.

A nonlinear Task (Van der Pol, the pendulum, a user's) has no closed form; each (x_0, x*) is
solved by direct multiple shooting on the same RK4 integrator the evaluation uses, with the
problem's own objective:

    J = dt * sum_k [(x_k - x*)' Q (x_k - x*) + u_k' R u_k] + (x_N - x*)' Q_f (x_N - x*),
    |u_k| <= control_bound, and x_N = x* when the objective has a terminal constraint.

Work is split into chunks over workers (workers.py: a Dask cluster, local or not); each worker
builds its optimizer once. Results do not depend on the workers (each problem's starts are its own).
"""

from __future__ import annotations

import functools

import numpy as np

from .closed_form import OptimalSolution
from .workers import Workers, chunk_slices, map_chunks
from ..task import Task
from ..tasks import task_from_dict

_worker_optimizer = None  # one per worker process, built by _init_worker
_worker_problem = None  # the problem (as a dict) it was built for
# Compile the NLP to C (TrajectoryOptimizer's `compiled`) when each process has at least this many
# problems: compiling costs as much as about a thousand interpreted solves (benchmarks/ipopt_compiled.py).
COMPILE_FROM_PROBLEMS_PER_PROCESS = 2000
NUM_SPOT_CHECKS = 4  # labels solved again when a dataset is read (all of them would take as long as making them)


def vanderpol_problem(time_horizon=5.0, num_steps=50, substeps=4, mu=1.0, control_bound=2.0) -> Task:
    """The default Van der Pol task: regulate to x* (the origin by default) exactly at t = T,
    minimizing dt * sum (|x_k - x*|^2 + u_k^2), with |u| <= 2."""
    from ..tasks import make_problem
    return make_problem(num_steps, time_horizon, control_bound, system="vanderpol", substeps=substeps, mu=mu)


def make_optimizer(task: Task, **options):
    """A TrajectoryOptimizer for `task`: its vector field, bounds, objective (its quadratic one or
    its stage_cost), terminal condition, state bounds and path constraints; options go to its
    constructor (max_iterations, ipopt_options, compiled, ...)."""
    from .shooting import TrajectoryOptimizer
    from ..integrators import casadi_ops
    Q, R, Q_f = (np.asarray(M) for M in task.objective.matrices())
    ops = casadi_ops()

    def stage_cost(x, u, target):
        if task.has_stage_cost:
            return task.stage_cost(x, u, target, ops)
        e = x - target
        return e.T @ Q @ e + u.T @ R @ u

    def terminal_cost(x, target):
        e = x - target
        return e.T @ Q_f @ e

    limits = task.state_limits
    return TrajectoryOptimizer(task.casadi_vector_field(), task.state_dim, task.control_dim,
                               task.time_horizon, task.num_steps, substeps=task.substeps,
                               stage_cost=stage_cost, terminal_cost=terminal_cost,
                               terminal_constraint=task.objective.terminal_constraint,
                               terminal_components=task.terminal_indices,
                               path_constraints=(lambda x, u: task.path_constraints(x, u, ops))
                               if task.has_path_constraints else None,
                               control_lower=task.control_lower, control_upper=task.control_upper,
                               state_lower=None if limits is None else limits[:, 0],
                               state_upper=None if limits is None else limits[:, 1], **options)


def bound_active(task: Task, control_sequences: np.ndarray, atol: float) -> np.ndarray:
    """[B] bool: whether any control of a sequence [B, N, m] lies on a bound (within atol)."""
    u = np.asarray(control_sequences)
    on = np.isclose(u, task.control_lower, rtol=0, atol=atol) | np.isclose(u, task.control_upper, rtol=0, atol=atol)
    return on.any(axis=(1, 2))


def _init_worker(problem, compiled=False):
    """Build this process's optimizer, unless it already has one for the same problem (building
    the NLP takes longer than solving a few problems: a batch-1 caller must not pay it each time).
    compiled: ask for the compiled NLP (an interpreted one is then rebuilt; a compiled one is
    always kept, it gives the same answers faster). problem: a task as its dict (what travels to
    worker processes; the task file is loaded there), or the Task itself (see travelling)."""
    global _worker_optimizer, _worker_problem
    key = problem if isinstance(problem, dict) else problem.to_dict()
    if _worker_optimizer is None or _worker_problem != key or (compiled and not _worker_optimizer.compiled):
        task = task_from_dict(problem) if isinstance(problem, dict) else problem
        _worker_optimizer = make_optimizer(task, compiled=compiled)
        _worker_problem = key


def travelling(task: Task):
    """What goes to the workers for `task`: its dict where a worker can rebuild it (a built-in
    task, a task file), the Task itself for a class defined in this process (a notebook cell, a
    test), which Dask pickles by value."""
    return task.to_dict() if task.reference else task


def cached_optimizer(problem: Task, compiled: bool = False):
    """This process's TrajectoryOptimizer for `problem`, built on first use (compiled: see _init_worker)."""
    _init_worker(problem, compiled)
    return _worker_optimizer


def _solve_chunk(problem, chunk, compiled=False):
    """One chunk's (controls, costs, success, terminal multipliers), on this process's optimizer."""
    _init_worker(problem, compiled)
    initial_states, target_states, initial_guesses = chunk
    batch = _worker_optimizer.solve_batch(initial_states, target_states, initial_guesses)
    return batch.controls, batch.costs, batch.success, batch.terminal_multipliers


def solve_nonlinear(problem: Task, initial_states, target_states, initial_guesses=None,
                    workers=None, chunk_size: int = 50, progress: bool = True):
    """Optimal controls for B problems. initial_states, target_states: [B, n].

    initial_guesses: starts for every problem, [S, N, m], or each problem's own, [B, S, N, m]
    (default: zero controls).
    workers: where the solves run (workers.Workers, or a number of processes; default: a Dask
    LocalCluster with a process per core). Chunks hold at most chunk_size problems, and there are
    at least MIN_CHUNKS of them; they do not depend on the workers, so a journal of finished
    chunks serves a run with other workers as well. From COMPILE_FROM_PROBLEMS_PER_PROCESS
    problems per worker on, the NLP is compiled to C first (same answers, faster). Returns
    (OptimalSolution, success [B] bool); the solution's states and costs are the numpy rollout of
    the returned controls.
    """
    x0 = np.asarray(initial_states, np.float64)
    xt = np.asarray(target_states, np.float64)
    system = problem.system
    guesses = (np.zeros((1, system.num_steps, system.control_dim)) if initial_guesses is None
               else np.asarray(initial_guesses, np.float64))
    per_problem = guesses.ndim == 4  # [B, S, N, m]: each problem its own starts
    workers = Workers.of(workers)
    count = workers.count()
    chunks = [(x0[part], xt[part], guesses[part] if per_problem else guesses)
              for part in chunk_slices(len(x0), chunk_size)]
    # large batches: each worker compiles the NLP once (the answers are the same to the last bit)
    compiled = len(x0) >= COMPILE_FROM_PROBLEMS_PER_PROCESS * min(count, len(chunks))
    outputs = map_chunks(functools.partial(_solve_chunk, travelling(problem), compiled=compiled), chunks, workers,
                         progress=progress, desc="IPOPT labels" + (", compiled NLP" if compiled else ""),
                         sizes=[len(chunk[0]) for chunk in chunks])
    controls, costs, success, multipliers = (np.concatenate(parts) for parts in zip(*outputs))
    with np.errstate(over="ignore", invalid="ignore"):  # a failed solve's controls may diverge: it is dropped
        states = system.rollout(x0, controls)
        costs = problem.cost(states, controls, xt)
    success &= np.isfinite(costs)
    solution = OptimalSolution(controls, states, costs, np.nan_to_num(multipliers),
                               bound_active(problem, controls, atol=1e-6))
    return solution, success


class ShootingOracle:
    """The oracle of a nonlinear system: IPOPT on the multiple-shooting NLP from each of the
    task's starts (Task.label_starts), the best converged start kept. A problem none of them
    solves to a feasible point is a failure."""

    name = "IPOPT"
    method = "IPOPT (multiple shooting, best of the task's label_starts)"  # as datasets record it
    failure = "unsolved"
    exact_and_fast = False  # a local optimum, in milliseconds per problem
    one_problem_at_a_time = True  # per problem it costs the same at any batch: one solve after another
    solves_on_workers = True  # chunks of problems on workers.Workers (Dask)

    def screen(self, problem: Task, initial_states, target_states) -> np.ndarray:
        """[B] bool: nothing is known without solving, so every problem is tried."""
        return np.ones(len(initial_states), bool)

    def optimum(self, problem: Task, initial_states, target_states, workers=None, progress=False):
        """(OptimalSolution [B], success [B] bool). workers: where the solves run (workers.Workers, or
        a number of processes; default: a Dask LocalCluster with a process per core)."""
        return solve_nonlinear(problem, initial_states, target_states, problem.label_starts(), workers=workers,
                               progress=progress)

    def controls(self, problem: Task, initial_states, target_states) -> np.ndarray:
        """The optimal controls [B, N, m] and nothing else: IPOPT alone, one problem after another on
        this core, the optimizer built once and its NLP compiled (the fastest IPOPT here); no progress
        bar, rollout or cost bookkeeping."""
        return cached_optimizer(problem, compiled=True).solve_batch(initial_states, target_states,
                                                                    problem.label_starts()).controls

    def verify(self, dataset, num_spot_checks: int = NUM_SPOT_CHECKS) -> None:
        """Refuse labels that are inconsistent or not optimal (TRCError naming the file).

        Every sample: the trajectory is the rollout of its controls, the cost is J of that, the
        controls keep the bound and the trajectory ends on x* (when required). A seeded handful
        is solved again by IPOPT starting from the stored controls: a local optimum comes back
        unchanged, anything else comes back cheaper and is refused.
        """
        from ..errors import TRCError
        problem = dataset.problem
        problems = _inconsistencies(dataset)
        if not problems:
            picks = np.random.default_rng(len(dataset)).choice(len(dataset), min(num_spot_checks, len(dataset)),
                                                               replace=False)
            picked = dataset.subset(picks)
            resolved, success = solve_nonlinear(problem, picked.initial_states, picked.target_states,
                                                picked.control_sequences[:, None], workers=1, progress=False)
            better = success & (resolved.costs < picked.costs - 1e-6 * (1.0 + np.abs(picked.costs)))
            if better.any():
                problems.append(f"IPOPT improves the stored labels of samples {sorted(picks[better].tolist())} "
                                f"(cost {picked.costs[better][0]:.6g} -> {resolved.costs[better][0]:.6g}): "
                                f"they are not optimal")
        if problems:
            raise TRCError(f"{dataset.path}: {'; '.join(problems)} (a corrupt file, or labels from another problem)")


def _inconsistencies(dataset) -> list[str]:
    """What is wrong with a dataset's labels that needs no solve: rollout, cost, bound, target."""
    problem = dataset.problem
    states = problem.system.rollout(dataset.initial_states, dataset.control_sequences)
    scale = 1.0 + np.abs(states).max()
    problems = []
    if not np.allclose(states, dataset.state_trajectories, rtol=0, atol=1e-8 * scale):
        problems.append("'state_trajectories' are not the rollout of 'control_sequences'")
    if not np.allclose(problem.cost(states, dataset.control_sequences, dataset.target_states), dataset.costs,
                       rtol=1e-8, atol=1e-10):
        problems.append("'costs' are not J of the stored controls")
    lower, upper = problem.control_lower, problem.control_upper
    slack = 1e-9 * np.maximum(np.abs(lower), np.abs(upper))
    if ((dataset.control_sequences < lower - slack) | (dataset.control_sequences > upper + slack)).any():
        problems.append(f"'control_sequences' leave the bounds {problem.control_limits.tolist()}")
    if problem.objective.terminal_constraint:
        i = list(problem.terminal_indices)
        miss = np.abs(states[:, -1, i] - dataset.target_states[:, i]) / (1.0 + np.abs(dataset.target_states[:, i]))
        if miss.max() > 1e-5:
            problems.append(f"the trajectories miss their targets (by up to {miss.max():.2g})")
    return problems
