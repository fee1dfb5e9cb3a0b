"""Tumour masks from DICOM (RTSTRUCT, SEG) and CT series as scanners write them (lungseg.data.dicom_study).

The synthetic studies put the tumour into the CT image itself (HU 40 on air, with a hole of air), and
the label objects are drawn from each file's own header (the DICOM pixel-to-patient formula, PS3.3
C.7.6.2.1.1) or pixels. A mask read back must therefore equal ``image > 0`` of the volume read back: the
same voxels, whatever the file order, slice order or row/column convention.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from lungseg.data import open_dataset
from lungseg.data.dicom import read_dicom_series
from lungseg.data.dicom_study import choose_roi, polygon_mask
from lungseg.data.dicom_write import write_dicom_series
from lungseg.data.volume import CTVolume
from lungseg.errors import DataError, DataWarning

SHAPE = (6, 20, 24)
SPACING = (2.5, 0.9, 0.7)  # dy != dx: a row/column swap cannot pass
# (column, row) pixel corners of the tumour outline and of its hole, on the slices listed
OUTER = [(2, 3), (9, 3), (9, 8), (2, 8)]
HOLE = [(4, 4), (6, 4), (6, 6), (4, 6)]
TUMOUR_SLICES = (2, 3)


def _volume(patient_id: str = "PAT-A", n_slices: int = SHAPE[0], affine: np.ndarray | None = None) -> CTVolume:
    """Air everywhere; on TUMOUR_SLICES a HU-40 box with an air hole (boundary pixels included)."""
    image = np.full((n_slices, *SHAPE[1:]), -800.0, dtype=np.float32)
    (j0, i0), (j1, i1) = OUTER[0], OUTER[2]
    (h0, g0), (h1, g1) = HOLE[0], HOLE[2]
    for k in TUMOUR_SLICES:
        image[k, i0 : i1 + 1, j0 : j1 + 1] = 40.0
        image[k, g0 : g1 + 1, h0 : h1 + 1] = -800.0
    image[TUMOUR_SLICES[1], i0, j1 + 5] = 40.0  # one lone voxel more on the upper slice: slices are not alike
    meta = {"affine_space": "LPS"} if affine is not None else {}
    return CTVolume(image, None, SPACING, patient_id, affine=affine, meta=meta)


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _mm(ds: pydicom.Dataset, corners: list[tuple[float, float]]) -> np.ndarray:
    """Patient coordinates (LPS mm) of (column, row) pixel positions of the file ``ds`` (PS3.3 C.7.6.2.1.1)."""
    ipp = np.array(ds.ImagePositionPatient, float)
    iop = np.array(ds.ImageOrientationPatient, float)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    ji = np.asarray(corners, float)
    return ipp + ji[:, :1] * col_spacing * iop[:3] + ji[:, 1:] * row_spacing * iop[3:]


def _tumour_contours(ct_folder: Path) -> list[np.ndarray]:
    """Outer and hole contours on every file whose pixels hold the tumour, in that file's coordinates."""
    contours = []
    for path in _files(ct_folder):
        ds = pydicom.dcmread(path)
        hu = _hu(ds)
        (j0, i0), (j1, i1) = OUTER[0], OUTER[2]
        if (hu[i0 : i1 + 1, j0 : j1 + 1] > 0).any():
            contours += [_mm(ds, OUTER), _mm(ds, HOLE)]
            if (hu[i0, j1 + 1 :] > 0).any():  # the lone voxel: a tiny square around its centre
                j = j1 + 5
                contours.append(_mm(ds, [(j - 0.2, i0 - 0.2), (j + 0.2, i0 - 0.2), (j + 0.2, i0 + 0.2), (j - 0.2, i0 + 0.2)]))
    assert len(contours) == 2 * len(TUMOUR_SLICES) + 1
    return contours


def _study(root: Path, make_rtstruct, patient_id: str = "PAT-A", rois: dict | None = None, **write) -> Path:
    study = root / f"study-{patient_id}"
    write_dicom_series(_volume(patient_id), study / "ct", uid_seed=patient_id, **write)
    contours = _tumour_contours(study / "ct")
    make_rtstruct(study / "rtstruct.dcm", study / "ct", rois or {"Lung-Left": contours[:1], "GTV-1": contours})
    return study


