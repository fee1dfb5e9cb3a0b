"""Speed of the dense CRF (eq. 10): one slice, and the parallel :func:`lungseg.crf.refine_batch`."""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lungseg.bench.harness import BenchConfig, interleaved, stats, timed

__all__ = ["crf_speed"]


def crf_speed(cfg: BenchConfig, study: Path) -> dict[str, Any]:
    """Dense CRF (eq. 10): ms per slice of :func:`refine`, and slices/s of :func:`refine_batch`."""
    from scipy.ndimage import gaussian_filter

    from lungseg.crf import refine, refine_batch
    from lungseg.data.phantom import load_study

    vol = load_study(study)[0]
    # a soft probability map around the true tumour plus faint noise: the work is the same for any map
    # that leaves the CRF every slice
    rng = np.random.default_rng(0)
    idx = np.arange(cfg.crf_slices) % vol.n_slices
    images = vol.image[idx].astype(np.float32)
    masks = (vol.mask[idx] if vol.mask is not None else np.zeros_like(images)).astype(np.float32)
    probs = np.clip(gaussian_filter(masks, (0, 2, 2)) * 0.9 + 0.05 + 0.02 * rng.standard_normal(masks.shape), 0, 1)
    # one pixel at 0.9 on every slice, and whole slices (no crop around the candidates): refine_batch skips
    # slices without a pixel at >= 0.5 (their CRF mask is empty anyway) and crops the others, and this
    # measures the CRF's own speed per whole slice, not how much of a series a model leaves to it
    probs[:, 0, 0] = 0.9
    probs = probs.astype(np.float32)
    k = int(np.argmax(masks.reshape(len(masks), -1).sum(1)))
    cpu = torch.device("cpu")
    one = interleaved({"crf": lambda: refine(images[k], probs[k])}, 1, max(3, cfg.repeats), cpu)["crf"]
    t_serial = timed(lambda: refine_batch(images, probs, workers=0, crop_sigmas=None), cpu)
    t_par = timed(lambda: refine_batch(images, probs, crop_sigmas=None), cpu)
    workers = min(os.cpu_count() or 1, len(images) // 4)
    return {
        "image_size": list(vol.image.shape[1:]),
        "ms_per_slice": 1e3 * statistics.median(one),
        "refine": stats(one),
        "batch_slices": len(images),
        "batch_serial_slices_per_s": len(images) / t_serial,
        "batch_parallel_slices_per_s": len(images) / t_par,
        "batch_parallel_workers": workers,
        "parallel_speedup": t_serial / t_par,
    }
