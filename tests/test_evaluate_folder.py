"""``lungseg evaluate --pred DIR --ref DIR``: any tool's masks scored as ``evaluate --run`` scores a run.

The fixture is a small MSD-style NIfTI dataset and a tiny run trained on it; ``lungseg predict`` writes
the run's masks as NIfTI, and scoring them against the reference masks must give ``evaluate --run``'s
figures to the last digit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lungseg.cli import main
from lungseg.data.nifti import read_nifti, write_nifti
from lungseg.errors import DataError
from lungseg.evaluation import evaluate_folder, evaluate_run
from lungseg.metrics import summarize

SPACING = (2.5, 0.8, 0.8)  # (z, y, x) mm


def _write_msd(folder: Path, n_patients: int = 4, n_slices: int = 4, size: int = 32, seed: int = 0) -> Path:
    """imagesTr/labelsTr of bright discs on lung parenchyma (HU), one NIfTI pair per patient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for p in range(n_patients):
        image = (-850 + rng.normal(0, 40, (n_slices, size, size))).astype(np.float32)
        mask = np.zeros(image.shape, np.uint8)
        for k in range(n_slices):
            r, (cy, cx) = rng.uniform(size / 10, size / 5), rng.uniform(size / 3, 2 * size / 3, 2)
            mask[k] = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            image[k][mask[k] > 0] = rng.uniform(-100, 60) + rng.normal(0, 30, int(mask[k].sum()))
        write_nifti(image, folder / "imagesTr" / f"p{p:02d}.nii.gz", spacing=SPACING)
        write_nifti(mask, folder / "labelsTr" / f"p{p:02d}.nii.gz", spacing=SPACING)
    return folder


