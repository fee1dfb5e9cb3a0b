"""Device and numeric-precision selection shared by training, evaluation, prediction and the benchmark."""

from __future__ import annotations

import contextlib

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


PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")

#: The first CUDA compute capability with native bf16 tensor cores (Ampere, sm_80). Older GPUs (a
#: Colab T4 is 7.5, a V100 7.0) emulate bf16 slowly but have fast fp16 tensor cores.
BF16_MIN_CAPABILITY: tuple[int, int] = (8, 0)


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 dot products (AVX-512 BF16 or AMX), which oneDNN uses.

    Without them bf16 autocast on the CPU is emulated and slower than fp32.
    """
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """The compute capability ``(major, minor)`` of a CUDA ``device`` (the current GPU when it has no index)."""
    return tuple(torch.cuda.get_device_capability(device))  # type: ignore[return-value]


def cuda_has_bf16(device: torch.device) -> bool:
    """Whether the CUDA ``device`` has native bf16 (compute capability >= :data:`BF16_MIN_CAPABILITY`)."""
    return cuda_capability(device) >= BF16_MIN_CAPABILITY


def has_fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast is faster than fp32 on ``device``: CUDA, or a CPU with :func:`cpu_has_bf16`."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


def resolve_precision(name: str, device: torch.device) -> str:
    """Turn a precision name into ``"fp32"``, ``"bf16"`` or ``"fp16"`` for ``device``.

    Args:
        name: ``"auto"`` (on CUDA: bf16 autocast on GPUs with native bf16, compute capability
            >= 8.0, and fp16 autocast with a :func:`grad_scaler` on older ones such as a T4; fp32
            elsewhere: on a CPU bf16 changes the numbers for a speed gain the user should choose),
            ``"fp32"``, ``"bf16"`` (autocast; on a CPU it needs native bf16 support, see
            :func:`cpu_has_bf16`) or ``"fp16"`` (autocast with loss scaling; CUDA only).
        device: the device the computation runs on.

    Raises:
        LungsegError: unknown name, bf16 requested on a device without fast bf16, or fp16 off CUDA.
    """
    if name not in PRECISIONS:
        raise LungsegError(f"--precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if cuda_has_bf16(device) else "fp16"
    if name == "fp16" and device.type != "cuda":
        raise LungsegError(f"--precision fp16 needs a CUDA GPU (got {device.type}); use --precision fp32")
    if name == "bf16" and not has_fast_bf16(device):
        if device.type == "cpu":
            raise LungsegError(
                "--precision bf16 on this CPU would be emulated (no AVX-512 BF16 or AMX) and slower than fp32;"
                " use --precision fp32"
            )
        raise LungsegError(f"--precision bf16 is not supported on {device.type} here; use --precision fp32")
    return name


def resolve_prediction_precision(name: str, device: torch.device) -> str:
    """:func:`resolve_precision` for ``lungseg predict``, whose ``"auto"`` is also bf16 on a CPU with native bf16.

    There bf16 autocast halves the network's time on a whole scan, and on 42 synthetic whole scans it kept the
    pooled Dice, the recall and the tumours found of fp32 within the bounds set before the run
    (``benchmarks/three_plane_bf16.py``). Training and evaluation keep fp32 on a CPU: a published number must not
    depend on the CPU that re-computes it.

    Raises:
        LungsegError: as :func:`resolve_precision`.
    """
    if name == "auto" and device.type == "cpu" and cpu_has_bf16():
        return "bf16"
    return resolve_precision(name, device)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    """:func:`torch.autocast` on ``device`` in bf16 or fp16 for those precisions, else a no-op context."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """The loss scaler of a training loop: enabled for fp16 (whose gradients underflow without it),
    a pass-through for fp32 and bf16 (``scale(loss)`` is ``loss``, ``step`` is ``optimizer.step()``)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
