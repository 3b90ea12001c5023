"""The oracles: the optimum of each task, which TRC learns from and is scored against.

    closed_form.py  linear systems: the QP, solved exactly (the global optimum)
    shooting.py     nonlinear systems: direct multiple shooting, solved by IPOPT
    labels.py       IPOPT from each of the task's label_starts over many problems, in parallel
    workers.py      where independent solves run: this process, a local Dask cluster or a Dask
                    scheduler; finished chunks kept on disk so an interrupted run continues

A task names its oracle (`Task.oracle`: one of ORACLES by name, or an object of its own, as a
task folder's may be); `oracle_of(problem)` returns it. Every oracle answers the
same questions: screen (which problems can be tried, without solving), optimum (solutions
and success flags), controls (the fastest call, for timing) and verify (a dataset's labels).
"""

from ..task import Task
from .closed_form import ClosedFormOracle, OptimalSolution
from .labels import ShootingOracle

ORACLES = {"closed_form": ClosedFormOracle(), "shooting": ShootingOracle()}


def oracle_of(problem: Task):
    """The oracle of `problem`'s system: the one its name gives, or an instance of the class its
    reference names (made once)."""
    name = problem.system.oracle
    if name not in ORACLES:
        from ..tasks import import_reference
        ORACLES[name] = import_reference(name)()
    return ORACLES[name]


def optimum(problem: Task, initial_states, target_states, workers=None, progress=False):
    """(OptimalSolution [B], success [B] bool) of `problem` for x_0, x* [B, n]: the rows of
    failures (unreachable targets, unsolved problems) are not solutions."""
    return oracle_of(problem).optimum(problem, initial_states, target_states, workers=workers, progress=progress)


__all__ = ["ORACLES", "OptimalSolution", "oracle_of", "optimum"]
