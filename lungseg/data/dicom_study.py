"""Tumour masks from DICOM: RT Structure Sets and DICOM SEG on the CT series they reference.

A *study* here is what a scanner and a planning system hand over: a folder holding one or more CT
series and an RT Structure Set (RTSTRUCT) or a DICOM Segmentation (SEG) drawn on one of them. A
folder may hold many such studies (one patient each). :func:`plan_studies` pairs each label object
with its CT series; :func:`label_mask` turns the chosen ROI (or segment) into a ``(Z, H, W)`` mask on
that series' voxels, in the layout of :class:`~lungseg.data.volume.CTVolume`.

* **RTSTRUCT** (DICOM PS3.3 C.8.8.6, ROI Contour Module): each ROI is a set of planar polygons in
  patient (LPS) millimetres, one or more per slice. Every polygon is mapped onto the slice whose
  position along the slice normal it lies on, and filled with :class:`matplotlib.path.Path`
  (pixel centres inside, plus those on the outline). The polygons of one ROI on one slice are
  combined by exclusive or (the even-odd rule), so a contour drawn inside another is a hole (the
  usual reading of nested contours; DICOM itself leaves holes to the "keyhole" drawing convention).
  matplotlib is already a dependency and its point-in-polygon test is exact and vectorised; scikit-image
  or OpenCV would do the same fill with one more dependency (rt-utils brings OpenCV and an old
  ``dataclasses`` backport, which is why it is not used).
* **SEG** (DICOM PS3.3 C.8.20): read with highdicom (Herrmann et al., *J. Digit. Imaging* 35:1719,
  2022), the field's reference implementation, which handles binary and fractional segments, omitted
  empty frames and the per-frame functional groups; the frames are matched to the CT slices by the
  SOP Instance UIDs they were derived from (``get_pixels_by_source_instance``), so the mask lands on
  the same voxels whatever the frame order.

The ROI is chosen by name: ``roi=None`` takes the names matching :data:`TUMOUR_PATTERN` (GTV,
tumour/tumor, nodule, lesion; case-insensitive), the first in the file's order when several do (with a
:class:`~lungseg.errors.DataWarning` naming the others); ``roi="NAME"`` takes the ROI of that
name (case-insensitive). No match is a :class:`~lungseg.errors.DataError` listing the names found.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from matplotlib.path import Path as Polygon
from pydicom.dataset import Dataset

from lungseg.data.dicom import (
    DicomIndex,
    LabelFile,
    SeriesInfo,
    choose_series,
    read_series,
)
from lungseg.data.volume import CTVolume
from lungseg.errors import DataError, DataWarning, describe

__all__ = ["TUMOUR_PATTERN", "StudyPlan", "choose_roi", "plan_studies", "label_mask", "polygon_mask"]

#: ROI names taken as the tumour when no name is given (searched, case-insensitive).
TUMOUR_PATTERN = re.compile(r"gtv|tumou?r|nodule|lesion", re.IGNORECASE)
# A contour further than this fraction of the slice spacing from every slice plane lies between slices.
_PLANE_TOL = 0.25
# Pixel centres within this many pixels of a polygon's outline count as inside (boundary included).
_EDGE_TOL = 1e-3


def _clean(value: Any) -> str:
    """A header value as one line of text for names and messages: non-printable characters become ``?``."""
    try:
        text = "" if value is None else str(value).strip("\0 ")
    except Exception:
        return ""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def choose_roi(names: list[str], roi: str | None, where: str | Path) -> int:
    """Index into ``names`` of the ROI to use as the tumour.

    Args:
        names: ROI names (RTSTRUCT) or segment labels (SEG) in file order.
        roi: the name to take (case-insensitive, surrounding spaces ignored); ``None``: the names
            matching :data:`TUMOUR_PATTERN`, the first of them when several do (with a warning).
        where: the label file, for messages.

    Raises:
        DataError: no ROI of that name, or none matching the pattern; the message lists the names.
    """
    shown = ", ".join(repr(n) for n in names) or "none"
    if roi is not None:
        wanted = roi.strip().casefold()
        hits = [i for i, n in enumerate(names) if n.strip().casefold() == wanted]
        if not hits:
            raise DataError(f"{where}: no ROI named {roi!r}; the file has: {shown}")
        return hits[0]
    hits = [i for i, n in enumerate(names) if TUMOUR_PATTERN.search(n)]
    if not hits:
        raise DataError(
            f"{where}: no ROI whose name looks like a tumour (GTV, tumour/tumor, nodule, lesion); the file has:"
            f" {shown}; choose one with --roi NAME"
        )
    if len(hits) > 1:
        warnings.warn(
            f"{where}: {len(hits)} ROIs look like a tumour ({', '.join(repr(names[i]) for i in hits)}); using the"
            f" first, {names[hits[0]]!r}; choose another with --roi NAME",
            DataWarning,
            stacklevel=2,
        )
    return hits[0]


# -- pairing label objects with CT series --------------------------------------------------------
@dataclass
class StudyPlan:
    """One patient of a DICOM folder: the CT series to read and the label object drawn on it (if any)."""

    patient_id: str
    series: SeriesInfo
    label: LabelFile | None


def plan_studies(index: DicomIndex, *, roi: str | None = None, series_uid: str | None = None) -> list[StudyPlan]:
    """Pair every label object of ``index`` with its CT series, one plan per study.

    Rules: non-CT image series are skipped (warning). When the folder holds label objects
    (RTSTRUCT/SEG), each study with one becomes a patient, on the CT series the label references
    (by SeriesInstanceUID, else by FrameOfReferenceUID); studies without one are skipped
    (warning). Without label objects every study becomes a patient without mask, on the series
    chosen by :func:`~lungseg.data.dicom.choose_series` (the axial one with most slices). With
    ``series_uid`` only that series is read. The ROI names of every label used are checked with
    :func:`choose_roi` here, so a missing ROI is reported when the folder is opened.

    Returns:
        Plans sorted by patient id then StudyInstanceUID; ids repeated across studies get ``-1``, ``-2``.

    Raises:
        DataError: no CT series, an unknown ``series_uid``, a label whose CT series is not in the
            folder, a label without a matching ROI.
    """
    ct = _ct_series(index, series_uid)
    by_study: dict[str, list[SeriesInfo]] = defaultdict(list)
    for info in ct.values():
        by_study[info.study_uid].append(info)
    if index.labels:
        pairs = _labelled_pairs(index, ct, by_study, roi=roi, series_uid=series_uid)
    else:
        pairs = []
        for study_uid, infos in by_study.items():
            where = f"{index.folder}: study {study_uid or '(no StudyInstanceUID)'} of patient {infos[0].patient_id!r}"
            pairs.append((choose_series(infos, where=where) if len(infos) > 1 else infos[0], None))
    pairs.sort(key=lambda p: (p[0].patient_id, p[0].study_uid, p[0].uid))
    ids = [p[0].patient_id for p in pairs]
    plans = []
    for i, (info, label) in enumerate(pairs):
        pid = f"{ids[i]}-{ids[:i].count(ids[i]) + 1}" if ids.count(ids[i]) > 1 else ids[i]
        plans.append(StudyPlan(patient_id=pid, series=info, label=label))
    return plans


def _ct_series(index: DicomIndex, series_uid: str | None) -> dict[str, SeriesInfo]:
    """The CT series of ``index`` by SeriesInstanceUID (only ``series_uid`` when given); other modalities
    are skipped with a warning."""
    folder = index.folder
    ct = {uid: s for uid, s in index.series.items() if s.modality.upper() == "CT"}
    for info in index.series.values():
        if info.uid not in ct and ct:
            warnings.warn(
                f"{info.files[0]}: series {info.uid} has modality {info.modality!r}, not CT; its {info.n_slices}"
                " file(s) skipped",
                DataWarning,
                stacklevel=4,
            )
    if not ct:
        found = sorted({s.modality for s in index.series.values()}) or ["none"]
        labels = f" and {len(index.labels)} RTSTRUCT/SEG file(s)" if index.labels else ""
        raise DataError(f"{folder}: no CT series (image modalities found: {', '.join(found)}{labels})")
    if series_uid is not None:
        chosen = choose_series(list(ct.values()), series_uid=series_uid, where=str(folder))
        ct = {chosen.uid: chosen}
    return ct


def _label_target(label: LabelFile, ct: dict[str, SeriesInfo], by_frame: dict[str, list[SeriesInfo]],
                  folder: Path, series_uid: str | None) -> SeriesInfo | None:
    """The CT series ``label`` is drawn on (by SeriesInstanceUID, else by FrameOfReferenceUID); ``None`` for a
    label of another series than ``series_uid``."""
    targets = [ct[uid] for uid in label.series_uids if uid in ct]
    if not targets and not label.series_uids and label.frame_uid:
        targets = by_frame.get(label.frame_uid, [])
    if not targets:
        if series_uid is not None:
            return None  # a label of another series
        refs = ", ".join(label.series_uids) or f"frame of reference {label.frame_uid or '(none)'}"
        raise DataError(
            f"{label.path}: this {label.kind} is drawn on CT series {refs}, which is not in {folder};"
            " put the referenced CT series next to it"
        )
    return choose_series(targets, where=str(label.path)) if len(targets) > 1 else targets[0]


def _labelled_pairs(
    index: DicomIndex, ct: dict[str, SeriesInfo], by_study: dict[str, list[SeriesInfo]], *,
    roi: str | None, series_uid: str | None,
) -> list[tuple[SeriesInfo, LabelFile | None]]:
    """One ``(CT series, label)`` per study that has a label object (the first, by path, when it has
    several); studies without one are skipped with a warning, and every label's ROI is checked."""
    folder = index.folder
    by_frame: dict[str, list[SeriesInfo]] = defaultdict(list)
    for info in ct.values():
        by_frame[info.frame_uid].append(info)
    used: dict[str, list[tuple[SeriesInfo, LabelFile]]] = defaultdict(list)
    for label in sorted(index.labels, key=lambda lab: str(lab.path)):
        target = _label_target(label, ct, by_frame, folder, series_uid)
        if target is not None:
            used[target.study_uid].append((target, label))
    for study_uid, infos in by_study.items():
        if study_uid not in used:
            warnings.warn(
                f"{folder}: study {study_uid or '(no StudyInstanceUID)'} of patient {infos[0].patient_id!r}"
                f" has no RTSTRUCT or SEG; its {len(infos)} CT series skipped",
                DataWarning,
                stacklevel=4,
            )
    if not used:
        raise DataError(f"{folder}: no RTSTRUCT or SEG references the CT series {series_uid!r}")
    pairs: list[tuple[SeriesInfo, LabelFile | None]] = []
    for study_uid, found in used.items():
        if len(found) > 1:
            warnings.warn(
                f"{folder}: study {study_uid} has {len(found)} label files"
                f" ({', '.join(str(lab.path.name) for _, lab in found)}); using {found[0][1].path.name}",
                DataWarning,
                stacklevel=4,
            )
        target, label = found[0]
        choose_roi(label.names, roi, label.path)
        pairs.append((target, label))
    return pairs


