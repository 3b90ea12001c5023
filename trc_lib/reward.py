"""The user's own reward, for reward fine-tuning (`trc finetune --reward FILE.py:function`).

A reward file is code the user chose to run: it runs with the user's rights, like a task file.
Its function is told apart by its signature, and called once per batch of answers:

- text, TRL's convention (a reward written for an LLM works unchanged):
      reward(prompts=[str], completions=[str], **kwargs) -> [float], one per completion.
  The prompts are exactly what `trc prompts` writes for those problems (the same template); each
  completion is TRC's answer written in the format the prompts ask for (llm.answer_text: a JSON
  list). Like TRL, the other columns of `trc prompts`' records come as keyword arguments, a list
  each: id, initial_state, target_state, num_steps, control_dim. conversational=True hands them
  over as TRL's conversational format: prompts [[{"role": "user", "content": ...}]], completions
  [[{"role": "assistant", "content": ...}]].
- arrays, for rewards written against states:
      reward(initial_states [B, n], target_states [B, n], controls [B, N, m], **kwargs) -> [B],
  numpy float64; kwargs: task (the Task: task.rollout(x0, controls) -> states [B, N+1, n]).

Keyword arguments the function does not take (no **kwargs) are left out. Larger is better.
"""

from __future__ import annotations

import inspect

import numpy as np

from .errors import TRCError

TEXT, ARRAYS = "text", "arrays"


class Reward:
    """A loaded reward function: __call__(x0, x*, controls, prompts, indices, batch) -> [B] float64."""

    def __init__(self, function, name: str, conversational: bool = False):
        self.function, self.name, self.conversational = function, name, conversational
        self.form = reward_form(function, name)
        parameters = inspect.signature(function).parameters
        # the keyword arguments it takes: all, with **kwargs
        self._takes = None if any(p.kind == p.VAR_KEYWORD for p in parameters.values()) else set(parameters)
        self.calls = 0    # calls of the function
        self.answers = 0  # answers it scored

    @classmethod
    def load(cls, spec: str, conversational: bool = False) -> "Reward":
        """The reward "path/to/file.py:function" names, its form read from its signature; TRCError
        naming the file or function if it cannot be."""
        from .tasks import run_file
        file, _, name = str(spec).rpartition(":")
        if not file.endswith(".py") or not name.isidentifier():
            raise TRCError(f"--reward {spec!r}: expected FILE.py:function")
        module, _, _ = run_file(file, "reward file")
        function = getattr(module, name, None)
        if function is None:
            defined = sorted(k for k, v in vars(module).items() if inspect.isfunction(v)
                             and v.__module__ == module.__name__)
            raise TRCError(f"{file}: no function {name} (its functions: {', '.join(defined) or 'none'})")
        if not callable(function):
            raise TRCError(f"{spec}: not a function")
        return cls(function, spec, conversational)

    def __call__(self, initial_states: np.ndarray, target_states: np.ndarray, controls: np.ndarray, task,
                 prompts: list[str] | None = None, indices=None, batch: str = "batch 1") -> np.ndarray:
        """The rewards [B] of answers controls [B, N, m] to problems (x0, x*) [B, n] (indices:
        each answer's problem in the user's data, for messages; prompts: each answer's prompt,
        for a text reward; batch: which call this is, in words). TRCError naming the function, the
        batch and the problem when the function raises or answers anything but B finite numbers."""
        B = len(controls)
        indices = np.arange(B) if indices is None else np.asarray(indices)
        if self.form == TEXT:
            from .llm import answer_text
            completions = [answer_text(u) for u in controls]
            N, m = controls.shape[1:]
            columns = {"id": indices.tolist(), "initial_state": initial_states.tolist(),
                       "target_state": target_states.tolist(), "num_steps": [int(N)] * B, "control_dim": [int(m)] * B}
            if self.conversational:
                prompts = [[{"role": "user", "content": p}] for p in prompts]
                completions = [[{"role": "assistant", "content": c}] for c in completions]
            arguments = {"prompts": prompts, "completions": completions, **columns}
        else:
            arguments = {"initial_states": initial_states.copy(), "target_states": target_states.copy(),
                         "controls": controls.copy(), "task": task}
        try:
            values = self.function(**self._accepted(arguments))
        except Exception as e:  # the user's code
            raise TRCError(f"reward {self.name}, {batch} (problems {indices.min()} to {indices.max()}): raised "
                           f"{type(e).__name__}: {e}") from None
        self.calls, self.answers = self.calls + 1, self.answers + B
        return self._checked(values, B, indices, batch)

    def _accepted(self, arguments: dict) -> dict:
        return arguments if self._takes is None else {k: v for k, v in arguments.items() if k in self._takes}

    def _checked(self, values, B: int, indices: np.ndarray, batch: str) -> np.ndarray:
        where = f"reward {self.name}, {batch}"
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise TRCError(f"{where}: returned {type(values).__name__} that is not {B} numbers") from None
        if array.shape != (B,):
            raise TRCError(f"{where}: returned {array.size} values of shape {list(array.shape)}, expected one number "
                           f"per answer ({B})")
        bad = np.flatnonzero(~np.isfinite(array))
        if len(bad):
            raise TRCError(f"{where}: returned {array[bad[0]]} for problem {indices[bad[0]]} (answer {bad[0]} of "
                           f"the batch); a reward must be a finite number")
        return array


def reward_form(function, name: str) -> str:
    """TEXT or ARRAYS from the function's parameters; TRCError naming it otherwise."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        raise TRCError(f"reward {name}: its signature cannot be read") from None
    if "completions" in parameters:
        return TEXT
    if {"initial_states", "target_states", "controls"} <= set(parameters):
        return ARRAYS
    raise TRCError(f"reward {name}: takes ({', '.join(parameters)}); a reward takes (prompts, completions, **kwargs) "
                   f"(text, TRL's convention) or (initial_states, target_states, controls, **kwargs) (arrays)")
