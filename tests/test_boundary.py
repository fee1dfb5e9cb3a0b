"""Boundary metrics (HD95, surface Dice in mm): known distances, an independent brute-force
computation, anisotropic spacing, and the empty-mask rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from lungseg.metrics import (
    BOUNDARY_EMPTY_RULE,
    EMPTY_MASK_RULE,
    boundary_per_image,
    boundary_scores,
    boundary_summary,
)


def ball(shape: tuple[int, ...], spacing: tuple[float, ...], radius_mm: float, centre_mm: tuple[float, ...] | None = None) -> np.ndarray:
    """Pixels (voxels) whose centre lies within ``radius_mm`` of a point, in physical space: a disc or
    sphere in mm, an ellipse in pixels when the spacing is anisotropic."""
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    centre = centre_mm or tuple((n - 1) * s / 2 for n, s in zip(shape, spacing))
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius_mm**2


def brute_force(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...], tol: float) -> tuple[float, float]:
    """HD95 and surface Dice without MONAI: boundary = mask minus its erosion (face connectivity),
    every distance between boundary points by a k-d tree in mm, HD95 = the larger of the two
    directed 95th percentiles, surface Dice = boundary points within ``tol`` over all of them."""
    def edge_points(m: np.ndarray) -> np.ndarray:
        edge = m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(m.ndim, 1))
        return np.argwhere(edge) * np.asarray(spacing)

    pa, pb = edge_points(a), edge_points(b)
    d_ab, _ = cKDTree(pb).query(pa)
    d_ba, _ = cKDTree(pa).query(pb)
    hd95 = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    nsd = ((d_ab <= tol).sum() + (d_ba <= tol).sum()) / (len(d_ab) + len(d_ba))
    return float(hd95), float(nsd)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 0.8), (1.2, 0.6)])
def test_concentric_discs_give_the_radius_difference_in_mm(spacing: tuple[float, float]) -> None:
    inner, outer = 12.0, 17.0
    a = ball((96, 96), spacing, inner)
    b = ball((96, 96), spacing, outer)
    hd95, nsd = boundary_scores(a, b, spacing, tolerance_mm=1.0)
    # every boundary point of one disc is (outer - inner) mm from the other, up to one pixel of rasterisation
    assert abs(hd95 - (outer - inner)) <= max(spacing)
    assert nsd == 0.0  # nothing within 1 mm of a boundary 5 mm away
    assert boundary_scores(a, b, spacing, tolerance_mm=outer - inner + max(spacing))[1] == 1.0
    # the same pixels read at another spacing give other distances: the spacing is used
    if spacing[0] != spacing[1]:
        assert boundary_scores(a, b, spacing[::-1], tolerance_mm=1.0)[0] != pytest.approx(hd95)


def test_concentric_spheres_with_thick_slices() -> None:
    spacing = (2.5, 0.7, 0.7)
    a = ball((24, 80, 80), spacing, 10.0)
    b = ball((24, 80, 80), spacing, 16.0)
    hd95, nsd = boundary_scores(a, b, spacing, tolerance_mm=2.0)
    assert abs(hd95 - 6.0) <= max(spacing)
    assert nsd == 0.0


@pytest.mark.parametrize("spacing", [(0.7, 0.7), (0.6, 1.3), (2.0, 0.8, 0.8)])
def test_agrees_with_an_independent_brute_force_computation(spacing: tuple[float, ...]) -> None:
    shape = (40, 56) if len(spacing) == 2 else (14, 40, 40)
    extent = [n * s for n, s in zip(shape, spacing)]
    a = ball(shape, spacing, 0.25 * min(extent), tuple(0.45 * e for e in extent))
    b = ball(shape, spacing, 0.2 * min(extent), tuple(0.55 * e for e in extent))
    b |= ball(shape, spacing, 0.08 * min(extent), tuple(0.2 * e for e in extent))  # a second, separate lesion
    for tol in (1.0, 2.0, 4.5):
        got = boundary_scores(a, b, spacing, tolerance_mm=tol)
        assert got == pytest.approx(brute_force(a, b, spacing, tol), rel=1e-5, abs=1e-5)


def test_empty_mask_rule() -> None:
    z = np.zeros((32, 32), bool)
    m = z.copy()
    m[10:20, 8:14] = True
    assert all(math.isnan(v) for v in boundary_scores(z, z, (1.0, 1.0)))
    for pred, target in ((m, z), (z, m)):
        hd95, nsd = boundary_scores(pred, target, (1.0, 1.0))
        assert math.isnan(hd95) and nsd == 0.0
    # the rule is stated beside the overlap one, and says what both cases do
    assert "both empty" in BOUNDARY_EMPTY_RULE and "exactly one" in BOUNDARY_EMPTY_RULE
    assert "EMPTY_MASK_RULE" in BOUNDARY_EMPTY_RULE and "both empty" in EMPTY_MASK_RULE


def test_summary_means_follow_the_rule_and_patients_are_3d() -> None:
    sp2 = (0.8, 0.8)
    disc_a, disc_b = ball((48, 48), sp2, 9.0), ball((48, 48), sp2, 11.0)
    empty = np.zeros((48, 48), bool)
    # patient p: two good slices, one false-positive slice; patient q: a missed slice, a both-empty slice
    pred = np.stack([disc_a, disc_a, disc_a, empty, empty])
    target = np.stack([disc_b, disc_b, empty, disc_b, empty])
    ids = ["p", "p", "p", "q", "q"]
    img = boundary_per_image(pred, target, sp2, tolerance_mm=3.0)
    assert np.isfinite(img[:2]).all() and math.isnan(img[2, 0]) and img[2, 1] == 0.0
    assert math.isnan(img[3, 0]) and img[3, 1] == 0.0 and np.isnan(img[4]).all()
    s = boundary_summary(pred, target, ids, sp2, slice_spacing={"p": 2.0, "q": 2.0}, tolerance_mm=3.0)
    assert s["per_image"]["hd95_mm"] == pytest.approx(img[:2, 0].mean())
    assert s["per_image"]["surface_dice"] == pytest.approx(img[:4, 1].mean())  # the both-empty slice is left out
    assert s["n_images_hd95"] == 2 and s["n_images_hd95_undefined"] == 2 and s["n_images_surface_dice"] == 4
    # per patient: the patient's slices as one volume with the slice spacing
    hd_p, nsd_p = boundary_scores(pred[:3], target[:3], (2.0, *sp2), tolerance_mm=3.0)
    assert s["patients"]["p"]["hd95_mm"] == pytest.approx(hd_p)
    assert math.isnan(s["patients"]["q"]["hd95_mm"]) and s["patients"]["q"]["surface_dice"] == 0.0
    assert s["per_patient"]["hd95_mm"] == pytest.approx(hd_p) and s["n_patients_hd95_undefined"] == 1
    assert s["per_patient"]["surface_dice"] == pytest.approx(nsd_p / 2)
    # the false-positive slice 2 mm above the tumour is 2 mm from its top: a 3D distance, not 2D's "undefined"
    assert math.isfinite(hd_p)
    # slice spacing unknown (a stack of unrelated slices): no 3D figures, said so
    s2 = boundary_summary(pred, target, ids, sp2, slice_spacing=None, per_image=img, tolerance_mm=3.0)
    assert math.isnan(s2["per_patient"]["hd95_mm"]) and s2["n_patients_no_slice_spacing"] == 2
    assert s2["per_image"] == s["per_image"]


def test_bad_inputs_are_refused() -> None:
    m = np.zeros((8, 8), bool)
    with pytest.raises(ValueError, match="spacing"):
        boundary_scores(m, m, (1.0,))
    with pytest.raises(ValueError, match="spacing"):
        boundary_scores(m, m, (1.0, -1.0))
    with pytest.raises(ValueError, match="tolerance"):
        boundary_scores(m, m, (1.0, 1.0), tolerance_mm=0)
    with pytest.raises(ValueError, match="2D|3D"):
        boundary_scores(m.ravel(), m.ravel(), (1.0,))
