"""Reading and writing CT DICOM series (pydicom).

Geometry follows the convention in :mod:`lungseg.data.nifti`: volumes are ``(Z, H, W)`` in memory,
their affines map ``(j, i, k)`` to LPS millimetres (``meta["affine_space"] == "LPS"``).
"""

from __future__ import annotations

import hashlib
import warnings
from collections import defaultdict
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
from lungseg.errors import DataError

__all__ = ["read_dicom_series", "write_dicom_series", "DataWarning"]

_DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
# Relative tolerance on slice gaps: scanners round positions to ~0.01 mm.
_GAP_RTOL = 0.01
_GAP_ATOL = 0.01


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


def _candidate_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _read_file(path: Path) -> Dataset | None:
    """Parse one file; ``None`` (with a warning) for files that are not DICOM images."""
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        if _looks_like_dicom(path):
            raise DataError(f"{path}: corrupt DICOM file (no valid DICOM header)") from None
        warnings.warn(f"{path}: not a DICOM file, skipped", DataWarning, stacklevel=3)
        return None
    except Exception as exc:  # truncated or damaged element data
        raise DataError(f"{path}: corrupt or truncated DICOM file ({type(exc).__name__}: {exc})") from None
    if "PixelData" not in ds:
        warnings.warn(
            f"{path}: DICOM file without pixel data (SOP class {ds.get('SOPClassUID', 'unknown')}), skipped",
            DataWarning,
            stacklevel=3,
        )
        return None
    return ds


def _pixels_hu(ds: Dataset, path: Path) -> np.ndarray:
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    bits = int(ds.get("BitsAllocated", 16))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise DataError(f"{path}: multi-frame DICOM ({frames} frames) is not supported; expected one slice per file")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DataError(f"{path}: expected a greyscale CT image, got SamplesPerPixel={ds.SamplesPerPixel}")
    if not ds.file_meta.TransferSyntaxUID.is_compressed:
        expected = rows * cols * bits // 8
        if len(ds.PixelData) < expected:
            raise DataError(
                f"{path}: truncated pixel data ({len(ds.PixelData)} bytes, expected {expected} for {rows}x{cols}x{bits} bit)"
            )
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise DataError(
            f"{path}: cannot decode pixel data (transfer syntax {ds.file_meta.TransferSyntaxUID.name}: {exc})"
        ) from None
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return (pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)


def _series_volume(uid: str, items: list[tuple[Path, Dataset]], folder: Path) -> CTVolume:
    """Sort one series' slices along the slice normal, check geometry, stack HU."""
    first_path, first = items[0]
    for path, ds in items:
        for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if key not in ds:
                raise DataError(f"{path}: missing {key}; cannot place the slice in series {uid}")
    iop = np.array([float(v) for v in first.ImageOrientationPatient])
    shape0 = (int(first.Rows), int(first.Columns))
    spacing0 = np.array([float(v) for v in first.PixelSpacing])
    for path, ds in items[1:]:
        if (int(ds.Rows), int(ds.Columns)) != shape0:
            raise DataError(
                f"{path}: slice is {ds.Rows}x{ds.Columns} but {first_path.name} is {shape0[0]}x{shape0[1]}"
                f" in series {uid}; inconsistent slice shapes"
            )
        if not np.allclose([float(v) for v in ds.ImageOrientationPatient], iop, atol=1e-4):
            raise DataError(f"{path}: ImageOrientationPatient differs from {first_path.name} in series {uid}")
        if not np.allclose([float(v) for v in ds.PixelSpacing], spacing0, rtol=1e-4):
            raise DataError(f"{path}: PixelSpacing differs from {first_path.name} in series {uid}")
    normal = np.cross(iop[:3], iop[3:])
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in items])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    items = [items[i] for i in order]
    positions, along = positions[order], along[order]
    gaps = np.diff(along)
    if len(gaps) and np.min(gaps) < _GAP_ATOL:
        i = int(np.argmin(gaps))
        raise DataError(
            f"{items[i + 1][0]}: same slice position ({along[i]:.3f} mm) as {items[i][0].name} in series {uid};"
            " duplicate slices"
        )
    if len(gaps):
        step = float(np.median(gaps))
        bad = np.flatnonzero(np.abs(gaps - step) > max(_GAP_ATOL, _GAP_RTOL * step))
        if len(bad):
            i = int(bad[0])
            n_missing = gaps[i] / step - 1.0
            kind = (
                f"about {round(n_missing)} missing slice(s)"
                if n_missing > 0.5 and abs(n_missing - round(n_missing)) < 0.1
                else "uneven slice spacing"
            )
            raise DataError(
                f"{folder}: {kind} in series {uid}: gap of {gaps[i]:.3f} mm between {items[i][0].name}"
                f" (position {along[i]:.3f} mm) and {items[i + 1][0].name} (position {along[i + 1]:.3f} mm);"
                f" the other slices are {step:.3f} mm apart"
            )
        dz = round(float(np.mean(gaps)), 6)  # positions are stored to ~1e-6 mm; drop float noise
    else:
        dz = float(first.get("SpacingBetweenSlices", 0) or first.get("SliceThickness", 0) or 1.0)
    image = np.stack([_pixels_hu(ds, path) for path, ds in items])
    dy, dx = float(spacing0[0]), float(spacing0[1])
    affine = affine_from_geometry(positions[0], iop, (dz, dy, dx))
    head = items[0][1]
    meta: dict[str, Any] = {
        "format": "dicom",
        "affine_space": "LPS",
        "series_uid": uid,
        "study_uid": str(head.get("StudyInstanceUID", "")),
        "series_description": str(head.get("SeriesDescription", "")),
        "modality": str(head.get("Modality", "")),
        "slice_thickness": float(head.get("SliceThickness", dz) or dz),
        "image_positions": positions.tolist(),
        "image_orientation": iop.tolist(),
        "files": [str(p) for p, _ in items],
    }
    patient_id = str(head.get("PatientID", "") or folder.name)
    return CTVolume(
        image=image, mask=None, spacing=(dz, dy, dx), patient_id=patient_id,
        affine=affine, intensity="hu", source=str(folder), meta=meta,
    )


