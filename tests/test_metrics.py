"""Tests of lungseg.metrics: eqs. (11)-(14), Dice/IoU, aggregations, lesions, bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lungseg import metrics as M


def _disc(shape: tuple[int, int], center: tuple[float, float], radius_px: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius_px**2


def _random_masks(
    rng: np.random.Generator, n: int = 6, size: int = 24, p: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    target = rng.random((n, size, size)) < p
    noise = rng.random((n, size, size)) < 0.2
    return target ^ noise, target


masks = st.integers(1, 4).flatmap(
    lambda n: st.tuples(
        arrays(bool, (n, 5, 6)),
        arrays(bool, (n, 5, 6)),
    )
)


# ---------------------------------------------------------------------------- confusion and ratios
def test_confusion_counts_table1() -> None:
    pred = np.array([[1, 1, 0, 0]], dtype=np.uint8)
    target = np.array([[1, 0, 1, 0]], dtype=np.uint8)
    c = M.confusion(pred, target)
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 1, 1, 1)
    assert c.accuracy == pytest.approx(0.5)  # eq. (11)
    assert c.precision == pytest.approx(0.5)  # eq. (12)
    assert c.recall == pytest.approx(0.5) and c.sensitivity == c.recall  # eq. (13)
    assert c.f1 == pytest.approx(0.5)  # eq. (14)
    assert c.iou == pytest.approx(1 / 3)
    assert M.dice(pred, target) == pytest.approx(c.dice)
    assert M.dice(c) == c.dice


def test_score_by_name_matches_the_confusion_properties() -> None:
    rng = np.random.default_rng(3)
    pred, target = _random_masks(rng)
    c = M.confusion(pred, target)
    assert M.METRIC_NAMES == ("dice", "iou", "accuracy", "precision", "recall", "f1")
    for name in M.METRIC_NAMES:
        assert M.score(name, pred, target) == M.score(name, c) == getattr(c, name)
    assert M.dice(pred, target) == M.score("dice", c)
    with pytest.raises(ValueError, match="must be one of"):
        M.score("sensitivity", c)
    with pytest.raises(ValueError, match=r"score\('iou'\) needs a Confusion"):
        M.score("iou", pred)


def test_confusion_addition_pools_pixels() -> None:
    rng = np.random.default_rng(0)
    pred, target = _random_masks(rng)
    per_image = M.confusion_per_image(pred, target)
    assert sum(per_image) == M.confusion(pred, target)
    assert per_image[0] + per_image[1] == M.confusion(pred[:2], target[:2])


def test_accepts_torch_and_channel_dim() -> None:
    rng = np.random.default_rng(1)
    pred, target = _random_masks(rng)
    c_np = M.confusion_per_image(pred, target)
    c_t = M.confusion_per_image(torch.from_numpy(pred[:, None]).float(), torch.from_numpy(target[:, None]))
    assert c_np == c_t


@pytest.mark.parametrize("seed", range(3))
def test_dice_iou_match_monai(seed: int) -> None:
    from monai.metrics import compute_dice, compute_iou

    rng = np.random.default_rng(seed)
    pred, target = _random_masks(rng, n=8, size=32, p=0.2 + 0.1 * seed)
    target[:, 0, 0] = True  # MONAI reports NaN for empty targets; keep every target non-empty
    yp = torch.from_numpy(pred[:, None].astype(np.float32))
    yt = torch.from_numpy(target[:, None].astype(np.float32))
    ours = M.confusion_per_image(pred, target)
    np.testing.assert_allclose([c.dice for c in ours], compute_dice(yp, yt).squeeze(1).numpy(), rtol=1e-6)
    np.testing.assert_allclose([c.iou for c in ours], compute_iou(yp, yt).squeeze(1).numpy(), rtol=1e-6)
    # MONAI's batch mean equals our per-image mean when no image is empty
    s = M.summarize(pred, target, patient_ids=np.arange(len(pred)))
    assert s["per_image"]["dice"] == pytest.approx(float(compute_dice(yp, yt).mean()), rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(masks)
def test_properties(pm: tuple[np.ndarray, np.ndarray]) -> None:
    pred, target = pm
    c = M.confusion(pred, target)
    assert c.n_pixels == pred.size
    assert c.dice == c.f1  # eq. (14) is Dice for binary masks
    if c.precision + c.recall > 0:  # ... and the harmonic mean of eqs. (12)-(13)
        assert c.f1 == pytest.approx(2 * c.precision * c.recall / (c.precision + c.recall))
    assert c.iou == pytest.approx(c.dice / (2 - c.dice))
    for name in M.METRIC_NAMES:
        assert 0.0 <= c.score(name) <= 1.0
    s = M.summarize(pred, target, patient_ids=[i % 2 for i in range(len(pred))])
    for agg in M.AGGREGATIONS:
        assert s[agg]["dice"] == s[agg]["f1"] or (math.isnan(s[agg]["dice"]) and math.isnan(s[agg]["f1"]))
        for value in s[agg].values():
            assert math.isnan(value) or 0.0 <= value <= 1.0


@settings(max_examples=30, deadline=None)
@given(masks, st.randoms(use_true_random=False))
def test_permutation_invariance(pm: tuple[np.ndarray, np.ndarray], rnd) -> None:
    pred, target = pm
    ids = [f"p{i % 3}" for i in range(len(pred))]
    order = list(range(len(pred)))
    rnd.shuffle(order)
    a = M.summarize(pred, target, ids)
    b = M.summarize(pred[order], target[order], [ids[i] for i in order])
    for agg in M.AGGREGATIONS:
        np.testing.assert_allclose(list(a[agg].values()), list(b[agg].values()), rtol=1e-12)
    # pixel order inside an image does not matter for pooled counts either
    flat = np.random.default_rng(0).permutation(pred[0].size)
    assert M.confusion(pred[0].ravel()[flat], target[0].ravel()[flat]) == M.confusion(pred[0], target[0])


# ---------------------------------------------------------------------------- empty-mask rule
def test_edge_cases_single_image() -> None:
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    blob = empty.copy()
    blob[1:3, 1:3] = True
    both_empty = M.confusion(empty, empty)
    assert both_empty.dice == 1.0 and both_empty.iou == 1.0 and both_empty.precision == 1.0
    fp_only = M.confusion(blob, empty)  # empty target, non-empty prediction
    assert fp_only.dice == 0.0 and fp_only.precision == 0.0 and fp_only.recall == 0.0
    assert fp_only.accuracy == pytest.approx(12 / 16)
    miss = M.confusion(empty, blob)  # empty prediction
    assert miss.dice == 0.0 and miss.recall == 0.0 and miss.precision == 0.0
    all_pos = M.confusion(full, full)
    assert {k: all_pos.score(k) for k in M.METRIC_NAMES} == {k: 1.0 for k in M.METRIC_NAMES}
    half = M.confusion(full, blob)
    assert half.recall == 1.0 and half.precision == pytest.approx(4 / 16)


def test_summary_empty_mask_rule() -> None:
    target = np.zeros((4, 8, 8), bool)
    pred = np.zeros_like(target)
    target[0, 2:5, 2:5] = pred[0, 2:5, 2:5] = True  # perfect on image 0 (patient a)
    # image 1 (patient a): both empty -> excluded
    pred[2, 0, 0] = True  # image 2 (patient b): empty target, false positive -> Dice 0
    target[3, 1:3, 1:3] = True  # image 3 (patient c): missed tumour -> Dice 0
    s = M.summarize(pred, target, ["a", "a", "b", "c"])
    assert s["n_images"] == 4 and s["n_patients"] == 3
    assert s["n_empty_agreed"] == 1 and s["n_false_positive_images"] == 1
    assert s["per_image"]["dice"] == pytest.approx(1 / 3)  # mean of (1, 0, 0); the empty image is out
    assert s["per_patient"]["dice"] == pytest.approx(1 / 3)  # patients a=1, b=0, c=0
    assert s["pooled"]["dice"] == pytest.approx(2 * 9 / (2 * 9 + 1 + 4))
    assert "excluded" in s["empty_mask_rule"]
    assert set(s["pooled"]) == set(M.METRIC_NAMES)

    all_empty = M.summarize(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), ["a", "b"])
    assert all_empty["n_empty_agreed"] == 2 and all_empty["n_empty_agreed_patients"] == 2
    assert math.isnan(all_empty["per_image"]["dice"]) and math.isnan(all_empty["per_patient"]["dice"])
    assert all_empty["pooled"]["dice"] == 1.0


def test_per_patient_pools_pixels_before_averaging() -> None:
    target = np.zeros((3, 10, 10), bool)
    pred = np.zeros_like(target)
    target[0, :, :5] = pred[0, :, :5] = True  # patient a: 50 px perfect
    target[1, 0, 0] = True  # patient a: 1 px missed
    target[2, :2, :2] = pred[2, :2, :2] = True  # patient b: perfect
    s = M.summarize(pred, target, ["a", "a", "b"])
    dice_a = 2 * 50 / (2 * 50 + 1)
    assert s["per_patient"]["dice"] == pytest.approx((dice_a + 1.0) / 2)
    assert s["per_image"]["dice"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)


# ---------------------------------------------------------------------------- lesions
@pytest.mark.parametrize("spacing", [(0.7, 0.7), (1.0, 1.0), (1.4, 1.2)])
def test_lesion_equivalent_diameter(spacing: tuple[float, float]) -> None:
    mask = _disc((64, 64), (20, 20), 6) | _disc((64, 64), (45, 45), 12)
    found = M.lesions(mask, spacing)
    assert len(found) == 2
    for lesion, r in zip(found, (6, 12), strict=True):
        expected_area = np.count_nonzero(_disc((64, 64), (32, 32), r))
        assert lesion.n_pixels == expected_area
        assert lesion.area_mm2 == pytest.approx(expected_area * spacing[0] * spacing[1])
        # a digital disc of radius r px has an equivalent diameter close to 2 r px
        assert lesion.diameter_mm == pytest.approx(2 * r * math.sqrt(spacing[0] * spacing[1]), rel=0.05)


def test_equivalent_diameters_disc_and_sphere() -> None:
    # a disc of area pi r^2 has diameter 2r, a ball of volume 4/3 pi r^3 has diameter 2r
    assert M.equivalent_diameter_mm(math.pi * 25.0) == pytest.approx(10.0)
    assert M.equivalent_diameter_mm(100, (0.5, 2.0)) == M.equivalent_diameter_mm(100.0)
    np.testing.assert_allclose(M.equivalent_diameter_mm(np.array([0, 4 * math.pi])), [0.0, 4.0])
    assert M.equivalent_sphere_diameter_mm(4 / 3 * math.pi * 125.0) == pytest.approx(10.0)
    voxels, voxel_mm3 = 1234, 0.7 * 0.7 * 2.5
    assert M.equivalent_sphere_diameter_mm(voxels, voxel_mm3) == (6 * voxels * voxel_mm3 / math.pi) ** (1 / 3)
    assert M.equivalent_sphere_diameter_mm(2.0, 1000.0) == pytest.approx(M.equivalent_sphere_diameter_mm(2000.0))
    # lesions() uses the disc formula
    les = M.lesions(_disc((32, 32), (16, 16), 5), (0.8, 0.6))[0]
    assert les.diameter_mm == M.equivalent_diameter_mm(les.n_pixels, (0.8, 0.6))


def test_lesions_are_eight_connected() -> None:
    diagonal = np.eye(5, dtype=bool)
    assert len(M.lesions(diagonal, (1.0, 1.0))) == 1
    assert M.lesions(np.zeros((5, 5)), (1.0, 1.0)) == []


def test_small_tumor_recall_with_discs() -> None:
    spacing = (0.8, 0.8)
    shape = (96, 96)
    small_hit = _disc(shape, (15, 15), 3)  # diameter ~ 4.8 mm
    small_missed = _disc(shape, (15, 60), 4)  # ~ 6.4 mm
    large = _disc(shape, (60, 50), 12)  # ~ 19 mm: not small
    target = (small_hit | small_missed | large)[None]
    pred = np.zeros_like(target)
    pred[0, 14:17, 14:17] = True  # 9 of 29 pixels: >= 10 % overlap
    pred[0, 15, 60] = True  # 1 of 49 pixels: < 10 %
    pred[0] |= large
    recall, n_hit, n = M.small_tumor_recall(pred, target, spacing)
    assert (n_hit, n) == (1, 2) and recall == 0.5
    # stricter overlap rule: the first small lesion is no longer hit
    assert M.small_tumor_recall(pred, target, spacing, min_overlap=0.5)[1] == 0
    # coarser pixels make the same discs larger than 10 mm
    assert M.small_tumor_recall(pred, target, (2.0, 2.0))[2] == 0
    assert math.isnan(M.small_tumor_recall(pred, target, (2.0, 2.0))[0])
    # every lesion, whatever its size
    assert M.small_tumor_recall(pred, target, spacing, max_diameter_mm=math.inf)[1:] == (2, 3)
    s = M.summarize(pred, target, ["p"], spacing=spacing)
    assert s["small_tumor_recall"] == 0.5 and s["n_small_lesions"] == 2
    assert s["lesion_recall"] == pytest.approx(2 / 3) and s["n_lesions"] == 3
    assert math.isnan(M.summarize(pred, target, ["p"])["small_tumor_recall"])


def test_small_tumor_recall_per_image_spacing() -> None:
    target = np.stack([_disc((40, 40), (20, 20), 5)] * 2)
    pred = target.copy()
    pred[1] = False
    spacing = np.array([[0.5, 0.5], [3.0, 3.0]])  # first disc ~5 mm (small), second ~30 mm
    assert M.small_tumor_recall(pred, target, spacing) == (1.0, 1, 1)


# ---------------------------------------------------------------------------- bootstrap
def _cohort(n_patients: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    n_slices = 3
    target = np.zeros((n_patients * n_slices, 24, 24), bool)
    pred = np.zeros_like(target)
    ids = []
    for i in range(n_patients * n_slices):
        r = rng.integers(2, 8)
        target[i] = _disc((24, 24), (12, 12), r)
        shift = rng.integers(0, 4)
        pred[i] = _disc((24, 24), (12, 12 + shift), r)
        ids.append(f"p{i // n_slices}")
    return pred, target, ids


def test_bootstrap_contains_point_estimate_and_narrows() -> None:
    pred, target, ids = _cohort(40)
    s = M.summarize(pred, target, ids, spacing=(1.0, 1.0), n_boot=500, seed=1)
    for agg in M.AGGREGATIONS:
        for stat in M.METRIC_NAMES:
            low, high = s["ci"][agg][stat]
            assert low <= s[agg][stat] <= high, (agg, stat)
    again = M.summarize(pred, target, ids, n_boot=500, seed=1)["ci"]
    assert again["per_patient"]["dice"] == s["ci"]["per_patient"]["dice"]  # same resamples for the same seed
    low, high = s["ci"]["per_patient"]["dice"]
    few = M.summarize(pred[:15], target[:15], ids[:15], n_boot=500, seed=1)["ci"]["per_patient"]["dice"]
    assert (few[1] - few[0]) > (high - low)


def test_bootstrap_keys_and_lesion_cis() -> None:
    pred, target, ids = _cohort(10)
    s = M.summarize(pred, target, ids, spacing=(1.0, 1.0), n_boot=200)
    ci = s["ci"]
    assert set(ci) >= set(M.AGGREGATIONS) | {"small_tumor_recall", "lesion_recall", "n_boot", "level"}
    assert ci["small_tumor_recall"][0] <= s["small_tumor_recall"] <= ci["small_tumor_recall"][1]
    assert ci["lesion_recall"][0] <= s["lesion_recall"] <= ci["lesion_recall"][1]
    no_spacing = M.summarize(pred, target, ids, n_boot=50)["ci"]["small_tumor_recall"]
    assert all(math.isnan(v) for v in no_spacing)
    assert "ci" not in M.summarize(pred, target, ids)  # n_boot=0: no intervals


def test_bootstrap_single_patient_is_degenerate() -> None:
    pred, target, ids = _cohort(1)
    low, high = M.summarize(pred, target, ids, n_boot=100)["ci"]["pooled"]["dice"]
    assert low == high == pytest.approx(M.dice(pred, target))


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("pred", "target", "match"),
    [
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), r"\(2, 4, 4\).*\(2, 4, 5\)"),
        (np.full((2, 4, 4), 0.5), np.zeros((2, 4, 4)), r"pred must be binary.*float64"),
        (np.zeros((2, 4, 4)), np.full((2, 4, 4), np.nan), r"target contains NaN"),
        (np.zeros((2, 4, 4)), np.full((2, 4, 4), 2, dtype=np.int64), r"target must be binary.*int64"),
        (np.zeros((4, 4)), np.zeros((4, 4)), r"\(N, H, W\).*\(4, 4\)"),
        (np.array(["a", "b"]), np.array(["a", "b"]), r"dtype <U1"),
    ],
)
def test_bad_input_raises(pred: np.ndarray, target: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        M.summarize(pred, target, list(range(len(pred))))


def test_bad_arguments_raise() -> None:
    pred, target, ids = _cohort(2)
    with pytest.raises(ValueError, match="patient_ids"):
        M.summarize(pred, target, ids[:-1])
    with pytest.raises(ValueError, match="spacing"):
        M.summarize(pred, target, ids, spacing=np.ones((2, 2)))
    with pytest.raises(ValueError, match="spacing"):
        M.small_tumor_recall(pred, target, (0.0, 1.0))
    with pytest.raises(ValueError, match="level"):
        M.summarize(pred, target, ids, n_boot=10, level=95)
    with pytest.raises(ValueError, match="n_boot"):
        M.summarize(pred, target, ids, n_boot=2.5)
    with pytest.raises(ValueError, match="min_overlap"):
        M.small_tumor_recall(pred, target, (1.0, 1.0), min_overlap=0.0)
    with pytest.raises(ValueError, match="Confusion.tp"):
        M.Confusion(-1, 0, 0, 0)


# ---------------------------------------------------------------------------- tumours (3D)
def _ball(shape: tuple[int, int, int], center: tuple[float, float, float], radii: tuple[float, float, float]) -> np.ndarray:
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    return sum(((g - c) / r) ** 2 for g, c, r in zip((zz, yy, xx), center, radii)) <= 1.0


def test_a_tumour_spanning_many_slices_counts_once() -> None:
    spacing = (2.0, 0.8, 0.8)
    big = _ball((12, 64, 64), (5, 20, 20), (4, 10, 10))  # 9 slices, ~16 mm across in-plane
    small = _ball((12, 64, 64), (5, 45, 45), (1, 3, 3))  # 3 slices, equivalent sphere ~ 4 mm
    target = big | small
    pred = np.zeros_like(target)
    pred[5] = big[5]  # one slice of the large tumour: 13 % of its voxels
    table = M.tumour_table(pred, target, spacing)
    assert table.shape == (2, 2)
    volume_mm3 = np.array([big.sum(), small.sum()]) * 2.0 * 0.8 * 0.8
    np.testing.assert_allclose(table[:, 0], (6 * volume_mm3 / np.pi) ** (1 / 3))
    np.testing.assert_array_equal(table[:, 1], [1.0, 0.0])
    # the 2D rule counts each cross-section: the large tumour's 9 and the small one's 3
    assert M.small_tumor_recall(pred, target, spacing[1:], max_diameter_mm=math.inf)[1:] == (1, 12)
    summary = M.tumour_recall([table])
    assert (summary["n_tumours"], summary["n_tumours_hit"]) == (2, 1) and summary["tumour_recall"] == 0.5
    assert (summary["n_small_tumours"], summary["small_tumour_recall_3d"]) == (1, 0.0)
    assert "26-connected" in summary["tumour_rule"] and "< 10 mm" in summary["tumour_rule"]
    # a stricter hit rule misses the large one too
    assert M.tumour_table(pred, target, spacing, min_overlap=0.2)[:, 1].sum() == 0


def test_tumour_recall_edge_cases() -> None:
    empty = M.tumour_table(np.zeros((3, 8, 8)), np.zeros((3, 8, 8)), (1.0, 1.0, 1.0))
    assert empty.shape == (0, 2)
    none = M.tumour_recall([empty, empty])
    assert none["n_tumours"] == 0 and math.isnan(none["tumour_recall"]) and math.isnan(none["small_tumour_recall_3d"])
    assert M.tumour_recall([])["n_tumours"] == 0
    diagonal = np.zeros((3, 3, 3), bool)
    diagonal[[0, 1, 2], [0, 1, 2], [0, 1, 2]] = True  # corner neighbours: one tumour
    assert M.tumour_table(diagonal, diagonal, (1.0, 1.0, 1.0)).shape == (1, 2)
    with pytest.raises(ValueError, match="3"):
        M.tumour_table(np.zeros((8, 8)), np.zeros((8, 8)), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive voxel sizes"):
        M.tumour_table(diagonal, diagonal, (0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="min_overlap"):
        M.tumour_table(diagonal, diagonal, (1.0, 1.0, 1.0), min_overlap=0.0)
