"""Phantom patches in the real patches' format (:mod:`lungseg.experiment.phantom_patches`)."""

from __future__ import annotations

import numpy as np
import pytest

from lungseg.data.phantom import PhantomConfig
from lungseg.data.phantom.randomise import AppearanceRandomisation
from lungseg.experiment.phantom_patches import phantom_negative_patches, phantom_patches


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


def test_tumour_patches_come_first_with_their_tumour_near_the_centre() -> None:
    images, masks = phantom_patches(20, seed=2, tumour_share=0.5,
                                    config=PhantomConfig(diameter_range_mm=(10.0, 30.0)))
    assert images.shape == masks.shape == (20, 48, 48) and masks.dtype == np.uint8
    has = masks.reshape(20, -1).any(axis=1)
    assert has[:10].all() and not has[10:].any()
    ys, xs = np.nonzero(masks[:10].any(axis=0))
    assert abs(ys.mean() - 23.5) < 8 and abs(xs.mean() - 23.5) < 8
    # tumours are brighter than the lung around them (the patches' typical pixel)
    assert images[:10][masks[:10] > 0].mean() > np.median(images[:10][masks[:10] == 0]) + 0.2


def test_randomised_patches_keep_the_layout_but_not_the_look() -> None:
    config = PhantomConfig(diameter_range_mm=(10.0, 30.0))
    plain = phantom_patches(8, seed=9, tumour_share=1.0, config=config)
    varied = phantom_patches(8, seed=9, tumour_share=1.0, config=config, randomisation=AppearanceRandomisation())
    np.testing.assert_array_equal(plain[1], varied[1])  # same patients, same places
    assert not np.array_equal(plain[0], varied[0])


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="count"):
        phantom_negative_patches(0)
    with pytest.raises(ValueError, match="tumour_share"):
        phantom_patches(4, tumour_share=1.5)


def test_negatives_are_those_of_the_published_variant() -> None:
    """The ``phantom-negatives`` rows of ``results/real-patches/inference-runs.jsonl`` were trained with
    patches of the module before it made tumour patches too (``lungseg.experiment.negatives`` at 9ea9065):
    figures of its output, recorded then, pin the same patches."""
    patches = phantom_negative_patches(25, seed=1003)
    assert float(patches.mean()) == pytest.approx(0.4788273572921753, rel=1e-6)
    assert float(patches.std()) == pytest.approx(0.37547898292541504, rel=1e-6)
    assert [float(patches[0, 24, 24]), float(patches[7, 3, 40]), float(patches[24, 47, 0])] == pytest.approx(
        [0.13252007961273193, 0.7370259761810303, 0.17377842962741852], rel=1e-6)


def test_a_patch_larger_than_the_slices_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="larger than the phantom's slices"):
        phantom_patches(4, size=400)
