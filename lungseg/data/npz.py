"""The ``.npz`` arrays format: 2D slices with masks, grouped into patients.

Keys (``numpy.savez`` without pickling):

``images``       float32 ``(N, H, W)`` (other float or integer dtypes are cast to float32; bool,
                 string, object and complex arrays are rejected); Hounsfield units unless
                 ``intensity`` says otherwise.
``masks``        uint8 ``(N, H, W)`` with values in {0, 1} (bool, integer or float arrays holding
                 only 0 and 1 are accepted).
``patient_ids``  optional ``(N,)`` strings (integers are converted to strings). Default: every
                 slice is its own patient, ``slice_00000``, ``slice_00001``, ... — so a split can
                 never leak a slice, but slices of one real patient are then treated as
                 independent patients.
``spacing``      optional ``(N, 2)`` pixel size in mm as (row, column); default 1.0 mm, flagged
                 ``meta["spacing_known"] = False``. All slices of a patient must share it.
``intensity``    optional scalar string, ``"hu"`` (default) or ``"unit"`` (already scaled to
                 [0, 1]: the HU window is skipped and only normalisation applies).

Slices of a patient become one :class:`CTVolume` ``(Z, H, W)`` in file order. The slice
thickness is unknown in this format, so ``spacing[0]`` is a 1.0 mm placeholder (flagged
``meta["z_spacing_known"] = False``); nothing in lungseg uses it for 2D work.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lungseg.data.base import CTDataset
from lungseg.data.volume import CTVolume
from lungseg.errors import DataError, describe
from lungseg.limits import MAX_NPZ_MEMBER_BYTES

__all__ = ["NpzDataset", "read_npz", "read_npz_images", "write_npz", "NpzArrays"]

REQUIRED_KEYS: tuple[str, ...] = ("images", "masks")
OPTIONAL_KEYS: tuple[str, ...] = ("patient_ids", "spacing", "intensity")


class NpzArrays:
    """Validated contents of an ``.npz`` file (all arrays indexed by slice ``N``)."""

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        patient_ids: np.ndarray,
        spacing: np.ndarray,
        intensity: str,
        spacing_known: bool,
        patient_ids_known: bool = True,
    ) -> None:
        self.images = images
        self.masks = masks
        self.patient_ids = patient_ids
        self.spacing = spacing
        self.intensity = intensity
        self.spacing_known = spacing_known
        self.patient_ids_known = patient_ids_known


def _check_images(images: np.ndarray, where: str) -> np.ndarray:
    if images.dtype.kind not in "fiu":
        raise DataError(f"{where}: key 'images' must be a float array (N, H, W), got dtype {images.dtype}")
    if images.ndim != 3:
        raise DataError(f"{where}: key 'images' must have shape (N, H, W), got shape {images.shape}")
    if 0 in images.shape:
        raise DataError(f"{where}: key 'images' is empty, shape {images.shape}")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused below
        images = images.astype(np.float32, copy=False)
    bad = images.size - int(np.count_nonzero(np.isfinite(images)))
    if bad:
        raise DataError(
            f"{where}: key 'images' contains {bad} NaN or infinite value(s) (of {images.size});"
            " expected finite intensities"
        )
    return images


def _check_masks(masks: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    if masks.dtype.kind not in "biuf":
        raise DataError(f"{where}: key 'masks' must be a uint8 array in {{0, 1}}, got dtype {masks.dtype}")
    if masks.ndim != 3:
        raise DataError(f"{where}: key 'masks' must have shape (N, H, W), got shape {masks.shape}")
    if masks.shape != shape:
        raise DataError(f"{where}: key 'masks' has shape {masks.shape} but 'images' has shape {shape}")
    if masks.dtype.kind != "b":
        bad = (masks != 0) & (masks != 1)
        if bad.any():
            values = np.unique(masks[bad])[:5].tolist()
            raise DataError(
                f"{where}: key 'masks' must hold only 0 and 1, found other values such as {values} "
                "(binarise label maps before saving, e.g. masks = (labels > 0))"
            )
    return masks.astype(np.uint8, copy=False)


def _check_patient_ids(ids: np.ndarray | None, n: int, where: str) -> np.ndarray:
    if ids is None:
        return np.array([f"slice_{i:05d}" for i in range(n)])
    if ids.dtype.kind not in "USiu":
        raise DataError(f"{where}: key 'patient_ids' must be an (N,) array of strings, got dtype {ids.dtype}")
    if ids.shape != (n,):
        raise DataError(f"{where}: key 'patient_ids' must have shape ({n},) to match 'images', got {ids.shape}")
    try:
        ids = np.char.decode(ids, "utf-8") if ids.dtype.kind == "S" else ids.astype(str)
    except (UnicodeError, ValueError):
        raise DataError(f"{where}: key 'patient_ids' holds bytes that are not UTF-8 text") from None
    if (np.char.strip(ids) == "").any():
        raise DataError(f"{where}: key 'patient_ids' contains empty strings")
    return ids


def _check_spacing(spacing: np.ndarray | None, n: int, where: str) -> tuple[np.ndarray, bool]:
    if spacing is None:
        return np.ones((n, 2), dtype=np.float64), False
    if spacing.dtype.kind not in "fiu":
        raise DataError(f"{where}: key 'spacing' must be a float array (N, 2) in mm, got dtype {spacing.dtype}")
    if spacing.shape != (n, 2):
        raise DataError(f"{where}: key 'spacing' must have shape ({n}, 2) (row, column mm), got {spacing.shape}")
    spacing = spacing.astype(np.float64)
    if not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise DataError(f"{where}: key 'spacing' must be positive finite millimetres")
    return spacing, True


def _check_intensity(value: np.ndarray | None, images: np.ndarray, where: str) -> str:
    if value is None:
        intensity = "hu"
    else:
        if value.dtype.kind not in "US" or value.size != 1:
            raise DataError(
                f"{where}: key 'intensity' must be the string 'hu' or 'unit',"
                f" got a {value.dtype} array of shape {value.shape}"
            )
        item = value.reshape(()).item()
        intensity = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
        if intensity not in ("hu", "unit"):
            raise DataError(f"{where}: key 'intensity' must be 'hu' or 'unit', got {intensity!r}")
    lo, hi = float(images.min()), float(images.max())
    if intensity == "unit" and (lo < -1e-3 or hi > 1.0 + 1e-3):
        raise DataError(f"{where}: intensity is 'unit' but 'images' range over [{lo:.4g}, {hi:.4g}], expected [0, 1]")
    if intensity == "hu" and lo >= 0.0 and hi <= 1.0:
        warnings.warn(
            f"{where}: 'images' lie in [0, 1] but intensity is 'hu' (the default); if they are already "
            "scaled, save intensity='unit' so the HU window is not applied",
            stacklevel=3,
        )
    return intensity


def _check_member_sizes(path: Path, wanted: tuple[str, ...]) -> None:
    """Refuse an array that would unpack beyond :data:`lungseg.limits.MAX_NPZ_MEMBER_BYTES`, from the
    sizes in the zip directory, before anything is decompressed (a small file can inflate to gigabytes)."""
    try:
        with zipfile.ZipFile(path) as zf:
            sizes = {info.filename: info.file_size for info in zf.infolist()}
    except Exception as err:  # zipfile raises several types for a damaged directory
        raise DataError(f"{path}: not a readable .npz file ({describe(err)})") from None
    for key in wanted:
        size = sizes.get(f"{key}.npy", 0)
        if size > MAX_NPZ_MEMBER_BYTES:
            raise DataError(
                f"{path}: key {key!r} unpacks to {size} bytes, over the {MAX_NPZ_MEMBER_BYTES} bytes lungseg reads"
                " from an .npz (lungseg.limits); store larger data as a DICOM, MSD or NIfTI folder"
            )


def _load_arrays(path: Path, required: tuple[str, ...], wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The ``wanted`` arrays present in the ``.npz`` file at ``path`` (``required`` ones must be there).

    Never unpickles (``allow_pickle=False``). Every failure of the zip or ``.npy`` layers (numpy and
    zipfile raise many exception types for damaged files) becomes one :class:`DataError` line.
    """
    where = str(path)
    if not path.exists():
        raise DataError(f"{where}: file not found")
    if not path.is_file():
        raise DataError(f"{where}: not a file; expected an .npz file written by numpy.savez")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{where}: not a readable .npz file (not a zip archive written by numpy.savez)")
    _check_member_sizes(path, wanted)
    raw: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            present = set(data.files)
            missing = [k for k in required if k not in present]
            if missing and "masks" in required:
                raise DataError(
                    f"{where}: missing key(s) {missing}; an .npz dataset needs 'images' (N, H, W) and "
                    f"'masks' (N, H, W), optional {list(OPTIONAL_KEYS)}; found {sorted(present)}"
                )
            if missing:
                raise DataError(
                    f"{where}: missing key(s) {missing}; an .npz to segment needs 'images' (N, H, W), optional"
                    f" 'intensity' and 'spacing'; found {sorted(present)}"
                )
            for key in wanted:
                if key not in present:
                    continue
                try:
                    value = data[key]
                except MemoryError:
                    raise DataError(f"{where}: key {key!r} declares an array too large to load; corrupt file") from None
                except Exception as err:
                    if isinstance(err, ValueError) and "pickle" in str(err):  # object arrays: never unpickled
                        raise DataError(
                            f"{where}: key {key!r} holds Python objects, which are never loaded (no pickle);"
                            " save numbers, and string ids with dtype str"
                        ) from None
                    raise DataError(f"{where}: key {key!r} is not a readable NumPy array ({describe(err)})") from None
                if not isinstance(value, np.ndarray):  # a zip member that is not an .npy file
                    raise DataError(f"{where}: key {key!r} is not a NumPy array (.npy) inside the .npz file")
                raw[key] = value
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{where}: an array in the file declares a size too large to load; corrupt file") from None
    except Exception as err:  # zipfile/zlib/numpy raise many types (BadZipFile, zlib.error, EOFError, ...)
        raise DataError(f"{where}: not a readable .npz file ({describe(err)})") from None
    return raw


