"""Prediction results as DICOM (SEG and RT Structure Set over the source series) and a folder of studies.

The synthetic tests always run (a small phantom series and a tiny run); the real-CT tests read the
LIDC-IDRI-0314 series from ``$LUNGSEG_REALCT`` or ``<repo>/../shared/realct`` and are skipped where
it is absent.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lungseg.errors import LungsegError
from lungseg.inference import FORMATS, mask_contours, predict, study_output

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_RUN = ROOT / "results" / "medium" / "experiment" / "runs" / "attention-hybrid-seed2"


# ---------------------------------------------------------------- reading the results back, independently of the writers
def _nifti_mask(path: Path) -> np.ndarray:
    from lungseg.data.nifti import read_nifti

    return np.asarray(read_nifti(path)[0]) > 0


def _series_headers(folder: Path) -> list[Any]:
    """The series' headers in the order of lungseg's volume (slice k of the mask is headers[k])."""
    import pydicom

    from lungseg.data.dicom import read_dicom_series

    (vol,) = read_dicom_series(folder)
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in vol.meta["files"]]


def _seg_mask(path: Path, headers: list[Any]) -> np.ndarray:
    """A DICOM SEG read with highdicom, as a ``(Z, H, W)`` mask on the series' slices; checks its references."""
    import highdicom as hd

    seg = hd.seg.segread(path)
    uids = [str(h.SOPInstanceUID) for h in headers]
    assert str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID) == str(headers[0].SeriesInstanceUID)
    assert str(seg.StudyInstanceUID) == str(headers[0].StudyInstanceUID)
    assert str(seg.FrameOfReferenceUID) == str(headers[0].FrameOfReferenceUID)
    desc = seg.SegmentSequence[0]
    assert desc.SegmentLabel == "Tumour" and desc.SegmentAlgorithmType == "AUTOMATIC"
    assert desc.SegmentAlgorithmName == "lungseg"
    # every frame references one slice of the series, and lies at that slice's position
    for frame in seg.PerFrameFunctionalGroupsSequence:
        ref = str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        assert ref in uids
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(position, [float(v) for v in headers[uids.index(ref)].ImagePositionPatient], atol=1e-3)
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1],
                                               assert_missing_frames_are_empty=True)
    return pixels[..., 0] > 0


def _rtstruct_mask(path: Path, headers: list[Any]) -> np.ndarray:
    """An RT Structure Set's "Tumour" ROI rasterised onto the series (pixel centres, even-odd rule)."""
    import pydicom
    from matplotlib.path import Path as Polygon

    ds = pydicom.dcmread(path)
    assert ds.Modality == "RTSTRUCT"
    frame_uid = str(headers[0].FrameOfReferenceUID)
    (roi,) = ds.StructureSetROISequence
    assert roi.ROIName == "Tumour" and str(roi.ReferencedFrameOfReferenceUID) == frame_uid
    ref_frame = ds.ReferencedFrameOfReferenceSequence[0]
    assert str(ref_frame.FrameOfReferenceUID) == frame_uid
    series = ref_frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert str(series.SeriesInstanceUID) == str(headers[0].SeriesInstanceUID)
    uids = [str(h.SOPInstanceUID) for h in headers]
    assert [str(c.ReferencedSOPInstanceUID) for c in series.ContourImageSequence] == uids
    (roi_contour,) = ds.ROIContourSequence
    assert int(roi_contour.ReferencedROINumber) == int(roi.ROINumber)
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    yy, xx = np.mgrid[:rows, :cols]
    centres = np.c_[xx.ravel(), yy.ravel()]
    out = np.zeros((len(headers), rows, cols), dtype=bool)
    for contour in roi_contour.get("ContourSequence", []):
        assert contour.ContourGeometricType == "CLOSED_PLANAR"
        k = uids.index(str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID))
        h = headers[k]
        points = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
        assert len(points) == int(contour.NumberOfContourPoints)
        iop = np.asarray([float(v) for v in h.ImageOrientationPatient])
        d = points - np.asarray([float(v) for v in h.ImagePositionPatient])
        np.testing.assert_allclose(d @ np.cross(iop[:3], iop[3:]), 0, atol=1e-3)  # on the referenced slice's plane
        dy, dx = (float(v) for v in h.PixelSpacing)
        col, row = d @ iop[:3] / dx, d @ iop[3:] / dy
        out[k] ^= Polygon(np.c_[col, row]).contains_points(centres).reshape(rows, cols)
    return out