# ---------------------------------------------------------------------------------------- RTSTRUCT
def test_rtstruct_mask_lies_on_the_tumour_voxels_with_holes(tmp_path, make_rtstruct):
    study = _study(tmp_path, make_rtstruct)
    before = {p: p.stat().st_mtime_ns for p in study.rglob("*")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one study, one series, one tumour-like name: nothing to warn about
        ds = open_dataset(study)
    assert ds.kind == "dicom" and ds.has_masks and ds.patient_ids == ["PAT-A"]
    volume = ds["PAT-A"]
    assert volume.mask is not None and volume.mask.dtype == np.uint8
    np.testing.assert_array_equal(volume.mask, (volume.image > 0).astype(np.uint8))
    assert volume.meta["roi"] == "GTV-1" and volume.meta["label_kind"] == "RTSTRUCT"
    hole = HOLE[1][1] + 1, HOLE[0][0] + 1  # a pixel inside the hole
    assert volume.mask[TUMOUR_SLICES[0]][hole] == 0 and ds.has_tumour("PAT-A")
    assert {p: p.stat().st_mtime_ns for p in study.rglob("*")} == before  # nothing written into the input


def test_overlapping_contours_combine_by_xor():
    square = np.array([(1, 1), (8, 1), (8, 8), (1, 8)], float)
    inner = np.array([(3, 3), (6, 3), (6, 6), (3, 6)], float)
    outer, hole = polygon_mask((10, 10), square), polygon_mask((10, 10), inner)
    expected = np.zeros((10, 10), bool)
    expected[1:9, 1:9] = True
    expected[3:7, 3:7] = False
    np.testing.assert_array_equal(outer ^ hole, expected)
    assert outer.sum() == 64 and hole.sum() == 16  # boundary pixel centres are inside


@pytest.mark.parametrize(
    ("roi", "chosen"), [(None, "GTV-1"), ("lung-left", "Lung-Left"), ("  GTV-1 ", "GTV-1")], ids=["default", "case", "spaces"]
)
def test_roi_is_chosen_by_name(tmp_path, make_rtstruct, roi, chosen):
    study = _study(tmp_path, make_rtstruct)
    volume = open_dataset(study, roi=roi)["PAT-A"]
    assert volume.meta["roi"] == chosen
    # Lung-Left is the outer contour of the lower tumour slice only
    assert volume.mask.sum() == ((volume.image > 0).sum() if chosen == "GTV-1" else 8 * 6)


def test_unknown_roi_is_an_error_listing_the_names(tmp_path, make_rtstruct):
    study = _study(tmp_path, make_rtstruct)
    with pytest.raises(DataError, match=r"rtstruct\.dcm: no ROI named 'Heart'.*'Lung-Left', 'GTV-1'"):
        open_dataset(study, roi="Heart")


def test_no_tumour_like_name_is_an_error_asking_for_roi(tmp_path, make_rtstruct):
    study = tmp_path / "s"
    write_dicom_series(_volume(), study / "ct")
    make_rtstruct(study / "rt.dcm", study / "ct", {"Body": _tumour_contours(study / "ct")[:1], "Spinal-Cord": []})
    with pytest.raises(DataError, match=r"no ROI whose name looks like a tumour.*'Body', 'Spinal-Cord'.*--roi NAME"):
        open_dataset(study)


def test_several_tumour_names_take_the_first_with_a_warning(tmp_path):
    with pytest.warns(DataWarning, match=r"2 ROIs look like a tumour \('gtv-2', 'Tumor'\); using the first, 'gtv-2'"):
        assert choose_roi(["Body", "gtv-2", "Tumor", "Lung"], None, "x.dcm") == 1
    for name in ("GTV", "primary tumour", "Nodule 1", "LESION_A", "gtvp"):
        assert choose_roi(["Body", name], None, "x.dcm") == 1


def test_contour_between_slices_is_an_error(tmp_path, make_rtstruct):
    study = tmp_path / "s"
    write_dicom_series(_volume(), study / "ct")
    off = _tumour_contours(study / "ct")[0] + np.array([0.0, 0.0, SPACING[0] / 2])
    make_rtstruct(study / "rt.dcm", study / "ct", {"GTV": [off]})
    with pytest.raises(DataError, match=r"rt\.dcm: ROI 'GTV' contour 1 lies 1\.25 mm from the nearest slice"):
        open_dataset(study)["PAT-A"]


def test_contour_outside_the_image_in_plane_is_refused_with_its_offset(tmp_path, make_rtstruct):
    """A structure set shifted off the image gave an empty truth (Dice 0) without a word."""
    study = tmp_path / "s"
    write_dicom_series(_volume(), study / "ct")
    contours = _tumour_contours(study / "ct")
    shifted = [c + np.array([100.0, 0.0, 0.0]) for c in contours]  # 100 mm to the patient's left
    make_rtstruct(study / "rt.dcm", study / "ct", {"GTV": shifted})
    # the outline's nearest vertex (column 2 + 100 / 0.7) lies beyond the last column, 23
    beyond = (OUTER[0][0] + 100.0 / SPACING[2] - (SHAPE[2] - 1)) * SPACING[2]
    with pytest.raises(DataError, match=rf"rt\.dcm: ROI 'GTV' contour 1 lies outside the 24x20 image in-plane, offset"
                                        rf" {beyond:.1f} mm beyond it across the columns and 0\.0 mm across the rows"):
        open_dataset(study)["PAT-A"]
    # a contour that only crosses the image's edge is kept (its inner part is real)
    edge = [_mm(pydicom.dcmread(_files(study / "ct")[TUMOUR_SLICES[0]]), [(-3, 3), (4, 3), (4, 8), (-3, 8)])]
    make_rtstruct(study / "rt.dcm", study / "ct", {"GTV": edge})
    assert open_dataset(study)["PAT-A"].mask.any()


# --------------------------------------------------------------------------------------------- SEG
def _write_seg(path: Path, ct_folder: Path, order: np.ndarray, label: str = "Tumour") -> Path:
    """A binary DICOM SEG by highdicom, its frames from each CT file's own pixels, in file order ``order``."""
    hd = pytest.importorskip("highdicom")
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(p) for p in np.array(_files(ct_folder))[order]]
    pixels = np.stack([(_hu(ds) > 0) for ds in sources]).astype(np.uint8)
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label=label, segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description], series_instance_uid=hd.UID(), series_number=99, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="test", manufacturer_model_name="test", software_versions="0",
        device_serial_number="0",
    )
    seg.save_as(path)
    return path


