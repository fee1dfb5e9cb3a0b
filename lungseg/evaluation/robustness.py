"""Robustness to intensity variation (Table 2, "std" column): the pooled Dice of a model over a fixed set
of HU perturbations of its test images.

It lives in the evaluation stage, not in :mod:`lungseg.metrics`, because it runs a model: the caller
passes a ``predict_fn`` that segments perturbed images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lungseg.metrics import confusion
from lungseg.metrics.arrays import as_binary, to_numpy

__all__ = ["DEFAULT_PERTURBATIONS", "Perturbation", "intensity_robustness"]


@dataclass(frozen=True)
class Perturbation:
    """An intensity change of a CT slice in HU: ``scale * hu + offset + N(0, noise_sigma²)``.

    Attributes:
        name: label used in the result dict.
        offset: HU added (scanner calibration drift).
        scale: multiplicative gain about 0 HU (water), e.g. a reconstruction-kernel difference.
        noise_sigma: standard deviation in HU of i.i.d. Gaussian noise (dose difference).
    """

    name: str
    offset: float = 0.0
    scale: float = 1.0
    noise_sigma: float = 0.0

    def apply(self, images_hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Perturbed float32 copy of ``images_hu`` (any shape)."""
        out = images_hu.astype(np.float32) * np.float32(self.scale) + np.float32(self.offset)
        if self.noise_sigma > 0:
            out += rng.normal(0.0, self.noise_sigma, size=out.shape).astype(np.float32)
        return out


DEFAULT_PERTURBATIONS: tuple[Perturbation, ...] = (
    Perturbation("identity"),
    Perturbation("offset-100", offset=-100.0),
    Perturbation("offset-50", offset=-50.0),
    Perturbation("offset+50", offset=50.0),
    Perturbation("offset+100", offset=100.0),
    Perturbation("scale0.95", scale=0.95),
    Perturbation("scale1.05", scale=1.05),
    Perturbation("noise10", noise_sigma=10.0),
    Perturbation("noise25", noise_sigma=25.0),
)
"""The fixed HU perturbation set of :func:`intensity_robustness`: identity; offsets of ±50 and ±100 HU
(calibration drift between scanners); gains 0.95 and 1.05 about water; Gaussian noise of σ = 10 and
25 HU (typical standard-dose and low-dose noise levels)."""


def intensity_robustness(
    predict_fn: Callable[[np.ndarray], Any],
    images_hu: Any,
    targets: Any,
    perturbations: Sequence[Perturbation] = DEFAULT_PERTURBATIONS,
    seed: int = 0,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Robustness to intensity variation: std of the pooled Dice over HU perturbations (Table 2).

    Each perturbation of :data:`DEFAULT_PERTURBATIONS` (or ``perturbations``) is applied to all
    images, ``predict_fn`` segments them, and the pooled Dice against ``targets`` is computed. The
    reported ``std`` is the population standard deviation (``ddof=0``) of those Dice values, identity
    included; lower means more robust. Noise of perturbation ``k`` is drawn from a generator seeded
    with ``(seed, k)``, so results do not depend on the order of evaluation.

    Args:
        predict_fn: maps float32 HU images ``(N, H, W)`` to binary masks ``(N, H, W)``; it must do its
            own windowing/normalisation exactly as at test time.
        images_hu: float images in HU ``(N, H, W)``.
        targets: binary targets ``(N, H, W)``.
        perturbations: the perturbation set (at least one).
        seed: noise seed.
        progress: show a tqdm bar over perturbations.

    Returns:
        ``{"std": float, "mean": float, "dice": {name: pooled Dice}, "perturbations": [descriptions],
        "aggregation": "pooled", "ddof": 0}``.
    """
    images = to_numpy(images_hu, "images_hu")
    real = np.issubdtype(images.dtype, np.number) and not np.issubdtype(images.dtype, np.complexfloating)
    if images.ndim != 3 or not real:
        raise ValueError(
            f"images_hu must be real (N, H, W) images in HU, got shape {images.shape} dtype {images.dtype}"
        )
    if not np.all(np.isfinite(images)):
        raise ValueError(f"images_hu contains NaN/inf (shape {images.shape}, dtype {images.dtype})")
    t = as_binary(targets, "targets")
    if t.shape != images.shape:
        raise ValueError(f"targets must match images_hu: got targets {t.shape} and images_hu {images.shape}")
    if len(perturbations) == 0:
        raise ValueError("perturbations must contain at least one Perturbation")
    names = [pert.name for pert in perturbations]
    if len(set(names)) != len(names):
        raise ValueError(f"perturbation names must be unique, got {names}")
    dices: dict[str, float] = {}
    for k, pert in enumerate(tqdm(perturbations, desc="intensity robustness", disable=not progress)):
        perturbed = pert.apply(images, np.random.default_rng([int(seed), k]))
        pred = as_binary(predict_fn(perturbed), f"predict_fn output for perturbation {pert.name!r}")
        if pred.shape != t.shape:
            raise ValueError(
                f"predict_fn returned shape {pred.shape} for images {images.shape}; expected {t.shape}"
            )
        dices[pert.name] = confusion(pred, t).dice
    values = np.array(list(dices.values()))
    return {
        "std": float(values.std(ddof=0)),
        "mean": float(values.mean()),
        "dice": dices,
        "perturbations": [
            f"{p.name}: scale={p.scale:g}, offset={p.offset:g} HU, noise_sigma={p.noise_sigma:g} HU"
            for p in perturbations
        ],
        "aggregation": "pooled",
        "ddof": 0,
    }