def read_dicom_series(folder: str | Path, *, progress: bool = False) -> list[CTVolume]:
    """Read every CT series under ``folder`` (searched recursively), one volume per SeriesInstanceUID.

    Slices are sorted by ImagePositionPatient projected on the slice normal; intensities become HU
    with RescaleSlope/RescaleIntercept; spacing is ``(slice gap from positions, PixelSpacing)``.
    Standard repairs, each with a :class:`DataWarning`: files that are not DICOM, DICOM files
    without pixel data, and non-CT series when a CT series exists, are skipped. Nothing is written.

    Args:
        folder: a folder holding the ``.dcm`` files of one or more series.
        progress: show a tqdm bar while parsing files.

    Returns:
        ``CTVolume`` list (mask ``None``), sorted by SeriesNumber then SeriesInstanceUID.

    Raises:
        DataError: missing/empty folder, corrupt or truncated files, no CT series, missing or
            duplicate slices, uneven spacing, inconsistent slice shapes or orientation.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: DICOM folder not found (expected a folder of .dcm files)")
    files = _candidate_files(folder)
    if not files:
        raise DataError(f"{folder}: empty folder; expected the .dcm files of a CT series")
    series: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    for path in tqdm(files, desc=f"reading {folder.name}", disable=not progress, leave=False):
        ds = _read_file(path)
        if ds is None:
            continue
        uid = str(ds.get("SeriesInstanceUID", "")) or "<no SeriesInstanceUID>"
        series[uid].append((path, ds))
    if not series:
        raise DataError(f"{folder}: no DICOM image files found among {len(files)} file(s)")
    ct = {uid: items for uid, items in series.items() if str(items[0][1].get("Modality", "")).upper() == "CT"}
    for uid, items in series.items():
        if uid not in ct:
            modality = items[0][1].get("Modality", "unknown")
            if ct:
                warnings.warn(
                    f"{items[0][0]}: series {uid} has modality {modality!r}, not CT; its {len(items)} file(s) skipped",
                    DataWarning,
                    stacklevel=2,
                )
    if not ct:
        found = sorted({str(items[0][1].get("Modality", "unknown")) for items in series.values()})
        example = next(iter(series.values()))[0][0]
        raise DataError(f"{folder}: no CT series (modalities found: {', '.join(found)}; e.g. {example})")
    volumes = [_series_volume(uid, items, folder) for uid, items in ct.items()]
    number = {uid: int(items[0][1].get("SeriesNumber", 0) or 0) for uid, items in ct.items()}
    volumes.sort(key=lambda v: (number[v.meta["series_uid"]], v.meta["series_uid"]))
    return volumes
