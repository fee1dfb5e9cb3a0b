"""Where the attention gates look (chapter 7): a CT slice split into body regions by HU
thresholds, and the mean attention coefficient (eq. 6) of every gate inside each region."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from lungseg.inference.region import LUNG_HU

__all__ = ["BODY_HU", "LUNG_HU", "attention_by_region", "body_regions"]

#: HU threshold separating the body (soft tissue, > -500 HU) from air; aerated lung inside it lies
#: below :data:`lungseg.inference.region.LUNG_HU`, the threshold prediction finds the lungs by.
BODY_HU = -500.0


def body_regions(image_hu: Any, mask: Any | None = None) -> dict[str, Any]:
    """Split a CT slice ``(H, W)`` in HU into disjoint regions: ``tumour`` (the mask), ``lung``
    (aerated tissue inside the body), ``other tissue`` (the rest of the body) and ``outside body``.

    The body is the largest connected component above :data:`BODY_HU` with its holes (the lungs)
    filled; lung is the part of the body below :data:`LUNG_HU`.

    Raises:
        ValueError: ``image_hu`` is not 2D, or ``mask`` has another shape.
    """
    img = np.asarray(image_hu, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"image_hu must be (H, W), got shape {img.shape}")
    tumour = np.zeros(img.shape, bool) if mask is None else np.asarray(mask) > 0
    if tumour.shape != img.shape:
        raise ValueError(f"mask must have the image's shape {img.shape}, got {tumour.shape}")
    labels, n = ndimage.label(img > BODY_HU)
    if n:
        largest = 1 + int(np.argmax(ndimage.sum_labels(np.ones_like(img), labels, index=range(1, n + 1))))
        body = ndimage.binary_fill_holes(labels == largest)
    else:
        body = np.zeros(img.shape, bool)
    body |= tumour
    lung = body & (img < LUNG_HU) & ~tumour
    return {"tumour": tumour, "lung": lung, "other tissue": body & ~lung & ~tumour, "outside body": ~body}


def attention_by_region(images_hu: Any, masks: Any, alphas: list[Any]) -> list[dict[str, Any]]:
    """Mean attention coefficient (eq. 6) of every gate inside each region of :func:`body_regions`.

    Args:
        images_hu: slices ``(N, H, W)`` in HU.
        masks: ground truth ``(N, H, W)``.
        alphas: one array ``(N, H, W)`` per gate, deepest first (as returned by
            :meth:`lungseg.inference.Predictor.attention_maps`).

    Returns:
        One row per gate: ``gate``, the mean coefficient over the pixels of each region (pooled
        over the slices; ``None`` for a region with no pixel), and ``tumour / lung``, the ratio of
        the tumour and lung means (> 1: the gate favours tumour over the surrounding lung).
    """
    images = np.asarray(images_hu)
    m = np.asarray(masks)
    if images.ndim != 3 or m.shape != images.shape:
        raise ValueError(f"images_hu and masks must both be (N, H, W); got {images.shape} and {m.shape}")
    for i, a in enumerate(alphas):
        if np.shape(a) != images.shape:
            raise ValueError(f"alphas[{i}] must have the images' shape {images.shape}, got {np.shape(a)}")
    regions = [body_regions(img, mk) for img, mk in zip(images, m)]
    names = ("tumour", "lung", "other tissue", "outside body")
    rows = []
    for level, alpha in enumerate(alphas):
        a = np.asarray(alpha, dtype=np.float64)
        row: dict[str, Any] = {"gate": level + 1}
        for name in names:
            total = sum(float(a[i][r[name]].sum()) for i, r in enumerate(regions))
            count = sum(int(r[name].sum()) for r in regions)
            row[name] = total / count if count else None
            row[f"{name} pixels"] = count
        row["tumour / lung"] = (row["tumour"] / row["lung"]) if row["tumour"] is not None and row["lung"] else None
        rows.append(row)
    return rows