@pytest.fixture(scope="module")
def scored(tiny: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The dataset, a run trained on it, the run's evaluation on every patient, and its masks as NIfTI."""
    from lungseg.config import TrainConfig
    from lungseg.inference import predict
    from lungseg.training import train

    root = tmp_path_factory.mktemp("evaluate_folder")
    data = _write_msd(root / "data")
    # a low threshold: the barely trained network's masks then hold tumour and false positives (without
    # test-time augmentation, whose mean over 8 symmetries lies above 0.3 everywhere for such a network)
    train(TrainConfig(data=str(data), epochs=2, threshold=0.3, tta="none", **tiny), root / "run", progress=False)
    evaluate_run(root / "run", data, out=root / "run_eval.json", split="all", robustness=False, n_boot=50,
                 progress=False)
    for image in sorted((data / "imagesTr").iterdir()):  # fp32, as evaluate (predict's auto is bf16 on some CPUs)
        predict(root / "run", image, root / "pred" / image.name, precision="fp32", progress=False)
    return {"root": root, "data": data, "run_eval": root / "run_eval.json", "pred": root / "pred",
            "ref": data / "labelsTr"}


def test_pred_ref_reproduces_evaluate_run_to_the_last_digit(scored: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "folder.json"
    rc = main(["evaluate", "--pred", str(scored["pred"]), "--ref", str(scored["ref"]), "--out", str(out),
               "--n-boot", "50"])
    assert rc == 0
    run, folder = (json.loads(p.read_text()) for p in (scored["run_eval"], out))
    pred = np.concatenate([read_nifti(p)[0] for p in sorted(scored["pred"].glob("*.nii.gz"))])
    assert 0 < pred.sum() < pred.size  # the masks are neither empty nor full: the comparison means something
    figures = [k for k in summarize(pred > 0, pred > 0, ["a"] * len(pred), n_boot=1) if k != "aggregations"]
    for key in figures + ["small_tumor_recall", "lesion_recall"]:
        assert folder[key] == run[key], key
    for key in ("per_image", "per_patient", "n_hd95_undefined", "tolerance_mm"):
        assert folder["boundary"].get(key) == run["boundary"].get(key), key
    assert "ci" in figures and run["ci"]["per_patient"]["dice"] == folder["ci"]["per_patient"]["dice"]
    # the per-image tables too, byte for byte
    run_csv, folder_csv = scored["run_eval"].with_name("run_eval_per_image.csv.gz"), tmp_path / "folder_per_image.csv.gz"
    assert run_csv.read_bytes() == folder_csv.read_bytes()


def test_volumes_and_false_positives_from_the_masks(scored: dict[str, Path]) -> None:
    res = evaluate_folder(scored["pred"], scored["ref"], n_boot=0)
    voxel_ml = np.prod(SPACING) / 1000
    ref = [read_nifti(p)[0].sum() * voxel_ml for p in sorted(scored["ref"].glob("*.nii.gz"))]
    pred = [read_nifti(p)[0].sum() * voxel_ml for p in sorted(scored["pred"].glob("*.nii.gz"))]
    v = res["volumes"]
    assert v["reference_ml"] == pytest.approx(ref) and v["predicted_ml"] == pytest.approx(pred)
    assert v["bias_ml"] == pytest.approx(np.mean(np.subtract(pred, ref)))
    assert res["false_positives_per_scan"] >= 0 and res["intensity_robustness_std"] is None


def test_identical_folders_score_perfectly(scored: dict[str, Path]) -> None:
    res = evaluate_folder(scored["ref"], scored["ref"], n_boot=0)
    assert res["pooled"]["dice"] == 1.0 and res["volumes"]["bias_ml"] == 0.0
    assert res["false_positives_per_scan"] == 0.0 and res["lesion_recall"] == 1.0


def test_mismatched_geometry_is_refused_with_both_grids(scored: dict[str, Path], tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    shutil.copytree(scored["pred"], pred)
    mask, _, _ = read_nifti(pred / "p01.nii.gz")
    write_nifti(mask, pred / "p01.nii.gz", spacing=(2.5, 0.7, 0.7))
    with pytest.raises(DataError, match=r"p01.nii.gz: its geometry .*voxel \[2.5, 0.7, 0.7\].* differs from the reference"):
        evaluate_folder(pred, scored["ref"], n_boot=0)
    write_nifti(mask[:-1], pred / "p01.nii.gz", spacing=SPACING)
    with pytest.raises(DataError, match="differs from the reference"):
        evaluate_folder(pred, scored["ref"], n_boot=0)


def test_unpaired_cases_and_bad_masks_get_one_line(scored: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    pred = tmp_path / "pred"
    shutil.copytree(scored["pred"], pred)
    (pred / "p02.nii.gz").unlink()
    assert main(["evaluate", "--pred", str(pred), "--ref", str(scored["ref"]), "--out", str(tmp_path / "m.json")]) == 2
    assert "no prediction for 1 reference case(s), e.g. 'p02'" in capsys.readouterr().err
    shutil.copy(scored["pred"] / "p02.nii.gz", pred / "p02.nii.gz")
    shutil.copy(scored["pred"] / "p02.nii.gz", pred / "extra.nii.gz")
    with pytest.raises(DataError, match="without a reference mask.*extra.nii.gz"):
        evaluate_folder(pred, scored["ref"], n_boot=0)
    (pred / "extra.nii.gz").unlink()
    probs = read_nifti(pred / "p03.nii.gz")[0] * 0.5
    write_nifti(probs.astype(np.float32), pred / "p03.nii.gz", spacing=SPACING)
    with pytest.raises(DataError, match="p03.nii.gz: a tumour mask must hold only 0 and 1"):
        evaluate_folder(pred, scored["ref"], n_boot=0)


def test_cli_needs_a_run_and_data_or_two_folders(scored: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "m.json")
    for argv in (["--pred", str(scored["pred"])], ["--run", str(scored["root"] / "run")],
                 ["--pred", str(scored["pred"]), "--ref", str(scored["ref"]), "--data", str(scored["data"])]):
        assert main(["evaluate", *argv, "--out", out]) == 2
        assert "evaluate takes --run RUN --data DATA (a trained run) or --pred DIR --ref DIR" in capsys.readouterr().err
    # the output may not be written into an input folder
    assert main(["evaluate", "--pred", str(scored["pred"]), "--ref", str(scored["ref"]),
                 "--out", str(scored["pred"] / "m.json")]) == 2
    assert "lies inside the input" in capsys.readouterr().err


@pytest.fixture(scope="module")
def dicom_masks(scored: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One phantom DICOM series segmented by the run twice (two thresholds), each as NIfTI and DICOM SEG."""
    from lungseg.data.phantom import PhantomConfig, generate_study
    from lungseg.inference import predict

    root = tmp_path_factory.mktemp("seg_masks")
    study = generate_study(root / "study", 1, seed=7, config=PhantomConfig(image_size=64, n_slices=6), progress=False)
    (series,) = sorted(p / "ct" for p in study.iterdir() if p.is_dir())
    predict(scored["root"] / "run", series, root / "probe", probabilities=True, progress=False)
    probs = read_nifti(root / "probe" / "probability.nii.gz")[0]
    out = {}
    for name, quantile in (("a", 0.8), ("b", 0.9)):  # masks with outlines, neither empty nor full
        threshold = float(np.quantile(probs, quantile))
        for fmt, suffix in (("nifti", ".nii.gz"), ("dicom-seg", ".dcm")):
            out[f"{name}_{fmt}"] = root / f"{name}_{fmt}"
            predict(scored["root"] / "run", series, out[f"{name}_{fmt}"] / f"case{suffix}", threshold=threshold,
                    output_format=fmt, progress=False)
            (out[f"{name}_{fmt}"] / "case_lesions.json").unlink()
    return out


def test_dicom_seg_scores_as_its_nifti_twin(dicom_masks: dict[str, Path]) -> None:
    nifti = evaluate_folder(dicom_masks["b_nifti"], dicom_masks["a_nifti"], n_boot=0)
    assert 0 < nifti["pooled"]["dice"] < 1
    for pred, ref in (("b_dicom-seg", "a_nifti"), ("b_nifti", "a_dicom-seg")):
        seg = evaluate_folder(dicom_masks[pred], dicom_masks[ref], n_boot=0)
        for key in ("pooled", "per_image", "per_patient", "lesion_recall", "volumes"):
            assert seg[key] == nifti[key], (pred, ref, key)
    assert evaluate_folder(dicom_masks["a_dicom-seg"], dicom_masks["a_nifti"], n_boot=0)["pooled"]["dice"] == 1.0
    with pytest.raises(DataError, match="two DICOM SEGs"):
        evaluate_folder(dicom_masks["a_dicom-seg"], dicom_masks["b_dicom-seg"], n_boot=0)


def test_dicom_seg_off_the_reference_grid_is_refused(dicom_masks: dict[str, Path], tmp_path: Path) -> None:
    mask, spacing, affine = read_nifti(dicom_masks["a_nifti"] / "case.nii.gz")
    shifted = affine.copy()
    shifted[:3, 3] += 0.5 * np.sqrt((affine[:3, :3] ** 2).sum(axis=0))  # half a voxel along every axis
    write_nifti(mask, tmp_path / "case.nii.gz", affine=shifted)
    with pytest.raises(DataError, match="case.dcm: its frames do not lie on the voxels of the reference grid"):
        evaluate_folder(dicom_masks["a_dicom-seg"], tmp_path, n_boot=0)
    shifted[:3, 3] = affine[:3, 3] + 3 * affine[:3, 2]  # three slices further: frames past the last slice
    write_nifti(mask, tmp_path / "case.nii.gz", affine=shifted)
    with pytest.raises(DataError, match="case.dcm: its frames lie outside the reference grid"):
        evaluate_folder(dicom_masks["a_dicom-seg"], tmp_path, n_boot=0)
