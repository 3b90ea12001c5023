"""The tasks: the built-in ones, each a file of this folder, and a user's, loaded from a file.

    double_integrator.py  x'' = u, minimum-energy transfer (an exact QP: LinearTask)
    vanderpol.py          regulate the unstable Van der Pol oscillator to the origin (IPOPT labels)
    pendulum.py           swing a pendulum up with a torque too weak to lift it (IPOPT, three starts)
    rocket_landing/       minimum-fuel powered descent with a free flight time: a task folder that
                          uses the interface's hooks (task.py) for everything a fixed horizon lacks

Every command takes `--system NAME` for one of these or `--system path/to/file.py:ClassName` for a
task file of the user's (docs/your_system.md): `load_task` runs that file, finds the class and
checks it, and datasets and checkpoints record the file's path and the SHA-256 of its source, so
a changed file is noticed. A task folder's class that is not a `Task` subclass (the rocket
landing's) reads the command line's options and its record itself: `from_options`, `from_dict`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np

from ..errors import TRCError
from ..integrators import NUMPY_OPS
from ..task import Task
from .double_integrator import DoubleIntegrator
from .pendulum import Pendulum
from .vanderpol import VanDerPol

BUILT_IN = {"double_integrator": DoubleIntegrator, "vanderpol": VanDerPol, "pendulum": Pendulum}
for _name, _class in BUILT_IN.items():
    _class._reference = _name
# task folders: the class that states the problem, by reference, imported when first asked for
# (a folder uses the core, as a user's file does, so the core does not import it)
TASK_FOLDERS = {"rocket_landing": "trc_lib.tasks.rocket_landing.problem:RocketLanding"}
SYSTEM_NAMES = (*BUILT_IN, *TASK_FOLDERS)
_FILES: dict = {}  # (resolved path, source sha256) -> the module run from it


def is_task_file(spec: str) -> bool:
    """Whether `spec` names a task file, FILE.py:ClassName, rather than a built-in task."""
    path, _, name = str(spec).rpartition(":")
    return path.endswith(".py") and name.isidentifier()


def task_class(spec: str) -> type:
    """The Task subclass `spec` names: a built-in's name, or "path/to/file.py:ClassName" (the
    file is run once per process and content; TRCError naming the file or class if it fails)."""
    spec = str(spec)
    if spec in BUILT_IN:
        return BUILT_IN[spec]
    if spec in TASK_FOLDERS:
        cls = import_reference(TASK_FOLDERS[spec])
        cls._reference = spec
        return cls
    if not is_task_file(spec):
        raise TRCError(f"--system {spec!r}: not a built-in task ({', '.join(SYSTEM_NAMES)}) nor a task file "
                       f"FILE.py:ClassName")
    file, _, name = spec.rpartition(":")
    module, path, sha = run_file(file, "task file")
    found = getattr(module, name, None)
    if found is None:
        defined = sorted(k for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, Task)
                         and v.__module__ == module.__name__)
        raise TRCError(f"{file}: no class {name} (its tasks: {', '.join(defined) or 'none'})")
    if not (isinstance(found, type) and issubclass(found, Task)):
        raise TRCError(f"{file}:{name} is not a task: a task subclasses trc_lib.Task")
    found._reference, found._source_sha256 = f"{path}:{name}", sha
    return found


def run_file(file, what: str = "task file"):
    """(module, resolved path, sha256 of its source) of the Python file `file` of the user's, run
    once per process and content. TRCError naming the file if it is missing or fails to run:
    whatever the user's code raises, SystemExit included."""
    path = Path(file).expanduser().resolve()
    if not path.is_file():
        raise TRCError(f"{file}: no such {what}")
    source = path.read_bytes()
    sha = hashlib.sha256(source).hexdigest()
    if (str(path), sha) not in _FILES:
        module_name = f"trc_{what.split()[0]}_{sha[:16]}"
        spec_ = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec_)
        sys.modules[module_name] = module  # classes defined there can be found by their module
        try:
            spec_.loader.exec_module(module)
        except (Exception, SystemExit) as e:  # the user's code: whatever it raises, name the file and stop
            del sys.modules[module_name]
            raise TRCError(f"{file}: the {what} failed to run ({type(e).__name__}: {e})") from None
        _FILES[(str(path), sha)] = module
    return _FILES[(str(path), sha)], path, sha