def _assert_within_a_voxel_of_the_boundary(got: np.ndarray, mask: np.ndarray) -> None:
    """``got`` may differ from ``mask`` only on voxels next to the mask's in-plane boundary."""
    from scipy import ndimage

    ring = np.ones((1, 3, 3), dtype=bool)
    band = ndimage.binary_dilation(mask, ring) & ~ndimage.binary_erosion(mask, ring)
    wrong = got != mask
    assert not (wrong & ~band).any(), f"{int((wrong & ~band).sum())} voxel(s) differ away from the boundary"


# ---------------------------------------------------------------- synthetic series: always run
@pytest.fixture(scope="module")
def setup(tiny, make_npz, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny trained run, a 6-slice phantom DICOM series, and a threshold that leaves a mask with some shape."""
    from lungseg.config import TrainConfig
    from lungseg.data.phantom import PhantomConfig, generate_study
    from lungseg.training import train

    root = tmp_path_factory.mktemp("predict_dicom")
    data = make_npz(root / "hu.npz", n_patients=6, per_patient=3, size=32, seed=5)
    train(TrainConfig(data=str(data), model="attention", epochs=1, **tiny), root / "run", progress=False)
    study = generate_study(root / "study", 2, seed=7, config=PhantomConfig(image_size=64, n_slices=6), progress=False)
    series = sorted(p / "ct" for p in study.iterdir() if p.is_dir())
    # an untrained-ish model's probabilities sit near one value: threshold at a quantile of the map
    # so that the mask has outlines (and is neither empty nor full)
    predict(root / "run", series[0], root / "probe", probabilities=True, progress=False)
    probs = np.asarray(_nifti_mask_values(root / "probe" / "probability.nii.gz"))
    threshold = float(np.quantile(probs, 0.8))
    reference = root / "reference.nii.gz"
    predict(root / "run", series[0], reference, threshold=threshold, progress=False)
    mask = _nifti_mask(reference)
    assert 0 < mask.sum() < mask.size
    return {"run": root / "run", "series": series, "threshold": threshold, "mask": mask, "data": data}


def _nifti_mask_values(path: Path) -> np.ndarray:
    from lungseg.data.nifti import read_nifti

    return np.asarray(read_nifti(path)[0])


def test_dicom_seg_of_a_series_holds_the_nifti_mask(setup: dict[str, Any], tmp_path: Path) -> None:
    series = setup["series"][0]
    before = sorted(p.name for p in series.iterdir())
    summary = predict(setup["run"], series, tmp_path / "out", output_format="dicom-seg", threshold=setup["threshold"],
                      progress=False)
    assert sorted(p.name for p in series.iterdir()) == before  # nothing written into the input
    seg_path = tmp_path / "out" / "seg.dcm"
    assert summary["files"][0] == str(seg_path)
    got = _seg_mask(seg_path, _series_headers(series))
    assert np.array_equal(got, setup["mask"])
    assert summary["tumour_voxels"] == int(setup["mask"].sum())


def test_rtstruct_of_a_series_outlines_the_nifti_mask(setup: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "contours.dcm"
    predict(setup["run"], setup["series"][0], out, output_format="rtstruct", threshold=setup["threshold"],
            progress=False)
    got = _rtstruct_mask(out, _series_headers(setup["series"][0]))
    assert got.any()
    _assert_within_a_voxel_of_the_boundary(got, setup["mask"])
    assert (tmp_path / "contours_lesions.json").is_file()


def test_empty_masks_give_valid_dicom_objects(setup: dict[str, Any], tmp_path: Path) -> None:
    """A threshold no probability reaches: a SEG with one empty frame, an RT Structure Set without contours."""
    headers = _series_headers(setup["series"][0])
    for fmt in ("dicom-seg", "rtstruct"):
        out = tmp_path / f"{fmt}.dcm"
        predict(setup["run"], setup["series"][0], out, output_format=fmt, threshold=1 - 1e-9, progress=False)
        got = _seg_mask(out, headers) if fmt == "dicom-seg" else _rtstruct_mask(out, headers)
        assert not got.any()


@pytest.mark.parametrize("seed", range(4))
def test_mask_contours_fill_back_to_the_mask(seed: int) -> None:
    """Noisy masks with holes, single pixels, diagonal neighbours and pixels on the border."""
    from matplotlib.path import Path as Polygon

    rng = np.random.default_rng(seed)
    mask = rng.random((23, 31)) < (0.2 + 0.2 * seed)
    mask[0, :] |= seed % 2 == 0
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    centres = np.c_[yy.ravel(), xx.ravel()]
    filled = np.zeros(mask.shape, dtype=bool)
    polygons = mask_contours(mask)
    for polygon in polygons:
        assert polygon.shape[1] == 2 and len(polygon) >= 3 and not np.allclose(polygon[0], polygon[-1])
        filled ^= Polygon(polygon).contains_points(centres).reshape(mask.shape)
    assert np.array_equal(filled, mask)
    assert mask_contours(np.zeros((4, 4))) == []


def test_dicom_formats_need_a_dicom_series(setup: dict[str, Any], tmp_path: Path) -> None:
    from lungseg.data.nifti import write_nifti

    volume = np.load(setup["data"])["images"][:4]
    write_nifti(volume, tmp_path / "ct.nii.gz", spacing=(2.5, 0.8, 0.8))
    for fmt in ("dicom-seg", "rtstruct"):
        with pytest.raises(LungsegError, match=rf"ct\.nii\.gz: --format {fmt} needs a DICOM series input .*use --format nifti"):
            predict(setup["run"], tmp_path / "ct.nii.gz", tmp_path / "out", output_format=fmt, progress=False)
        with pytest.raises(LungsegError, match=rf"hu\.npz: --format {fmt} needs a DICOM series input"):
            predict(setup["run"], setup["data"], tmp_path / "out", output_format=fmt, progress=False)
    with pytest.raises(LungsegError, match=r"a dicom-seg result is a \.dcm file \(or a folder\), not NIfTI"):
        predict(setup["run"], setup["series"][0], tmp_path / "seg.nii.gz", output_format="dicom-seg", progress=False)
    with pytest.raises(LungsegError, match="output format must be one of nifti, dicom-seg, rtstruct; got 'dicomseg'"):
        predict(setup["run"], setup["series"][0], tmp_path / "out", output_format="dicomseg", progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_format_choices_are_the_library_formats() -> None:
    from lungseg.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "verb").choices["predict"]
    (action,) = [a for a in sub._actions if a.dest == "output_format"]
    assert tuple(action.choices) == FORMATS and action.default == "nifti"


# ---------------------------------------------------------------- a folder of studies
def _two_studies(setup: dict[str, Any], folder: Path) -> Path:
    """``folder/a``: a DICOM series (in a nested ``ct/``), ``folder/b.nii.gz``: a NIfTI volume, plus a stray note."""
    from lungseg.data.nifti import write_nifti

    folder.mkdir()
    shutil.copytree(setup["series"][0], folder / "a" / "ct")
    write_nifti(np.load(setup["data"])["images"][:5], folder / "b.nii.gz", spacing=(2.5, 0.8, 0.8))
    (folder / "notes.txt").write_text("two studies")
    return folder


def test_a_folder_of_two_studies_in_one_call(setup: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lungseg.cli import main

    studies = _two_studies(setup, tmp_path / "studies")
    out = tmp_path / "results"
    status = main(["predict", str(studies), "--run", str(setup["run"]), "--out", str(out), "--quiet",
                   "--threshold", str(setup["threshold"])])
    assert status == 0
    captured = capsys.readouterr()
    assert "notes.txt: neither a study folder nor a NIfTI volume; skipped" in captured.err
    printed = captured.out
    assert "2 of 2 studies segmented" in printed and "tumour voxels" in printed
    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [Path(r["input"]).name for r in rows] == ["a", "b.nii.gz"]
    assert list(rows[0]) == ["input", "slices", "lesions", "tumour_voxels", "volume_ml", "set_aside", "set_aside_ml",
                             "planes", "coarse_pass", "precision", "output", "seconds", "error"]
    for row, study in zip(rows, ("a", "b.nii.gz")):
        assert row["output"] == str(study_output(out, studies / study) / "mask.nii.gz")
        mask = _nifti_mask(Path(row["output"]))
        assert int(row["slices"]) == mask.shape[0] and int(row["tumour_voxels"]) == int(mask.sum())
        assert float(row["seconds"]) > 0 and row["error"] == ""
        summary = json.loads((Path(row["output"]).parent / "lesions.json").read_text())
        assert int(row["set_aside"]) == (summary["set_aside"] or {"count": 0})["count"]
        assert int(row["lesions"]) == summary["lesions"]["count"]
        assert row["precision"] == summary["precision"]
    # the series' result is the one a single-series call gives
    assert np.array_equal(_nifti_mask(Path(rows[0]["output"])), setup["mask"])
    assert float(rows[0]["volume_ml"]) > 0


def test_a_folder_of_studies_as_dicom_seg_and_a_failing_study(setup: dict[str, Any], tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    for i, series in enumerate(setup["series"]):
        shutil.copytree(series, studies / f"patient{i}")
    (studies / "broken").mkdir()
    (studies / "broken" / "x.dcm").write_bytes(b"not DICOM")
    summary = predict(setup["run"], studies, tmp_path / "out", output_format="dicom-seg",
                      threshold=setup["threshold"], progress=False)
    assert summary["failed"] == 1
    by_name = {Path(r["input"]).name: r for r in summary["studies"]}
    assert "corrupt DICOM file" in by_name["broken"]["error"]
    assert by_name["broken"]["precision"] == summary["precision"]  # known before the study failed
    for i, series in enumerate(setup["series"]):
        row = by_name[f"patient{i}"]
        assert row["output"] == str(tmp_path / "out" / f"patient{i}" / "seg.dcm")
        got = _seg_mask(Path(row["output"]), _series_headers(series))
        assert int(got.sum()) == row["tumour_voxels"]
    assert np.array_equal(_seg_mask(Path(by_name["patient0"]["output"]), _series_headers(setup["series"][0])),
                          setup["mask"])


@pytest.mark.filterwarnings("ignore:.*neither a study folder nor a NIfTI volume")
def test_a_folder_of_studies_refuses_collisions_before_writing(setup: dict[str, Any], tmp_path: Path) -> None:
    studies = _two_studies(setup, tmp_path / "studies")
    shutil.copy(studies / "b.nii.gz", studies / "A.nii.gz")  # out/a would receive both 'a' and 'A.nii.gz'
    with pytest.raises(LungsegError, match=r"studies: a and A\.nii\.gz would both be written to .*; rename one"):
        predict(setup["run"], studies, tmp_path / "out", progress=False)
    (studies / "A.nii.gz").unlink()
    with pytest.raises(LungsegError, match=r"--format dicom-seg needs a DICOM series input.*NIfTI volume\(s\) \(b\.nii\.gz\)"):
        predict(setup["run"], studies, tmp_path / "out", output_format="dicom-seg", progress=False)
    with pytest.raises(LungsegError, match=r"a folder of studies is written to a folder"):
        predict(setup["run"], studies, tmp_path / "out.nii.gz", progress=False)
    with pytest.raises(LungsegError, match="inside the input"):
        predict(setup["run"], studies, studies / "results", progress=False)
    assert not (tmp_path / "out").exists() and not (studies / "results").exists()


def test_a_folder_of_studies_never_writes_into_a_study_linked_from_elsewhere(setup: dict[str, Any], tmp_path: Path) -> None:
    """A study may be a symbolic link to a series kept elsewhere: an output inside it, reached through the link,
    is refused before anything is written, as an output inside the folder of studies is."""
    elsewhere = tmp_path / "archive" / "ct"
    shutil.copytree(setup["series"][0], elsewhere)
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "linked").symlink_to(elsewhere, target_is_directory=True)
    before = sorted(p.name for p in elsewhere.iterdir())
    with pytest.raises(LungsegError, match=r"lies inside the input .*linked"):
        predict(setup["run"], studies, studies / "linked" / "res", progress=False)
    assert sorted(p.name for p in elsewhere.iterdir()) == before


# ---------------------------------------------------------------- real CT (skipped where absent)
def _realct() -> Path:
    folder = Path(os.environ.get("LUNGSEG_REALCT") or ROOT.parent / "shared" / "realct")
    series = folder / "lidc-idri-0314" / "ct"
    if not series.is_dir():
        pytest.skip(f"real CT not found at {series} (set LUNGSEG_REALCT to the shared realct folder)")
    if not (PUBLISHED_RUN / "best.pt").is_file():
        pytest.skip(f"published run {PUBLISHED_RUN} not present")
    return series


@pytest.fixture(scope="module")
def lidc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The LIDC-IDRI-0314 series (Philips, 275 slices) and its NIfTI prediction by the published run."""
    series = _realct()
    root = tmp_path_factory.mktemp("lidc")
    predict(PUBLISHED_RUN, series, root / "mask.nii.gz", device="cpu", progress=False)
    return {"series": series, "root": root, "mask": _nifti_mask(root / "mask.nii.gz"), "headers": _series_headers(series)}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["dicom-seg", "rtstruct"])
