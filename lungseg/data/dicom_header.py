"""One DICOM file of a CT series: finding candidate files, parsing, header values read safely, pixels in HU.

The series-level reader (:mod:`lungseg.data.dicom`) and the folder index build on these. pydicom
decodes element values lazily, on first access, and a damaged element can raise almost any exception
then; every value the reader uses is therefore read through the helpers here, which turn that into a
:class:`~lungseg.errors.DataError` naming the file and the element (or, for labels only, into a default).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from lungseg.errors import DataError, DataWarning, describe
from lungseg.limits import MAX_ABS_HU, MAX_RESCALE_SLOPE

__all__ = [
    "DicomSlice",
    "folder_files",
    "header_numbers",
    "header_text",
    "is_dicom_file",
    "parse_dicom",
    "pixels_hu",
    "positive_number",
    "read_slice",
    "tilt_degrees",
]

_DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
# Values longer than this are not read while a folder is indexed (pixel data, contour points); pydicom
# reads them from the file when they are used.
_DEFER = "1 KB"


def folder_files(folder: Path) -> list[Path]:
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


def _value(ds: Dataset, keyword: str, path: Path) -> Any:
    try:
        return ds[keyword].value
    except Exception as exc:
        raise DataError(f"{path}: unreadable {keyword} element ({describe(exc)})") from None


def header_numbers(ds: Dataset, keyword: str, path: Path, count: int, what: str) -> np.ndarray | None:
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


def header_text(ds: Dataset, keyword: str, default: str = "") -> str:
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


class DicomSlice:
    """One image file of a series: its dataset and the header values the reader uses.

    The labels (series UID, modality, number) are read when the file is parsed; the geometry only by
    :meth:`read_geometry`, for the series that are read (a skipped non-CT series is never checked).
    """

    def __init__(self, path: Path, ds: Dataset) -> None:
        self.path, self.ds = path, ds
        self.series_uid = header_text(ds, "SeriesInstanceUID") or "<no SeriesInstanceUID>"
        self.modality = header_text(ds, "Modality", "unknown") or "unknown"
        try:
            self.series_number = int(float(header_text(ds, "SeriesNumber", "0") or 0))
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
        self.position = header_numbers(ds, "ImagePositionPatient", path, 3, "three finite numbers (x, y, z mm)")
        self.orientation = header_numbers(ds, "ImageOrientationPatient", path, 6, "six finite direction cosines")
        self.spacing = header_numbers(ds, "PixelSpacing", path, 2, "two positive numbers (row, column mm)")
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


def skip(path: Path, why: str, skipped: list[tuple[Path, str]] | None) -> None:
    """A file left out of a read: a :class:`DataWarning` ``"<path>: <why>, skipped"``, or, when the caller
    collects them in ``skipped``, appended there for the caller to report."""
    if skipped is None:
        warnings.warn(f"{path}: {why}, skipped", DataWarning, stacklevel=4)
    else:
        skipped.append((path, why))


def parse_dicom(path: Path, *, defer: bool = False, skipped: list[tuple[Path, str]] | None = None) -> Dataset | None:
    """Parse one file (``defer``: leave long values in the file until used); ``None`` (with a warning, or
    noted in ``skipped``: :func:`skip`) for a file that is not DICOM, :class:`DataError` for a file that
    claims to be DICOM but is corrupt."""
    try:
        return pydicom.dcmread(path, defer_size=_DEFER if defer else None)
    except InvalidDicomError:
        if is_dicom_file(path):
            raise DataError(f"{path}: corrupt DICOM file (no valid DICOM header)") from None
        skip(path, "not a DICOM file", skipped)
        return None
    except MemoryError:
        raise DataError(f"{path}: corrupt DICOM file (an element declares a size too large to read)") from None
    except Exception as exc:  # truncated or damaged element data
        raise DataError(f"{path}: corrupt or truncated DICOM file ({describe(exc)})") from None


def read_slice(path: Path, skipped: list[tuple[Path, str]] | None = None) -> DicomSlice | None:
    """Parse one file; ``None`` (with a warning, or noted in ``skipped``: :func:`skip`) for files that are
    not DICOM images."""
    ds = parse_dicom(path, skipped=skipped)
    if ds is None:
        return None
    if "PixelData" not in ds:
        skip(path, without_pixels(ds), skipped)
        return None
    return DicomSlice(path, ds)


def without_pixels(ds: Dataset) -> str:
    """Why a DICOM file without pixel data is not a slice, naming its SOP class (an RT Structure Set, ...)."""
    return f"DICOM file without pixel data (SOP class {header_text(ds, 'SOPClassUID', 'unknown')})"


def pixels_hu(item: DicomSlice) -> np.ndarray:
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
    slope = header_numbers(ds, "RescaleSlope", path, 1, "a finite non-zero number")
    intercept = header_numbers(ds, "RescaleIntercept", path, 1, "a finite number")
    if slope is not None and not 0 < abs(slope[0]) <= MAX_RESCALE_SLOPE:
        raise DataError(f"{path}: RescaleSlope is {slope[0]:g}; expected a finite non-zero number of magnitude at most"
                        f" {MAX_RESCALE_SLOPE:g} (CT stores Hounsfield units with slope 1; lungseg.limits)")
    with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 become inf, refused below
        hu = (
            pixels.astype(np.float32) * np.float32(1.0 if slope is None else slope[0])
            + np.float32(0.0 if intercept is None else intercept[0])
        ).astype(np.float32)
    if not np.isfinite(hu).all() or float(np.abs(hu).max()) > MAX_ABS_HU:
        raise DataError(f"{path}: RescaleSlope/RescaleIntercept give values beyond ±{MAX_ABS_HU:g}; expected Hounsfield"
                        " units (lungseg.limits)")
    return hu


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


def positive_number(ds: Dataset, keyword: str) -> float | None:
    """An optional descriptive number (e.g. SliceThickness): its value if finite and positive, else ``None``."""
    try:
        value = float(header_text(ds, keyword) or "nan")
    except (ValueError, OverflowError):
        return None
    return value if np.isfinite(value) and value > 0 else None
