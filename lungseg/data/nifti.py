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
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from lungseg.data.volume import CTVolume
from lungseg.errors import DataError, describe
from lungseg.files import atomic_file

_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: gzip level of a written .nii.gz: nibabel's own default (fast; masks compress well at any level).
_GZIP_LEVEL = 1


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
    space = str(volume.meta.get("affine_space", "LPS")).upper()
    if space not in ("LPS", "RAS"):
        raise ValueError(f"volume.meta['affine_space'] must be 'LPS' or 'RAS', got {space!r}")
    affine = np.asarray(volume.affine, dtype=np.float64)
    return lps_to_ras(affine) if space == "RAS" else affine


def dicom_affine(volume: CTVolume) -> np.ndarray:
    """The voxel-to-RAS affine to give a NIfTI mask so that it overlays ``volume``'s DICOM series.

    Args:
        volume: a volume read from (or written as) a DICOM series.

    Returns:
        ``(4, 4)`` RAS affine for ``write_nifti(mask (Z, H, W), path, affine=...)``.
    """
    return lps_to_ras(volume_lps_affine(volume))


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
            # mtime 0: the same volume gives the same bytes
            with gzip.GzipFile(fileobj=fh, mode="wb", compresslevel=_GZIP_LEVEL, mtime=0) as gz:
                img.to_stream(gz)
        else:
            img.to_stream(fh)
    return path


# Deflate never expands data more than about 1032-fold: a .nii.gz whose header declares more voxel
# bytes than that is truncated or corrupt, and is refused before anything is allocated for it.
_MAX_DEFLATE_RATIO = 1032


def read_nifti(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """Read a 3D NIfTI file into the in-memory ``(Z, H, W)`` layout.

    Args:
        path: ``.nii`` or ``.nii.gz`` file. A 4D file with a single volume is accepted.

    Returns:
        ``(array (Z, H, W), spacing (z, y, x) mm, affine (4, 4) voxel (j, i, k) -> RAS)``; the dtype
        is the stored one (float when the header sets a scale factor); the array is non-empty and
        real-valued, the affine finite and non-degenerate, the spacing positive. Voxel values are not
        checked here (a probability map may hold anything); callers that need finite intensities check.

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
    spacing = (float(zooms[2]), float(zooms[1]), float(zooms[0]))
    return np.ascontiguousarray(data.transpose(2, 1, 0)), spacing, affine
