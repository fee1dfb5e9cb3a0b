"""Reading and writing CT DICOM series (pydicom).

Geometry follows the convention in :mod:`lungseg.data.nifti`: volumes are ``(Z, H, W)`` in memory,
their affines map ``(j, i, k)`` to LPS millimetres (``meta["affine_space"] == "LPS"``).
"""

from __future__ import annotations

import hashlib
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)
from tqdm.auto import tqdm

from lungseg.data.nifti import affine_from_geometry, volume_lps_affine
from lungseg.data.volume import CTVolume
from lungseg.errors import DataError, describe

__all__ = [
    "read_dicom_series",
    "write_dicom_series",
    "is_dicom_file",
    "DataWarning",
    "SeriesInfo",
    "LabelFile",
    "DicomIndex",
    "scan_dicom_folder",
    "read_series",
    "choose_series",
    "RTSTRUCT_SOP_CLASS",
    "SEG_SOP_CLASS",
    "tilt_degrees",
]

_DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
# Relative tolerance on slice gaps: scanners round positions to ~0.01 mm.
_GAP_RTOL = 0.01
_GAP_ATOL = 0.01
# Gaps that differ from the median by more than _GAP_RTOL but at most _JITTER_RTOL of it are scanner
# jitter: tolerated with a DataWarning (the mean gap is used). Larger differences are errors.
_JITTER_RTOL = 0.1
# A slice plane more than this many degrees away from axial (slice normal vs. the patient's z axis) is
# refused: lungseg segments axial slices, and a gantry-tilted series needs resampling first.
_TILT_TOL_DEG = 1.0
# Slices whose positions move in-plane by more than this fraction of a pixel along the stack are a
# sheared (gantry-tilt) acquisition: the voxel grid is not a box, refused.
_SHEAR_TOL_PX = 0.25


