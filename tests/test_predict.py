"""Prediction: DICOM series → NIfTI in the series' geometry, NIfTI, PNG and .npz inputs, lesion summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lungseg.config import TrainConfig
from lungseg.device import cpu_has_bf16
from lungseg.errors import DataError, LungsegError
from lungseg.inference import lesion_summary, predict
from lungseg.training import train


@pytest.fixture(scope="module")
def runs(tiny, make_npz, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict")
    hu = make_npz(root / "hu.npz", n_patients=8, per_patient=3, size=32, seed=4)
    train(TrainConfig(data=str(hu), model="attention", epochs=1, **tiny), root / "hu_run", progress=False)
    z = np.load(hu)
    np.savez(root / "unit.npz", images=((z["images"] + 1000) / 1400).clip(0, 1).astype(np.float32), masks=z["masks"],
             patient_ids=z["patient_ids"], intensity="unit")
    train(TrainConfig(data=str(root / "unit.npz"), model="unet", epochs=1, **tiny), root / "unit_run", progress=False)
    return {"root": root, "hu": root / "hu_run", "unit": root / "unit_run", "hu_data": hu}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lungseg.data.phantom import PhantomConfig, generate_study

    return generate_study(tmp_path_factory.mktemp("study") / "s", 1, seed=3,
                          config=PhantomConfig(image_size=64, n_slices=6), progress=False)


def test_dicom_series_to_nifti_in_series_geometry(runs: dict[str, Path], study: Path, tmp_path: Path) -> None:
    patient = next(p for p in study.iterdir() if p.is_dir())
    before = sorted(p.name for p in (patient / "ct").iterdir())
    out = tmp_path / "pred" / "mask.nii.gz"
    summary = predict(runs["hu"], patient / "ct", out, probabilities=True, attention=True, progress=False,
                      keep_outside_lungs=True)  # this toy network's candidates lie mostly outside the lungs
    assert summary["set_aside"] is None and summary["planes"] == "axial"  # a whole-slice model: axial slices only
    assert sorted(p.name for p in (patient / "ct").iterdir()) == before  # input folder untouched
    with pytest.raises(LungsegError, match=r"--planes: three-plane prediction needs a model trained at a stated"):
        predict(runs["hu"], patient / "ct", tmp_path / "three" / "mask.nii.gz", planes="three", progress=False)
    assert not (tmp_path / "three").exists()  # refused before anything is read or written
    ref = nib.load(patient / "mask.nii.gz")  # the generator's mask, aligned with the series
    got = nib.load(out)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got.affine, ref.affine, atol=1e-4)
    assert set(np.unique(np.asarray(got.dataobj))) <= {0, 1}
    prob = nib.load(tmp_path / "pred" / "mask_probability.nii.gz")
    np.testing.assert_allclose(prob.affine, ref.affine, atol=1e-4)
    assert float(np.asarray(prob.dataobj).max()) <= 1.0
    for level in range(2):  # depth 2 → two gates
        assert (tmp_path / "pred" / f"mask_attention_level{level}.nii.gz").is_file()
    lesions = json.loads((tmp_path / "pred" / "mask_lesions.json").read_text())
    assert lesions["lesions"]["count"] == summary["lesions"]["count"]
    # The lesion count agrees with an independent 3D labelling of the written mask.
    from scipy import ndimage

    n = ndimage.label(np.asarray(got.dataobj) > 0, structure=np.ones((3, 3, 3)))[1]
    assert summary["lesions"]["count"] == n
    # Without the CRF the mask is the probabilities at the threshold: each lesion peaks at or above it.
    threshold = summary["algorithm"]["threshold"]
    assert summary["lesions"]["lesions"]
    assert all(threshold <= les["mean_probability"] <= les["peak_probability"] <= 1.0
               for les in summary["lesions"]["lesions"])
    # By default the candidates lying mostly outside the lungs leave the mask and are listed instead.
    default = predict(runs["hu"], patient / "ct", tmp_path / "default" / "mask.nii.gz", progress=False)
    aside = default["set_aside"]
    assert aside["count"] > 0 and "keep-outside-lungs" in aside["rule"]
    assert default["lesions"]["count"] + aside["count"] == n
    assert default["tumour_voxels"] + sum(les["voxels"] for les in aside["lesions"]) == int((np.asarray(got.dataobj) > 0).sum())


def test_nifti_input_keeps_affine(runs: dict[str, Path], tmp_path: Path) -> None:
    from lungseg.data.nifti import write_nifti

    z = np.load(runs["hu_data"])
    affine = np.array([[-0.8, 0, 0, 10.0], [0, -0.8, 0, 20.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])
    write_nifti(z["images"][:5], tmp_path / "ct.nii.gz", affine=affine)
    predict(runs["hu"], tmp_path / "ct.nii.gz", tmp_path / "out", progress=False)
    got = nib.load(tmp_path / "out" / "mask.nii.gz")
    np.testing.assert_allclose(got.affine, affine)
    assert got.shape == (32, 32, 5) and got.get_data_dtype() == np.uint8


def test_png_and_npz_inputs(runs: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    img = (np.random.default_rng(0).random((40, 52)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "slice.png")
    predict(runs["unit"], tmp_path / "slice.png", tmp_path / "slice_mask.png", progress=False)
    mask = np.asarray(Image.open(tmp_path / "slice_mask.png"))
    assert mask.shape == (40, 52) and set(np.unique(mask)) <= {0, 255}
    with pytest.raises(LungsegError, match="HU"):
        predict(runs["hu"], tmp_path / "slice.png", tmp_path / "x.png", progress=False)

    summary = predict(runs["hu"], runs["hu_data"], tmp_path / "p.npz", probabilities=True, progress=False)
    out = np.load(tmp_path / "p.npz")
    assert out["masks"].shape == (24, 32, 32) and out["probabilities"].dtype == np.float32
    assert np.array_equal(out["masks"], (out["probabilities"] >= 0.5).astype(np.uint8))
    assert summary["lesions"]["count"] >= 0


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16 (AVX-512 BF16 or AMX): bf16 is refused")
def test_bf16_prediction_agrees_with_fp32(runs: dict[str, Path], tmp_path: Path) -> None:
    fp32 = predict(runs["hu"], runs["hu_data"], tmp_path / "fp32.npz", probabilities=True, device="cpu",
                   precision="fp32", progress=False)
    bf16 = predict(runs["hu"], runs["hu_data"], tmp_path / "bf16.npz", probabilities=True, device="cpu",
                   precision="bf16", progress=False)
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    a, b = np.load(tmp_path / "fp32.npz"), np.load(tmp_path / "bf16.npz")
    diff = np.abs(a["probabilities"] - b["probabilities"])
    # bf16 keeps 8 mantissa bits: the probabilities move by about 1e-2, not more, and they do move
    # (an autocast that silently stayed fp32 would give exactly zero)
    assert 0 < diff.max() < 0.05
    assert (a["masks"] != b["masks"]).mean() < 0.01
    default = predict(runs["hu"], runs["hu_data"], tmp_path / "default.npz", device="cpu", progress=False)
    assert default["precision"] == "bf16"  # predict's auto on a CPU with native bf16


def test_never_writes_into_input_folder(runs: dict[str, Path], study: Path) -> None:
    patient = next(p for p in study.iterdir() if p.is_dir())
    with pytest.raises(LungsegError, match="inside the input"):
        predict(runs["hu"], patient / "ct", patient / "ct" / "mask.nii.gz", progress=False)


def test_lesion_summary_of_a_sphere() -> None:
    zz, yy, xx = np.mgrid[:20, :40, :40]
    spacing = (2.0, 0.5, 0.5)
    r_mm = 6.0
    ball = ((zz - 10) * 2.0) ** 2 + ((yy - 20) * 0.5) ** 2 + ((xx - 20) * 0.5) ** 2 <= r_mm**2
    mask = ball.astype(np.uint8)
    mask[2, 2, 2] = 1  # a separate one-voxel lesion
    s = lesion_summary(mask, spacing)
    assert s["count"] == 2
    big = s["lesions"][0]
    assert big["volume_ml"] == pytest.approx(ball.sum() * 0.5 / 1000, rel=1e-3)
    assert big["volume_ml"] == pytest.approx(4 / 3 * math.pi * r_mm**3 / 1000, rel=0.1)
    assert big["equivalent_diameter_mm"] == pytest.approx(2 * r_mm, rel=0.05)
    assert big["slice_range"] == [7, 13]


def test_lesion_sizes_and_centroids_agree_with_scipy() -> None:
    from scipy import ndimage

    mask = np.random.default_rng(0).random((12, 40, 40)) > 0.95  # hundreds of small components
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    expected = sorted(((int((labels == k).sum()), tuple(round(float(c), 2) for c in centre)) for k, centre in
                       zip(range(1, n + 1), ndimage.center_of_mass(mask, labels, range(1, n + 1)), strict=True)),
                      key=lambda e: (-e[0], e[1]))
    found = lesion_summary(mask.astype(np.uint8), None)["lesions"]
    assert len(found) == n > 100
    assert sorted(((e["voxels"], tuple(e["centroid_voxel"])) for e in found), key=lambda e: (-e[0], e[1])) == expected



def test_lesion_summary_reports_how_sure_the_network_is_of_each_candidate() -> None:
    mask = np.zeros((4, 10, 10), dtype=np.uint8)
    mask[1:3, 1:4, 1:4] = 1  # 18 voxels
    mask[2, 7, 7] = 1
    probs = np.where(mask > 0, 0.6, 0.1)
    probs[1, 2, 2] = 0.97
    probs[2, 7, 7] = 0.55
    big, small = lesion_summary(mask, None, probs)["lesions"]
    assert big["peak_probability"] == pytest.approx(0.97)
    assert big["mean_probability"] == pytest.approx((17 * 0.6 + 0.97) / 18, abs=1e-4)
    assert small["peak_probability"] == small["mean_probability"] == pytest.approx(0.55)
    assert "peak_probability" not in lesion_summary(mask, None)["lesions"][0]
    with pytest.raises(ValueError, match=r"shaped like the mask \(4, 10, 10\)"):
        lesion_summary(mask, None, probs[:2])


def test_the_printed_summary_says_how_many_lesions_it_leaves_out_and_what_was_set_aside() -> None:
    from lungseg.inference import format_summary

    lesions = [{"id": i, "volume_ml": 1.0 / i, "equivalent_diameter_mm": 5.0, "slice_range": [i, i + 2],
                "peak_probability": 0.9} for i in range(1, 26)]
    summary = {"input": "scan", "files": ["mask.nii.gz"], "lesions": {"count": 25, "lesions": lesions},
               "set_aside": {"count": 2, "total_volume_ml": 31.4, "lesions": [{"reason": "outside the lungs"}, {}]}}
    text = format_summary(summary)
    assert "lesion 20:" in text and "lesion 21:" not in text and "... and 5 more" in text
    assert "peak probability 0.90" in text
    assert "2 candidate(s), 31.4 mL in all, set aside (2 outside the lungs;" in text and "--keep-outside-lungs" in text
    summary["set_aside"]["lesions"] = [{"reason": "outside the lungs"}, {"reason": "unsure"}, {"reason": "unsure"}]
    summary["set_aside"].update(count=3, total_volume_ml=0.058)
    assert "3 candidate(s), 0.058 mL in all, set aside (1 outside the lungs, 2 unsure;" in format_summary(summary)
    assert "--keep-unsure" in format_summary(summary)
    summary["lesions"] = {"count": 3, "lesions": lesions[:3]}
    summary["set_aside"] = None
    assert "more" not in format_summary(summary) and "set aside" not in format_summary(summary)
    assert "coronal" not in format_summary(summary)
    summary["planes"] = "three"
    assert "axial, coronal and sagittal slices; --planes axial" in format_summary(summary).splitlines()[0]
    summary.update(planes="axial", planes_note="the volume searched is 30 mm along its shortest axis, ...")
    assert "note: the volume searched is 30 mm" in format_summary(summary) and "coronal" not in format_summary(summary)

# ---------------------------------------------------------------- bad input is refused before anything is written
@pytest.mark.parametrize(
    ("threshold", "batch_size", "match"),
    [
        pytest.param(2.0, 16, r"threshold must be a finite probability in \(0, 1\), got 2\.0", id="threshold-2"),
        pytest.param(float("nan"), 16, r"threshold .*got nan", id="threshold-nan"),
        pytest.param(float("inf"), 16, r"threshold .*got inf", id="threshold-inf"),
        pytest.param(0.0, 16, r"threshold .*got 0\.0", id="threshold-0"),
        pytest.param(1.0, 16, r"threshold .*got 1\.0", id="threshold-1"),
        pytest.param(None, -1, r"batch_size must be a positive integer .*got -1", id="batch-minus-1"),
        pytest.param(None, 0, r"batch_size must be a positive integer .*got 0", id="batch-0"),
        pytest.param(None, 2.5, r"batch_size must be a positive integer .*got 2\.5", id="batch-float"),
    ],
)
def test_threshold_and_batch_size_are_checked_by_predict(runs: dict[str, Path], tmp_path: Path, threshold, batch_size,
                                                         match: str) -> None:
    """The library refuses them, not only the CLI: `batch_size=-1` used to return masks computed from
    uninitialised memory, `0` a raw `range()` error, `threshold=2` or NaN an all-empty mask."""
    out = tmp_path / "p.npz"
    with pytest.raises(LungsegError, match=match):
        predict(runs["hu"], runs["hu_data"], out, threshold=threshold, batch_size=batch_size, progress=False)
    assert not out.exists()


def test_non_finite_intensities_are_refused_naming_the_file_and_count(runs: dict[str, Path], tmp_path: Path) -> None:
    from lungseg.data.nifti import write_nifti

    volume = np.load(runs["hu_data"])["images"][:4].copy()
    volume[0, 1, 2] = volume[1, 3, 3] = np.nan
    volume[2, 0, 0] = np.inf
    write_nifti(volume, tmp_path / "ct.nii.gz", spacing=(2.5, 0.8, 0.8))
    with pytest.raises(DataError, match=r"ct\.nii\.gz: 3 of 4096 intensity values are NaN or infinite"):
        predict(runs["hu"], tmp_path / "ct.nii.gz", tmp_path / "out", progress=False)
    np.savez(tmp_path / "slices.npz", images=volume[:2])
    with pytest.raises(DataError, match=r"slices\.npz: key 'images' contains 2 NaN or infinite value\(s\) \(of 2048\)"):
        predict(runs["hu"], tmp_path / "slices.npz", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_nifti_saved_without_its_rescale_is_refused_before_anything_is_written(runs: dict[str, Path], tmp_path: Path) -> None:
    """A CT stored as raw values (HU + 1024) has no voxel with the HU of air or lung: refused with its range and
    the repair, naming the file, and no mask is written (it would have been empty)."""
    from lungseg.data.nifti import write_nifti

    volume = np.load(runs["hu_data"])["images"][:4].copy()
    assert volume.min() <= -900  # the phantom in HU has air
    write_nifti(np.clip(volume, -1024, None) + 1024.0, tmp_path / "raw.nii.gz", spacing=(2.5, 0.8, 0.8))
    with pytest.raises(DataError, match=r"raw\.nii\.gz: intensities span \[[0-9.]+, [0-9.]+\].*HU = value - 1024"):
        predict(runs["hu"], tmp_path / "raw.nii.gz", tmp_path / "out.nii.gz", progress=False)
    assert not (tmp_path / "out.nii.gz").exists()


def _grey_png(path: Path, seed: int = 0, fmt: str | None = None) -> None:
    from PIL import Image

    Image.fromarray((np.random.default_rng(seed).random((24, 20)) * 255).astype(np.uint8)).save(path, format=fmt)


def test_images_whose_masks_would_share_a_name_are_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    """`scan.png` and `scan.jpg` both map to `scan_mask.png`: refused (naming both) before anything is written."""
    folder = tmp_path / "images"
    folder.mkdir()
    _grey_png(folder / "scan.png", 0)
    _grey_png(folder / "scan.jpg", 1, "JPEG")
    _grey_png(folder / "other.png", 2)
    with pytest.raises(DataError, match=r"images: scan\.jpg and scan\.png would both be written as scan_mask\.png"):
        predict(runs["unit"], folder, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    (folder / "scan.jpg").rename(folder / "scan2.jpg")  # distinct names: one mask per image
    summary = predict(runs["unit"], folder, tmp_path / "out", progress=False)
    assert sorted(p.name for p in (tmp_path / "out").glob("*_mask.png")) == [
        "other_mask.png", "scan2_mask.png", "scan_mask.png"]
    assert len(summary["lesions"]["images"]) == 3


def test_stray_file_in_an_image_folder_is_named(runs: dict[str, Path], tmp_path: Path) -> None:
    """A `.txt` next to PNGs used to give "no DICOM image files found"; now the message names it."""
    folder = tmp_path / "images"
    folder.mkdir()
    _grey_png(folder / "a.png")
    (folder / "notes.txt").write_text("scanned on Tuesday")
    with pytest.raises(DataError, match=r"images: holds 1 PNG/JPEG image\(s\) but also 1 other file\(s\)"
                                        r" \(notes\.txt\); a folder to segment holds only PNG/JPEG images"):
        predict(runs["unit"], folder, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_missing_model_is_named_as_a_run_or_a_model_zip(tmp_path: Path) -> None:
    from lungseg.inference import Predictor

    with pytest.raises(LungsegError, match=r"nope\.zip: not found; --run/--model takes a run directory or a model \.zip"):
        Predictor.load(tmp_path / "nope.zip", device="cpu")
