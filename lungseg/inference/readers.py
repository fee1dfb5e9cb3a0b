"""Reading a user's scans for :func:`lungseg.inference.predict`: DICOM series, NIfTI volumes, PNG/JPEG
images, ``.npz`` stacks and folders of studies.

Every input is read and checked in full before anything is written: NaN or infinite intensities are
refused (with their count), so is a folder of images that also holds other files, and so are two
images whose masks would share a name (``scan.png`` and ``scan.jpg`` would both give
``scan_mask.png``; names are never silently changed, rename one of the inputs instead).

Volumes (a DICOM series, a NIfTI file) are brought to one voxel orientation, that of an axial DICOM
series (:func:`lungseg.data.nifti.canonical_volume`), so that the network sees axial slices the same
way up whatever voxel order the file holds; the file's own geometry is kept on the volume
(``CTVolume.stored``) for the writers. Oblique volumes are refused. PNG/JPEG images and ``.npz``
stacks carry no orientation: their slices are taken as they are.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.errors import DataError
from lungseg.inference.checks import require_finite

__all__ = ["VOLUME_SUFFIXES", "list_studies", "read_input", "strip_suffix"]

VOLUME_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")


def strip_suffix(name: str) -> str:
    """``name`` without its input or output suffix (``.nii.gz``, ``.nii``, ``.npz``, ``.png``, ``.jpg``, ...)."""
    for suf in (".nii.gz", ".nii", ".npz", ".png", ".jpg", ".jpeg", ".json"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def _check_mask_names(folder: Path, images: list[Path]) -> None:
    """Refuse two images whose masks would have the same name (``scan.png`` and ``scan.jpg`` -> ``scan_mask.png``).

    Names are compared case-insensitively, as they would collide on macOS and Windows file systems.
    """
    seen: dict[str, Path] = {}
    for path in images:
        key = strip_suffix(path.name).casefold()
        if key in seen:
            raise DataError(
                f"{folder}: {seen[key].name} and {path.name} would both be written as"
                f" {strip_suffix(seen[key].name)}_mask.png; rename one of them (each image's mask is <name>_mask.png)"
            )
        seen[key] = path


def _read_folder(path: Path) -> tuple[str, list[Any]]:
    """A folder of PNG/JPEG images (nothing else) or of one CT DICOM series."""
    from lungseg.data.dicom import is_dicom_file, read_dicom_series
    from lungseg.data.images import is_image_file, read_image

    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if is_image_file(p)]
    others = [p for p in files if not is_image_file(p)]
    if images and not any(is_dicom_file(p) for p in others):  # with DICOM files it is a series folder
        if others:
            shown = ", ".join(p.name for p in others[:5]) + (", ..." if len(others) > 5 else "")
            raise DataError(
                f"{path}: holds {len(images)} PNG/JPEG image(s) but also {len(others)} other file(s) ({shown});"
                " a folder to segment holds only PNG/JPEG images (.png, .jpg, .jpeg) or the files of one CT DICOM"
                " series; move the other files out"
            )
        _check_mask_names(path, images)
        return "images", [(p, read_image(p)) for p in images]
    from lungseg.data.nifti import canonical_volume

    volumes = read_dicom_series(path)
    for vol in volumes:
        require_finite(vol.image, path)
    return "volume", [canonical_volume(vol, path) for vol in volumes]


def _read_nifti(path: Path) -> Any:
    """A NIfTI volume as a :class:`lungseg.data.volume.CTVolume` in HU in the common voxel orientation
    (RAS affine), the file's own geometry kept for the writers."""
    from lungseg.data.nifti import canonical_volume, read_nifti_as_stored, voxel_spacing
    from lungseg.data.volume import CTVolume

    array, affine = read_nifti_as_stored(path)
    image = np.asarray(array, dtype=np.float32)
    require_finite(image, path)
    volume = CTVolume(
        image=image, mask=None, spacing=voxel_spacing(affine), patient_id=strip_suffix(path.name),
        affine=affine, intensity="hu", source=str(path), meta={"affine_space": "RAS"},
    )
    return canonical_volume(volume, path)


def read_input(path: Path) -> tuple[str, list[Any]]:
    """``(kind, items)``: kind ``"volume"`` (items: CTVolume), ``"images"`` ((path, array)) or
    ``"npz"`` (items: images ``(N, H, W)``, intensity, spacing).

    Every kind is checked before anything is written: finite intensities, readable files, and (for
    a folder of images) one mask name per image.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: an unsupported, unreadable or non-finite input.
    """
    from lungseg.data.images import is_image_file, read_image

    if not path.exists():
        raise FileNotFoundError(f"{path}: input not found")
    name = path.name.lower()
    if path.is_dir():
        return _read_folder(path)
    if name.endswith(VOLUME_SUFFIXES):
        return "volume", [_read_nifti(path)]
    if is_image_file(path):
        return "images", [(path, read_image(path))]
    if name.endswith(".npz"):
        from lungseg.data.npz import read_npz_images

        images, intensity, spacing = read_npz_images(path)  # finite float32 (N, H, W), never unpickled
        return "npz", [images, intensity, spacing]
    raise DataError(
        f"{path}: unsupported input; expected a DICOM series folder, a NIfTI volume (.nii/.nii.gz),"
        " PNG/JPEG images (a file or a folder) or an .npz file with 'images'"
    )


def list_studies(path: str | os.PathLike[str]) -> list[Path] | None:
    """The studies of a *folder of studies*, or ``None`` when ``path`` is not one.

    A folder of studies holds no DICOM or PNG/JPEG files at its top level, and at least one
    subfolder (a DICOM series, searched recursively) or NIfTI volume (``.nii``/``.nii.gz``); these
    are its studies, sorted by name. Other top-level files are skipped with a warning; hidden
    entries (``.name``) are ignored.
    """
    from lungseg.data.dicom import is_dicom_file
    from lungseg.data.images import is_image_file

    folder = Path(path)
    if not folder.is_dir():
        return None
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file()]
    if any(is_image_file(p) or is_dicom_file(p) for p in files):
        return None
    studies = [p for p in entries if p.is_dir() or (p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES))]
    if not studies:
        return None
    for p in files:
        if p not in studies:
            warnings.warn(f"{p}: neither a study folder nor a NIfTI volume; skipped", stacklevel=2)
    return studies
