"""A predicted tumour mask as DICOM objects that load on top of the source series in a viewer.

* :func:`write_dicom_seg` — a DICOM Segmentation (binary, one segment "Tumour") written with
  ``highdicom``, each frame referencing the CT slice it lies on;
* :func:`write_rtstruct` — an RT Structure Set with one ROI "Tumour" whose planar contours
  (:func:`mask_contours`) reference the series' frame of reference and, each, the slice it lies on.

``highdicom`` has no RT Structure Set writer, and ``rt-utils`` (which has one) pulls in OpenCV and a
``dataclasses`` backport for what is ~100 lines of ``pydicom`` here: the structure set is built with
``pydicom``, and its contours are traced with ``contourpy`` (matplotlib's marching squares, already
installed with matplotlib). Both writers read only the headers of the source files (never their
pixels) and write atomically (:func:`lungseg.files.atomic_write_bytes`).

Contours follow the 0.5 iso-line of the mask between pixel centres, so a pixel centre lies inside
the polygons exactly when the pixel is tumour; a slice's polygons are meant to be filled with the
even-odd (XOR) rule, which is how holes are drawn (a hole is a polygon inside its outline).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.errors import DataError, LungsegError
from lungseg.files import atomic_write_bytes

__all__ = ["FORMATS", "mask_contours", "read_source_headers", "write_dicom_seg", "write_rtstruct"]

FORMATS: tuple[str, ...] = ("nifti", "dicom-seg", "rtstruct")
SEGMENT_LABEL = "Tumour"
_RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
# copied from the source series so that the result files under the same patient and study
_PATIENT_STUDY_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
    "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription",
)


def read_source_headers(files: Sequence[str | os.PathLike[str]]) -> list[Any]:
    """The headers (no pixel data) of a series' files, in the order given (the volume's slice order).

    Raises:
        DataError: a file cannot be read, or lacks the UIDs a reference needs.
    """
    import pydicom

    headers = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception as exc:
            raise DataError(f"{f}: cannot re-read the DICOM header ({type(exc).__name__}: {exc})") from None
        for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID"):
            if not str(ds.get(keyword, "") or ""):
                raise DataError(f"{f}: missing {keyword}; a DICOM result must reference it")
        headers.append(ds)
    return headers


def _check_mask(mask: np.ndarray, headers: Sequence[Any]) -> np.ndarray:
    mask = np.asarray(mask) > 0
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    if mask.ndim != 3 or mask.shape != (len(headers), rows, cols):
        raise LungsegError(f"mask of shape {mask.shape} does not match the series ({len(headers)} slices of {rows}x{cols})")
    return mask


def _save(ds: Any, path: Path) -> Path:
    """``ds`` as a DICOM file (with its file meta), atomically."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, buf.getvalue())


