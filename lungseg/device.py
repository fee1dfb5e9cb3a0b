"""Device selection shared by training, evaluation and prediction."""

from __future__ import annotations

import torch

from lungseg.errors import LungsegError

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a device name into a :class:`torch.device`.

    Args:
        name: ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
            ``"mps"``.

    Raises:
        LungsegError: the name is unknown or the requested accelerator is not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    base = name.split(":")[0]
    if base not in DEVICES:
        raise LungsegError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    if base == "cuda" and not torch.cuda.is_available():
        raise LungsegError(f"--device {name} requested but CUDA is not available on this machine")
    if base == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise LungsegError("--device mps requested but Apple MPS is not available on this machine")
    return torch.device(name)
