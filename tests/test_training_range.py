"""``lungseg.analysis.training_range``: tumour cross-sections' size and attachment, for patches and whole scans."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lungseg.analysis import training_range
from lungseg.experiment.realct import load_real_patches, real_patches_path


def disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def nodule_in_lung(shape: tuple[int, int] = (48, 48), radius: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc in dark lung (HU-like values)."""
    mask = disc(shape, (24, 24), radius)
    return np.where(mask, 40.0, -850.0), mask


def test_a_nodule_in_lung_is_unattached_and_its_diameter_is_the_area_disc() -> None:
    image, mask = nodule_in_lung()
    section = training_range.cross_section(image, mask, pixel_mm=2.0)
    assert section["attached_share"] == 0.0
    assert section["diameter_mm"] == pytest.approx(2 * 2.0 * math.sqrt(mask.sum() / math.pi))
    assert section["diameter_mm"] == pytest.approx(24.0, rel=0.05)


def test_a_tumour_against_bright_tissue_is_attached_in_proportion() -> None:
    image, mask = nodule_in_lung()
    image[:, 24 + 6 + 1:] = 40.0  # soft tissue from just right of the disc on
    half = training_range.cross_section(image, mask)["attached_share"]
    image[:, :] = np.where(mask, 40.0, 60.0)  # engulfed in tissue brighter than the tumour
    assert 0.0 < half < 0.5 and training_range.cross_section(image, mask)["attached_share"] == 1.0


def test_any_increasing_rescaling_leaves_both_numbers_unchanged() -> None:
    """HU and a patch's min-max scaling give the same cross-section, so patches and scans compare."""
    rng = np.random.default_rng(0)
    image, mask = nodule_in_lung()
    image = image + rng.normal(0, 60, image.shape)
    image[:, 33:] += 700.0
    unit = (image - image.min()) / (image.max() - image.min())
    assert training_range.cross_section(unit, mask) == pytest.approx(training_range.cross_section(image, mask))
    assert training_range.cross_section(np.exp(unit), mask) == pytest.approx(training_range.cross_section(image, mask))