def read_study(plan: StudyPlan, folder: str | Path, roi: str | None = None) -> CTVolume:
    """The CT volume of ``plan`` with its tumour mask (``None`` without a label object)."""
    volume = read_series(plan.series, folder)
    volume.patient_id = plan.patient_id
    if plan.label is not None:
        mask, name = label_mask(plan.label.path, volume, roi)
        volume.mask = mask
        volume.meta.update(roi=name, label_file=str(plan.label.path), label_kind=plan.label.kind)
    return volume


# -- rasterising -----------------------------------------------------------------------------------
def polygon_mask(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    """Pixels of a ``(rows, cols)`` grid whose centres lie inside ``polygon`` or on its outline.

    Args:
        shape: ``(rows, cols)``.
        polygon: ``(N, 2)`` vertices as ``(column, row)`` pixel coordinates (pixel centres at integers);
            closed implicitly.

    Returns:
        bool ``(rows, cols)``.
    """
    rows, cols = shape
    out = np.zeros(shape, dtype=bool)
    poly = np.asarray(polygon, dtype=np.float64)
    if len(poly) < 3:
        return out
    j0, i0 = np.floor(poly.min(axis=0)).astype(int)
    j1, i1 = np.ceil(poly.max(axis=0)).astype(int)
    j0, i0, j1, i1 = max(j0, 0), max(i0, 0), min(j1, cols - 1), min(i1, rows - 1)
    if j0 > j1 or i0 > i1:
        return out
    jj, ii = np.meshgrid(np.arange(j0, j1 + 1, dtype=np.float64), np.arange(i0, i1 + 1, dtype=np.float64))
    points = np.column_stack([jj.ravel(), ii.ravel()])
    inside = Polygon(poly, closed=False).contains_points(points)
    # pixel centres on the outline (distance to an edge within _EDGE_TOL) are inside too
    a, b = poly, np.roll(poly, -1, axis=0)
    ab = b - a
    length2 = np.maximum((ab**2).sum(axis=1), 1e-12)
    for start in range(0, len(points), 4096):
        p = points[start : start + 4096, None, :]
        t = np.clip(((p - a) * ab).sum(axis=2) / length2, 0.0, 1.0)
        dist2 = ((p - (a + t[..., None] * ab)) ** 2).sum(axis=2)
        inside[start : start + 4096] |= (dist2 <= _EDGE_TOL**2).any(axis=1)
    out[i0 : i1 + 1, j0 : j1 + 1] = inside.reshape(jj.shape)
    return out


def _slice_frame(volume: CTVolume, where: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """``(positions, row_dir, col_dir, normal, dz)`` of the volume's slices, from its DICOM header values."""
    meta = volume.meta
    try:
        positions = np.asarray(meta["image_positions"], dtype=np.float64)
        iop = np.asarray(meta["image_orientation"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: the CT volume carries no DICOM geometry; labels need a DICOM series") from None
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    return positions, row_dir, col_dir, normal, float(volume.spacing[0])


def _check_in_plane(polygon: np.ndarray, shape: tuple[int, int], spacing: tuple[float, float], where: str) -> None:
    """Refuse a contour that lies wholly outside the image in-plane: it would give an empty truth,
    and a Dice of 0, without a word (the RTSTRUCT belongs to another series, or its frame is shifted).

    Args:
        polygon: ``(N, 2)`` vertices as ``(column, row)`` pixel coordinates.
        shape: the image's ``(rows, cols)``.
        spacing: ``(row, column)`` pixel size in mm.
        where: the file and contour, for the message.
    """
    rows, cols = shape
    # how far the contour's nearest vertex lies beyond the image's pixel centres, per axis (pixels)
    beyond_col = max(-polygon[:, 0].max(), polygon[:, 0].min() - (cols - 1), 0.0)
    beyond_row = max(-polygon[:, 1].max(), polygon[:, 1].min() - (rows - 1), 0.0)
    if beyond_col > _EDGE_TOL or beyond_row > _EDGE_TOL:
        centre_col, centre_row = polygon.mean(axis=0)
        raise DataError(
            f"{where} lies outside the {cols}x{rows} image in-plane, offset {beyond_col * spacing[1]:.1f} mm beyond"
            f" it across the columns and {beyond_row * spacing[0]:.1f} mm across the rows (its centre at column"
            f" {centre_col:.0f}, row {centre_row:.0f}); the structure set does not match this series' frame"
        )


def _rtstruct_mask(ds: Dataset, path: Path, volume: CTVolume, number: int, name: str) -> np.ndarray:
    positions, row_dir, col_dir, normal, dz = _slice_frame(volume, path)
    n_z, rows, cols = volume.image.shape
    dy, dx = float(volume.spacing[1]), float(volume.spacing[2])
    along = positions @ normal
    mask = np.zeros((n_z, rows, cols), dtype=bool)
    contours = []
    for roi in ds.get("ROIContourSequence") or []:
        try:
            ref = int(roi.ReferencedROINumber)
        except Exception:
            continue
        if ref == number:
            contours.extend(roi.get("ContourSequence") or [])
    if not contours:
        raise DataError(f"{path}: ROI {name!r} has no contours (ROIContourSequence for ROI number {number})")
    skipped: dict[str, int] = defaultdict(int)
    for c, contour in enumerate(contours):
        kind = _clean(contour.get("ContourGeometricType", "CLOSED_PLANAR"))
        if kind != "CLOSED_PLANAR":
            skipped[kind] += 1
            continue
        try:
            points = np.asarray([float(v) for v in contour.ContourData], dtype=np.float64)
        except Exception as exc:
            raise DataError(f"{path}: ROI {name!r} contour {c + 1}: unreadable ContourData ({describe(exc)})") from None
        if points.size % 3 or points.size < 9 or not np.isfinite(points).all():
            raise DataError(
                f"{path}: ROI {name!r} contour {c + 1}: ContourData holds {points.size} numbers; expected finite"
                " x, y, z triplets of at least three points"
            )
        points = points.reshape(-1, 3)
        height = points @ normal
        k = int(np.argmin(np.abs(along - height.mean())))
        off = float(np.max(np.abs(height - along[k])))
        if off > _PLANE_TOL * dz:
            raise DataError(
                f"{path}: ROI {name!r} contour {c + 1} lies {off:.2f} mm from the nearest slice of the CT series"
                f" (slices {dz:.2f} mm apart, z from {along.min():.1f} to {along.max():.1f} mm); it is not"
                " drawn on this series' slices"
            )
        rel = points - positions[k]
        polygon = np.column_stack([rel @ row_dir / dx, rel @ col_dir / dy])
        _check_in_plane(polygon, (rows, cols), (dy, dx), f"{path}: ROI {name!r} contour {c + 1}")
        mask[k] ^= polygon_mask((rows, cols), polygon)
    if skipped:
        warnings.warn(
            f"{path}: ROI {name!r}: {', '.join(f'{n} {k} contour(s)' for k, n in skipped.items())} skipped;"
            " only CLOSED_PLANAR contours enclose a volume",
            DataWarning,
            stacklevel=3,
        )
    return mask


def _seg_mask(path: Path, volume: CTVolume, roi: str | None) -> tuple[np.ndarray, str]:
    import highdicom

    try:
        seg = highdicom.seg.segread(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable DICOM SEG ({describe(exc)})") from None
    segments = list(seg.SegmentSequence)
    names = [_clean(s.get("SegmentLabel", "")) for s in segments]
    index = choose_roi(names, roi, path)
    number = int(segments[index].SegmentNumber)
    uids = volume.meta.get("sop_instance_uids") or []
    if len(uids) != volume.n_slices or not all(uids):
        raise DataError(f"{path}: the CT slices have no SOPInstanceUIDs to match the SEG frames to")
    try:
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=list(uids), segment_numbers=[number], combine_segments=True,
            assert_missing_frames_are_empty=True,
        )
    except Exception as exc:
        raise DataError(
            f"{path}: the SEG frames cannot be matched to the slices of CT series"
            f" {volume.meta.get('series_uid', '?')} ({describe(exc)})"
        ) from None
    pixels = np.asarray(pixels)
    if pixels.shape != volume.image.shape:
        raise DataError(f"{path}: SEG frames give shape {pixels.shape}; expected the CT shape {volume.image.shape}")
    if pixels.dtype.kind == "f":  # fractional segment, rescaled to [0, 1]
        return (pixels >= 0.5).astype(np.uint8), names[index]
    return (pixels > 0).astype(np.uint8), names[index]


def label_mask(path: str | Path, volume: CTVolume, roi: str | None = None) -> tuple[np.ndarray, str]:
    """The tumour mask of the RTSTRUCT or SEG at ``path`` on the voxels of ``volume`` (a DICOM CT series).

    Args:
        path: an RT Structure Set or DICOM SEG file referencing ``volume``'s series.
        volume: the CT volume as read by :func:`lungseg.data.dicom.read_series` (its meta holds the
            slice positions, orientation and SOP Instance UIDs).
        roi: ROI name, or ``None`` for :data:`TUMOUR_PATTERN` (see :func:`choose_roi`).

    Returns:
        ``(mask, name)``: uint8 ``(Z, H, W)`` in {0, 1}, and the ROI name used.

    Raises:
        DataError: unreadable file, no matching ROI, contours off the series' slices, a frame of
            reference other than the CT's.
    """
    path = Path(path)
    try:
        return _label_mask(path, volume, roi)
    except (DataError, MemoryError):
        raise
    except Exception as exc:  # a damaged element, decoded lazily by pydicom
        raise DataError(f"{path}: damaged RTSTRUCT/SEG file ({describe(exc)})") from None


def _label_mask(path: Path, volume: CTVolume, roi: str | None) -> tuple[np.ndarray, str]:
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable DICOM file ({describe(exc)})") from None
    sop = _clean(ds.get("SOPClassUID", ""))
    modality = _clean(ds.get("Modality", "")).upper()
    ct_frame = _clean(volume.meta.get("frame_of_reference_uid", ""))
    if modality == "SEG" or sop == "1.2.840.10008.5.1.4.1.1.66.4":
        frame = _clean(ds.get("FrameOfReferenceUID", ""))
        if frame and ct_frame and frame != ct_frame:
            raise DataError(f"{path}: FrameOfReferenceUID {frame} differs from the CT series' {ct_frame}")
        return _seg_mask(path, volume, roi)
    rois: list[Any] = list(ds.get("StructureSetROISequence") or [])
    names = [_clean(r.get("ROIName", "")) for r in rois]
    index = choose_roi(names, roi, path)
    try:
        number = int(rois[index].ROINumber)
    except Exception as exc:
        raise DataError(f"{path}: ROI {names[index]!r} has no readable ROINumber ({describe(exc)})") from None
    frame = _clean(rois[index].get("ReferencedFrameOfReferenceUID", ""))
    if frame and ct_frame and frame != ct_frame:
        raise DataError(
            f"{path}: ROI {names[index]!r} is drawn in frame of reference {frame}, not the CT series' {ct_frame}"
        )
    return _rtstruct_mask(ds, path, volume, number, names[index]).astype(np.uint8), names[index]