def test_seg_written_by_highdicom_reads_back_to_the_same_voxels(tmp_path):
    study = tmp_path / "study"
    write_dicom_series(_volume("PAT-S"), study / "ct")
    order = np.random.default_rng(0).permutation(SHAPE[0])  # frames not in slice order
    _write_seg(study / "seg.dcm", study / "ct", order)
    ds = open_dataset(study)
    assert ds.has_masks and ds.patient_ids == ["PAT-S"]
    volume = ds["PAT-S"]
    assert volume.meta["label_kind"] == "SEG" and volume.meta["roi"] == "Tumour"
    np.testing.assert_array_equal(volume.mask, (volume.image > 0).astype(np.uint8))
    with pytest.raises(DataError, match=r"seg\.dcm: no ROI named 'GTV'; the file has: 'Tumour'"):
        open_dataset(study, roi="GTV")


def test_folder_of_two_studies_gives_two_patients_with_header_ids(tmp_path, make_rtstruct):
    root = tmp_path / "cohort"
    _study(root, make_rtstruct, "PAT-B")
    write_dicom_series(_volume("PAT-A"), root / "zz-second" / "ct")  # folder names sort the other way
    _write_seg(root / "zz-second" / "seg.dcm", root / "zz-second" / "ct", np.arange(SHAPE[0]))
    ds = open_dataset(root)
    assert ds.patient_ids == ["PAT-A", "PAT-B"] and ds.has_masks
    for pid, kind in (("PAT-A", "SEG"), ("PAT-B", "RTSTRUCT")):
        volume = ds[pid]
        assert volume.patient_id == pid and volume.meta["label_kind"] == kind
        np.testing.assert_array_equal(volume.mask, (volume.image > 0).astype(np.uint8))
        assert str(root / ("zz-second" if kind == "SEG" else "study-PAT-B")) in volume.meta["files"][0]


