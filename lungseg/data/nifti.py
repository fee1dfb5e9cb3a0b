"""NIfTI volumes and masks (nibabel), and the geometry shared with the DICOM series.

Axis convention (the one place it is written down):

* In memory every volume is ``(Z, H, W)`` = (slice ``k``, row ``i``, column ``j``), the layout of a
  stack of DICOM slices and of :class:`~lungseg.data.volume.CTVolume`.
* A NIfTI file stores the same voxels as ``(X, Y, Z)`` = ``(j, i, k)``, i.e. the in-memory array
  transposed (``array.transpose(2, 1, 0)``); its affine maps ``(j, i, k, 1)`` to RAS+ millimetres.
* A DICOM series maps ``(j, i, k)`` to LPS+ millimetres: ``P = IPP_0 + j*dx*row_dir + i*dy*col_dir
  + k*dz*normal`` with ``row_dir, col_dir`` from ImageOrientationPatient. Affines built from DICOM
  use the same ``(j, i, k)`` voxel order and are LPS; ``CTVolume.meta["affine_space"]`` says which
  (``"LPS"`` or ``"RAS"``). LPS -> RAS negates the first two world axes (:func:`lps_to_ras`).

So a mask written with ``write_nifti(mask, path, dicom_affine(volume))`` lies voxel-for-voxel on the
DICOM series of ``volume`` in any viewer that honours both geometries.

One voxel orientation (:data:`CANONICAL_AXES`): the readers bring every volume to the voxel order of
an axial DICOM series as :mod:`lungseg.data.dicom` reads it (columns to the patient's left, rows to
posterior, slices from feet to head), through its affine, so that the network always sees axial
slices the same way up whatever voxel order a converter chose. :func:`read_nifti` returns that
orientation; :func:`canonical_volume` reorients a :class:`~lungseg.data.volume.CTVolume` and keeps
its file's geometry (``CTVolume.stored``), which :func:`as_stored` and :func:`stored_ras_affine` use
to write a result back in the input's own voxel order and affine. Volumes whose voxel axes lie more
than :data:`OBLIQUE_TOLERANCE_DEG` from the patient axes are refused, not resampled.
"""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

from lungseg.data.volume import CTVolume, StoredGeometry
from lungseg.errors import DataError, describe
from lungseg.files import atomic_file

_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: gzip level of a written .nii.gz: nibabel's own default (fast; masks compress well at any level).
_GZIP_LEVEL = 1

#: The voxel orientation every reader brings a volume to, as nibabel axis codes of the voxel axes
#: ``(j, i, k)`` (world axes named in RAS): that of an axial DICOM series read by
#: :mod:`lungseg.data.dicom` (ImageOrientationPatient ``(1, 0, 0, 0, 1, 0)``, slices sorted from feet
#: to head), i.e. an identity LPS affine: columns to the patient's left, rows to posterior, slices to superior.
CANONICAL_AXES: tuple[str, str, str] = ("L", "P", "S")
_CANONICAL_ORNT = axcodes2ornt(CANONICAL_AXES)
_UNCHANGED = ornt_transform(_CANONICAL_ORNT, _CANONICAL_ORNT)  # the transform that moves no axis
#: Largest angle in degrees between a voxel axis and the patient axis nearest to it for a volume to be
#: read as axis-aligned (the DICOM reader's gantry-tilt tolerance); beyond it the volume is oblique and refused.
OBLIQUE_TOLERANCE_DEG = 1.0


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    """Convert a voxel-to-LPS affine into a voxel-to-RAS affine (the same map works both ways).

    Args:
        affine: ``(4, 4)`` voxel-to-world matrix in LPS+ (DICOM patient) coordinates.

    Returns:
        ``(4, 4)`` matrix in RAS+ (NIfTI) coordinates.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    return _LPS_RAS @ affine


def affine_from_geometry(
    origin: tuple[float, float, float] | np.ndarray,
    orientation: tuple[float, ...] | np.ndarray,
    spacing: tuple[float, float, float],
    slice_direction: np.ndarray | None = None,
) -> np.ndarray:
    """Voxel ``(j, i, k)`` to LPS affine of a DICOM series.

    Args:
        origin: ImagePositionPatient of the first slice (``k = 0``), LPS mm.
        orientation: ImageOrientationPatient, six direction cosines (row direction, column direction).
        spacing: ``(z, y, x)`` mm: slice spacing, row spacing (PixelSpacing[0]), column spacing.
        slice_direction: unit vector from slice ``k`` to ``k + 1``; default the right-handed normal
            ``row_dir x col_dir``.

    Returns:
        ``(4, 4)`` voxel-to-LPS affine.
    """
    iop = np.asarray(orientation, dtype=np.float64).reshape(2, 3)
    row_dir, col_dir = iop[0], iop[1]
    normal = np.cross(row_dir, col_dir) if slice_direction is None else np.asarray(slice_direction, float)
    dz, dy, dx = (float(s) for s in spacing)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * dx
    affine[:3, 1] = col_dir * dy
    affine[:3, 2] = normal * dz
    affine[:3, 3] = np.asarray(origin, dtype=np.float64)
    return affine


def default_lps_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """Axial, identity-oriented LPS affine centred in-plane on the isocentre, first slice at z = 0.

    Columns run to the patient's left, rows to posterior, slices to superior (the usual supine axial
    series); used when a volume carries no affine of its own.
    """
    _, h, w = shape
    dz, dy, dx = spacing
    origin = (-(w - 1) / 2.0 * dx, -(h - 1) / 2.0 * dy, 0.0)
    return affine_from_geometry(origin, (1, 0, 0, 0, 1, 0), spacing)


def volume_lps_affine(volume: CTVolume) -> np.ndarray:
    """The voxel-to-LPS affine of ``volume`` (its own affine if it has one, else the default).

    ``volume.meta["affine_space"]`` (``"LPS"`` or ``"RAS"``; missing means LPS) tells how to read
    ``volume.affine``.
    """
    if volume.affine is None:
        return default_lps_affine(volume.image.shape, volume.spacing)
    return _in_lps(volume.affine, volume)


def _in_lps(affine: np.ndarray, volume: CTVolume) -> np.ndarray:
    """``affine``, given in ``volume``'s world space (``meta["affine_space"]``), as voxel-to-LPS."""
    space = str(volume.meta.get("affine_space", "LPS")).upper()
    if space not in ("LPS", "RAS"):
        raise ValueError(f"volume.meta['affine_space'] must be 'LPS' or 'RAS', got {space!r}")
    affine = np.asarray(affine, dtype=np.float64)
    return lps_to_ras(affine) if space == "RAS" else affine


