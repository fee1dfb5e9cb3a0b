"""Tests of lungseg.evaluation.robustness: the robustness to intensity variation (Table 2, "std")."""

from __future__ import annotations

import numpy as np
import pytest

from lungseg.evaluation.robustness import DEFAULT_PERTURBATIONS, Perturbation, intensity_robustness


def _disc(shape: tuple[int, int], center: tuple[float, float], radius_px: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius_px**2


def _phantom_slices(n: int = 4, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    images = np.full((n, size, size), -850.0, dtype=np.float32)
    targets = np.zeros((n, size, size), bool)
    for i in range(n):
        d = _disc((size, size), (size / 2, size / 2 + i), 4 + 2 * i)
        targets[i] = d
        # soft tissue with a gradual intensity profile so a threshold is sensitive to HU shifts
        yy, xx = np.mgrid[:size, :size]
        r = np.sqrt((yy - size / 2) ** 2 + (xx - size / 2 - i) ** 2)
        images[i] = np.where(d, 40.0, -850.0) + np.clip(1 - np.abs(r - (4 + 2 * i)) / 3, 0, 1) * 300
    images += rng.normal(0, 5, images.shape).astype(np.float32)
    return images, targets


def test_intensity_robustness_invariant_vs_sensitive() -> None:
    images, targets = _phantom_slices()

    def oracle(x: np.ndarray) -> np.ndarray:  # ignores intensities entirely
        return targets.copy()

    def threshold(x: np.ndarray) -> np.ndarray:  # a fixed HU threshold moves with offset/scale/noise
        return x > 0.0

    inv = intensity_robustness(oracle, images, targets, seed=0)
    assert inv["std"] == 0.0 and inv["mean"] == 1.0
    assert set(inv["dice"]) == {p.name for p in DEFAULT_PERTURBATIONS}
    sens = intensity_robustness(threshold, images, targets, seed=0)
    assert sens["std"] > 0.0
    assert sens["std"] == intensity_robustness(threshold, images, targets, seed=0)["std"]  # seeded
    custom = intensity_robustness(threshold, images, targets, perturbations=[Perturbation("identity")])
    assert custom["std"] == 0.0 and custom["dice"]["identity"] == sens["dice"]["identity"]


def test_intensity_robustness_bad_input() -> None:
    images, targets = _phantom_slices(n=2, size=16)
    with pytest.raises(ValueError, match="predict_fn returned shape"):
        intensity_robustness(lambda x: x[:1] > 0, images, targets)
    with pytest.raises(ValueError, match="binary"):
        intensity_robustness(lambda x: x, images, targets)
    with pytest.raises(ValueError, match=r"targets must match images_hu"):
        intensity_robustness(lambda x: x > 0, images, targets[:1])
    bad = images.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        intensity_robustness(lambda x: x > 0, bad, targets)
