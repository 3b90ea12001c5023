"""TinyRecursiveControl: tiny recursive networks for optimal control, checked against the exact optimum.

The pipeline, one module per step: systems -> problem -> optimal (the oracle) -> data -> model
-> train -> evaluate / compare -> plots / widgets; `cli` and the notebooks are thin faces over it.
"""

from .version import __version__  # noqa: F401  (trc_lib.__version__)

from .checkpoint import load_model
from .data import create_data_loaders, generate_dataset, load_dataset, read_dataset, save_dataset
from .model import ModelConfig, TinyRecursiveControl
from .problem import ControlProblem, Objective
from .training import train

__all__ = ["TinyRecursiveControl", "ModelConfig", "ControlProblem", "Objective", "train", "load_dataset",
           "read_dataset", "generate_dataset", "save_dataset", "create_data_loaders", "load_model"]