def dicom_affine(volume: CTVolume) -> np.ndarray:
    """The voxel-to-RAS affine to give a NIfTI mask so that it overlays ``volume``'s DICOM series.

    Args:
        volume: a volume read from (or written as) a DICOM series.

    Returns:
        ``(4, 4)`` RAS affine for ``write_nifti(mask (Z, H, W), path, affine=...)``.
    """
    return lps_to_ras(volume_lps_affine(volume))


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """The voxel size ``(z, y, x)`` mm of a voxel ``(j, i, k)`` affine (the lengths of its columns)."""
    zooms = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    return float(zooms[2]), float(zooms[1]), float(zooms[0])


def obliquity_degrees(affine: np.ndarray) -> float:
    """Largest angle in degrees between a voxel axis of ``affine`` and the patient axis it runs along.

    Each voxel axis is matched to a patient axis as nibabel's ``io_orientation`` does (through the
    nearest rotation, one patient axis per voxel axis); 0 for an axis-aligned volume in any voxel
    order, 90 when two voxel axes run along the same patient axis.
    """
    affine = np.asarray(affine, dtype=np.float64)
    ornt = io_orientation(affine)
    if np.isnan(ornt).any():
        return 90.0
    columns = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    cosines = np.abs(columns[ornt[:, 0].astype(int), np.arange(3)])
    return float(np.degrees(np.arccos(np.clip(cosines, 0.0, 1.0))).max())