def test_study_without_labels_is_skipped_in_a_labelled_folder(tmp_path, make_rtstruct):
    root = tmp_path / "cohort"
    _study(root, make_rtstruct, "PAT-B")
    write_dicom_series(_volume("PAT-C"), root / "unlabelled")
    with pytest.warns(DataWarning, match=r"patient 'PAT-C' has no RTSTRUCT or SEG; its 1 CT series skipped"):
        ds = open_dataset(root)
    assert ds.patient_ids == ["PAT-B"]


def test_label_without_its_ct_series_is_an_error(tmp_path, make_rtstruct):
    study = _study(tmp_path, make_rtstruct)
    shutil.rmtree(study / "ct")
    write_dicom_series(_volume(n_slices=5), study / "other", uid_seed="other")
    with pytest.raises(DataError, match=r"rtstruct\.dcm: this RTSTRUCT is drawn on CT series .* which is not in"):
        open_dataset(study)


# ---------------------------------------------------------------------- DICOM as scanners write it
@pytest.mark.parametrize("syntax", ["RLELossless", "JPEGLSLossless", "JPEG2000Lossless"])
def test_compressed_transfer_syntaxes_decode_to_the_same_pixels(tmp_path, syntax):
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    # 32+ pixels a side: OpenJPEG's default five wavelet levels need them
    image = np.random.default_rng(1).integers(-1024, 1500, (3, 32, 40)).astype(np.float32)
    volume = CTVolume(image, None, SPACING, "PAT-A")
    write_dicom_series(volume, plain)
    packed.mkdir()
    uid = getattr(pydicom.uid, syntax)
    for path in _files(plain):
        ds = pydicom.dcmread(path)
        try:
            ds.compress(uid)
        except Exception as exc:  # no encoder installed for this syntax: nothing to test here
            pytest.skip(f"no {syntax} encoder: {exc}")
        ds.save_as(packed / path.name, enforce_file_format=True)
    assert pydicom.dcmread(_files(packed)[0]).file_meta.TransferSyntaxUID == uid
    (want,) = read_dicom_series(plain)
    (got,) = read_dicom_series(packed)
    np.testing.assert_array_equal(got.image, want.image)
    np.testing.assert_array_equal(got.image, volume.image)
    assert got.meta["transfer_syntax"] == uid


def _tilted_affine(degrees: float) -> np.ndarray:
    """An LPS affine whose slice plane is rotated ``degrees`` about the patient's x axis."""
    t = np.deg2rad(degrees)
    row, col = np.array([1.0, 0, 0]), np.array([0.0, np.cos(t), np.sin(t)])
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = row * SPACING[2], col * SPACING[1], np.cross(row, col) * SPACING[0]
    return affine


def test_study_with_several_series_reads_the_axial_one_with_most_slices(tmp_path):
    study = tmp_path / "study"
    write_dicom_series(_volume(n_slices=4), study / "a", uid_seed="s", series_number=1)
    write_dicom_series(_volume(n_slices=6), study / "b", uid_seed="s", series_number=2)
    write_dicom_series(_volume(n_slices=8, affine=_tilted_affine(20)), study / "c", uid_seed="s", series_number=3)
    uids = {name: pydicom.dcmread(_files(study / name)[0]).SeriesInstanceUID for name in "abc"}
    assert len(set(uids.values())) == 3
    with pytest.warns(DataWarning, match=rf"3 CT series; read {uids['b']} \(6 slices.*not axial: 20\.0 degrees"):
        ds = open_dataset(study)
    assert ds.patient_ids == ["PAT-A"] and not ds.has_masks
    assert ds["PAT-A"].n_slices == 6 and ds["PAT-A"].meta["series_uid"] == uids["b"]
    chosen = open_dataset(study, series_uid=uids["a"])
    assert chosen["PAT-A"].n_slices == 4 and chosen["PAT-A"].meta["series_uid"] == uids["a"]
    with pytest.raises(DataError, match=r"no series with SeriesInstanceUID '1\.2\.3'; found: .*6 slices"):
        open_dataset(study, series_uid="1.2.3")
    with pytest.raises(DataError, match=r"20\.0 degrees away from axial.*gantry tilt"):
        open_dataset(study, series_uid=uids["c"])["PAT-A"]