def write_dicom_seg(mask: np.ndarray, headers: Sequence[Any], path: str | os.PathLike[str],
                    algorithm: dict[str, Any]) -> Path:
    """Write a binary DICOM Segmentation of ``mask`` over the series whose ``headers`` are given.

    Args:
        mask: ``(Z, rows, cols)`` tumour mask; slice ``k`` lies on ``headers[k]``.
        headers: the source slices' headers (:func:`read_source_headers`), in the mask's slice order.
        path: the ``.dcm`` file to write.
        algorithm: what made the mask: ``name`` (lungseg), ``version``, ``run`` (the run's folder name)
            and further parameters (model, loss, CRF, threshold), written as the segment's algorithm
            identification.

    Returns:
        The path written. A frame is written for each slice that holds tumour (for an empty mask,
        one empty frame on the first slice), each referencing its source slice; the object
        references every slice of the series (the first only, for an empty mask).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    mask = _check_mask(mask, headers)
    parameters = {k: str(v) for k, v in algorithm.items() if k not in ("name", "version", "run")}
    ident = hd.AlgorithmIdentificationSequence(
        name=str(algorithm["name"]), family=codes.cid7162.ArtificialIntelligence, version=str(algorithm["version"]),
        source=str(algorithm["run"])[:64], parameters=parameters or None,
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=ident,
        anatomic_regions=[codes.SCT.Lung],
    )
    # Slices without tumour get no frame; an empty mask keeps one empty frame (on the first slice),
    # rather than one per slice, as a SEG needs at least one.
    sources = list(headers) if mask.any() else [headers[0]]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*omit_empty_frames.*")  # the empty case, handled above
        # the patient's name is copied from the series as it is, one component or not
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=mask[: len(sources)].astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment],
            series_instance_uid=hd.UID(), series_number=_series_number(headers), sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer="lungseg", manufacturer_model_name=str(algorithm["run"])[:64] or "lungseg",
            software_versions=str(algorithm["version"]), device_serial_number="0",
            series_description=f"lungseg tumour segmentation ({algorithm['run']})"[:64],
            content_label="TUMOUR", omit_empty_frames=True,
        )
    return _save(seg, Path(path))


def _series_number(headers: Sequence[Any]) -> int:
    try:
        return int(headers[0].get("SeriesNumber", 0) or 0) + 1000
    except (TypeError, ValueError):
        return 1000


def mask_contours(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed polygons ``(n, 2)`` of ``(row, col)`` pixel coordinates tracing one slice's mask.

    The 0.5 iso-line of the mask (marching squares, ``contourpy``) on the mask padded by one pixel,
    so that outlines touching the image border close. Filled with the even-odd rule, the polygons
    hold the centres of exactly the mask's pixels (holes are polygons inside their outline). The
    closing point is not repeated.
    """
    import contourpy

    padded = np.pad((np.asarray(mask2d) > 0).astype(np.float64), 1)
    if not padded.any():
        return []
    gen = contourpy.contour_generator(z=padded, line_type=contourpy.LineType.Separate, corner_mask=False)
    polygons = []
    for line in gen.lines(0.5):
        xy = np.asarray(line, dtype=np.float64) - 1.0  # (x = col, y = row) on the unpadded grid
        if len(xy) > 1 and np.allclose(xy[0], xy[-1]):
            xy = xy[:-1]
        if len(xy) >= 3:
            polygons.append(xy[:, ::-1])
    return polygons


def _patient_points(rc: np.ndarray, header: Any) -> np.ndarray:
    """``(n, 3)`` LPS millimetres of ``(row, col)`` pixel coordinates on the slice of ``header``."""
    position = np.asarray([float(v) for v in header.ImagePositionPatient])
    orientation = np.asarray([float(v) for v in header.ImageOrientationPatient])
    row_spacing, col_spacing = (float(v) for v in header.PixelSpacing)
    # ImageOrientationPatient[:3] is the direction of increasing column index, [3:] of increasing row
    return (position + np.outer(rc[:, 1] * col_spacing, orientation[:3])
            + np.outer(rc[:, 0] * row_spacing, orientation[3:]))


def _ds_text(value: float) -> str:
    """A decimal string of at most 16 characters (DICOM DS)."""
    for digits in (10, 9, 8, 7, 6):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.5g}"