def test_empty_masks_and_bad_shapes() -> None:
    assert training_range.cross_section(np.zeros((8, 8)), np.zeros((8, 8))) is None
    with pytest.raises(ValueError, match=r"\(8, 8\) and \(8, 9\)"):
        training_range.cross_section(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(ValueError, match="pixel_mm"):
        training_range.cross_section(np.zeros((8, 8)), np.ones((8, 8)), pixel_mm=0)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        training_range.patch_cross_sections(np.zeros((2, 8, 8)), np.zeros((2, 8, 7)))
    with pytest.raises(ValueError, match="spacing"):
        training_range.scan_cross_sections(np.zeros((2, 8, 8)), np.ones((2, 8, 8)), (1.0, 0.0, 1.0))


def test_patches_keep_their_index_skip_empty_ones_flag_tumours_cut_by_the_border_and_repeats() -> None:
    """A tumour slice cut again at a shifted position (the same tumour pixels) is a repeat of the first cut."""
    inside, mask_inside = nodule_in_lung()
    inside = inside + np.random.default_rng(1).normal(0, 30, inside.shape)
    cut_mask = disc((48, 48), (24, 2), 6.0)
    shifted = (np.roll(inside, (3, -5), axis=(0, 1)), np.roll(mask_inside, (3, -5), axis=(0, 1)))
    images = np.stack([inside, inside, np.where(cut_mask, 40.0, -850.0), shifted[0], inside + 1.0])
    labels = np.stack([mask_inside, np.zeros_like(mask_inside), cut_mask, shifted[1], mask_inside])
    rows = training_range.patch_cross_sections(images, labels)
    assert [(r["patch"], r["touches_border"], r["repeat_of"]) for r in rows] == [
        (0, False, None), (2, True, None), (3, False, 0), (4, False, None)]


def test_a_sphere_on_an_anisotropic_grid_is_measured_at_2_mm_and_the_found_share_is_per_slice() -> None:
    """A 40 mm sphere on 3 x 1 x 1 mm voxels: its widest slice measures about 40 mm once resampled to 2 mm
    pixels; a prediction that covers the left half of every slice finds about half of each."""
    z, y, x = np.mgrid[:21, :80, :80]
    mask = (3.0 * (z - 10)) ** 2 + (y - 40.0) ** 2 + (x - 40.0) ** 2 <= 20.0**2
    image = np.where(mask, 30.0, -800.0)
    prediction = mask & (x < 40)
    rows = training_range.scan_cross_sections(image, mask, (3.0, 1.0, 1.0), predictions={"found": prediction})
    assert [r["slice"] for r in rows] == list(range(4, 17))
    assert max(r["diameter_mm"] for r in rows) == pytest.approx(40.0, abs=2.0)
    assert all(0.4 < r["found"] < 0.6 for r in rows) and all(r["attached_share"] == 0.0 for r in rows)
    # the end slices' voxels lie near the sphere's axis, on coronal and sagittal sections almost as wide as it
    assert rows[0]["diameter_mm"] < 25.0 and rows[0]["coronal_mm"] > 35.0 and rows[0]["sagittal_mm"] > 35.0
    assert "found" not in training_range.scan_cross_sections(image, mask, (3.0, 1.0, 1.0))[0]


def test_range_summary_counts_the_slices_beyond_the_patches() -> None:
    patches = [{"diameter_mm": float(d), "attached_share": a, "touches_border": d == 50}
               for d, a in zip(range(5, 55, 5), np.linspace(0.0, 0.45, 10))]
    scan = [{"diameter_mm": d, "attached_share": a} for d, a in ((10.0, 0.0), (49.0, 0.5), (60.0, 0.1), (75.0, 0.6))]
    repeat = {"diameter_mm": 90.0, "attached_share": 0.9, "touches_border": False, "repeat_of": 0}
    summary = training_range.range_summary(scan, patches + [repeat])  # a repeat counts once, with its first cut
    assert summary["slices"] == 4 and summary["wider_than_every_patch"] == 2
    assert summary["wider_than_9_in_10_patches"] == 3 and summary["more_attached_than_9_in_10_patches"] == 2
    assert summary["patches"]["widest_mm"] == 50.0 and summary["patches"]["touching_border"] == 1
    assert summary["patches"]["count"] == 10 and summary["patches"]["repeats_left_out"] == 1
    assert "on_a_coronal_or_sagittal_section_wider_than_every_patch" not in summary
    planes = [{**r, "coronal_mm": 55.0 if r["diameter_mm"] < 20 else 30.0, "sagittal_mm": 0.0} for r in scan]
    assert training_range.range_summary(planes, patches)["on_a_coronal_or_sagittal_section_wider_than_every_patch"] == 1
    with pytest.raises(ValueError, match="no training"):
        training_range.range_summary(scan, [])


PUBLISHED = Path(__file__).resolve().parents[1] / "results" / "real-ct" / "training-range.json"


@pytest.mark.skipif(not real_patches_path().is_file(),
                    reason="the real MSD patches are absent (../shared/realct): the published patch rows cannot be rechecked")
def test_the_published_training_range_is_what_the_code_measures_on_the_real_patches() -> None:
    """Chapter 10's figure: the patch rows of ``results/real-ct/training-range.json`` are this module's numbers
    for the shared patches, and each scan's summary is :func:`range_summary` of its stored rows."""
    record = json.loads(PUBLISHED.read_text(encoding="utf-8"))
    patches = load_real_patches()
    rows = training_range.patch_cross_sections(patches.images, patches.masks)
    assert [(r["patch"], r["repeat_of"]) for r in record["patches"]] == [(r["patch"], r["repeat_of"]) for r in rows]
    assert [r["diameter_mm"] for r in record["patches"]] == pytest.approx([r["diameter_mm"] for r in rows], abs=1e-3)
    assert [r["attached_share"] for r in record["patches"]] == pytest.approx([r["attached_share"] for r in rows], abs=1e-3)
    for scan in record["scans"].values():
        assert scan["summary"] == training_range.range_summary(scan["cross_sections"], record["patches"])