class DataWarning(UserWarning):
    """A standard repair was applied to input data (e.g. a non-image file was skipped)."""


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) that parses back to ``value`` as closely as fits."""
    for digits in range(12, 4, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.4g}"


def _rescale_for(image: np.ndarray) -> tuple[float, float]:
    """``(slope, intercept)`` so that int16 stored values hold ``image`` (exactly when integral)."""
    lo, hi = float(image.min()), float(image.max())
    integral = bool(np.all(np.round(image) == image))
    if integral and lo - (-1024.0) >= -32768 and hi - (-1024.0) <= 32767:
        return 1.0, -1024.0
    intercept = (lo + hi) / 2.0
    slope = (hi - lo) / 65000.0 if hi > lo else 1.0
    return slope, intercept


def write_dicom_series(
    volume: CTVolume,
    folder: str | Path,
    *,
    uid_seed: str | None = None,
    patient_name: str | None = None,
    series_description: str = "lungseg CT",
    series_number: int = 1,
    slice_thickness: float | None = None,
    progress: bool = False,
) -> list[Path]:
    """Write ``volume`` as one CT Image Storage series, one file per slice.

    Stored values are int16 with RescaleSlope/RescaleIntercept chosen so that integral HU images
    round-trip exactly (slope 1, intercept -1024); other images are quantised to 65 000 levels.
    Geometry comes from the volume's affine (see :func:`lungseg.data.nifti.volume_lps_affine`).
    The body is long because half of it is the series header, one assignment per DICOM attribute,
    kept together so that the header reads as the list it is.

    Args:
        volume: ``(Z, H, W)`` HU volume (``intensity == "hu"``).
        folder: output folder, created if needed; it must not already hold ``.dcm`` files.
        uid_seed: entropy for the Study/Series/SOP/FrameOfReference UIDs; default a hash of the
            image and patient id, so the same volume always gets the same UIDs.
        patient_name: PatientName; default the patient id.
        series_description: SeriesDescription.
        series_number: SeriesNumber.
        slice_thickness: SliceThickness in mm; default ``meta["slice_thickness"]`` or the slice
            spacing.
        progress: show a tqdm bar.

    Returns:
        The files written, in slice order.
    """
    if volume.intensity != "hu":
        raise ValueError(f"write_dicom_series needs a HU volume, got intensity {volume.intensity!r}")
    folder = Path(folder)
    if folder.exists() and any(folder.glob("*.dcm")):
        raise ValueError(f"folder {str(folder)!r} already holds .dcm files; write each series to an empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    image = np.asarray(volume.image)
    n_z, rows, cols = image.shape
    lps = volume_lps_affine(volume)
    dz, dy, dx = (float(s) for s in volume.spacing)
    row_dir = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    col_dir = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    normal = lps[:3, 2] / np.linalg.norm(lps[:3, 2])
    if uid_seed is None:
        uid_seed = hashlib.sha256(image.tobytes() + volume.patient_id.encode()).hexdigest()
    uid = lambda *parts: generate_uid(entropy_srcs=["lungseg", uid_seed, *map(str, parts)])  # noqa: E731
    study_uid, series_uid, frame_uid = uid("study"), uid("series", series_number), uid("frame")
    slope, intercept = _rescale_for(image)
    stored = np.round((image.astype(np.float64) - intercept) / slope)
    stored = np.clip(stored, -32768, 32767).astype("<i2")
    thickness = slice_thickness if slice_thickness is not None else volume.meta.get("slice_thickness", dz)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20000101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = "lungseg"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = series_description
    ds.PatientName = patient_name or volume.patient_id
    ds.PatientID = volume.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.SliceThickness = _ds(float(thickness))
    ds.SpacingBetweenSlices = _ds(dz)
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = int(series_number)
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = [_ds(dy), _ds(dx)]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    ds.WindowCenter, ds.WindowWidth = "-600", "1500"
    ds.RescaleIntercept = _ds(intercept)
    ds.RescaleSlope = _ds(slope)
    ds.RescaleType = "HU"

    paths = []
    for k in tqdm(range(n_z), desc=f"DICOM {volume.patient_id}", disable=not progress, leave=False):
        position = lps[:3, :3] @ np.array([0.0, 0.0, k]) + lps[:3, 3]
        sop_uid = uid("sop", series_number, k)
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(float(position @ normal))
        ds.PixelData = stored[k].tobytes()
        path = folder / f"CT{k + 1:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _folder_files(folder: Path) -> list[Path]:
    """The candidate DICOM files of ``folder``; raises :class:`DataError` when it is missing or empty."""
    if not folder.is_dir():
        raise DataError(f"{folder}: DICOM folder not found (expected a folder of .dcm files)")
    files = _candidate_files(folder)
    if not files:
        raise DataError(f"{folder}: empty folder; expected the .dcm files of a CT series")
    return files


def _candidate_files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    except OSError as err:
        raise DataError(f"{folder}: cannot list the folder ({describe(err)})") from None


def is_dicom_file(path: str | Path) -> bool:
    """Whether ``path`` claims to be DICOM: a ``.dcm``/``.dicom``/``.ima`` suffix or the ``DICM`` magic at byte 128.

    Such files must parse; other files in a series folder are skipped with a :class:`DataWarning`.
    """
    path = Path(path)
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


# -- header values ---------------------------------------------------------------------------------
# pydicom decodes element values lazily, on first access, and a damaged element can raise almost any
# exception then. Every value the reader uses is therefore read through these helpers, which turn
# that into a DataError naming the file and the element (or, for labels only, into a default).
def _value(ds: Dataset, keyword: str, path: Path) -> Any:
    try:
        return ds[keyword].value
    except Exception as exc:
        raise DataError(f"{path}: unreadable {keyword} element ({describe(exc)})") from None


def _numbers(ds: Dataset, keyword: str, path: Path, count: int, what: str) -> np.ndarray | None:
    """The ``count`` finite numbers of element ``keyword`` (``None`` when absent or empty); :class:`DataError`
    when it cannot be decoded or does not hold ``count`` finite numbers (``what`` says what was expected)."""
    if keyword not in ds:
        return None
    value = _value(ds, keyword, path)
    if value is None or value == "":
        return None
    values = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    try:
        if any(isinstance(v, (bytes, bytearray)) for v in values) or isinstance(value, (bytes, bytearray)):
            raise ValueError("binary value")
        numbers = np.array([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: {keyword} is {_shown(value)}; expected {what}") from None
    if numbers.shape != (count,) or not np.isfinite(numbers).all():
        raise DataError(f"{path}: {keyword} is {_shown(value)}; expected {what}")
    return numbers


def _integer(ds: Dataset, keyword: str, path: Path, default: int | None = None) -> int:
    """Element ``keyword`` as a non-negative integer; ``default`` when absent (``None``: required)."""
    if keyword not in ds or (default is not None and _value(ds, keyword, path) in (None, "")):
        if default is None:
            raise DataError(f"{path}: missing {keyword}; expected it in a DICOM image file")
        return default
    value = _value(ds, keyword, path)
    try:
        number = float(value)
        if not (np.isfinite(number) and number == int(number) and number >= 0):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: {keyword} is {_shown(value)}; expected a non-negative integer") from None
    return int(number)


def _text(ds: Dataset, keyword: str, default: str = "") -> str:
    """Element ``keyword`` as text for labels and sorting; ``default`` when absent or unreadable.

    Characters that are not printable (line breaks, NULs) become ``?``, so that a label quoted in an
    error message keeps it on one line.
    """
    try:
        value = ds.get(keyword, default)
        text = default if value is None else str(value).strip("\0 ")
    except Exception:
        return default
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _shown(value: Any) -> str:
    if value is None or value == "":
        return "empty"
    text = repr(value if not isinstance(value, pydicom.multival.MultiValue) else list(value))
    return text if len(text) <= 60 else text[:57] + "..."


class _Slice:
    """One image file of a series: its dataset and the header values the reader uses.

    The labels (series UID, modality, number) are read when the file is parsed; the geometry only by
    :meth:`read_geometry`, for the series that are read (a skipped non-CT series is never checked).
    """

    def __init__(self, path: Path, ds: Dataset) -> None:
        self.path, self.ds = path, ds
        self.series_uid = _text(ds, "SeriesInstanceUID") or "<no SeriesInstanceUID>"
        self.modality = _text(ds, "Modality", "unknown") or "unknown"
        try:
            self.series_number = int(float(_text(ds, "SeriesNumber", "0") or 0))
        except (ValueError, OverflowError):
            self.series_number = 0
        self.rows, self.cols = 0, 0
        self.position: np.ndarray | None = None
        self.orientation: np.ndarray | None = None
        self.spacing: np.ndarray | None = None

    def read_geometry(self) -> None:
        """Read and check Rows, Columns, ImagePositionPatient, ImageOrientationPatient and PixelSpacing."""
        ds, path = self.ds, self.path
        self.rows = _integer(ds, "Rows", path)
        self.cols = _integer(ds, "Columns", path)
        self.position = _numbers(ds, "ImagePositionPatient", path, 3, "three finite numbers (x, y, z mm)")
        self.orientation = _numbers(ds, "ImageOrientationPatient", path, 6, "six finite direction cosines")
        self.spacing = _numbers(ds, "PixelSpacing", path, 2, "two positive numbers (row, column mm)")
        if self.spacing is not None and not (self.spacing > 0).all():
            raise DataError(f"{path}: PixelSpacing is {self.spacing.tolist()}; expected two positive numbers (mm)")
        if self.orientation is not None:
            row, col = self.orientation[:3], self.orientation[3:]
            unit = abs(np.linalg.norm(row) - 1) < 1e-2 and abs(np.linalg.norm(col) - 1) < 1e-2
            if not (unit and abs(row @ col) < 1e-2):
                raise DataError(
                    f"{path}: ImageOrientationPatient is {self.orientation.tolist()}; expected two orthogonal unit"
                    " vectors (row and column direction cosines)"
                )


def _parse(path: Path, *, defer: bool = False) -> Dataset | None:
    """Parse one file (``defer``: leave long values in the file until used); ``None`` (with a warning)
    for a file that is not DICOM, :class:`DataError` for a file that claims to be DICOM but is corrupt."""
    try:
        return pydicom.dcmread(path, defer_size=_DEFER if defer else None)
    except InvalidDicomError:
        if is_dicom_file(path):
            raise DataError(f"{path}: corrupt DICOM file (no valid DICOM header)") from None
        warnings.warn(f"{path}: not a DICOM file, skipped", DataWarning, stacklevel=3)
        return None
    except MemoryError:
        raise DataError(f"{path}: corrupt DICOM file (an element declares a size too large to read)") from None
    except Exception as exc:  # truncated or damaged element data
        raise DataError(f"{path}: corrupt or truncated DICOM file ({describe(exc)})") from None


def _read_file(path: Path) -> _Slice | None:
    """Parse one file; ``None`` (with a warning) for files that are not DICOM images."""
    ds = _parse(path)
    if ds is None:
        return None
    if "PixelData" not in ds:
        warnings.warn(
            f"{path}: DICOM file without pixel data (SOP class {_text(ds, 'SOPClassUID', 'unknown')}), skipped",
            DataWarning,
            stacklevel=3,
        )
        return None
    return _Slice(path, ds)


def _pixels_hu(item: _Slice) -> np.ndarray:
    ds, path = item.ds, item.path
    rows, cols = item.rows, item.cols
    if rows == 0 or cols == 0:
        raise DataError(f"{path}: image of {rows}x{cols} pixels; expected a non-empty slice")
    bits = _integer(ds, "BitsAllocated", path)
    frames = _integer(ds, "NumberOfFrames", path, default=1)
    if frames != 1:
        raise DataError(f"{path}: multi-frame DICOM ({frames} frames) is not supported; expected one slice per file")
    samples = _integer(ds, "SamplesPerPixel", path, default=1)
    if samples != 1:
        raise DataError(f"{path}: expected a greyscale CT image, got SamplesPerPixel={samples}")
    syntax = None
    try:
        syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
        compressed = pydicom.uid.UID(str(syntax)).is_compressed
    except Exception:
        raise DataError(
            f"{path}: unknown transfer syntax {_shown(syntax)}; expected a DICOM transfer syntax UID"
        ) from None
    data = _value(ds, "PixelData", path)
    if not isinstance(data, (bytes, bytearray)):
        got = _shown(data) if data is None else type(data).__name__
        raise DataError(f"{path}: PixelData is {got}; expected binary pixel data")
    if not compressed:
        expected = rows * cols * bits // 8
        if len(data) < expected:
            raise DataError(
                f"{path}: truncated pixel data ({len(data)} bytes, expected {expected} for {rows}x{cols}x{bits} bit)"
            )
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise DataError(
            f"{path}: cannot decode pixel data (transfer syntax {_shown(syntax)}: {describe(exc)})"
        ) from None
    if pixels.shape != (rows, cols) or pixels.dtype.kind not in "biuf":
        raise DataError(
            f"{path}: pixel data decodes to {pixels.dtype} {pixels.shape}; expected {rows}x{cols} grey levels"
        )
    slope = _numbers(ds, "RescaleSlope", path, 1, "a finite non-zero number")
    intercept = _numbers(ds, "RescaleIntercept", path, 1, "a finite number")
    if slope is not None and slope[0] == 0:
        raise DataError(f"{path}: RescaleSlope is 0; expected a finite non-zero number")
    with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 become inf, refused below
        hu = (
            pixels.astype(np.float32) * np.float32(1.0 if slope is None else slope[0])
            + np.float32(0.0 if intercept is None else intercept[0])
        ).astype(np.float32)
    if not np.isfinite(hu).all():
        raise DataError(f"{path}: RescaleSlope/RescaleIntercept give values beyond float32; expected Hounsfield units")
    return hu


def _series_volume(uid: str, items: list[_Slice], folder: Path) -> CTVolume:
    """Sort one series' slices along the slice normal, check geometry, stack HU."""
    first = items[0]
    for item in items:
        item.read_geometry()
        for key, value in (("ImagePositionPatient", item.position), ("ImageOrientationPatient", item.orientation),
                           ("PixelSpacing", item.spacing)):
            if value is None:
                raise DataError(f"{item.path}: missing {key}; cannot place the slice in series {uid}")
    iop, spacing0, shape0 = first.orientation, first.spacing, (first.rows, first.cols)
    assert iop is not None and spacing0 is not None  # checked above
    for item in items[1:]:
        if (item.rows, item.cols) != shape0:
            raise DataError(
                f"{item.path}: slice is {item.rows}x{item.cols} but {first.path.name} is {shape0[0]}x{shape0[1]}"
                f" in series {uid}; inconsistent slice shapes"
            )
        if not np.allclose(item.orientation, iop, atol=1e-4):
            raise DataError(f"{item.path}: ImageOrientationPatient differs from {first.path.name} in series {uid}")
        if not np.allclose(item.spacing, spacing0, rtol=1e-4):
            raise DataError(f"{item.path}: PixelSpacing differs from {first.path.name} in series {uid}")
    normal = np.cross(iop[:3], iop[3:])
    tilt = tilt_degrees(iop)
    if tilt > _TILT_TOL_DEG:
        raise DataError(
            f"{first.path}: ImageOrientationPatient {np.round(iop, 4).tolist()} puts the slice plane {tilt:.1f} degrees"
            f" away from axial in series {uid} (gantry tilt or a non-axial reconstruction); lungseg reads axial"
            " series only: choose the axial series of the study, or resample this one to axial slices first"
            " (e.g. dcm2niix corrects gantry tilt)"
        )
    positions = np.array([item.position for item in items])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    items = [items[i] for i in order]
    positions, along = positions[order], along[order]
    offsets = positions - positions[0]
    in_plane = offsets - np.outer(offsets @ normal, normal)
    shift = float(np.max(np.linalg.norm(in_plane, axis=1))) if len(items) > 1 else 0.0
    if shift > _SHEAR_TOL_PX * float(min(spacing0)):
        i = int(np.argmax(np.linalg.norm(in_plane, axis=1)))
        raise DataError(
            f"{items[i].path}: slice position moves {shift:.2f} mm in the image plane relative to"
            f" {items[0].path.name} in series {uid}: the slices are stacked at a tilt to their own plane (gantry tilt);"
            " the voxels are not a box, so lungseg refuses the series; resample it first (e.g. dcm2niix corrects"
            " gantry tilt)"
        )
    gaps = np.diff(along)
    if len(gaps) and np.min(gaps) < _GAP_ATOL:
        i = int(np.argmin(gaps))
        raise DataError(
            f"{items[i + 1].path}: same slice position ({along[i]:.3f} mm) as {items[i].path.name} in series {uid};"
            " duplicate slices"
        )
    if len(gaps):
        step = float(np.median(gaps))
        deviation = np.abs(gaps - step)
        bad = np.flatnonzero(deviation > max(_GAP_ATOL, _JITTER_RTOL * step))
        if not len(bad) and float(deviation.max()) > max(_GAP_ATOL, _GAP_RTOL * step):
            i = int(np.argmax(deviation))
            warnings.warn(
                f"{folder}: slice spacing of series {uid} varies by up to {deviation.max():.3f} mm"
                f" ({100 * deviation.max() / step:.1f} % of the median {step:.3f} mm, e.g. {gaps[i]:.3f} mm between"
                f" {items[i].path.name} and {items[i + 1].path.name}); scanner jitter of up to"
                f" {100 * _JITTER_RTOL:.0f} % is tolerated and the mean spacing {float(np.mean(gaps)):.3f} mm is used",
                DataWarning,
                stacklevel=3,
            )
        if len(bad):
            i = int(bad[0])
            n_missing = gaps[i] / step - 1.0
            kind = (
                f"about {round(n_missing)} missing slice(s)"
                if n_missing > 0.5 and abs(n_missing - round(n_missing)) < 0.1
                else "uneven slice spacing"
            )
            raise DataError(
                f"{folder}: {kind} in series {uid}: gap of {gaps[i]:.3f} mm between {items[i].path.name}"
                f" (position {along[i]:.3f} mm) and {items[i + 1].path.name} (position {along[i + 1]:.3f} mm);"
                f" the other slices are {step:.3f} mm apart"
            )
        dz = round(float(np.mean(gaps)), 6)  # positions are stored to ~1e-6 mm; drop float noise
    else:
        dz = _positive(first.ds, "SpacingBetweenSlices") or _positive(first.ds, "SliceThickness") or 1.0
    image = np.stack([_pixels_hu(item) for item in items])
    dy, dx = float(spacing0[0]), float(spacing0[1])
    affine = affine_from_geometry(positions[0], iop, (dz, dy, dx))
    head = items[0].ds
    meta: dict[str, Any] = {
        "format": "dicom",
        "affine_space": "LPS",
        "series_uid": uid,
        "study_uid": _text(head, "StudyInstanceUID"),
        "series_description": _text(head, "SeriesDescription"),
        "modality": items[0].modality,
        "slice_thickness": _positive(head, "SliceThickness") or dz,
        "image_positions": positions.tolist(),
        "image_orientation": iop.tolist(),
        "frame_of_reference_uid": _text(head, "FrameOfReferenceUID"),
        "sop_instance_uids": [_text(item.ds, "SOPInstanceUID") for item in items],
        "transfer_syntax": _text(getattr(head, "file_meta", Dataset()), "TransferSyntaxUID"),
        "files": [str(item.path) for item in items],
    }
    patient_id = _text(head, "PatientID") or folder.name
    return CTVolume(
        image=image, mask=None, spacing=(dz, dy, dx), patient_id=patient_id,
        affine=affine, intensity="hu", source=str(folder), meta=meta,
    )


