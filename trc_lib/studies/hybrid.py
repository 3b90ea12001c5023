"""A hybrid controller: the network's answer, polished by IPOPT started from it.

TRC gives a whole control sequence in milliseconds but only approximately; IPOPT gives the
exact local optimum but must search for it. Starting IPOPT from TRC's answer combines them:
the network supplies the basin and most of the answer, the optimizer a few iterations of
Newton-type steps on the exact KKT conditions. With max_iterations=1 this is "network output
+ one Newton step"; with the default it runs to convergence (the answer is then as good as
the oracle's, and the question is how many iterations and milliseconds the warm start saves).

IPOPT is an interior-point method: started from a good point it still pushes the iterate
into the interior at its initial barrier parameter. A small mu_init (1e-4 here, against its
default 0.1) keeps it close to the network's answer; this is the whole of the warm start
(the multipliers are not warm-started).
"""

from __future__ import annotations

import numpy as np

from ..oracles import oracle_of
from ..task import Task

WARM_START = {"mu_init": 1e-4, "warm_start_init_point": "yes"}


class HybridController:
    """TRC (or any controller with predict) followed by IPOPT from its answer, on one core.

    name: 'TRC + IPOPT (k iterations)' or 'TRC + IPOPT (to convergence)'. After each predict,
    `iterations` holds IPOPT's iteration count per problem and `converged` whether it converged.
    """

    num_parameters = None
    memory_bytes = None

    def __init__(self, controller, problem: Task, max_iterations: int | None = None):
        from ..oracles.labels import make_optimizer
        if oracle_of(problem).exact_and_fast:
            raise ValueError("the hybrid is for the tasks IPOPT solves (this task's oracle is already exact and fast)")
        self.controller, self.problem = controller, problem
        self.optimizer = make_optimizer(problem, max_iterations=max_iterations or 1000, ipopt_options=WARM_START)
        self.name = (f"{controller.name} + IPOPT ({max_iterations} iteration{'s' if max_iterations != 1 else ''})"
                     if max_iterations else f"{controller.name} + IPOPT (to convergence)")
        self.iterations = self.converged = None

    def predict(self, initial_states, target_states) -> np.ndarray:
        guesses = self.controller.predict(initial_states, target_states)
        batch = self.optimizer.solve_batch(initial_states, target_states, initial_guesses=guesses[:, None])
        self.iterations, self.converged = batch.iterations, batch.success
        return batch.controls
