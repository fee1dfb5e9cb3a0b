"""Writing and reading CT DICOM series (lungseg.data.dicom), including every bad input."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from lungseg.data.dicom import read_dicom_series
from lungseg.data.dicom_write import write_dicom_series
from lungseg.data.nifti import affine_from_geometry
from lungseg.data.volume import CTVolume
from lungseg.errors import DataError, DataWarning

SHAPE = (6, 12, 16)  # non-square in-plane so a row/column swap cannot pass
SPACING = (2.5, 0.9, 0.7)


def _volume(seed: int = 0, patient_id: str = "pat-1", affine: np.ndarray | None = None) -> CTVolume:
    rng = np.random.default_rng(seed)
    image = rng.integers(-1024, 2500, SHAPE).astype(np.float32)
    meta = {"affine_space": "LPS"} if affine is not None else {}
    return CTVolume(image, None, SPACING, patient_id, affine=affine, meta=meta)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def series(tmp_path) -> tuple[CTVolume, Path]:
    volume = _volume()
    folder = tmp_path / "series"
    write_dicom_series(volume, folder, uid_seed="fixture")
    return volume, folder


def test_round_trip_is_exact(series):
    volume, folder = series
    before = _snapshot(folder)
    (got,) = read_dicom_series(folder)
    np.testing.assert_array_equal(got.image, volume.image)
    assert got.image.dtype == np.float32 and got.mask is None
    assert got.spacing == pytest.approx(SPACING, abs=1e-9)
    assert got.patient_id == "pat-1"
    assert got.meta["affine_space"] == "LPS"
    np.testing.assert_allclose(got.affine, affine_from_geometry(
        (-(SHAPE[2] - 1) / 2 * 0.7, -(SHAPE[1] - 1) / 2 * 0.9, 0.0), (1, 0, 0, 0, 1, 0), SPACING), atol=1e-6)
    assert _snapshot(folder) == before  # reading never writes into the input folder


def test_oblique_geometry_and_non_integral_values_round_trip(tmp_path):
    angle = np.deg2rad(15)
    iop = (np.cos(angle), np.sin(angle), 0.0, -np.sin(angle), np.cos(angle), 0.0)
    affine = affine_from_geometry((-60.25, -40.5, 112.0), iop, SPACING)
    volume = _volume(1, affine=affine)
    volume.image = volume.image + 0.3
    write_dicom_series(volume, tmp_path / "s")
    (got,) = read_dicom_series(tmp_path / "s")
    np.testing.assert_allclose(got.affine, affine, atol=1e-5)
    ds = pydicom.dcmread(sorted((tmp_path / "s").glob("*.dcm"))[0])
    slope = float(ds.RescaleSlope)
    assert slope < 1
    assert np.max(np.abs(got.image - volume.image)) <= slope / 2 + 1e-3


def test_header_is_a_valid_ct_image_storage_series(series):
    volume, folder = series
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == SHAPE[0]
    headers = [pydicom.dcmread(f) for f in files]
    ds = headers[0]
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage == ds.SOPClassUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.Modality == "CT"
    assert (ds.Rows, ds.Columns) == SHAPE[1:]
    assert [float(v) for v in ds.PixelSpacing] == [0.9, 0.7]
    assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == 2.5
    assert (ds.BitsAllocated, ds.PixelRepresentation) == (16, 1)
    assert ds.pixel_array.dtype == np.int16
    np.testing.assert_array_equal(
        ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept), volume.image[0])
    assert [int(h.InstanceNumber) for h in headers] == list(range(1, SHAPE[0] + 1))
    assert len({h.SOPInstanceUID for h in headers}) == SHAPE[0]
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientID"):
        assert len({str(h.get(key)) for h in headers}) == 1
    for h in headers:
        for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            uid = pydicom.uid.UID(str(h.get(key)))
            assert uid.is_valid, (key, uid)


def test_uids_are_deterministic_from_the_seed(tmp_path):
    volume = _volume()
    write_dicom_series(volume, tmp_path / "a", uid_seed="s1")
    write_dicom_series(volume, tmp_path / "b", uid_seed="s1")
    write_dicom_series(volume, tmp_path / "c", uid_seed="s2")
    a, b, c = (pydicom.dcmread(tmp_path / d / "CT00001.dcm") for d in "abc")
    assert a.SeriesInstanceUID == b.SeriesInstanceUID and a.SOPInstanceUID == b.SOPInstanceUID
    assert a.SeriesInstanceUID != c.SeriesInstanceUID
    assert (tmp_path / "a" / "CT00003.dcm").read_bytes() == (tmp_path / "b" / "CT00003.dcm").read_bytes()


def test_other_tools_read_the_geometry(series):
    """nibabel's independent DICOM reader agrees on pixels and on the voxel-to-patient map."""
    volume, folder = series
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nibabel.nicom import dicomwrappers
        wrapper = dicomwrappers.wrapper_from_file(str(folder / "CT00002.dcm"))
        data = wrapper.get_data()
    (got,) = read_dicom_series(folder)
    np.testing.assert_array_equal(data, volume.image[1])
    # nibabel indexes (row, column); our affines index (column, row, slice).
    np.testing.assert_allclose(wrapper.affine[:3, 0], got.affine[:3, 1], atol=1e-6)
    np.testing.assert_allclose(wrapper.affine[:3, 1], got.affine[:3, 0], atol=1e-6)
    second_slice_origin = (got.affine @ np.array([0.0, 0.0, 1.0, 1.0]))[:3]
    np.testing.assert_allclose(wrapper.affine[:3, 3], second_slice_origin, atol=1e-6)