def write_rtstruct(mask: np.ndarray, headers: Sequence[Any], path: str | os.PathLike[str],
                   algorithm: dict[str, Any]) -> Path:
    """Write an RT Structure Set with one ROI, "Tumour", outlining ``mask`` on the series of ``headers``.

    Args:
        mask: ``(Z, rows, cols)`` tumour mask; slice ``k`` lies on ``headers[k]``.
        headers: the source slices' headers (:func:`read_source_headers`), in the mask's slice order.
        path: the ``.dcm`` file to write.
        algorithm: what made the mask (as for :func:`write_dicom_seg`); recorded as the ROI's
            generation description.

    Returns:
        The path written. The ROI references the series' frame of reference; each CLOSED_PLANAR
        contour (:func:`mask_contours`, in patient millimetres) references the slice it lies on, and
        every slice of the series is listed in the referenced series. An empty mask gives the ROI
        without contours.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    mask = _check_mask(mask, headers)
    ds = _rtstruct_dataset(headers, algorithm)
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([_referenced_frame(headers)])
    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = str(headers[0].FrameOfReferenceUID)
    roi.ROIName = SEGMENT_LABEL
    roi.ROIDescription = ", ".join(f"{k} {v}" for k, v in algorithm.items())[:1024]  # ST: up to 1024 characters
    roi.ROIGenerationAlgorithm = "AUTOMATIC"
    roi.ROIGenerationDescription = f"{algorithm['name']} {algorithm['version']} run {algorithm['run']}"[:64]
    ds.StructureSetROISequence = DicomSequence([roi])
    ds.ROIContourSequence = DicomSequence([_roi_contours(mask, headers)])
    observation = Dataset()
    observation.ObservationNumber = 1
    observation.ReferencedROINumber = 1
    observation.RTROIInterpretedType = "GTV"
    observation.ROIInterpreter = ""
    ds.RTROIObservationsSequence = DicomSequence([observation])
    return _save(ds, Path(path))


def _rtstruct_dataset(headers: Sequence[Any], algorithm: dict[str, Any]) -> Any:
    """An RT Structure Set's file meta, identity and the patient and study of the source series."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    head = headers[0]
    now = datetime.now()
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = _RT_STRUCTURE_SET_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = head.get("SpecificCharacterSet") or "ISO_IR 100"  # the copied names are in it
    ds.SOPClassUID = _RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = sop_uid
    for keyword in _PATIENT_STUDY_KEYWORDS:
        setattr(ds, keyword, head.get(keyword, ""))
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = _series_number(headers) + 1
    ds.SeriesDescription = f"lungseg tumour contours ({algorithm['run']})"[:64]
    ds.InstanceNumber = 1
    ds.Manufacturer = "lungseg"
    ds.ManufacturerModelName = str(algorithm["run"])[:64] or "lungseg"
    ds.SoftwareVersions = str(algorithm["version"])
    ds.FrameOfReferenceUID = str(head.FrameOfReferenceUID)
    ds.PositionReferenceIndicator = ""
    ds.StructureSetLabel = "lungseg"
    ds.StructureSetName = "Tumour"
    ds.StructureSetDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    return ds


def _image_ref(header: Any) -> Any:
    """A reference to one source slice (its SOP class and instance)."""
    from pydicom.dataset import Dataset

    ref = Dataset()
    ref.ReferencedSOPClassUID = header.SOPClassUID
    ref.ReferencedSOPInstanceUID = header.SOPInstanceUID
    return ref


def _referenced_frame(headers: Sequence[Any]) -> Any:
    """The frame of reference → study → series → every slice chain an RT Structure Set references."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    head = headers[0]
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = head.SeriesInstanceUID
    series_ref.ContourImageSequence = DicomSequence([_image_ref(h) for h in headers])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired; customary)
    study_ref.ReferencedSOPInstanceUID = head.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = DicomSequence([series_ref])
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = str(head.FrameOfReferenceUID)
    frame_ref.RTReferencedStudySequence = DicomSequence([study_ref])
    return frame_ref


def _roi_contours(mask: np.ndarray, headers: Sequence[Any]) -> Any:
    """The ROI's CLOSED_PLANAR contours in patient millimetres, each referencing the slice it lies on."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    contours = []
    for k in np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1)):
        for polygon in mask_contours(mask[k]):
            points = _patient_points(polygon, headers[k])
            item = Dataset()
            item.ContourImageSequence = DicomSequence([_image_ref(headers[k])])
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(points)
            item.ContourData = [_ds_text(float(v)) for v in points.ravel()]
            contours.append(item)
    roi_contour = Dataset()
    roi_contour.ROIDisplayColor = [255, 64, 64]
    roi_contour.ReferencedROINumber = 1
    if contours:
        roi_contour.ContourSequence = DicomSequence(contours)
    return roi_contour