def test_label_picks_its_own_series_among_several(tmp_path, make_rtstruct):
    study = _study(tmp_path, make_rtstruct, series_number=1)  # 6 slices, referenced by the RTSTRUCT
    longer = _volume(n_slices=9)
    longer.image[:] = -500
    write_dicom_series(longer, study / "longer", uid_seed="PAT-A", series_number=2)
    volume = open_dataset(study)["PAT-A"]
    assert volume.n_slices == 6
    np.testing.assert_array_equal(volume.mask, (volume.image > 0).astype(np.uint8))


def _edit(folder: Path, index: int, change) -> None:
    path = _files(folder)[index]
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def test_small_slice_spacing_jitter_is_tolerated_with_a_warning(tmp_path):
    folder = tmp_path / "ct"
    write_dicom_series(_volume(), folder)
    jitter = 0.05 * SPACING[0]

    def move(ds):
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + jitter]

    _edit(folder, 3, move)
    with pytest.warns(DataWarning, match=r"slice spacing of series .* varies by up to 0\.125 mm \(5\.0 %"):
        (volume,) = read_dicom_series(folder)
    assert volume.spacing[0] == pytest.approx(SPACING[0])  # the mean gap: the ends did not move
    np.testing.assert_array_equal(volume.image, _volume().image)


def test_larger_spacing_irregularity_is_still_an_error(tmp_path):
    folder = tmp_path / "ct"
    write_dicom_series(_volume(), folder)
    _edit(folder, 3, lambda ds: setattr(ds, "ImagePositionPatient",
                                         [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 0.4]))
    with pytest.raises(DataError, match="uneven slice spacing"):
        read_dicom_series(folder)


def test_gantry_tilt_is_refused(tmp_path):
    # a scanner's gantry tilt: tilted image plane, slices stepped along the table (z)
    folder = tmp_path / "tilted"
    write_dicom_series(_volume(), folder)
    t = np.deg2rad(15)
    for k in range(SHAPE[0]):
        _edit(folder, k, lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, float(np.cos(t)), float(np.sin(t))]))
    with pytest.raises(DataError, match=r"CT00001\.dcm: ImageOrientationPatient .* 15\.0 degrees away from axial.*gantry tilt"):
        read_dicom_series(folder)
    # axial planes, but each slice shifted in-plane: a sheared stack
    sheared = tmp_path / "sheared"
    write_dicom_series(_volume(), sheared)
    for k in range(SHAPE[0]):
        def shift(ds, k=k):
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y + k * SPACING[0] * np.tan(t), z]
        _edit(sheared, k, shift)
    with pytest.raises(DataError, match=r"CT00006\.dcm: slice position moves 3\.35 mm in the image plane.*gantry tilt"):
        read_dicom_series(sheared)
    with pytest.raises(DataError, match="gantry tilt"):
        open_dataset(sheared)["PAT-A"]


def test_roi_and_series_flags_are_refused_for_other_formats(make_npz, tmp_path):
    path = make_npz(tmp_path / "d.npz")
    with pytest.raises(DataError, match=r"an ROI name \(--roi\) applies to DICOM folders only; this is a 'npz' dataset"):
        open_dataset(path, roi="GTV")


def test_cli_flags_reach_the_training_config(tmp_path):
    from lungseg.cli import build_parser
    from lungseg.cli_options import config_from_args

    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--roi", "GTV-2", "--series-uid", "1.2"])
    config = config_from_args(args)
    assert (config.roi, config.series_uid) == ("GTV-2", "1.2")
    assert "--roi NAME" in build_parser()._subparsers._group_actions[0].choices["evaluate"].format_help()