def test_slices_are_sorted_by_position_not_by_file_name(series, tmp_path):
    volume, folder = series
    files = sorted(folder.glob("*.dcm"))
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for n, f in enumerate(reversed(files)):
        (shuffled / f"img_{n:02d}.dcm").write_bytes(f.read_bytes())
    (got,) = read_dicom_series(shuffled)
    np.testing.assert_array_equal(got.image, volume.image)


def test_two_series_in_one_folder_are_separated(tmp_path):
    v1, v2 = _volume(1, "a"), _volume(2, "b")
    write_dicom_series(v1, tmp_path / "mixed" / "one", series_number=1)
    write_dicom_series(v2, tmp_path / "mixed" / "two", series_number=2)
    got = read_dicom_series(tmp_path / "mixed")
    assert len(got) == 2
    np.testing.assert_array_equal(got[0].image, v1.image)
    np.testing.assert_array_equal(got[1].image, v2.image)
    assert got[0].meta["series_uid"] != got[1].meta["series_uid"]


# ---------------------------------------------------------------- bad input


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_dicom_series(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        read_dicom_series(tmp_path / "empty")


def test_corrupt_file_is_an_error_naming_it(series):
    _, folder = series
    (folder / "CT00004.dcm").write_bytes(os.urandom(3000))
    with pytest.raises(DataError, match="CT00004.dcm.*corrupt"):
        read_dicom_series(folder)


def test_truncated_file_is_an_error_naming_it(series):
    _, folder = series
    path = folder / "CT00003.dcm"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(DataError, match="CT00003.dcm.*truncated"):
        read_dicom_series(folder)


def _text_report(path: Path) -> None:
    """A DICOM file without pixel data (a Basic Text SR)."""
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID
    sr.Modality = "SR"
    sr.SeriesInstanceUID = generate_uid()
    sr.save_as(path, enforce_file_format=True)


def test_non_dicom_and_non_image_files_are_skipped_with_a_warning(series):
    from lungseg.data.dicom import scan_dicom_folder

    volume, folder = series
    (folder / "README.txt").write_text("notes from the scanner operator")
    _text_report(folder / "report.dcm")
    with pytest.warns(DataWarning) as record:
        (got,) = read_dicom_series(folder)
    messages = " ".join(str(w.message) for w in record)
    assert "README.txt: not a DICOM file, skipped" in messages and "report.dcm: DICOM file without pixel data" in messages
    np.testing.assert_array_equal(got.image, volume.image)
    with pytest.warns(DataWarning) as record:
        index = scan_dicom_folder(folder)
    assert len(index.series) == 1 and len(record) == 2
    assert {Path(str(w.message).split(":")[0]).name for w in record} == {"README.txt", "report.dcm"}


def test_a_corrupt_file_after_skipped_ones_still_says_what_was_skipped(series):
    _, folder = series
    (folder / "A-notes.txt").write_text("read first")
    (folder / "CT00004.dcm").write_bytes(os.urandom(3000))  # corrupt: the scan stops at it
    with pytest.warns(DataWarning, match="A-notes.txt: not a DICOM file, skipped"):
        with pytest.raises(DataError, match="CT00004.dcm.*corrupt"):
            read_dicom_series(folder)


def _edit_header(path: Path, change: Callable[[Dataset], object]) -> None:
    """Rewrite one DICOM file after ``change`` edited its dataset in place."""
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def _set_modality(folder: Path, modality: str) -> None:
    for f in folder.glob("*.dcm"):
        _edit_header(f, lambda ds: setattr(ds, "Modality", modality))


def test_non_ct_series_is_skipped_when_a_ct_series_exists(tmp_path):
    write_dicom_series(_volume(1), tmp_path / "study" / "ct")
    write_dicom_series(_volume(2), tmp_path / "study" / "mr", series_number=2)
    _set_modality(tmp_path / "study" / "mr", "MR")
    with pytest.warns(DataWarning, match="'MR'"):
        got = read_dicom_series(tmp_path / "study")
    assert len(got) == 1 and got[0].meta["modality"] == "CT"


def test_only_non_ct_series_is_an_error(series):
    _, folder = series
    _set_modality(folder, "MR")
    with pytest.raises(DataError, match="no CT series.*MR"):
        read_dicom_series(folder)


def test_missing_slice_is_an_error_naming_the_gap(series):
    _, folder = series
    (folder / "CT00003.dcm").unlink()
    with pytest.raises(DataError, match=r"missing slice.*CT00002.dcm.*CT00004.dcm"):
        read_dicom_series(folder)


def _shift_z(dz: float) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + dz]

    return change