def _canonical_transform(affine_ras: np.ndarray, where: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(orientation of the stored voxel axes, transform to CANONICAL_AXES)``; refuses an oblique volume."""
    angle = obliquity_degrees(affine_ras)
    if angle > OBLIQUE_TOLERANCE_DEG:
        raise DataError(
            f"{where}: the voxel axes lie {angle:.1f} degrees from the patient axes (an oblique volume); lungseg"
            f" reads volumes whose axes are within {OBLIQUE_TOLERANCE_DEG:.1f} degrees of the patient axes:"
            " resample it to an axis-aligned grid first (e.g. with 3D Slicer, SimpleITK or nibabel's resample_to_output)"
        )
    stored = io_orientation(affine_ras)
    return stored, ornt_transform(stored, _CANONICAL_ORNT)


def _reorient(array: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Apply a nibabel orientation transform of the voxel axes ``(j, i, k)`` to an in-memory ``(Z, H, W)`` array."""
    return np.ascontiguousarray(apply_orientation(array.transpose(2, 1, 0), transform).transpose(2, 1, 0))


def _is_identity(transform: np.ndarray) -> bool:
    """Whether an orientation transform leaves every voxel where it is (the volume is already canonical)."""
    return bool(np.array_equal(transform, _UNCHANGED))


def canonical_volume(volume: CTVolume, where: str | Path | None = None) -> CTVolume:
    """``volume`` in the common voxel orientation (:data:`CANONICAL_AXES`), its file's geometry kept.

    The array (and mask) are flipped and their axes permuted as the affine says, so that slices are
    axial and lie as an axial DICOM series' do; the affine and spacing follow, so every voxel keeps its
    place in the world. ``volume.stored`` records the file's shape, affine and orientation for
    :func:`as_stored`. A volume without an affine, or already in that orientation, is returned as it is.

    Args:
        volume: a volume with its affine (``meta["affine_space"]`` ``"LPS"`` or ``"RAS"``).
        where: the file or folder named in messages (default ``volume.source``, else the patient id).

    Raises:
        DataError: the volume is oblique (a voxel axis more than :data:`OBLIQUE_TOLERANCE_DEG` from
            the patient axes); the message names ``where`` and the angle.
    """
    if volume.affine is None:
        return volume
    affine = np.asarray(volume.affine, dtype=np.float64)
    where = where or volume.source or volume.patient_id
    stored, transform = _canonical_transform(lps_to_ras(volume_lps_affine(volume)), where)
    if _is_identity(transform):
        return volume
    shape_jik = volume.image.shape[::-1]
    canonical_affine = affine @ inv_ornt_aff(transform, shape_jik)
    spacing_jik = np.empty(3)
    spacing_jik[transform[:, 0].astype(int)] = volume.spacing[::-1]
    return dataclasses.replace(
        volume,
        image=_reorient(volume.image, transform),
        mask=None if volume.mask is None else _reorient(volume.mask, transform),
        spacing=(float(spacing_jik[2]), float(spacing_jik[1]), float(spacing_jik[0])),
        affine=canonical_affine,
        stored=StoredGeometry(shape=tuple(volume.image.shape), affine=affine, orientation=stored),
    )


def as_stored(array: np.ndarray, volume: CTVolume) -> np.ndarray:
    """An array on ``volume``'s grid (a mask, a probability map) put back in the voxel order of its file.

    Args:
        array: ``(Z, H, W)``, the shape of ``volume.image``.
        volume: a volume from :func:`canonical_volume` (unchanged when it was not reoriented).

    Returns:
        ``array`` in the stored ``(Z, H, W)`` order, to be written with :func:`stored_ras_affine`.
    """
    if array.shape != volume.image.shape:
        raise ValueError(f"array shape {array.shape} is not the volume's {volume.image.shape}")
    if volume.stored is None:
        return array
    back = ornt_transform(_CANONICAL_ORNT, volume.stored.orientation)
    return _reorient(array, back)


def stored_ras_affine(volume: CTVolume) -> np.ndarray:
    """The voxel-to-RAS affine of ``volume`` as stored in its file (:func:`dicom_affine` of the stored
    geometry): a NIfTI written with it and :func:`as_stored` overlays the input in any viewer."""
    if volume.stored is None:
        return dicom_affine(volume)
    return lps_to_ras(_in_lps(volume.stored.affine, volume))


def write_nifti(
    array: np.ndarray,
    path: str | Path,
    affine: np.ndarray | None = None,
    spacing: tuple[float, float, float] | None = None,
) -> Path:
    """Write a ``(Z, H, W)`` array as a NIfTI-1 file (``.nii`` or ``.nii.gz``).

    Args:
        array: ``(Z, H, W)`` volume; dtype kept (uint8 masks stay uint8; float64 is stored float32).
        path: output file; parent folders are created.
        affine: ``(4, 4)`` voxel ``(j, i, k)`` to RAS affine. Exactly one of ``affine`` / ``spacing``.
        spacing: ``(z, y, x)`` mm; gives the DICOM-consistent default geometry
            (``lps_to_ras(default_lps_affine(...))``).

    Returns:
        The path written.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"array must be (Z, H, W), got shape {array.shape}")
    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise ValueError(f"path must end in .nii or .nii.gz, got {str(path)!r}")
    if (affine is None) == (spacing is None):
        raise ValueError("give exactly one of affine= or spacing=")
    if affine is None:
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"spacing must be three positive (z, y, x) mm values, got {spacing!r}")
        affine = lps_to_ras(default_lps_affine(array.shape, spacing))
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    elif array.dtype == bool:
        array = array.astype(np.uint8)
    img = nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as fh:  # never a truncated volume under its final name
        if path.name.endswith(".gz"):
            # mtime 0 and no file name (else the temporary file's, which names the writing process): the
            # same volume gives the same bytes, whoever writes it
            with gzip.GzipFile(filename="", fileobj=fh, mode="wb", compresslevel=_GZIP_LEVEL, mtime=0) as gz:
                img.to_stream(gz)
        else:
            img.to_stream(fh)
    return path


# Deflate never expands data more than about 1032-fold: a .nii.gz whose header declares more voxel
# bytes than that is truncated or corrupt, and is refused before anything is allocated for it.
_MAX_DEFLATE_RATIO = 1032


def read_nifti(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """Read a 3D NIfTI file into the in-memory ``(Z, H, W)`` layout, in the common voxel orientation.

    The voxels are flipped and their axes permuted as the file's affine says, so that the array lies
    as an axial DICOM series does (:data:`CANONICAL_AXES`) whatever voxel order the file holds; the
    affine returned is that of the reoriented array (every voxel keeps its place in the world). To
    read the file's own voxel order, :func:`read_nifti_as_stored`.

    Args:
        path: ``.nii`` or ``.nii.gz`` file. A 4D file with a single volume is accepted.

    Returns:
        ``(array (Z, H, W), spacing (z, y, x) mm, affine (4, 4) voxel (j, i, k) -> RAS)``; as
        :func:`read_nifti_as_stored`, reoriented.

    Raises:
        DataError: as :func:`read_nifti_as_stored`, and an oblique volume (a voxel axis more than
            :data:`OBLIQUE_TOLERANCE_DEG` from the patient axes); the message names the file.
    """
    array, affine = read_nifti_as_stored(path)
    _, transform = _canonical_transform(affine, path)
    if not _is_identity(transform):
        array, affine = _reorient(array, transform), affine @ inv_ornt_aff(transform, array.shape[::-1])
    return array, voxel_spacing(affine), affine


def read_nifti_as_stored(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D NIfTI file into the in-memory ``(Z, H, W)`` layout, in the file's own voxel order.

    Args:
        path: ``.nii`` or ``.nii.gz`` file. A 4D file with a single volume is accepted.

    Returns:
        ``(array (Z, H, W), affine (4, 4) voxel (j, i, k) -> RAS)``; the dtype is the stored one
        (float when the header sets a scale factor); the array is non-empty and real-valued, the
        affine finite and non-degenerate (positive voxel sizes, :func:`voxel_spacing`). Voxel values
        are not checked here (a probability map may hold anything); callers that need finite
        intensities check.

    Raises:
        DataError: missing, unreadable, truncated or non-3D file, voxels that are not real numbers,
            a header whose geometry is not finite or degenerate; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: NIfTI file not found")
    try:
        img = nib.load(str(path))
        header = img.header
        shape = tuple(int(n) for n in header.get_data_shape())
        if any(n < 0 for n in shape):
            raise DataError(f"{path}: the header declares a negative dimension {shape}; corrupt NIfTI file")
        declared = int(header.get_data_offset()) + int(np.prod(shape, dtype=object)) * header.get_data_dtype().itemsize
        size, name = path.stat().st_size, path.name.lower()
        limit = size if name.endswith(".nii") else size * _MAX_DEFLATE_RATIO + 4096 if name.endswith(".gz") else None
        if limit is not None and declared > limit:
            raise DataError(
                f"{path}: the header declares {shape} voxels of {header.get_data_dtype()} ({declared} bytes) but the"
                f" file holds {size} bytes; truncated or corrupt NIfTI file"
            )
        data = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path}: the header declares more voxels than can be loaded; corrupt NIfTI file") from None
    except nib.filebasedimages.ImageFileError:
        raise DataError(f"{path}: not a NIfTI file, or truncated (no readable NIfTI-1 or NIfTI-2 header)") from None
    except Exception as exc:  # nibabel raises many types for damaged files
        raise DataError(f"{path}: not a readable NIfTI file ({describe(exc)})") from None
    if data.size == 0:
        raise DataError(f"{path}: empty volume (array shape {shape}); expected a 3D volume with voxels")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3D volume, got array shape {data.shape}")
    if data.dtype.kind not in "biuf":
        raise DataError(f"{path}: voxels of type {data.dtype}; expected integer or floating-point intensities")
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise DataError(f"{path}: the header's geometry (affine) is not finite; expected finite voxel sizes and axes")
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if not (zooms > 0).all() or abs(np.linalg.det(affine[:3, :3])) <= 1e-6 * float(np.prod(zooms)):
        raise DataError(
            f"{path}: the header's geometry is degenerate (voxel size {np.round(zooms, 6).tolist()} mm, axes"
            " not independent); expected positive voxel sizes (pixdim) and a valid qform/sform"
        )
    return np.ascontiguousarray(data.transpose(2, 1, 0)), affine
