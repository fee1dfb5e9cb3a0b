"""Reading CT DICOM series (pydicom): one series into a HU volume, and folders of studies indexed by
their headers (series and RT Structure Set / SEG label objects) without decoding pixels.

Geometry follows the convention in :mod:`lungseg.data.nifti`: volumes are ``(Z, H, W)`` in memory,
their affines map ``(j, i, k)`` to LPS millimetres (``meta["affine_space"] == "LPS"``). Single files
(parsing, header values, pixels in HU) are :mod:`lungseg.data.dicom_header`'s; writing a series is
:mod:`lungseg.data.dicom_write`'s.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from tqdm.auto import tqdm

from lungseg.data.dicom_header import (
    DicomSlice,
    folder_files,
    header_numbers,
    header_text,
    is_dicom_file,
    parse_dicom,
    pixels_hu,
    positive_number,
    read_slice,
    tilt_degrees,
    without_pixels,
)
from lungseg.data.nifti import affine_from_geometry
from lungseg.data.volume import CTVolume
from lungseg.errors import DataError, DataWarning

# is_dicom_file and tilt_degrees belong to the reading API callers use (a folder's files, a series' tilt).
__all__ = [
    "read_dicom_series",
    "is_dicom_file",
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


def _report_skipped(skipped: list[tuple[Path, str]]) -> None:
    """Warn about the files a folder scan left out (once it found something to read)."""
    for path, why in skipped:
        warnings.warn(f"{path}: {why}, skipped", DataWarning, stacklevel=3)


def _nothing_found(folder: Path, files: list[Path], skipped: list[tuple[Path, str]]) -> DataError:
    """The error for a folder without a DICOM image: its first files, and why DICOM files among them were left
    out (an RT Structure Set alone, ...); a warning per file before it would repeat the list."""
    shown = ", ".join(str(p.relative_to(folder)) for p in files[:5]) + (", ..." if len(files) > 5 else "")
    dicom = [f"{p.relative_to(folder)}: {why}" for p, why in skipped if why != "not a DICOM file"]
    why = f"; {'; '.join(dicom[:3])}{'; ...' if len(dicom) > 3 else ''}" if dicom else ""
    return DataError(f"{folder}: no DICOM image files found among {len(files)} file(s) ({shown}){why};"
                     " expected the .dcm files of a CT series")


def _series_volume(uid: str, items: list[DicomSlice], folder: Path) -> CTVolume:
    """Sort one series' slices along the slice normal, check geometry, stack HU."""
    iop, spacing0 = _common_geometry(uid, items)
    _check_axial(uid, items[0], iop)
    items, positions, along = _stack_along_normal(uid, items, iop, spacing0)
    dz = _slice_gap(uid, items, along, folder)
    image = np.stack([pixels_hu(item) for item in items])
    dy, dx = float(spacing0[0]), float(spacing0[1])
    affine = affine_from_geometry(positions[0], iop, (dz, dy, dx))
    head = items[0].ds
    patient_id = header_text(head, "PatientID") or folder.name
    return CTVolume(
        image=image, mask=None, spacing=(dz, dy, dx), patient_id=patient_id,
        affine=affine, intensity="hu", source=str(folder), meta=_series_meta(uid, items, positions, iop, dz),
    )


def _common_geometry(uid: str, items: list[DicomSlice]) -> tuple[np.ndarray, np.ndarray]:
    """Read every slice's geometry and check that all share the first one's shape, orientation and pixel
    spacing; returns ``(ImageOrientationPatient, PixelSpacing)`` of the series."""
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
    return iop, spacing0


def _check_axial(uid: str, first: DicomSlice, iop: np.ndarray) -> None:
    """Refuse a slice plane more than ``_TILT_TOL_DEG`` from axial."""
    tilt = tilt_degrees(iop)
    if tilt > _TILT_TOL_DEG:
        raise DataError(
            f"{first.path}: ImageOrientationPatient {np.round(iop, 4).tolist()} puts the slice plane {tilt:.1f} degrees"
            f" away from axial in series {uid} (gantry tilt or a non-axial reconstruction); lungseg reads axial"
            " series only: choose the axial series of the study, or resample this one to axial slices first"
            " (e.g. dcm2niix corrects gantry tilt)"
        )


def _stack_along_normal(
    uid: str, items: list[DicomSlice], iop: np.ndarray, spacing0: np.ndarray,
) -> tuple[list[DicomSlice], np.ndarray, np.ndarray]:
    """The slices sorted along the slice normal, with their positions ``(Z, 3)`` and distances along the
    normal ``(Z,)``; refuses a stack sheared in-plane (gantry tilt)."""
    normal = np.cross(iop[:3], iop[3:])
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
    return items, positions, along


def _slice_gap(uid: str, items: list[DicomSlice], along: np.ndarray, folder: Path) -> float:
    """The slice spacing in mm from the sorted positions ``along`` the normal: refuses duplicate or missing
    slices and uneven gaps, tolerates scanner jitter with a :class:`DataWarning` (then the mean gap)."""
    gaps = np.diff(along)
    if not len(gaps):  # a single slice: the header's own spacing, if any
        head = items[0].ds
        return positive_number(head, "SpacingBetweenSlices") or positive_number(head, "SliceThickness") or 1.0
    if np.min(gaps) < _GAP_ATOL:
        i = int(np.argmin(gaps))
        raise DataError(
            f"{items[i + 1].path}: same slice position ({along[i]:.3f} mm) as {items[i].path.name} in series {uid};"
            " duplicate slices"
        )
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
            stacklevel=4,
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
    return round(float(np.mean(gaps)), 6)  # positions are stored to ~1e-6 mm; drop float noise