def read_npz(path: str | os.PathLike[str]) -> NpzArrays:
    """Read and validate an ``.npz`` arrays file (see the module docstring for the format).

    Raises:
        DataError: unreadable file, missing key, wrong dtype/shape, non-binary mask, mismatched
            ``N``; the message names the file and the key. Nothing is ever unpickled.
    """
    path = Path(path)
    where = str(path)
    raw = _load_arrays(path, REQUIRED_KEYS, REQUIRED_KEYS + OPTIONAL_KEYS)
    images = _check_images(raw["images"], where)
    masks = _check_masks(raw["masks"], images.shape, where)
    n = images.shape[0]
    ids = _check_patient_ids(raw.get("patient_ids"), n, where)
    spacing, known = _check_spacing(raw.get("spacing"), n, where)
    intensity = _check_intensity(raw.get("intensity"), images, where)
    return NpzArrays(images, masks, ids, spacing, intensity, known, patient_ids_known=raw.get("patient_ids") is not None)


def read_npz_images(path: str | os.PathLike[str]) -> tuple[np.ndarray, str, np.ndarray | None]:
    """The images of an ``.npz`` file to segment (``masks`` and ``patient_ids`` are not needed).

    Returns:
        ``(images float32 (N, H, W), intensity "hu" | "unit", spacing (N, 2) mm or None when absent)``,
        validated exactly as :func:`read_npz` validates them (finite images, positive spacing).

    Raises:
        DataError: unreadable file, no ``images`` key, wrong dtype/shape, NaN or infinite values
            (their count is given), bad ``spacing`` or ``intensity``; the message names the file.
    """
    path = Path(path)
    where = str(path)
    raw = _load_arrays(path, ("images",), ("images", "spacing", "intensity"))
    images = _check_images(raw["images"], where)
    spacing = _check_spacing(raw["spacing"], images.shape[0], where)[0] if "spacing" in raw else None
    intensity = _check_intensity(raw.get("intensity"), images, where)
    return images, intensity, spacing


