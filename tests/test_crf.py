"""Tests of lungseg.crf: the dense CRF of eq. (10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from lungseg import crf
from lungseg.metrics import dice


def _noisy_case(seed: int, size: int = 96, radius: int = 14) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A CT-like slice (lung at -850 HU, a soft-tissue disc, chest wall) and a salt-and-pepper
    probability map around the disc: (image_hu, prob, disc)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2
    image = np.where(disc, 40.0, -850.0) + rng.normal(0, 20, (size, size))
    image[:, :8] = 40.0  # chest wall at tumour intensity but far from it
    prob = np.where(disc, 0.7, 0.3) + rng.normal(0, 0.1, (size, size))
    flips = rng.random((size, size)) < 0.15
    prob[flips] = np.where(rng.random(flips.sum()) < 0.5, 0.95, 0.05)
    return image.astype(np.float32), np.clip(prob, 0, 1).astype(np.float32), disc


@pytest.mark.parametrize("seed", range(3))
def test_refine_cleans_noisy_blob(seed: int) -> None:
    image, prob, disc = _noisy_case(seed)
    before = dice(prob > 0.5, disc)
    mask = crf.refine(image, prob)
    assert mask.shape == prob.shape and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    after = dice(mask, disc)
    assert after > before + 0.2
    assert after > 0.9


def test_refine_returns_probability() -> None:
    image, prob, disc = _noisy_case(0)
    mask, q = crf.refine(image, prob, return_prob=True)
    assert q.shape == prob.shape and q.dtype == np.float32
    assert q.min() >= 0.0 and q.max() <= 1.0
    np.testing.assert_array_equal(mask, (q > 0.5).astype(np.uint8))


def test_pairwise_terms_matter() -> None:
    image, prob, disc = _noisy_case(1)
    # with both pairwise weights at zero the CRF reduces to thresholding the unary
    unary_only = crf.refine(image, prob, gaussian_compat=0.0, bilateral_compat=0.0)
    np.testing.assert_array_equal(unary_only, (prob > 0.5).astype(np.uint8))
    # the bilateral (appearance) kernel does the cleaning on this slice
    assert dice(crf.refine(image, prob), disc) > dice(crf.refine(image, prob, bilateral_compat=0.0), disc)


def test_params_dataclass_and_overrides() -> None:
    image, prob, _ = _noisy_case(2, size=48, radius=8)
    params = crf.CRFParams(iterations=3, bilateral_sxy=10.0)
    assert crf.CRFParams().to_dict()["iterations"] == 5
    np.testing.assert_array_equal(
        crf.refine(image, prob, params), crf.refine(image, prob, iterations=3, bilateral_sxy=10.0)
    )
    with pytest.raises(ValueError, match="unknown CRF parameter"):
        crf.refine(image, prob, sigma=3)
    with pytest.raises(ValueError, match="iterations"):
        crf.CRFParams(iterations=0)
    with pytest.raises(ValueError, match="window"):
        crf.CRFParams(window=(400.0, -1000.0))


def test_unit_intensity_images() -> None:
    image, prob, disc = _noisy_case(0)
    unit = (np.clip(image, -1000, 400) + 1000) / 1400
    np.testing.assert_array_equal(crf.refine(unit, prob, window=None), crf.refine(image, prob))


def test_window_to_uint8() -> None:
    out = crf.window_to_uint8(np.array([[-2000.0, -1000.0, -300.0, 400.0, 3000.0]]))
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, [[0, 0, 128, 255, 255]])


@pytest.mark.parametrize("workers", [0, 2])
def test_refine_batch_matches_refine(workers: int) -> None:
    cases = [_noisy_case(s, size=48, radius=8) for s in range(5)]
    images = np.stack([c[0] for c in cases])
    probs = np.stack([c[1] for c in cases])
    masks, q = crf.refine_batch(images, probs, workers=workers, return_prob=True)
    assert masks.shape == images.shape and masks.dtype == np.uint8 and q.dtype == np.float32
    for i in range(len(cases)):
        np.testing.assert_array_equal(masks[i], crf.refine(images[i], probs[i]))
    # torch input is accepted too
    from_torch = crf.refine_batch(torch.from_numpy(images), torch.from_numpy(probs), workers=0)
    np.testing.assert_array_equal(from_torch, masks)


@pytest.mark.parametrize("seed", range(3))
def test_slices_below_one_half_are_skipped_without_changing_the_masks(seed: int) -> None:
    """refine_batch runs the CRF only on slices with a pixel at >= 0.5; on the others the full CRF gives
    an empty mask anyway, even where probabilities just below 0.5 touch a tumour-like blob."""
    rng = np.random.default_rng(seed)
    cases = [_noisy_case(s, size=64, radius=12) for s in range(4)]
    images = np.stack([c[0] for c in cases])
    probs = np.stack([c[1] for c in cases])
    probs[1] = np.minimum(probs[1], 0.499)  # high everywhere on the blob, but below one half
    probs[3] = rng.uniform(0, 0.4999, probs[3].shape).astype(np.float32)
    full = crf.refine_batch(images, probs, workers=0, return_prob=True)[0]
    assert full[1].sum() == 0 and full[3].sum() == 0
    assert full[0].sum() > 0 and full[2].sum() > 0
    np.testing.assert_array_equal(crf.refine_batch(images, probs, workers=0), full)
    np.testing.assert_array_equal(crf.refine_batch(images[[1, 3]], probs[[1, 3]], workers=0), full[[1, 3]])


@pytest.mark.parametrize("seed", range(3))
def test_the_crf_runs_around_the_candidates_and_agrees_with_the_whole_slice(seed: int,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """On a 256² slice whose candidate tumour covers a corner, refine_batch refines only the candidate's
    box widened by 3 kernel widths (45 px) and finds the mask the whole-slice CRF finds."""
    rng = np.random.default_rng(seed)
    image, prob, _ = _noisy_case(seed, size=64, radius=12)
    big_image = rng.normal(-850, 20, (256, 256)).astype(np.float32)
    big_image[:, -20:] = 40.0  # chest wall at tumour intensity, far from the candidate
    big_prob = rng.uniform(0.0, 0.3, (256, 256)).astype(np.float32)
    big_image[30:94, 40:104], big_prob[30:94, 40:104] = image, prob
    seen = []
    refine_one = crf._refine_one
    monkeypatch.setattr(crf, "_refine_one", lambda i, p, params: seen.append(i.shape) or refine_one(i, p, params))
    cropped = crf.refine_batch(big_image[None], big_prob[None], workers=0)
    rows, cols = np.nonzero(big_prob >= 0.5)
    margin = crf.CRFParams().crop_margin()
    assert margin == 45
    assert seen == [(min(256, rows.max() + margin + 1) - max(0, rows.min() - margin),
                     min(256, cols.max() + margin + 1) - max(0, cols.min() - margin))]
    whole = crf.refine_batch(big_image[None], big_prob[None], workers=0, crop_sigmas=None)
    assert seen[-1] == (256, 256) and cropped.sum() > 0
    np.testing.assert_array_equal(cropped, whole)


@pytest.mark.parametrize(
    ("image", "prob", "match"),
    [
        (np.zeros((8, 8)), np.zeros((8, 9)), r"prob must have the image's shape \(8, 8\), got \(8, 9\)"),
        (np.zeros((8, 8)), np.full((8, 8), 1.5), r"\[0, 1\].*1\.5"),
        (np.zeros((8, 8)), np.full((8, 8), -0.1), r"\[0, 1\]"),
        (np.zeros((8, 8)), np.full((8, 8), np.nan), r"prob contains NaN"),
        (np.full((8, 8), np.nan), np.zeros((8, 8)), r"image contains NaN"),
        (np.zeros((1, 8, 8)), np.zeros((1, 8, 8)), r"image must be \(H, W\), got shape \(1, 8, 8\)"),
        (np.zeros((8, 8), dtype=object), np.zeros((8, 8)), r"dtype object"),
    ],
)
def test_refine_bad_input(image: np.ndarray, prob: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        crf.refine(image, prob)


def test_refine_batch_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        crf.refine_batch(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="workers"):
        crf.refine_batch(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)), workers=-1)


def test_without_pydensecrf2_the_crf_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # pydensecrf2 is the `crf` extra: without it lungseg imports, and the CRF says what to install
    import lungseg.crf as crf_module

    monkeypatch.setattr(crf_module, "dcrf", None)
    image = np.full((2, 8, 8), -800.0)
    prob = np.full((2, 8, 8), 0.2)
    with pytest.raises(ImportError, match=r"lungseg\[crf\]"):
        crf_module.refine_batch(image, prob, workers=0)
    with pytest.raises(ImportError, match="pydensecrf2"):
        crf_module.refine(image[0], prob[0])


def test_clusters_far_apart_get_a_box_each_and_about_the_whole_slice_answer() -> None:
    """Two candidate tumours in opposite corners of a 320² slice: refined in two boxes of their own (not one
    box spanning the slice), each deciding its own pixels, with (the boxes being an approximation) all but
    a handful of pixels of the mask the whole-slice CRF finds."""
    rng = np.random.default_rng(5)
    image = rng.normal(-850, 20, (320, 320)).astype(np.float32)
    prob = rng.uniform(0.0, 0.3, (320, 320)).astype(np.float32)
    for seed, (r, c) in enumerate(((10, 10), (246, 246))):
        blob_image, blob_prob, _ = _noisy_case(seed, size=64, radius=12)
        image[r:r + 64, c:c + 64], prob[r:r + 64, c:c + 64] = blob_image, blob_prob
    boxes = crf.candidate_boxes(prob, crf.CRFParams().crop_margin())
    assert len(boxes) == 2
    assert all((b[0].stop - b[0].start) * (b[1].stop - b[1].start) < 160 * 160 for b, _ in boxes)
    decided = np.zeros(prob.shape, dtype=int)
    for box, own in boxes:
        decided[box] += own
    assert decided.max() == 1 and decided[prob >= 0.5].min() == 1  # disjoint, and every candidate decided
    cropped = crf.refine_batch(image[None], prob[None], workers=0)
    whole = crf.refine_batch(image[None], prob[None], workers=0, crop_sigmas=None)
    assert whole.sum() > 500
    assert np.count_nonzero(cropped != whole) <= 5


def test_boxes_that_overlap_decide_disjoint_pixels_and_a_ring_gets_one_box() -> None:
    """An L-shaped cluster whose box holds a second, distant cluster: two boxes that overlap, whose
    decided pixels do not, and between them every candidate decided; a ring of candidates around a
    cluster, whose boxes would cover more than one box around everything, gets that one box."""
    margin = crf.CRFParams().crop_margin()
    prob = np.zeros((500, 500), dtype=np.float32)
    prob[100:110, 100:300] = prob[100:300, 100:110] = 0.9  # the L, its box rows and columns 55-345
    prob[300:340, 300:340] = 0.9  # 190 px from it, its box 255-385
    boxes = crf.candidate_boxes(prob, margin)
    assert len(boxes) == 2
    (box_a, own_a), (box_b, own_b) = boxes
    overlap = np.zeros(prob.shape, dtype=int)
    overlap[box_a] += 1
    overlap[box_b] += 1
    assert overlap.max() == 2  # the boxes overlap ...
    decided = np.zeros(prob.shape, dtype=int)
    for box, own in boxes:
        decided[box] += own
    assert decided.max() == 1 and decided[prob >= 0.5].min() == 1  # ... their decided pixels do not
    ring = np.zeros((400, 400), dtype=np.float32)
    ring[50:350, 50:350] = 0.9
    ring[56:344, 56:344] = 0.0
    ring[190:210, 190:210] = 0.9  # grown, 145-255: inside the ring's grown hole, 101-299
    assert len(ndimage.find_objects(ndimage.label(
        ndimage.maximum_filter(ring >= 0.5, size=2 * margin + 1), structure=np.ones((3, 3)))[0])) == 2
    (box, own), = crf.candidate_boxes(ring, margin)
    assert own.all() and box == (slice(5, 395), slice(5, 395))