def _shrink_to_8x8(ds: Dataset) -> None:
    ds.Rows, ds.Columns = 8, 8
    ds.PixelData = np.zeros((8, 8), "<i2").tobytes()


@pytest.mark.parametrize(
    ("file", "change", "match"),
    [
        pytest.param("CT00004.dcm", _shift_z(0.8), "uneven slice spacing", id="uneven-spacing"),
        pytest.param("CT00004.dcm", _shift_z(-2.5), "duplicate", id="duplicate-position"),
        pytest.param("CT00005.dcm", _shrink_to_8x8, "CT00005.dcm.*inconsistent slice shapes", id="inconsistent-shape"),
        pytest.param("CT00002.dcm", lambda ds: delattr(ds, "ImagePositionPatient"),
                     "CT00002.dcm.*ImagePositionPatient", id="missing-position"),
    ],
)
def test_inconsistent_headers_are_errors(series, file: str, change: Callable[[Dataset], object], match: str):
    _, folder = series
    _edit_header(folder / file, change)
    with pytest.raises(DataError, match=match):
        read_dicom_series(folder)


def test_writer_refuses_unit_volumes_and_occupied_folders(series, tmp_path):
    volume, folder = series
    unit = CTVolume(np.zeros(SHAPE, np.float32), None, SPACING, "u", intensity="unit")
    with pytest.raises(ValueError, match="HU"):
        write_dicom_series(unit, tmp_path / "unit")
    with pytest.raises(ValueError, match="already holds"):
        write_dicom_series(volume, folder)


def _set_transfer_syntax(uid: str) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = uid

    return change