def write_npz(
    path: str | os.PathLike[str],
    images: np.ndarray,
    masks: np.ndarray,
    patient_ids: Sequence[str] | np.ndarray | None = None,
    spacing: np.ndarray | None = None,
    intensity: str = "hu",
) -> Path:
    """Write slices in the ``.npz`` format, validating them exactly as :func:`read_npz` does.

    Args:
        path: output file (``.npz`` is appended by numpy when missing).
        images: ``(N, H, W)`` numeric.
        masks: ``(N, H, W)`` in {0, 1}.
        patient_ids: optional ``(N,)`` strings.
        spacing: optional ``(N, 2)`` mm.
        intensity: ``"hu"`` or ``"unit"``.

    Returns:
        The written path.
    """
    path = Path(path)
    where = f"write_npz({path})"
    imgs = _check_images(np.asarray(images), where)
    msks = _check_masks(np.asarray(masks), imgs.shape, where)
    arrays: dict[str, np.ndarray] = {"images": imgs, "masks": msks}
    if patient_ids is not None:
        arrays["patient_ids"] = _check_patient_ids(np.asarray(patient_ids), imgs.shape[0], where)
    if spacing is not None:
        arrays["spacing"] = _check_spacing(np.asarray(spacing), imgs.shape[0], where)[0]
    arrays["intensity"] = np.array(_check_intensity(np.array(intensity), imgs, where))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


class NpzDataset(CTDataset):
    """Slices from an ``.npz`` file, grouped by ``patient_ids`` into volumes (read once, eagerly)."""

    kind = "npz"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        arrays = read_npz(path)
        ids, first = np.unique(arrays.patient_ids, return_index=True)
        order = [str(p) for p in ids[np.argsort(first)]]
        super().__init__(path, order, has_masks=True, cache_size=0)
        self.arrays = arrays
        self.patient_ids_known = arrays.patient_ids_known
        self._rows: dict[str, np.ndarray] = {}
        for pid in order:
            rows = np.flatnonzero(arrays.patient_ids == pid)
            sp = arrays.spacing[rows]
            if not np.allclose(sp, sp[0]):
                raise DataError(
                    f"{path}: key 'spacing' differs between slices of patient {pid!r} "
                    f"(e.g. {sp[0].tolist()} vs {sp[np.argmax(np.abs(sp - sp[0]).sum(1))].tolist()})"
                )
            self._rows[pid] = rows

    def _load(self, patient_id: str) -> CTVolume:
        rows = self._rows[patient_id]
        sy, sx = (float(v) for v in self.arrays.spacing[rows[0]])
        return CTVolume(
            image=self.arrays.images[rows],
            mask=self.arrays.masks[rows],
            spacing=(1.0, sy, sx),
            patient_id=patient_id,
            intensity=self.arrays.intensity,
            source=str(self.source),
            meta={"rows": rows.tolist(), "z_spacing_known": False, "spacing_known": self.arrays.spacing_known},
        )

    def _tumour(self, patient_id: str) -> bool:
        return bool(self.arrays.masks[self._rows[patient_id]].any())
