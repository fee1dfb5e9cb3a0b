"""Loading a trained run for inference, and segmenting slices with it.

:func:`load_run` reads a run directory (through :class:`lungseg.rundir.RunDir`) into a
:class:`LoadedRun`; :func:`predict_probabilities` turns native slices into tumour probabilities on
their own grid; :func:`binarize` thresholds them or refines them with the CRF of eq. (10).
Evaluation, prediction, the book and the bench all segment through these three functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lungseg.config import TrainConfig
from lungseg.device import autocast, resolve_device, resolve_precision
from lungseg.errors import LungsegError
from lungseg.rundir import RunDir

__all__ = ["LoadedRun", "binarize", "check_positive_int", "crf_window", "load_run", "predict_probabilities",
           "require_finite"]


def check_positive_int(value: Any, name: str) -> int:
    """``value`` when it is an int >= 1; else :class:`LungsegError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise LungsegError(f"{name} must be a positive integer (an int >= 1), got {value!r}")
    return int(value)


def require_finite(image: np.ndarray, source: Any) -> None:
    """Refuse NaN or infinite intensities, naming the file (or patient) and how many there are."""
    from lungseg.errors import DataError

    bad = image.size - int(np.count_nonzero(np.isfinite(image)))
    if bad:
        raise DataError(
            f"{source}: {bad} of {image.size} intensity values are NaN or infinite; expected finite intensities"
            " (replace or mask them before segmenting)"
        )


@dataclass
class LoadedRun:
    """A trained run ready for inference (see :func:`load_run`)."""

    run_dir: Path
    config: TrainConfig
    fingerprint: Any
    split: dict[str, list[str]]
    model: nn.Module
    device: torch.device
    epoch: int
    precision: str = "fp32"  # "fp32", "bf16" or "fp16" (autocast), see lungseg.device.resolve_precision


def load_run(run_dir: str | os.PathLike[str], checkpoint: str = "best", device: str = "auto",
             precision: str = "auto") -> LoadedRun:
    """Load a run directory written by :func:`lungseg.training.train`, or a model exported from one.

    Args:
        run_dir: the run directory, or a ``.zip`` of ``lungseg export`` (read by
            :func:`lungseg.inference.bundle.load_bundle`, which holds the best checkpoint only).
        checkpoint: ``"best"`` (highest validation Dice) or ``"last"``.
        device: inference device (``"auto"``: CUDA, then MPS, then CPU).
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 elsewhere), ``"fp32"`` or ``"bf16"``
            (autocast; on a CPU only with native bf16, about 2x faster there, see
            ``benchmarks/NOTES.md`` for its agreement with fp32).

    Returns:
        The model in eval mode on ``device`` with its config, fingerprint and split.

    Raises:
        FileNotFoundError: the directory or one of its files is missing.
        LungsegError: the checkpoint name is unknown or the files are inconsistent.
    """
    from lungseg.inference.bundle import is_bundle, load_bundle
    from lungseg.models import build_model

    if is_bundle(run_dir):
        if checkpoint != "best":
            raise LungsegError(f"{run_dir}: an exported model holds one checkpoint; --checkpoint {checkpoint} does not apply")
        return load_bundle(run_dir, device=device, precision=precision)
    run = RunDir(run_dir)
    ckpt_path = run.checkpoint_path(checkpoint)
    run.require(run.config_path, run.fingerprint_path, ckpt_path)
    config = run.read_config()
    fingerprint = run.read_fingerprint()
    split = run.read_split(missing_ok=True)
    dev = resolve_device(device)
    numerics = resolve_precision(precision, dev)
    state = run.load_checkpoint(checkpoint)
    model = build_model(
        config.model, in_channels=1, out_channels=1, base_channels=config.base_channels,
        depth=config.depth, batch_norm=config.batch_norm,
    )
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise LungsegError(f"{ckpt_path}: checkpoint does not match {run.config_path.name} ({exc})") from None
    model.to(dev).eval()
    return LoadedRun(run.path, config, fingerprint, split, model, dev, int(state.get("epoch", 0)), numerics)


@torch.no_grad()
def predict_probabilities(
    run: LoadedRun,
    images: np.ndarray,
    batch_size: int = 16,
    return_attention: bool = False,
    progress: bool = False,
) -> np.ndarray | tuple[np.ndarray, list[np.ndarray]]:
    """Tumour probabilities of native slices, restored to the native grid.

    Args:
        run: a loaded run.
        images: ``(N, H, W)`` slices in HU (or [0, 1] for a "unit" run), native resolution.
        batch_size: slices per forward pass.
        return_attention: also return the attention coefficients (AttentionResUNet only).
        progress: show a tqdm bar over batches.

    Returns:
        float32 probabilities ``(N, H, W)``; with ``return_attention`` also a list of ``depth``
        arrays ``(N, H, W)`` (gate coefficients resized bilinearly to the native grid, deepest
        gate first).
    """
    from tqdm.auto import tqdm

    from lungseg.preprocess import preprocess_slices, restore_prediction

    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W), got shape {images.shape}")
    check_positive_int(batch_size, "batch_size")
    if return_attention and run.config.model != "attention":
        raise LungsegError(f"attention maps need an 'attention' model; run {run.run_dir} is {run.config.model!r}")
    n, h, w = images.shape
    probs = np.empty((n, h, w), dtype=np.float32)
    alphas: list[np.ndarray] = []
    for start in tqdm(range(0, n, batch_size), desc="segmenting", unit="batch", disable=not progress):
        batch = np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)
        x = torch.from_numpy(preprocess_slices(batch, run.fingerprint)).unsqueeze(1).to(run.device)
        with autocast(run.device, run.precision):
            out = run.model(x, return_attention=True) if return_attention else run.model(x)
        logits, gates = (out if return_attention else (out, []))
        p = torch.sigmoid(logits.float()).cpu()
        probs[start : start + len(batch)] = restore_prediction(p, (h, w))[:, 0].numpy()
        if return_attention:
            if not alphas:
                alphas = [np.empty((n, h, w), dtype=np.float32) for _ in gates]
            for level, a in enumerate(gates):
                alphas[level][start : start + len(batch)] = restore_prediction(a.float().cpu(), (h, w))[:, 0].numpy()
    return (probs, alphas) if return_attention else probs


def crf_window(run: LoadedRun) -> tuple[float, float]:
    """Intensity window the CRF's bilateral term sees: the run's HU window, or [0, 1] for unit data."""
    from lungseg.preprocess import HU_WINDOW

    if run.fingerprint.intensity == "unit":
        return (0.0, 1.0)
    return tuple(run.fingerprint.window or HU_WINDOW)  # type: ignore[return-value]


def binarize(run: LoadedRun, images: np.ndarray, probs: np.ndarray, crf: bool, threshold: float | None = None) -> np.ndarray:
    """Binary masks ``(N, H, W)`` uint8: threshold, or CRF refinement (eq. 10) when ``crf``."""
    if crf:
        from lungseg.crf import refine_batch

        return np.asarray(refine_batch(images, probs, window=crf_window(run)), dtype=np.uint8)
    thr = run.config.threshold if threshold is None else threshold
    return (probs >= thr).astype(np.uint8)
