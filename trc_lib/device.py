"""Choosing where to compute: the GPU when there is one, else the CPU, and saying which."""

from __future__ import annotations

import torch

from .errors import TRCError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device="auto") -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU is an error, not a silent fallback."""
    device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TRCError("device cuda: no CUDA GPU is available here (choose cpu or auto)")
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise TRCError(f"device {device!r}: choose one of {list(DEVICES)}")
    return torch.device(device)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
