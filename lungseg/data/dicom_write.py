"""Writing a CT volume as a DICOM series (pydicom): one CT Image Storage file per slice.

Geometry follows the convention in :mod:`lungseg.data.nifti`: volumes are ``(Z, H, W)`` in memory,
their affines map ``(j, i, k)`` to LPS millimetres (``meta["affine_space"] == "LPS"``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)
from tqdm.auto import tqdm

from lungseg.data.nifti import volume_lps_affine
from lungseg.data.volume import CTVolume
from lungseg.files import atomic_file

__all__ = ["write_dicom_series"]


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
    n_z = image.shape[0]
    lps = volume_lps_affine(volume)
    if uid_seed is None:
        uid_seed = hashlib.sha256(image.tobytes() + volume.patient_id.encode()).hexdigest()
    uid = lambda *parts: generate_uid(entropy_srcs=["lungseg", uid_seed, *map(str, parts)])  # noqa: E731
    slope, intercept = _rescale_for(image)
    stored = np.round((image.astype(np.float64) - intercept) / slope)
    stored = np.clip(stored, -32768, 32767).astype("<i2")
    ds = _series_header(
        volume, lps, (uid("study"), uid("series", series_number), uid("frame")), (slope, intercept),
        patient_name=patient_name, series_description=series_description, series_number=series_number,
        slice_thickness=slice_thickness,
    )
    normal = lps[:3, 2] / np.linalg.norm(lps[:3, 2])

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
        with atomic_file(path) as fh:
            ds.save_as(fh, enforce_file_format=True)
        paths.append(path)
    return paths


def _series_header(
    volume: CTVolume,
    lps: np.ndarray,
    uids: tuple[str, str, str],
    rescale: tuple[float, float],
    *,
    patient_name: str | None,
    series_description: str,
    series_number: int,
    slice_thickness: float | None,
) -> Dataset:
    """The header every slice file of the series shares, one assignment per DICOM attribute, kept together
    so that it reads as the list it is; the per-slice elements (SOP instance UID, position, pixels) are
    set by :func:`write_dicom_series`.

    Args:
        volume: the volume written (patient id, spacing, ``meta["slice_thickness"]``, image shape).
        lps: its ``(4, 4)`` LPS affine (:func:`lungseg.data.nifti.volume_lps_affine`).
        uids: ``(StudyInstanceUID, SeriesInstanceUID, FrameOfReferenceUID)``.
        rescale: ``(RescaleSlope, RescaleIntercept)`` of the stored int16 values.
        patient_name: PatientName; ``None``: the patient id.
        series_description: SeriesDescription.
        series_number: SeriesNumber.
        slice_thickness: SliceThickness in mm; ``None``: ``meta["slice_thickness"]`` or the slice spacing.
    """
    _, rows, cols = np.shape(volume.image)
    dz, dy, dx = (float(s) for s in volume.spacing)
    row_dir = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    col_dir = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    study_uid, series_uid, frame_uid = uids
    slope, intercept = rescale
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
    return ds