# ------------------------------------------------------------------------------------------ real CT
def _realct() -> Path:
    root = Path(os.environ.get("LUNGSEG_REALCT") or Path(__file__).resolve().parents[1].parent / "shared" / "realct")
    case = root / "nsclc-radiomics-lung1-001"
    if not (case / "rtstruct" / "rtstruct.dcm").is_file():
        pytest.skip(f"real CT not found at {case} (set LUNGSEG_REALCT to the folder of the TCIA test cases)")
    return case


@pytest.mark.slow
def test_real_nsclc_rtstruct_matches_the_reference_mask_in_the_right_voxels():
    import nibabel as nib

    from lungseg.data.nifti import lps_to_ras

    case = _realct()
    with pytest.warns(DataWarning, match=r"gtv_reference\.nii\.gz: not a DICOM file, skipped"):
        ds = open_dataset(case)
    assert ds.patient_ids == ["LUNG1-001"] and ds.has_masks
    volume = ds["LUNG1-001"]
    assert volume.meta["roi"] == "GTV-1" and volume.image.shape == (134, 512, 512)
    reference = nib.load(case / "gtv_reference.nii.gz")
    # the same grid: the reference's affine (RAS) is the CT geometry, voxel for voxel
    np.testing.assert_allclose(lps_to_ras(volume.affine), reference.affine, atol=1e-3)
    ref = np.asarray(reference.dataobj).transpose(2, 1, 0) > 0  # NIfTI (x, y, z) -> (Z, H, W)
    mask = volume.mask.astype(bool)
    dice = 2 * (mask & ref).sum() / (mask.sum() + ref.sum())
    assert dice >= 0.97, dice
    np.testing.assert_array_equal(np.flatnonzero(mask.any(axis=(1, 2))), np.flatnonzero(ref.any(axis=(1, 2))))


def test_another_roi_gives_another_cache_token(tmp_path, make_rtstruct):
    study = _study(tmp_path, make_rtstruct)
    tokens = {roi: open_dataset(study, roi=roi).source_token("PAT-A") for roi in (None, "GTV-1", "Lung-Left")}
    assert len(set(tokens.values())) == 3
    assert open_dataset(study, roi="Lung-Left").source_token("PAT-A") == tokens["Lung-Left"]


@pytest.mark.slow
def test_training_reads_rtstruct_studies_with_the_roi_of_the_config(tmp_path, make_rtstruct, tiny):
    from lungseg.config import TrainConfig
    from lungseg.rundir import RunDir
    from lungseg.training import train

    root = tmp_path / "cohort"
    for pid in ("P1", "P2", "P3", "P4"):
        _study(root, make_rtstruct, pid)
    config = TrainConfig(data=str(root), roi="gtv-1", epochs=1, patch_size=None, **tiny)
    train(config, tmp_path / "run", progress=False)
    saved = RunDir(tmp_path / "run")
    assert saved.read_config().roi == "gtv-1"
    assert sorted(saved.read_split()["train"] + saved.read_split()["val"]) == ["P1", "P2", "P3", "P4"]
    with pytest.raises(DataError, match="no ROI named 'Heart'"):
        train(TrainConfig(data=str(root), roi="Heart", epochs=1, **tiny), tmp_path / "run2", progress=False)
    # evaluate --roi: the masks of another ROI are what the run is scored against
    from lungseg.cli import main

    scores = {}
    for roi in ("GTV-1", "Lung-Left"):
        out = tmp_path / f"metrics-{roi}.json"
        assert main(["evaluate", "--run", str(tmp_path / "run"), "--data", str(root), "--roi", roi, "--split", "all",
                     "--out", str(out), "--n-boot", "0", "--no-robustness", "--device", "cpu", "--quiet"]) == 0
        scores[roi] = json.loads(out.read_text())
    assert scores["GTV-1"]["n_patients"] == 4
    assert scores["GTV-1"]["pooled"] != scores["Lung-Left"]["pooled"]
