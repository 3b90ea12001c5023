"""TinyRecursiveControl: tiny recursive networks for optimal control, checked against the exact optimum.

The flow, one module per step: systems -> problem -> oracles/ (the exact optimum) -> data ->
model -> training -> evaluate / compare -> plots / widgets; studies/ go beyond the guide, and
interfaces/ (the `trc` command, the notebooks' helpers) are thin faces over the same functions.
"""

from .version import __version__  # noqa: F401  (trc_lib.__version__)

from .checkpoint import load_model
from .data import create_data_loaders, generate_dataset, load_dataset, read_dataset, save_dataset
from .model import ModelConfig, TinyRecursiveControl
from .task import LinearTask, Objective, Task
from .tasks import load_task
from .training import train

__all__ = ["TinyRecursiveControl", "ModelConfig", "Task", "LinearTask", "Objective", "load_task", "train", "load_dataset",
           "read_dataset", "generate_dataset", "save_dataset", "create_data_loaders", "load_model"]
