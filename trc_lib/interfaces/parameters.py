"""One check for each run parameter, shared by the command line and the notebooks.

`check(name, value)` returns the value or raises TRCError naming the parameter and what is
wrong, in one line. The command line's option types call it (an error then names the option,
--epochs); a notebook calls `check_namespace(globals())` in its first code cell, which also
refuses names its parameters cell does not declare (papermill itself only warns about them)
and values of the wrong type (`-p epochs abc` arrives as a string), before any work starts.
"""

from __future__ import annotations

import math
import types

from ..errors import TRCError
from ..model import MODEL_SIZES

SCHEDULERS = ("cosine", "step", "plateau", "none")
DEVICES = ("auto", "cpu", "cuda")


def _integer(value, low: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be an integer"
    return None if value >= low else ("must be a positive integer" if low == 1 else f"must be at least {low}")


def _positive_number(value) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number"
    return None if value > 0 and math.isfinite(value) else "must be a positive number"


def _non_negative_number(value) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number"
    return None if value >= 0 and math.isfinite(value) else "must be a non-negative number"


def _choice(options):
    return lambda value: None if value in options else f"must be one of {', '.join(map(str, options))}"


def _task(value) -> str | None:
    from ..tasks import SYSTEM_NAMES, is_task_file
    if isinstance(value, str) and (value in SYSTEM_NAMES or is_task_file(value)):
        return None
    return f"must be a built-in task ({', '.join(SYSTEM_NAMES)}) or a task file FILE.py:ClassName"


def _range(value) -> str | None:
    """[] (the task's own box) or [low, high], finite numbers with low < high (the CLI's LOW HIGH)."""
    if not isinstance(value, (list, tuple)) or len(value) not in (0, 2):
        return "must be [] or [LOW, HIGH]"
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value):
        return "must hold two finite numbers"
    return None if not value or value[0] < value[1] else "must have LOW < HIGH"


# name -> the reason a value is wrong, or None
RULES = {
    "epochs": lambda v: _integer(v, 1), "num_samples": lambda v: _integer(v, 1),
    "test_samples": lambda v: _integer(v, 1), "batch_size": lambda v: _integer(v, 1),
    "patience": lambda v: _integer(v, 0), "seed": lambda v: _integer(v, 0),
    "lr": _positive_number, "success_threshold": _positive_number, "gust": _non_negative_number,
    "model_size": _choice(tuple(MODEL_SIZES)), "scheduler": _choice(SCHEDULERS), "device": _choice(DEVICES),
    "system": _task, "state_range": _range,
    "curve_samples": lambda v: _integer(v, 1), "curve_steps": lambda v: _integer(v, 1),
    "finetune_epochs": lambda v: _integer(v, 1), "reward_epochs": lambda v: _integer(v, 1),
}


def check(name: str, value):
    """`value` if it is a valid `name`, else TRCError("parameter NAME: ..."). Unknown names pass."""
    rule = RULES.get(name)
    problem = rule(value) if rule else None
    if problem:
        raise TRCError(f"parameter {name}: {problem}, got {value!r}")
    return value


# names every IPython namespace holds besides the notebook's own
_IPYTHON = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def check_namespace(namespace: dict) -> None:
    """Check a notebook's parameters: call check_namespace(globals()) right after its `parameters`
    cell. The declared parameters are the annotated names of that cell (`epochs: int = 10`);
    papermill injects the caller's values as plain assignments after it. Raises TRCError for a
    name the cell does not declare, a value of another type than declared, or a bad value."""
    declared = dict(namespace.get("__annotations__", {}))
    # a parameter's value is data: the cell's imports (modules, functions, classes) are not parameters.
    # Unknown names are looked for on a kernel's first run only: papermill injects into a new kernel,
    # and on a second Run All every name the notebook's later cells defined is in the namespace.
    first_run = not namespace.get("_trc_parameters_checked")
    namespace["_trc_parameters_checked"] = True
    unknown = sorted(k for k, v in namespace.items() if not k.startswith("_") and k not in _IPYTHON
                     and k not in declared and not callable(v) and not isinstance(v, types.ModuleType))
    if unknown and first_run:
        raise TRCError(f"unknown parameter {unknown[0]}; this notebook's parameters are {', '.join(declared)}")
    for name, kind in declared.items():
        value = namespace.get(name)
        fits = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            fits = True
        if not fits:
            raise TRCError(f"parameter {name}: must be {getattr(kind, '__name__', kind)}, got {value!r}")
        check(name, value)


def named_files(items, option: str = "external") -> list[tuple[str, str]]:
    """["NAME=FILE", ...] -> [(name, file)]: the one syntax of external controllers, on the command
    line (--external NAME=FILE) and in notebook 04 (external = ["NAME=FILE"]). A malformed item
    is one clear error naming `option`."""
    if isinstance(items, str):
        items = [items]
    pairs = []
    for item in items:
        name, sep, path = str(item).partition("=")
        if not sep or not name or not path:
            raise TRCError(f"{option} {item!r}: expected NAME=FILE")
        pairs.append((name, path))
    return pairs
