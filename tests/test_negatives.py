"""Tumour-free phantom lung patches in the real patches' format (``lungseg.experiment.negatives``)."""

from __future__ import annotations

import numpy as np
import pytest

from lungseg.experiment.negatives import phantom_negative_patches


def test_patches_have_the_real_format_and_repeat_with_their_seed() -> None:
    patches = phantom_negative_patches(12, seed=3)
    assert patches.shape == (12, 48, 48) and patches.dtype == np.float32
    # min-max scaled per patch, as the real patches: every patch spans [0, 1]
    assert np.allclose(patches.min(axis=(1, 2)), 0.0) and np.allclose(patches.max(axis=(1, 2)), 1.0)
    np.testing.assert_array_equal(patches, phantom_negative_patches(12, seed=3))
    assert not np.array_equal(patches, phantom_negative_patches(12, seed=4))


def test_patches_show_lung_not_just_tissue() -> None:
    """Centred in the lung region: most of a patch's pixels are dark (aerated lung at about 0.1)."""
    patches = phantom_negative_patches(10, seed=5)
    dark = (patches < 0.3).mean(axis=(1, 2))
    assert np.median(dark) > 0.3


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="count"):
        phantom_negative_patches(0)
