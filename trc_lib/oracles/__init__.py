"""The oracles: the optimum of each task, which TRC learns from and is scored against.

    closed_form.py  linear systems: the QP, solved exactly (the global optimum)
    shooting.py     nonlinear systems: direct multiple shooting, solved by IPOPT
    labels.py       IPOPT from several starts over many problems, in parallel
    workers.py      where independent solves run: this process, a local Dask cluster or a Dask
                    scheduler; finished chunks kept on disk so an interrupted run continues
    tasks/rocket_landing/cone_program.py the rocket landing: lossless convexification, one cone program (Clarabel)
                    per flight time, the best flight time by a scan and a scalar search
    tasks/rocket_landing/nlp_check.py  the rocket landing as a non-convex NLP for IPOPT: the cone program's check

A system names its oracle (`system.oracle`); `oracle_of(problem)` returns it. Both answer the
same questions: screen (which problems can be tried, without solving), optimum (solutions
and success flags), controls (the fastest call, for timing) and verify (a dataset's labels).
"""

from ..task import Task
from .closed_form import ClosedFormOracle, OptimalSolution
from ..tasks.rocket_landing.cone_program import ConeProgramOracle
from .labels import ShootingOracle

ORACLES = {"closed_form": ClosedFormOracle(), "shooting": ShootingOracle(), "cone_program": ConeProgramOracle()}


def oracle_of(problem: Task):
    """The oracle of `problem`'s system."""
    return ORACLES[problem.system.oracle]


def optimum(problem: Task, initial_states, target_states, workers=None, progress=False):
    """(OptimalSolution [B], success [B] bool) of `problem` for x_0, x* [B, n]: the rows of
    failures (unreachable targets, unsolved problems) are not solutions."""
    return oracle_of(problem).optimum(problem, initial_states, target_states, workers=workers, progress=progress)


__all__ = ["ORACLES", "OptimalSolution", "oracle_of", "optimum"]