def test_real_series_dicom_results_match_the_nifti_mask(lidc: dict[str, Any], fmt: str, tmp_path: Path) -> None:
    """`lungseg predict <LIDC series> --format dicom-seg|rtstruct`: referenced, and the NIfTI mask (within a
    voxel at the boundary for the contours)."""
    from lungseg.cli import main

    assert main(["predict", str(lidc["series"]), "--run", str(PUBLISHED_RUN), "--out", str(tmp_path), "--format", fmt,
                 "--device", "cpu", "--quiet"]) == 0
    path = tmp_path / ("seg.dcm" if fmt == "dicom-seg" else "rtstruct.dcm")
    assert lidc["mask"].any()
    if fmt == "dicom-seg":
        assert np.array_equal(_seg_mask(path, lidc["headers"]), lidc["mask"])
    else:
        _assert_within_a_voxel_of_the_boundary(_rtstruct_mask(path, lidc["headers"]), lidc["mask"])


def test_dicom_results_record_the_region_searched_and_the_set_aside_rule(setup: dict[str, Any], tmp_path: Path) -> None:
    """The SEG's algorithm parameters and the RT Structure Set's ROI description say which region was searched
    and whether candidates outside the lungs were set aside (--keep-outside-lungs), as the summary does."""
    import pydicom

    for keep in (False, True):
        seg_path, rt_path = tmp_path / f"seg-{keep}.dcm", tmp_path / f"rt-{keep}.dcm"
        summary = predict(setup["run"], setup["series"][0], seg_path, output_format="dicom-seg",
                          threshold=setup["threshold"], keep_outside_lungs=keep, progress=False)
        predict(setup["run"], setup["series"][0], rt_path, output_format="rtstruct", threshold=setup["threshold"],
                keep_outside_lungs=keep, progress=False)
        algorithm = summary["algorithm"]
        assert summary["region"] == "lungs"  # the phantom's lungs are found, so the set-aside case is tested
        assert algorithm["region"] == summary["region"] and algorithm["planes"] == summary["planes"] == "axial"
        searched_lungs = summary["region"] == "lungs"
        assert algorithm["outside_lungs"] == ("set aside" if searched_lungs and not keep else "kept")
        assert algorithm["unsure"] == "kept"  # only three planes set unsure candidates aside
        assert (summary["set_aside"] is not None) == (searched_lungs and not keep)
        ident = pydicom.dcmread(seg_path).SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
        parameters = str(ident.AlgorithmParameters)
        assert f"region={algorithm['region']}" in parameters
        assert f"outside_lungs={algorithm['outside_lungs']}" in parameters and "planes=axial" in parameters
        assert "unsure=kept" in parameters and f"precision={algorithm['precision']}" in parameters
        assert algorithm["precision"] == summary["precision"]  # the numerics that made the mask, in the DICOM record
        description = str(pydicom.dcmread(rt_path).StructureSetROISequence[0].ROIDescription)
        assert f"region {algorithm['region']}" in description and f"outside_lungs {algorithm['outside_lungs']}" in description
