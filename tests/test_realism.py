"""Intensity and texture statistics of patch sets (:mod:`lungseg.analysis.realism`)."""

from __future__ import annotations

import numpy as np
import pytest

from lungseg.analysis.realism import compare_patch_sets, patch_statistics


def _patches(noise: float, tumour_level: float, seed: int = 0, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    masks = np.repeat((((yy - 16) ** 2 + (xx - 16) ** 2) < 36)[None], n, axis=0).astype(np.uint8)
    images = np.clip(0.1 + noise * rng.standard_normal((n, 32, 32)), 0, 1).astype(np.float32)
    images[masks > 0] = tumour_level
    return images, masks


def test_statistics_follow_the_pixels() -> None:
    images, masks = _patches(noise=0.0, tumour_level=0.8)
    stats = patch_statistics(images, masks)
    assert stats["n_patches"] == 6
    assert stats["tumour_quantiles"] == [0.8] * 5 and stats["tumour_iqr"] == 0.0
    assert stats["background_quantiles"][2] == pytest.approx(0.1)
    assert stats["lung_gradient"] < stats["tumour_gradient"]  # flat lung; the tumour has its edge
    assert stats["tumour_pixels_median"] == masks[0].sum()


def test_noisier_lung_has_a_larger_gradient_and_is_farther_away() -> None:
    reference = _patches(noise=0.05, tumour_level=0.8)
    quiet, noisy = _patches(noise=0.0, tumour_level=0.8, seed=1), _patches(noise=0.05, tumour_level=0.8, seed=1)
    # (the quiet lung's gradient is its pixels beside the tumour's edge)
    assert patch_statistics(*noisy)["lung_gradient"] > 1.5 * patch_statistics(*quiet)["lung_gradient"]
    assert compare_patch_sets(reference, noisy)["lung_gradient"] < compare_patch_sets(reference, quiet)["lung_gradient"]
    assert compare_patch_sets(reference, reference) == {k: 0.0 for k in compare_patch_sets(reference, reference)}


def test_the_gradient_is_per_patch_in_units_per_pixel() -> None:
    """A ramp of slope 0.01 per pixel in one patch between two flat ones: its gradient is 0.01, and the
    flat neighbours stay at 0 (a filter across the stack would mix them)."""
    images = np.zeros((3, 16, 16), np.float32)
    images[1] = 0.01 * np.arange(16)[None, :]
    masks = np.zeros((3, 16, 16), np.uint8)
    masks[:, 6:10, 6:10] = 1
    stats = [patch_statistics(images[k: k + 1], masks[k: k + 1]) for k in range(3)]
    assert stats[1]["tumour_gradient"] == pytest.approx(0.01, abs=1e-6)
    assert patch_statistics(images, masks)["tumour_gradient"] == pytest.approx(0.01 / 3, abs=1e-4)  # rounded
    assert stats[0]["tumour_gradient"] == stats[2]["tumour_gradient"] == 0.0


def test_the_tumour_distance_is_the_shift_of_the_tumour_level() -> None:
    far = compare_patch_sets(_patches(0.0, 0.8), _patches(0.0, 0.5))
    assert far["tumour"] == pytest.approx(0.3, abs=1e-6)


def test_bad_input_is_refused() -> None:
    images, masks = _patches(0.0, 0.8)
    with pytest.raises(ValueError, match="equal non-empty"):
        patch_statistics(images, masks[:, :10])
    with pytest.raises(ValueError, match="no tumour"):
        patch_statistics(images, np.zeros_like(masks))