def import_reference(reference: str):
    """What "package.module:Name" names (a task folder's class, oracle or network), imported now."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def load_task(spec: str, **parameters) -> Task:
    """The task `spec` names (see task_class), built with `parameters` overriding its declared
    values, and checked: TRCError naming the class and field if it is inconsistent, or if its
    vector field is not [B, n] and finite on states drawn from its box."""
    cls = task_class(spec)
    if not issubclass(cls, Task):
        raise TRCError(f"--system {spec} is a task folder's own problem, not a Task file: this does not apply to it")
    task = cls(**parameters)  # ValueError naming the class and the field
    check_vector_field(task, cls._reference if is_task_file(spec) else cls.__name__)
    return task


def check_vector_field(task: Task, where: str, count: int = 8) -> None:
    """TRCError unless f(x, u) is [count, n] and finite at states of the initial box and controls
    within the bounds (numpy)."""
    rng = np.random.default_rng(0)
    x, _ = task.draw_problems(rng, count)
    u = rng.uniform(task.control_lower, task.control_upper, size=(count, task.control_dim))
    try:
        with np.errstate(all="ignore"):
            f = np.asarray(task.vector_field(x, u, NUMPY_OPS), dtype=np.float64)
    except AttributeError as e:
        raise TRCError(f"{where}.vector_field: {e}") from None
    except Exception as e:  # the user's code
        raise TRCError(f"{where}.vector_field failed on states of its initial_box ({type(e).__name__}: {e})") \
            from None
    if f.shape != (count, task.state_dim):
        raise TRCError(f"{where}.vector_field returns shape {list(f.shape)} for {count} states, expected "
                       f"[{count}, {task.state_dim}] (one derivative per state: use ops.stack([...]))")
    if not np.isfinite(f).all():
        raise TRCError(f"{where}.vector_field is not finite on states of its initial_box")


def _as_tuples(value):
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value


def task_from_dict(d: dict):
    """The task a dict from to_dict() states. ValueError if it is of an older format, or if a
    task file has changed since the dict was written."""
    if "task" not in d:
        raise ValueError("it states its problem in the format of trc_lib before 0.2 (no 'task'): "
                         "make it again with this version")
    cls = task_class(d["task"]) if d["task"] in SYSTEM_NAMES or is_task_file(d["task"]) else None
    if cls is None:
        raise ValueError(f"task {d['task']!r} was not loaded from a file: save it to FILE.py and use "
                         f"--system FILE.py:{d['task']}")
    if not issubclass(cls, Task):
        return cls.from_dict(d)
    if d.get("source_sha256") and d["source_sha256"] != cls._source_sha256:
        raise ValueError(f"{d['task'].rpartition(':')[0]} has changed since this was made "
                         f"(source sha256 {d['source_sha256'][:12]} then, {cls._source_sha256[:12]} now)")
    task = cls(**{k: _as_tuples(v) for k, v in d.get("parameters", {}).items()})
    differences = [f"{k}: {d.get(k)} vs {v}" for k, v in task.to_dict().items() if d.get(k) != v]
    if differences:  # the record was edited, or the task's values changed under its name
        raise ValueError(f"the stated problem is not what its task gives ({'; '.join(differences)})")
    return task


def make_problem(num_steps=None, time_horizon=None, control_bound=None, controller=None,
                 system="double_integrator", lqr_Q=(1.0, 1.0), lqr_R=(0.1,), lqr_Qf=(100.0, 100.0),
                 **parameters):
    """The task `system` names (a built-in's name or FILE.py:ClassName), with the command line's
    options applied (None keeps the task's own value).

    control_bound: every control within [-bound, bound]. controller: the task's own objective
    (its objective_name, the default), or 'lqr' on a linear task: finite-horizon LQR tracking
    with diagonal weights lqr_Q, lqr_R, lqr_Qf and no terminal constraint. parameters: the task's
    own (mu=0.5, substeps=8, ...). A task folder's own problem reads them itself (from_options).
    """
    cls = task_class(system)
    if not issubclass(cls, Task):
        return cls.from_options(num_steps, time_horizon, control_bound, controller, **parameters)
    overrides = dict(parameters)
    if num_steps is not None:
        overrides["num_steps"] = int(num_steps)
    if time_horizon is not None:
        overrides["time_horizon"] = float(time_horizon)
    if control_bound is not None:
        overrides["control_bounds"] = ((-float(control_bound), float(control_bound)),) * len(cls.control_names)
    controllers = (cls.objective_name, "lqr") if cls.is_linear else (cls.objective_name,)
    controller = controller or cls.objective_name
    if controller not in controllers:
        raise ValueError(f"unknown controller {controller!r} for {system}; choose one of {list(controllers)}")
    if controller == "lqr":
        for label, diag in (("Q", lqr_Q), ("R", lqr_R), ("Q_f", lqr_Qf)):
            if not all(np.isfinite(d) and d >= 0 for d in diag):
                raise ValueError(f"LQR weight {label} must be finite and non-negative, got {list(diag)}")
        if not all(d > 0 for d in lqr_R):
            raise ValueError(f"LQR weight R must be positive, got {list(lqr_R)}")
        overrides.update(Q=tuple(map(float, lqr_Q)), R=tuple(map(float, lqr_R)), Q_f=tuple(map(float, lqr_Qf)),
                         terminal_constraint=False, objective_name="lqr")
    return load_task(system, **overrides)


__all__ = ["BUILT_IN", "TASK_FOLDERS", "SYSTEM_NAMES", "Task", "task_class", "import_reference", "load_task",
           "task_from_dict", "make_problem", "DoubleIntegrator", "VanDerPol", "Pendulum"]