def _series_meta(uid: str, items: list[DicomSlice], positions: np.ndarray, iop: np.ndarray, dz: float) -> dict[str, Any]:
    """The volume's ``meta`` of a DICOM series: UIDs, description, geometry and the files, in slice order."""
    head = items[0].ds
    return {
        "format": "dicom",
        "affine_space": "LPS",
        "series_uid": uid,
        "study_uid": header_text(head, "StudyInstanceUID"),
        "series_description": header_text(head, "SeriesDescription"),
        "modality": items[0].modality,
        "slice_thickness": positive_number(head, "SliceThickness") or dz,
        "image_positions": positions.tolist(),
        "image_orientation": iop.tolist(),
        "frame_of_reference_uid": header_text(head, "FrameOfReferenceUID"),
        "sop_instance_uids": [header_text(item.ds, "SOPInstanceUID") for item in items],
        "transfer_syntax": header_text(getattr(head, "file_meta", Dataset()), "TransferSyntaxUID"),
        "files": [str(item.path) for item in items],
    }


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
    files = folder_files(folder)
    series: dict[str, list[DicomSlice]] = defaultdict(list)
    skipped: list[tuple[Path, str]] = []
    try:
        for path in tqdm(files, desc=f"reading {folder.name}", disable=not progress, leave=False):
            item = read_slice(path, skipped)
            if item is not None:
                series[item.series_uid].append(item)
    except BaseException:  # a corrupt file: what was skipped before it is still said
        _report_skipped(skipped)
        raise
    if not series:
        raise _nothing_found(folder, files, skipped)
    _report_skipped(skipped)
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
            header_text(series, "SeriesInstanceUID")
            for frame in frames
            for study in _items(frame, "RTReferencedStudySequence")
            for series in _items(study, "RTReferencedSeriesSequence")
        ]
        frame_uid = header_text(frames[0], "FrameOfReferenceUID") if frames else ""
        names = [header_text(roi, "ROIName") for roi in _items(ds, "StructureSetROISequence")]
    else:
        series_uids = [header_text(series, "SeriesInstanceUID") for series in _items(ds, "ReferencedSeriesSequence")]
        frame_uid = header_text(ds, "FrameOfReferenceUID")
        names = [header_text(segment, "SegmentLabel") for segment in _items(ds, "SegmentSequence")]
    return LabelFile(
        path=path, kind=kind, study_uid=header_text(ds, "StudyInstanceUID"),
        patient_id=header_text(ds, "PatientID") or folder.name, frame_uid=frame_uid,
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
    files = folder_files(folder)
    series: dict[str, SeriesInfo] = {}
    labels: list[LabelFile] = []
    skipped: list[tuple[Path, str]] = []
    try:
        for path in tqdm(files, desc=f"indexing {folder.name}", disable=not progress, leave=False):
            ds = parse_dicom(path, defer=True, skipped=skipped)
            if ds is None:
                continue
            kind = _LABEL_KINDS.get(header_text(ds, "SOPClassUID")) or (
                header_text(ds, "Modality").upper() if header_text(ds, "Modality").upper() in ("RTSTRUCT", "SEG") else None
            )
            if kind is not None:
                labels.append(_label_file(path, ds, kind, folder))
                continue
            if "PixelData" not in ds:
                skipped.append((path, without_pixels(ds)))
                continue
            item = DicomSlice(path, ds)
            info = series.get(item.series_uid)
            if info is None:
                try:
                    iop = header_numbers(ds, "ImageOrientationPatient", path, 6, "six direction cosines")
                    tilt = None if iop is None else tilt_degrees(iop)
                except DataError:
                    tilt = None
                info = series[item.series_uid] = SeriesInfo(
                    uid=item.series_uid, study_uid=header_text(ds, "StudyInstanceUID"),
                    patient_id=header_text(ds, "PatientID") or folder.name, modality=item.modality,
                    number=item.series_number, description=header_text(ds, "SeriesDescription"),
                    frame_uid=header_text(ds, "FrameOfReferenceUID"), tilt=tilt,
                )
            info.files.append(path)
    except BaseException:  # a corrupt file: what was skipped before it is still said
        _report_skipped(skipped)
        raise
    if not series and not labels:
        raise _nothing_found(folder, files, skipped)
    _report_skipped(skipped)
    return DicomIndex(folder=folder, series=series, labels=labels)


def read_series(info: SeriesInfo, folder: str | Path) -> CTVolume:
    """Read one series indexed by :func:`scan_dicom_folder` into a HU volume (see :func:`read_dicom_series`).

    Raises:
        DataError: as :func:`read_dicom_series`; also when the files changed since the folder was indexed.
    """
    items = []
    for path in info.files:
        item = read_slice(path)
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