@pytest.mark.parametrize(
    ("change", "match"),
    [
        pytest.param(lambda ds: setattr(ds, "PixelSpacing", "0.8"), r"PixelSpacing is '0\.8'; expected two positive",
                     id="one-pixel-spacing"),  # was TypeError: 'DSfloat' object is not iterable
        pytest.param(lambda ds: setattr(ds, "PixelSpacing", [0, 0.8]),  # was a volume with spacing 0
                     r"PixelSpacing is \[0\.0, 0\.8\]; expected two positive", id="zero-pixel-spacing"),
        pytest.param(lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1]),
                     r"ImageOrientationPatient is .*; expected six finite direction cosines",
                     id="five-direction-cosines"),  # was ValueError from numpy.cross
        pytest.param(lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 1, 0, 0]),
                     r"ImageOrientationPatient .*expected two orthogonal unit vectors", id="parallel-axes"),
        pytest.param(lambda ds: setattr(ds, "ImagePositionPatient", ["nan", 0, 0]),
                     r"ImagePositionPatient is .*nan.*; expected three finite numbers", id="nan-position"),
        pytest.param(lambda ds: setattr(ds, "RescaleSlope", "nan"), r"RescaleSlope is 'nan'; expected a finite",
                     id="nan-rescale-slope"),  # was a volume of NaN
        pytest.param(lambda ds: setattr(ds, "RescaleSlope", "0"), r"RescaleSlope is 0; expected a finite non-zero",
                     id="zero-rescale-slope"),
        pytest.param(lambda ds: setattr(ds, "RescaleIntercept", "nan"), r"RescaleIntercept is 'nan'; expected a finite",
                     id="nan-rescale-intercept"),
        pytest.param(lambda ds: setattr(ds, "RescaleSlope", "1e30"), r"RescaleSlope is 1e\+30; expected a finite non-zero"
                     r" number of magnitude at most", id="huge-rescale-slope"),  # was accepted: HU of 1e30
        pytest.param(lambda ds: setattr(ds, "RescaleIntercept", "1e20"), r"RescaleSlope/RescaleIntercept give values"
                     r" beyond", id="huge-rescale-intercept"),  # was accepted
        pytest.param(lambda ds: delattr(ds, "Rows"), r"missing Rows", id="missing-rows"),  # was AttributeError
        pytest.param(_set_transfer_syntax("1.2.3.4"), r"unknown transfer syntax '1\.2\.3\.4'",
                     id="unknown-transfer-syntax"),  # was ValueError: UID is not a transfer syntax
    ],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_damaged_header_values_are_errors_naming_the_file(series, change: Callable[[Dataset], object], match: str):
    """Header values the fuzzer (tests/test_fuzz.py) found reaching numpy or pydicom unchecked."""
    _, folder = series
    _edit_header(folder / "CT00003.dcm", change)
    with pytest.raises(DataError, match=r"CT00003\.dcm: " + match):
        read_dicom_series(folder)


def test_stored_values_become_hu_with_the_slice_own_rescale(series):
    """HU = stored * RescaleSlope + RescaleIntercept, per slice, in float32 (the stored values are int16)."""
    volume, folder = series
    stored = pydicom.dcmread(folder / "CT00002.dcm").pixel_array.astype(np.float64)
    _edit_header(folder / "CT00002.dcm", lambda ds: (setattr(ds, "RescaleSlope", "0.5"),
                                                     setattr(ds, "RescaleIntercept", "-1000")))
    (got,) = read_dicom_series(folder)
    assert got.image.dtype == np.float32
    np.testing.assert_allclose(got.image[1], stored * 0.5 - 1000.0)
    np.testing.assert_array_equal(got.image[0], volume.image[0])  # the other slices keep their own rescale


def test_undecodable_element_is_an_error_naming_the_file(series):
    """pydicom decodes values lazily: a Rows element of 3 bytes used to raise BytesLengthException."""
    _, folder = series
    path = folder / "CT00002.dcm"
    data = path.read_bytes()
    rows = b"\x28\x00\x10\x00US\x02\x00"  # (0028,0010) US, length 2
    at = data.index(rows)
    path.write_bytes(data[:at] + b"\x28\x00\x10\x00US\x03\x00\x0c\x00\x00" + data[at + len(rows) + 2 :])
    with pytest.raises(DataError, match=r"CT00002\.dcm: unreadable Rows element"):
        read_dicom_series(folder)


def test_no_dicom_files_message_names_what_was_found(tmp_path):
    """One error naming the files, and no warning per file before it saying the same (a folder that holds a
    series still warns about the files it skips: tests/test_dicom_labels.py)."""
    import warnings

    from lungseg.data.dicom import scan_dicom_folder

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here")
    for read in (read_dicom_series, scan_dicom_folder):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning would fail the test before the error
            with pytest.raises(DataError, match=r"no DICOM image files found among 1 file\(s\) \(notes\.txt\); expected"):
                read(folder)
    # a DICOM file that is no image (a report, an RT Structure Set alone): the error says what it is
    _text_report(folder / "report.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=r"among 2 file\(s\) \(notes\.txt, report\.dcm\); report\.dcm: DICOM file"
                                            r" without pixel data \(SOP class .*\); expected"):
            read_dicom_series(folder)
