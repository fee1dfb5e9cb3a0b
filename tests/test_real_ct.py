"""The real-CT analysis of chapter 10: reader agreement from counts, the crop, the crop-scale
prediction, the comparison with the readers, and the committed LIDC-IDRI-0314 crop."""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import numpy as np
import pytest

from lungseg.analysis import real_ct
from lungseg.metrics import boundary_scores, dice

ROOT = Path(__file__).resolve().parent.parent


def realct_dir() -> Path | None:
    """The shared real-CT folder: ``$LUNGSEG_REALCT`` or ``<repo>/../shared/realct``; None when absent."""
    for candidate in (os.environ.get("LUNGSEG_REALCT"), ROOT.parent / "shared" / "realct"):
        if candidate and (Path(candidate) / "lidc-idri-0314" / "nodule_readers.nii.gz").is_file():
            return Path(candidate)
    return None


def four_readers(seed: int = 0, shape: tuple[int, int, int] = (6, 24, 24)) -> list[np.ndarray]:
    """Four overlapping, different 'reader' blobs."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    out = []
    for _ in range(4):
        c = np.array(shape) / 2 + rng.normal(0, 1.5, 3)
        r = rng.uniform(4, 7)
        out.append(((zz - c[0]) * 2) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r)
    return out


def test_pairwise_dice_from_counts_equals_the_pairs_themselves() -> None:
    masks = four_readers()
    counts = np.sum(masks, axis=0).astype(np.uint8)
    pairs = list(itertools.combinations(masks, 2))
    pooled = sum(2 * (a & b).sum() for a, b in pairs) / sum(a.sum() + b.sum() for a, b in pairs)
    assert real_ct.reader_pairwise_dice(counts) == pytest.approx(pooled)
    # it is a pooled Dice, so it lies within the range of the six pairs' own Dice
    own = [dice(a, b) for a, b in pairs]
    assert min(own) <= real_ct.reader_pairwise_dice(counts) <= max(own)
    assert real_ct.reader_pairwise_dice(4 * masks[0].astype(np.uint8)) == 1.0
    assert math.isnan(real_ct.reader_pairwise_dice(np.zeros((3, 3), np.uint8)))
    with pytest.raises(ValueError):
        real_ct.reader_pairwise_dice(np.full((2, 2), 5))


def test_agreement_masks_go_from_widest_to_narrowest() -> None:
    counts = np.sum(four_readers(1), axis=0).astype(np.uint8)
    masks = real_ct.agreement_masks(counts)
    names = list(masks)
    assert names[1] == "≥2 of 4 (consensus)" and names[-1] == "4 of 4" and len(names) == 4
    sizes = [m.sum() for m in masks.values()]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] > 0
    np.testing.assert_array_equal(masks[names[0]], counts > 0)


def test_crop_is_centred_on_the_outlines_kept_inside_and_round_trips(tmp_path: Path) -> None:
    image = np.random.default_rng(0).normal(-700, 100, (30, 80, 80)).astype(np.float32)
    readers = np.zeros(image.shape, np.uint8)
    readers[10:14, 30:40, 70:78] = 2  # near the right edge: the crop is shifted inside
    crop = real_ct.make_crop(image, readers, (2.0, 0.7, 0.7), size=(8, 32, 32), meta={"source": "toy"})
    # centred on the drawn voxels' box (z 10-13, rows 30-39) to within half a voxel; shifted inside in x
    assert crop.origin[0] == 8 and abs(crop.origin[1] - (34.5 - 16)) <= 0.5 and crop.origin[2] == 80 - 32
    assert crop.readers.sum() == readers.sum()
    np.testing.assert_array_equal(crop.image, image[8:16, crop.origin[1]:crop.origin[1] + 32, 48:80])
    assert crop.full_fov_mm == pytest.approx((56.0, 56.0)) and crop.consensus.sum() == (readers >= 2).sum()
    back = real_ct.load_crop(real_ct.save_crop(crop, tmp_path / "c.npz"))
    np.testing.assert_array_equal(back.image, np.round(crop.image))  # stored as int16 HU
    np.testing.assert_array_equal(back.readers, crop.readers)
    assert back.spacing == crop.spacing and back.origin == crop.origin and back.meta == {"source": "toy"}
    with pytest.raises(ValueError, match="no reader"):
        real_ct.make_crop(image, np.zeros_like(readers), (1.0, 1.0, 1.0))
    with pytest.raises(FileNotFoundError):
        real_ct.load_crop(tmp_path / "missing.npz")


def test_comparison_with_the_readers() -> None:
    counts = np.sum(four_readers(2), axis=0).astype(np.uint8)
    crop = real_ct.RealCrop(image=np.zeros(counts.shape, np.float32), readers=counts, spacing=(2.0, 0.8, 0.8),
                            full_fov_mm=(100.0, 100.0))
    rows = {r["reference"]: r for r in real_ct.compare_with_readers(crop.consensus, crop)}
    consensus = rows["≥2 of 4 (consensus)"]
    assert consensus["dice"] == 1.0 and consensus["hd95_mm"] == 0.0 and consensus["surface_dice"] == 1.0
    assert consensus["volume_ml"] == pytest.approx(crop.consensus.sum() * 2.0 * 0.8 * 0.8 / 1000)
    widest = rows["≥1 of 4"]
    assert widest["precision"] == 1.0 and widest["recall"] < 1.0
    assert widest["hd95_mm"] == pytest.approx(boundary_scores(crop.consensus, counts > 0, crop.spacing)[0])
    with pytest.raises(ValueError, match="grid"):
        real_ct.compare_with_readers(crop.consensus[:-1], crop)


def test_a_whole_scan_is_compared_with_reader_counts_as_a_crop_is() -> None:
    """``compare_with_reader_counts`` takes counts on any grid (a whole scan); a candidate far from the nodule
    lowers the precision against every level and stretches the HD95."""
    counts = np.sum(four_readers(3), axis=0).astype(np.uint8)
    spacing = (2.0, 0.8, 0.8)
    crop = real_ct.RealCrop(image=np.zeros(counts.shape, np.float32), readers=counts, spacing=spacing,
                            full_fov_mm=(100.0, 100.0))
    pred = crop.consensus.copy()
    assert real_ct.compare_with_reader_counts(pred, counts, spacing) == real_ct.compare_with_readers(pred, crop)
    before = next(r for r in real_ct.compare_with_reader_counts(pred, counts, spacing) if r["reference"] == "≥1 of 4")
    pred[:, :4, :4] = True  # a false candidate in a corner, far from the nodule
    rows = real_ct.compare_with_reader_counts(pred, counts, spacing)
    consensus = next(r for r in rows if r["reference"] == "≥2 of 4 (consensus)")
    assert consensus["recall"] == 1.0 and consensus["precision"] < 1.0
    widest = next(r for r in rows if r["reference"] == "≥1 of 4")
    assert widest["hd95_mm"] > before["hd95_mm"]
    assert [r["reference"] for r in rows] == list(real_ct.agreement_masks(counts))
    with pytest.raises(ValueError, match="grid"):
        real_ct.compare_with_reader_counts(pred[:, :-1], counts, spacing)


def test_hu_table_summarises_each_tissue() -> None:
    image = np.array([[-900.0, -800.0, 40.0], [50.0, 60.0, -850.0]])
    labels = np.array([[4, 4, 9], [9, 9, 4]])
    groups = real_ct.hu_groups(image, labels, {"lung": 4, "tumour": 9, "bone": 3})
    assert set(groups) == {"lung", "tumour"}  # no bone voxel: left out
    rows = {r["tissue"]: r for r in real_ct.hu_table(groups)}
    assert rows["tumour"]["p50"] == 50.0 and rows["lung"]["mean"] == pytest.approx(-850.0) and rows["lung"]["voxels"] == 3


def test_a_crop_spanning_the_whole_slice_is_predicted_as_predict_does(tiny, make_npz, tmp_path: Path) -> None:
    """When the crop is the whole slice, the crop route is the whole-slice route of Predictor.probabilities."""
    from lungseg.config import TrainConfig
    from lungseg.inference import Predictor
    from lungseg.training import train

    data = make_npz(tmp_path / "d.npz", n_patients=4, per_patient=2, size=32, seed=3)
    train(TrainConfig(data=str(data), epochs=1, image_size=32, **tiny), tmp_path / "run", progress=False)
    run = Predictor.from_run_dir(tmp_path / "run", device="cpu")
    z = np.load(data)
    image = z["images"][:3]
    crop = real_ct.RealCrop(image=image, readers=z["masks"][:3], spacing=(2.0, 0.8, 0.8),
                            full_fov_mm=(32 * 0.8, 32 * 0.8))
    np.testing.assert_allclose(real_ct.predict_crop(run, crop), run.probabilities(image), atol=1e-5)
    # half the field of view in the crop: the network sees it at the same scale, on a 16-pixel input
    half = real_ct.RealCrop(image=image[:, 8:24, 8:24], readers=z["masks"][:3, 8:24, 8:24], spacing=(2.0, 0.8, 0.8),
                            full_fov_mm=(32 * 0.8, 32 * 0.8))
    assert real_ct.predict_crop(run, half).shape == (3, 16, 16)


def test_the_committed_lidc_crop() -> None:
    crop = real_ct.load_crop()
    assert crop.image.shape == crop.readers.shape and crop.n_readers == 4
    assert "CC BY 3.0" in crop.meta["licence"] and "LIDC-IDRI-0314" in crop.meta["attribution"]
    readme = (ROOT / real_ct.LIDC_CROP).parent / "README.md"
    assert "CC BY 3.0" in readme.read_text() and "Armato" in readme.read_text()
    # the nodule is solid tissue in aerated lung: the outline and the scan line up
    assert crop.image[crop.consensus].mean() > crop.image[crop.readers == 0].mean() + 150
    source = realct_dir()
    if source is None:
        pytest.skip("the full LIDC-IDRI-0314 series is not here (../shared/realct or $LUNGSEG_REALCT): "
                    "only the committed crop was checked")
    import nibabel as nib

    counts = np.asarray(nib.load(source / "lidc-idri-0314" / "nodule_readers.nii.gz").dataobj).transpose(2, 1, 0)
    box = tuple(slice(o, o + n) for o, n in zip(crop.origin, crop.readers.shape))
    np.testing.assert_array_equal(crop.readers, counts[box])
    assert crop.readers.sum() == counts.sum()  # the whole nodule is inside the crop


def test_a_reference_mask_and_reader_counts_must_lie_on_the_series_grid(tmp_path: Path) -> None:
    import nibabel as nib

    from lungseg.data.nifti import lps_to_ras
    from lungseg.data.volume import CTVolume

    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = (-100.0, -90.0, -300.0)
    volume = CTVolume(image=np.zeros((5, 6, 7), np.float32), mask=None, spacing=(2.5, 0.8, 0.8), patient_id="p",
                      affine=affine)
    mask = np.zeros((7, 6, 5), np.uint8)  # NIfTI (i, j, k) = (column, row, slice)
    mask[3, 2, 1] = 1
    nib.save(nib.Nifti1Image(mask, lps_to_ras(affine)), tmp_path / "ref.nii.gz")
    ref = real_ct.reference_on_series(volume, tmp_path / "ref.nii.gz")
    assert ref.shape == (5, 6, 7) and ref[1, 2, 3] and ref.sum() == 1
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "lps.nii.gz")  # an LPS affine written as if RAS
    with pytest.raises(ValueError, match="grid"):
        real_ct.reference_on_series(volume, tmp_path / "lps.nii.gz")
    mask[3, 2, 2] = 4  # now reader counts: one voxel drawn by one reader, one by all four
    nib.save(nib.Nifti1Image(mask, lps_to_ras(affine)), tmp_path / "readers.nii.gz")
    counts = real_ct.reader_counts_on_series(volume, tmp_path / "readers.nii.gz")
    assert counts.dtype == np.uint8 and counts[1, 2, 3] == 1 and counts[2, 2, 3] == 4 and counts.sum() == 5
    with pytest.raises(ValueError, match="grid"):
        real_ct.reader_counts_on_series(volume, tmp_path / "lps.nii.gz")
    nib.save(nib.Nifti1Image(mask * 2, lps_to_ras(affine)), tmp_path / "eight.nii.gz")  # 8 "readers" of 4
    with pytest.raises(ValueError, match="reader counts 0..4"):
        real_ct.reader_counts_on_series(volume, tmp_path / "eight.nii.gz")
