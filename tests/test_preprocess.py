"""Tests for lungseg.preprocess: window, eq. (1), fingerprint, resizing (HU conversion: tests/test_dicom.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lungseg.data.volume import CTVolume
from lungseg.errors import DataError
from lungseg.preprocess import (
    HU_WINDOW,
    Fingerprint,
    clip_window,
    normalize,
    preprocess_slices,
    resize_image,
    resize_mask,
    restore_prediction,
    zscore,
)


def _volume(seed: int, shape: tuple[int, int, int] = (3, 16, 16), intensity: str = "hu", pid: str = "p") -> CTVolume:
    rng = np.random.default_rng(seed)
    if intensity == "hu":
        image = rng.uniform(-1500, 1500, shape).astype(np.float32)
    else:
        image = rng.uniform(0, 1, shape).astype(np.float32)
    return CTVolume(image=image, mask=None, spacing=(1.0, 1.0, 1.0), patient_id=pid, intensity=intensity)


# --- HU window ----------------------------------------------------------------------------------

def test_clip_window_numpy_and_torch() -> None:
    x = np.array([-3000.0, -1000.0, 0.0, 400.0, 3000.0])
    np.testing.assert_array_equal(clip_window(x), [-1000, -1000, 0, 400, 400])
    t = clip_window(torch.tensor(x), (-100.0, 100.0))
    assert isinstance(t, torch.Tensor)
    assert t.tolist() == [-100, -100, 0, 100, 100]
    with pytest.raises(ValueError, match="low < high"):
        clip_window(x, (400.0, -1000.0))


# --- z-score, eq. (1) ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_zscore_per_scan_gives_zero_mean_unit_std(kind: str) -> None:
    x = np.random.default_rng(0).normal(-500, 300, (4, 8, 8)).astype(np.float32)
    out = zscore(torch.from_numpy(x)) if kind == "torch" else zscore(x)
    out = np.asarray(out)
    assert abs(out.mean()) < 1e-5 and abs(out.std() - 1) < 1e-5


def test_zscore_with_dataset_stats_and_constant_image() -> None:
    x = np.array([0.0, 10.0, 20.0])
    np.testing.assert_allclose(zscore(x, mean=10.0, std=5.0), [-2, 0, 2])
    np.testing.assert_array_equal(zscore(np.full((4, 4), -1000.0)), np.zeros((4, 4)))  # no division by ~0
    flat = np.full(16, 5.0) + 1e-9 * np.arange(16)  # std ~5e-9: centred only, never blown up
    np.testing.assert_allclose(zscore(flat), flat - flat.mean(), atol=1e-7)
    np.testing.assert_allclose(zscore(torch.from_numpy(flat)).numpy(), flat - flat.mean(), atol=1e-7)
    with pytest.raises(ValueError, match="both"):
        zscore(x, mean=1.0)
    with pytest.raises(ValueError, match="std"):
        zscore(x, mean=1.0, std=0.0)


@settings(max_examples=30, deadline=None)
@given(
    x=hnp.arrays(np.float64, (3, 5), elements=st.floats(-2000, 2000)),
    scale=st.floats(0.01, 100.0),
    offset=st.floats(-1000.0, 1000.0),
)
def test_property_per_scan_zscore_is_invariant_to_affine_intensity_changes(x: np.ndarray, scale: float,
                                                                          offset: float) -> None:
    # Per-scan normalisation is what makes the network robust to scanner gain/offset differences.
    if x.std() < 1.0:
        return  # near-constant images are only centred, not scaled
    np.testing.assert_allclose(zscore(scale * x + offset), zscore(x), atol=1e-3)


def test_normalize_clips_then_standardises() -> None:
    x = np.array([[-3000.0, -1000.0], [400.0, 2000.0]], dtype=np.float32)
    fp = Fingerprint(mean=-300.0, std=700.0)
    np.testing.assert_allclose(normalize(x, fp), [[-1, -1], [1, 1]])
    per_scan = normalize(x)  # clipped to [-1000, 400] -> values -1000, -1000, 400, 400
    np.testing.assert_allclose(per_scan, [[-1, -1], [1, 1]], atol=1e-6)
    no_window = normalize(x, window=None)
    assert no_window.min() < -1 and no_window.max() > 1


# --- fingerprint --------------------------------------------------------------------------------------

def test_fingerprint_from_volumes_matches_pooled_statistics() -> None:
    vols = [_volume(0, (2, 8, 8)), _volume(1, (3, 16, 16)), _volume(2, (1, 4, 4))]
    fp = Fingerprint.from_volumes(vols, image_size=64)
    pooled = np.concatenate([np.clip(v.image, *HU_WINDOW).ravel() for v in vols]).astype(np.float64)
    assert fp.mean == pytest.approx(pooled.mean(), rel=1e-7)
    assert fp.std == pytest.approx(pooled.std(), rel=1e-6)
    assert fp.n_voxels == pooled.size
    assert (fp.window, fp.image_size, fp.intensity) == (HU_WINDOW, 64, "hu")


def test_fingerprint_from_unit_volumes_has_no_window() -> None:
    vols = [_volume(3, intensity="unit"), _volume(4, intensity="unit")]
    fp = Fingerprint.from_volumes(v for v in vols)  # lazy iterable; default HU window not applied to [0, 1] data
    pooled = np.concatenate([v.image.ravel() for v in vols]).astype(np.float64)
    assert fp.window is None and fp.intensity == "unit"
    assert fp.mean == pytest.approx(pooled.mean()) and fp.std == pytest.approx(pooled.std())


def test_fingerprint_subsampling_and_errors() -> None:
    vols = [_volume(5, (4, 32, 32)), _volume(6, (4, 32, 32))]
    fp = Fingerprint.from_volumes(vols, max_voxels=1000, seed=1)
    full = Fingerprint.from_volumes(vols)
    assert fp.n_voxels == 2000
    assert fp.mean == pytest.approx(full.mean, abs=0.1 * full.std)
    assert fp.std == pytest.approx(full.std, rel=0.1)
    with pytest.raises(ValueError, match="no volumes"):
        Fingerprint.from_volumes([])
    with pytest.raises(ValueError, match="mixed intensities.*'q'"):
        Fingerprint.from_volumes([_volume(0), _volume(1, intensity="unit", pid="q")])
    constant = CTVolume(np.full((1, 4, 4), 50.0, np.float32), None, (1.0, 1.0, 1.0), "c")
    with pytest.raises(ValueError, match="constant"):
        Fingerprint.from_volumes([constant])


def test_fingerprint_json_round_trip(tmp_path) -> None:
    for fp in (Fingerprint(mean=-612.5, std=401.25, image_size=128, n_voxels=10),
               Fingerprint(mean=0.3, std=0.2, window=None, intensity="unit")):
        path = fp.to_json(tmp_path / "fingerprint.json")
        assert json.loads(path.read_text())["format"] == "lungseg-fingerprint"
        assert Fingerprint.from_json(path) == fp


def test_fingerprint_validation_and_bad_json(tmp_path) -> None:
    with pytest.raises(ValueError, match="std"):
        Fingerprint(mean=0.0, std=0.0)
    with pytest.raises(ValueError, match="intensity"):
        Fingerprint(mean=0.0, std=1.0, intensity="raw")
    with pytest.raises(ValueError, match="window"):
        Fingerprint(mean=0.0, std=1.0, intensity="unit")  # HU window on unit data
    missing = tmp_path / "missing.json"
    with pytest.raises(DataError, match="missing.json.*not found"):
        Fingerprint.from_json(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        Fingerprint.from_json(bad)
    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text(json.dumps({"format": "lungseg-fingerprint", "mean": 1.0}))
    with pytest.raises(DataError, match=r"incomplete.json.*\['std'\]"):
        Fingerprint.from_json(incomplete)
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"format": "lungseg-fingerprint", "mean": 1.0, "std": -2.0}))
    with pytest.raises(DataError, match="invalid.json.*std"):
        Fingerprint.from_json(invalid)


# --- resizing -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(20, 30), (2, 20, 30), (2, 1, 20, 30)])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_resize_keeps_type_and_ndim(shape: tuple[int, ...], kind: str) -> None:
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    m = (x > 0.5).astype(np.uint8)
    if kind == "torch":
        x, m = torch.from_numpy(x), torch.from_numpy(m)
    out_x, out_m = resize_image(x, 16), resize_mask(m, (16, 24))
    assert type(out_x) is type(x) and type(out_m) is type(m)
    assert tuple(out_x.shape) == (*shape[:-2], 16, 16)
    assert tuple(out_m.shape) == (*shape[:-2], 16, 24)
    assert out_m.dtype == m.dtype
    assert set(np.unique(np.asarray(out_m)).tolist()) <= {0, 1}


def test_resize_image_is_bilinear() -> None:
    ramp = np.tile(np.arange(8, dtype=np.float32), (8, 1))  # linear in x
    up = resize_image(ramp, 16)
    # bilinear keeps a linear ramp linear away from the clamped borders: constant step 0.5
    np.testing.assert_allclose(np.diff(up[:, 1:-1], axis=1), 0.5, atol=1e-6)
    np.testing.assert_allclose(resize_image(np.full((7, 9), 3.5), 4), 3.5)
    same = resize_image(ramp, 8)
    np.testing.assert_array_equal(same, ramp)


def test_mask_round_trip_is_exact_for_integer_factors() -> None:
    mask = (np.random.default_rng(1).random((3, 16, 16)) > 0.6).astype(np.uint8)
    np.testing.assert_array_equal(resize_mask(resize_mask(mask, 48), 16), mask)
    up = resize_mask(torch.from_numpy(mask).bool(), 32)
    assert up.dtype == torch.bool
    np.testing.assert_array_equal(up[:, ::2, ::2].numpy(), mask.astype(bool))


def test_image_round_trip_is_close_for_smooth_images() -> None:
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    image = np.sin(2 * np.pi * xx) * np.cos(2 * np.pi * yy)
    back = resize_image(resize_image(image, 256), 64)
    np.testing.assert_allclose(back, image, atol=0.02)


def test_restore_prediction_probabilities_and_masks() -> None:
    prob = np.random.default_rng(2).random((2, 32, 32)).astype(np.float32)
    restored = restore_prediction(prob, (50, 70))
    assert restored.shape == (2, 50, 70) and restored.dtype == np.float32
    assert restored.min() >= 0 and restored.max() <= 1  # bilinear: convex combinations stay in [0, 1]
    label = (prob > 0.5).astype(np.uint8)
    restored_label = restore_prediction(label, (64, 64))
    assert restored_label.dtype == np.uint8
    np.testing.assert_array_equal(restored_label[:, ::2, ::2], label)
    t = restore_prediction(torch.from_numpy(prob[:, None]), (50, 70))
    assert isinstance(t, torch.Tensor) and t.shape == (2, 1, 50, 70)
    np.testing.assert_allclose(t[:, 0].numpy(), restored, atol=1e-6)


def test_resize_errors_name_the_shape() -> None:
    with pytest.raises(ValueError, match=r"resize_image.*\(2, 2, 2, 4, 4\)"):
        resize_image(np.zeros((2, 2, 2, 4, 4)), 8)
    with pytest.raises(ValueError, match=r"resize_mask.*\(4,\)"):
        resize_mask(np.zeros(4), 8)
    with pytest.raises(ValueError, match="positive"):
        resize_image(np.zeros((4, 4)), 0)


@settings(max_examples=25, deadline=None)
@given(
    mask=hnp.arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 3)),
    size=st.tuples(st.integers(1, 20), st.integers(1, 20)),
)
def test_property_resize_mask_only_uses_existing_labels(mask: np.ndarray, size: tuple[int, int]) -> None:
    out = resize_mask(mask, size)
    assert out.shape == size and out.dtype == np.uint8
    assert set(np.unique(out).tolist()) <= set(np.unique(mask).tolist())


# --- the shared entry point ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_preprocess_slices_is_normalize_then_resize(kind: str) -> None:
    images = np.random.default_rng(3).uniform(-2000, 1000, (3, 40, 40)).astype(np.float32)
    fp = Fingerprint(mean=-500.0, std=400.0, image_size=32)
    expected = resize_image(normalize(images, fp), 32)
    out = preprocess_slices(torch.from_numpy(images) if kind == "torch" else images, fp)
    assert tuple(out.shape) == (3, 32, 32)
    assert (out.dtype == torch.float32) if kind == "torch" else (out.dtype == np.float32)
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)


def test_preprocess_slices_rejects_bad_input() -> None:
    fp = Fingerprint(mean=0.0, std=1.0, image_size=8)
    with pytest.raises(ValueError, match=r"\(N, H, W\).*\(8, 8\)"):
        preprocess_slices(np.zeros((8, 8)), fp)
    unit = Fingerprint(mean=0.5, std=0.2, window=None, intensity="unit", image_size=8)
    with pytest.raises(ValueError, match="unit.*-1000"):
        preprocess_slices(np.full((1, 8, 8), -1000.0), unit)
    assert preprocess_slices(np.full((1, 8, 8), 0.5), unit).shape == (1, 8, 8)