def tilt_degrees(orientation: np.ndarray | list[float]) -> float:
    """Angle in degrees between the slice normal of ImageOrientationPatient and the patient's z axis.

    0 for an axial series (whatever its in-plane rotation), 90 for sagittal or coronal ones; a gantry
    tilt of t degrees gives t.
    """
    iop = np.asarray(orientation, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])
    norm = float(np.linalg.norm(normal))
    if not np.isfinite(norm) or norm == 0:
        return 90.0
    return float(np.degrees(np.arccos(min(1.0, abs(normal[2]) / norm))))


def _positive(ds: Dataset, keyword: str) -> float | None:
    """An optional descriptive number (e.g. SliceThickness): its value if finite and positive, else ``None``."""
    try:
        value = float(_text(ds, keyword) or "nan")
    except (ValueError, OverflowError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def read_dicom_series(folder: str | Path, *, progress: bool = False) -> list[CTVolume]:
    """Read every CT series under ``folder`` (searched recursively), one volume per SeriesInstanceUID.

    Slices are sorted by ImagePositionPatient projected on the slice normal; intensities become HU
    with RescaleSlope/RescaleIntercept; spacing is ``(slice gap from positions, PixelSpacing)``.
    Standard repairs, each with a :class:`DataWarning`: files that are not DICOM, DICOM files
    without pixel data, and non-CT series when a CT series exists, are skipped; slice gaps that differ
    from their median by up to 10 % (scanner jitter) are accepted and the mean gap is used.
    Compressed transfer syntaxes are decoded by pydicom's plugins (pylibjpeg, pyjpegls). Nothing is
    written. To pick one series of several, see :func:`scan_dicom_folder` and :func:`choose_series`.

    Args:
        folder: a folder holding the ``.dcm`` files of one or more series.
        progress: show a tqdm bar while parsing files.

    Returns:
        ``CTVolume`` list (mask ``None``), sorted by SeriesNumber then SeriesInstanceUID; images are
        finite float32 HU, spacings finite and positive.

    Raises:
        DataError: missing/empty folder, corrupt or truncated files, unreadable or non-finite header
            values (geometry, pixel description, rescale), no CT series, missing or duplicate slices,
            uneven spacing beyond jitter, inconsistent slice shapes or orientation, gantry tilt (a slice
            plane more than 1 degree from axial, or slices shifted in-plane along the stack). The
            message names the file.
    """
    folder = Path(folder)
    files = _folder_files(folder)
    series: dict[str, list[_Slice]] = defaultdict(list)
    for path in tqdm(files, desc=f"reading {folder.name}", disable=not progress, leave=False):
        item = _read_file(path)
        if item is not None:
            series[item.series_uid].append(item)
    if not series:
        shown = ", ".join(str(p.relative_to(folder)) for p in files[:5]) + (", ..." if len(files) > 5 else "")
        raise DataError(
            f"{folder}: no DICOM image files found among {len(files)} file(s) ({shown});"
            " expected the .dcm files of a CT series"
        )
    ct = {uid: items for uid, items in series.items() if items[0].modality.upper() == "CT"}
    for uid, items in series.items():
        if uid not in ct and ct:
            warnings.warn(
                f"{items[0].path}: series {uid} has modality {items[0].modality!r}, not CT; its {len(items)} file(s)"
                " skipped",
                DataWarning,
                stacklevel=2,
            )
    if not ct:
        found = sorted({items[0].modality for items in series.values()})
        example = next(iter(series.values()))[0].path
        raise DataError(f"{folder}: no CT series (modalities found: {', '.join(found)}; e.g. {example})")
    volumes = [_series_volume(uid, items, folder) for uid, items in ct.items()]
    number = {uid: items[0].series_number for uid, items in ct.items()}
    volumes.sort(key=lambda v: (number[v.meta["series_uid"]], v.meta["series_uid"]))
    return volumes


# -- folders of studies: an index of series and label objects, read lazily ----------------------------
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_LABEL_KINDS = {RTSTRUCT_SOP_CLASS: "RTSTRUCT", SEG_SOP_CLASS: "SEG"}
# Values longer than this are not read while a folder is indexed (pixel data, contour points); pydicom
# reads them from the file when they are used.
_DEFER = "1 KB"


@dataclass
class SeriesInfo:
    """One image series found by :func:`scan_dicom_folder`: its labels and files, no pixels.

    Attributes:
        uid: SeriesInstanceUID.
        study_uid: StudyInstanceUID (``""`` when absent).
        patient_id: PatientID (the folder name when absent).
        modality: Modality (``"CT"``, ...).
        number: SeriesNumber (0 when absent).
        description: SeriesDescription.
        frame_uid: FrameOfReferenceUID.
        files: the series' files, sorted by path.
        tilt: angle in degrees of the slice plane from axial (:func:`tilt_degrees`) of the first file;
            ``None`` when its ImageOrientationPatient is missing or unreadable (reading it will say why).
    """

    uid: str
    study_uid: str
    patient_id: str
    modality: str
    number: int
    description: str
    frame_uid: str
    files: list[Path] = field(default_factory=list)
    tilt: float | None = None

    @property
    def n_slices(self) -> int:
        return len(self.files)

    def label(self) -> str:
        """``uid (N slices, "description")`` for messages."""
        text = f", {self.description!r}" if self.description else ""
        return f"{self.uid} ({self.n_slices} slices{text})"


@dataclass
class LabelFile:
    """An RT Structure Set or DICOM SEG found by :func:`scan_dicom_folder` (its header only).

    Attributes:
        path: the file.
        kind: ``"RTSTRUCT"`` or ``"SEG"``.
        study_uid: StudyInstanceUID.
        patient_id: PatientID.
        frame_uid: FrameOfReferenceUID (of the SEG, or the first referenced frame of an RTSTRUCT).
        series_uids: the image series it references (empty when it names none).
        names: ROI names (RTSTRUCT ``ROIName``) or segment labels (SEG ``SegmentLabel``), in file order.
    """

    path: Path
    kind: str
    study_uid: str
    patient_id: str
    frame_uid: str
    series_uids: list[str]
    names: list[str]


@dataclass
class DicomIndex:
    """What :func:`scan_dicom_folder` found: image series by SeriesInstanceUID and label objects."""

    folder: Path
    series: dict[str, SeriesInfo]
    labels: list[LabelFile]


def _items(ds: Dataset, keyword: str) -> list[Dataset]:
    """The items of sequence ``keyword`` (empty when absent or unreadable)."""
    try:
        value = ds.get(keyword)
        return [item for item in (value or []) if isinstance(item, Dataset)]
    except Exception:
        return []


def _label_file(path: Path, ds: Dataset, kind: str, folder: Path) -> LabelFile:
    if kind == "RTSTRUCT":
        frames = _items(ds, "ReferencedFrameOfReferenceSequence")
        series_uids = [
            _text(series, "SeriesInstanceUID")
            for frame in frames
            for study in _items(frame, "RTReferencedStudySequence")
            for series in _items(study, "RTReferencedSeriesSequence")
        ]
        frame_uid = _text(frames[0], "FrameOfReferenceUID") if frames else ""
        names = [_text(roi, "ROIName") for roi in _items(ds, "StructureSetROISequence")]
    else:
        series_uids = [_text(series, "SeriesInstanceUID") for series in _items(ds, "ReferencedSeriesSequence")]
        frame_uid = _text(ds, "FrameOfReferenceUID")
        names = [_text(segment, "SegmentLabel") for segment in _items(ds, "SegmentSequence")]
    return LabelFile(
        path=path, kind=kind, study_uid=_text(ds, "StudyInstanceUID"),
        patient_id=_text(ds, "PatientID") or folder.name, frame_uid=frame_uid,
        series_uids=[uid for uid in series_uids if uid], names=names,
    )


def scan_dicom_folder(folder: str | Path, *, progress: bool = False) -> DicomIndex:
    """Index the DICOM files under ``folder`` (recursively) by their headers, without decoding pixels.

    Image files are grouped into series by SeriesInstanceUID; RT Structure Sets and DICOM SEG files
    (by SOPClassUID or Modality) are listed as label objects. Files that are not DICOM, and DICOM
    files that are neither images nor labels, are skipped with a :class:`DataWarning`. Nothing is
    written. Pixel data and contour points are not read here (see :func:`read_series`).

    Raises:
        DataError: missing or empty folder, a corrupt file claiming to be DICOM, or no DICOM image
            or label file at all.
    """
    folder = Path(folder)
    files = _folder_files(folder)
    series: dict[str, SeriesInfo] = {}
    labels: list[LabelFile] = []
    for path in tqdm(files, desc=f"indexing {folder.name}", disable=not progress, leave=False):
        ds = _parse(path, defer=True)
        if ds is None:
            continue
        kind = _LABEL_KINDS.get(_text(ds, "SOPClassUID")) or (
            _text(ds, "Modality").upper() if _text(ds, "Modality").upper() in ("RTSTRUCT", "SEG") else None
        )
        if kind is not None:
            labels.append(_label_file(path, ds, kind, folder))
            continue
        if "PixelData" not in ds:
            warnings.warn(
                f"{path}: DICOM file without pixel data (SOP class {_text(ds, 'SOPClassUID', 'unknown')}), skipped",
                DataWarning,
                stacklevel=2,
            )
            continue
        item = _Slice(path, ds)
        info = series.get(item.series_uid)
        if info is None:
            try:
                iop = _numbers(ds, "ImageOrientationPatient", path, 6, "six direction cosines")
                tilt = None if iop is None else tilt_degrees(iop)
            except DataError:
                tilt = None
            info = series[item.series_uid] = SeriesInfo(
                uid=item.series_uid, study_uid=_text(ds, "StudyInstanceUID"),
                patient_id=_text(ds, "PatientID") or folder.name, modality=item.modality,
                number=item.series_number, description=_text(ds, "SeriesDescription"),
                frame_uid=_text(ds, "FrameOfReferenceUID"), tilt=tilt,
            )
        info.files.append(path)
    if not series and not labels:
        shown = ", ".join(str(p.relative_to(folder)) for p in files[:5]) + (", ..." if len(files) > 5 else "")
        raise DataError(
            f"{folder}: no DICOM image files found among {len(files)} file(s) ({shown});"
            " expected the .dcm files of a CT series"
        )
    return DicomIndex(folder=folder, series=series, labels=labels)


def read_series(info: SeriesInfo, folder: str | Path) -> CTVolume:
    """Read one series indexed by :func:`scan_dicom_folder` into a HU volume (see :func:`read_dicom_series`).

    Raises:
        DataError: as :func:`read_dicom_series`; also when the files changed since the folder was indexed.
    """
    items = []
    for path in info.files:
        item = _read_file(path)
        if item is None or item.series_uid != info.uid:
            raise DataError(f"{path}: no longer an image of series {info.uid}; the folder changed while it was read")
        items.append(item)
    return _series_volume(info.uid, items, Path(folder))


def choose_series(candidates: list[SeriesInfo], *, series_uid: str | None = None, where: str = "") -> SeriesInfo:
    """The series to read among ``candidates`` (the CT series of one study, say).

    With ``series_uid``, that series; otherwise the axial series (slice plane within
    ``_TILT_TOL_DEG`` of axial) with the most slices, ties broken by the lower SeriesNumber, then the
    UID. When there was a choice, a :class:`DataWarning` says which series was taken and which not.

    Args:
        candidates: at least one series.
        series_uid: a SeriesInstanceUID to take.
        where: the study or folder, for messages.

    Raises:
        DataError: ``series_uid`` is not among the candidates (the message lists them).
    """
    if series_uid is not None:
        for info in candidates:
            if info.uid == series_uid:
                return info
        shown = "; ".join(info.label() for info in candidates)
        raise DataError(f"{where}: no series with SeriesInstanceUID {series_uid!r}; found: {shown}")
    ordered = sorted(candidates, key=lambda s: (-s.n_slices, s.number, s.uid))
    axial = [s for s in ordered if s.tilt is not None and s.tilt <= _TILT_TOL_DEG]
    chosen = (axial or ordered)[0]
    if len(candidates) > 1:
        others = "; ".join(
            s.label() + ("" if s in axial else f" [not axial: {s.tilt:.1f} degrees]" if s.tilt is not None else "")
            for s in ordered if s is not chosen
        )
        warnings.warn(
            f"{where}: {len(candidates)} CT series; read {chosen.label()}, the axial one with the most slices;"
            f" not read: {others} (choose another with its SeriesInstanceUID: --series-uid)",
            DataWarning,
            stacklevel=2,
        )
    return chosen
