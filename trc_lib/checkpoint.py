"""Checkpoints: a model's config, its problem and weights, plus (in last_model.pt) the state
needed to resume training exactly. Everything is tensors and plain Python values, so files
load with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .errors import TRCError
from .files import atomic_path, check_input
from .model import ModelConfig, TinyRecursiveControl, model_class

FORMAT = "trc-checkpoint"
FORMAT_VERSION = 3  # 2 (trc_lib 0.2): the problem is a Task (its name or file, the file's hash, its parameters);
#                     3 (0.3): every task's record names it under 'task', a task folder's too


def save_checkpoint(path, model: TinyRecursiveControl, weights: dict, **extra) -> None:
    """Write a checkpoint atomically. weights: the state_dict to predict with (EMA when used)."""
    from .version import __version__
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "trc_lib_version": __version__,
               "config": model.config_dict(), "model_state": weights, **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path, map_location="cpu") -> dict:
    """Load and check a checkpoint file; raise TRCError naming the file if it is not one."""
    path = Path(path)
    if not path.exists():
        raise TRCError(f"{path}: no such checkpoint file")
    check_input(path, "checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch.load raises many types on foreign bytes (IndexError on a text file)
        raise TRCError(f"{path}: not a readable checkpoint (torch.load with weights_only=True failed: "
                       f"{type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise TRCError(f"{path}: not a TinyRecursiveControl checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        from .version import __version__
        raise TRCError(f"{path}: checkpoint format {payload.get('format_version')} (written by trc_lib "
                       f"{payload.get('trc_lib_version', 'unknown')}), this is trc_lib {__version__}, which reads "
                       f"format {FORMAT_VERSION}: train it again with this version")
    return payload


def model_from_checkpoint(payload: dict, path="checkpoint") -> TinyRecursiveControl:
    from .tasks import task_from_dict
    try:
        problem = task_from_dict(payload["config"]["problem"])
    except (KeyError, TypeError, ValueError) as e:  # a task file changed since, or a record of another format
        raise TRCError(f"{path}: its task: {str(e).strip().splitlines()[0]}") from None
    try:
        model = model_class(problem)(ModelConfig(**payload["config"]))
        model.load_state_dict(payload["model_state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first_line = str(e).strip().splitlines()[0]
        raise TRCError(f"{path}: weights do not fit the stored model config ({first_line})") from None
    if not all(torch.isfinite(t).all() for t in model.state_dict().values()):
        raise TRCError(f"{path}: weights contain NaN or inf")
    return model.eval()


def load_model(path, device="cpu"):
    """A trained model, ready for `model.predict(initial_states, target_states)` (numpy in and out).

    A .pt checkpoint gives a TinyRecursiveControl on `device` (on the CPU with its C path for small
    batches prepared: fast/forward.py); a .onnx file (from `trc export`) gives an
    export.OnnxController, run by ONNX Runtime on the CPU.
    """
    if Path(path).suffix == ".onnx":
        from .export import OnnxController
        if not Path(path).is_file():
            raise TRCError(f"{path}: no such ONNX file")
        return OnnxController(path)
    model = model_from_checkpoint(read_checkpoint(path), path).to(device)
    # compile forward.c now (once per machine), not in the first predict
    if next(model.parameters()).device.type == "cpu" and model.has_c_forward:
        from .fast.forward import FastForward
        FastForward.of(model)
    return model
