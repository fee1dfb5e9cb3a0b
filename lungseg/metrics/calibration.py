"""Calibration of tumour probabilities: the reliability diagram and the expected calibration error.

A probability map is *calibrated* when, among the pixels given probability ``p``, a share ``p`` is
tumour. The reliability diagram bins the pixels by their probability and plots the observed tumour
share of each bin against its mean probability; the expected calibration error (ECE, Naeini et al.
2015; Guo et al. 2017) is the mean gap, weighted by the share of pixels in each bin:
``ECE = sum_b n_b / N * |observed_b - mean probability_b|``.

Bins follow scikit-learn's ``calibration_curve`` (``strategy="uniform"``): ``n_bins`` equal widths
on [0, 1], a value on an inner edge going to the lower bin, empty bins left out. A binary mask is a
probability map holding only 0 and 1: its two bins give ``ECE = (FP + FN) / N = 1 - accuracy``, the
honest calibration of a CRF mask, which has no probabilities of its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lungseg.metrics.arrays import as_binary, to_numpy

__all__ = ["CALIBRATION_BINS", "expected_calibration_error", "mask_reliability", "reliability"]

#: Default number of equal-width probability bins (scikit-learn's ``calibration_curve`` default is 5;
#: ten resolves the low-probability range where nearly every pixel of a CT slice lies).
CALIBRATION_BINS = 10


def reliability(probs: Any, target: Any, n_bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """The reliability diagram's points and the expected calibration error of a probability map.

    Args:
        probs: probabilities in [0, 1], any shape (pixels of any number of images).
        target: binary targets, same shape.
        n_bins: equal-width bins on [0, 1].

    Returns:
        ``edges`` (``n_bins + 1``), and for the non-empty bins: ``bin`` (index), ``mean_probability``,
        ``observed`` (tumour share), ``count``; ``ece``, ``max_gap`` (the largest
        ``|observed - mean probability|``, the maximum calibration error) and ``n_pixels``.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an int >= 1, got {n_bins!r}")
    t = as_binary(target, "target")
    p = to_numpy(probs, "probs")
    if p.shape != t.shape:
        raise ValueError(f"probs and target must have the same shape, got probs {p.shape} and target {t.shape}")
    p, t = p.astype(np.float64, copy=False).ravel(), t.ravel()
    if not p.size:
        raise ValueError("probs is empty")
    if not (np.isfinite(p).all() and p.min() >= 0 and p.max() <= 1):
        raise ValueError("probs must be finite and in [0, 1] (probabilities, not logits)")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], p)  # calibration_curve's binning
    count = np.bincount(bins, minlength=n_bins)
    prob_sum = np.bincount(bins, weights=p, minlength=n_bins)
    true_sum = np.bincount(bins, weights=t, minlength=n_bins)
    keep = count > 0
    mean_p, observed = prob_sum[keep] / count[keep], true_sum[keep] / count[keep]
    gaps = np.abs(observed - mean_p)
    return {
        "edges": edges.tolist(), "bin": np.flatnonzero(keep).tolist(), "mean_probability": mean_p.tolist(),
        "observed": observed.tolist(), "count": count[keep].tolist(),
        "ece": float((count[keep] * gaps).sum() / p.size), "max_gap": float(gaps.max()), "n_pixels": int(p.size),
    }


def expected_calibration_error(probs: Any, target: Any, n_bins: int = CALIBRATION_BINS) -> float:
    """The ECE of :func:`reliability`."""
    return reliability(probs, target, n_bins)["ece"]


def mask_reliability(tp: int, fp: int, fn: int, tn: int, n_bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """:func:`reliability` of a binary mask from its confusion counts alone (e.g. a CRF mask's, read from
    an evaluation), without the pixels.

    The mask's 0-pixels fall in the first bin (observed tumour share ``FN / (FN + TN)``) and its
    1-pixels in the last (observed ``TP / (TP + FP)``, the precision); ``ece = (FP + FN) / N``.
    """
    counts = np.array([tp, fp, fn, tn])
    if not (np.issubdtype(counts.dtype, np.integer) and (counts >= 0).all() and counts.sum() > 0):
        raise ValueError(f"tp, fp, fn, tn must be counts >= 0, not all 0, got {counts.tolist()}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an int >= 1, got {n_bins!r}")
    # (bin, mean probability, tumour pixels, pixels) of the 0- and the 1-pixels; one bin holds both if n_bins == 1
    groups = [(0, 0.0, fn, fn + tn), (n_bins - 1, 1.0, tp, tp + fp)]
    if n_bins == 1:
        groups = [(0, (tp + fp) / counts.sum(), tp + fn, int(counts.sum()))]
    kept = [g for g in groups if g[3] > 0]
    observed = [g[2] / g[3] for g in kept]
    gaps = [abs(o - g[1]) for o, g in zip(observed, kept)]
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(), "bin": [g[0] for g in kept],
        "mean_probability": [float(g[1]) for g in kept], "observed": observed, "count": [int(g[3]) for g in kept],
        "ece": float(sum(g[3] * gap for g, gap in zip(kept, gaps)) / counts.sum()), "max_gap": float(max(gaps)),
        "n_pixels": int(counts.sum()),
    }
