"""A phantom-trained model on a real lung nodule, against the radiologists who outlined it (chapter 10).

The real case is LIDC-IDRI-0314 (Armato et al., *Med. Phys.* 38:915–931, 2011), a solitary nodule
outlined by four LIDC readers. The repository holds a small crop of it, :data:`LIDC_CROP`, made by
:func:`make_crop` from the full series (``scripts/make_lidc_fixture.py``); :func:`load_crop` reads it.

What the readers' file gives is the number of readers who drew each voxel (0–4), not the four masks
themselves. That is enough for the figures here:

* the agreement masks :func:`agreement_masks` (drawn by at least k of 4 readers; k = 2 is the
  consensus the LIDC papers use);
* the readers' own spread, :func:`reader_pairwise_dice`: the pooled Dice over the six pairs of
  readers, ``sum_i<j 2|R_i ∩ R_j| / sum_i<j (|R_i| + |R_j|)``, which depends only on the counts,
  because ``sum_i<j |R_i ∩ R_j| = sum_v C(c_v, 2)`` and ``sum_i<j (|R_i| + |R_j|) = 3 sum_v c_v``
  for a voxel drawn by ``c_v`` readers. Each pair's own Dice is not recoverable from the counts;
* the model's Dice and boundary figures against each agreement mask, :func:`compare_with_readers`.

:func:`predict_crop` shows the crop to a trained run at the scale the run would see the whole slice
(``lungseg predict`` resizes every slice to the network's input size), so the nodule has the size in
pixels it would have there; :func:`hu_groups` and :func:`hu_table` put the phantom's tissue
intensities beside the real scan's.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.files import atomic_file
from lungseg.inference.region import LUNG_HU
from lungseg.metrics import BOUNDARY_TOLERANCE_MM, boundary_scores, confusion

__all__ = [
    "LIDC_CROP",
    "N_READERS",
    "RealCrop",
    "agreement_masks",
    "compare_with_reader_counts",
    "compare_with_readers",
    "hu_groups",
    "hu_table",
    "load_crop",
    "make_crop",
    "REAL_LUNG_HU",
    "predict_crop",
    "predict_whole_slices",
    "reader_pairwise_dice",
    "real_groups",
    "reader_counts_on_series",
    "realct_dir",
    "reference_on_series",
    "save_crop",
    "score_series",
]

#: The committed crop of LIDC-IDRI-0314 (CC BY 3.0; attribution in the README.md beside it),
#: relative to the repository root.
LIDC_CROP = "book/data/lidc-idri-0314/crop.npz"

#: Readers per LIDC case.
N_READERS = 4

#: Outside the readers' outlines, voxels of the real crop below this HU are counted as aerated lung
#: and the rest as soft tissue or bone (the crop has no tissue labels; -400 HU lies between lung
#: parenchyma, about -850, and soft tissue, about 40): the threshold prediction finds the lungs by.
REAL_LUNG_HU = LUNG_HU


@dataclass(frozen=True)
class RealCrop:
    """A crop of a real CT series with its readers' outlines.

    Attributes:
        image: float32 ``(Z, H, W)`` in HU.
        readers: uint8 ``(Z, H, W)``: how many readers drew each voxel (0 to ``n_readers``).
        spacing: voxel size ``(dz, dy, dx)`` in mm.
        full_fov_mm: the field of view ``(rows, columns)`` in mm of the series' whole slices, which
            sets the scale at which a run sees the crop (:func:`predict_crop`).
        origin: index ``(z, row, column)`` of the crop's first voxel in the whole series.
        n_readers: number of readers.
        meta: source, licence and attribution.
    """

    image: np.ndarray
    readers: np.ndarray
    spacing: tuple[float, float, float]
    full_fov_mm: tuple[float, float]
    origin: tuple[int, int, int] = (0, 0, 0)
    n_readers: int = N_READERS
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.readers.shape != self.image.shape:
            raise ValueError(f"image and readers must be (Z, H, W) of one shape, got {self.image.shape} "
                             f"and {self.readers.shape}")
        if self.readers.size and (self.readers.min() < 0 or self.readers.max() > self.n_readers):
            raise ValueError(f"readers must count 0..{self.n_readers} readers, got values up to {self.readers.max()}")
        if len(self.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise ValueError(f"spacing must be 3 positive mm values (dz, dy, dx), got {self.spacing}")

    @property
    def consensus(self) -> np.ndarray:
        """Voxels drawn by at least half of the readers (2 of 4), bool ``(Z, H, W)``."""
        return self.readers >= math.ceil(self.n_readers / 2)


def make_crop(image: np.ndarray, readers: np.ndarray, spacing: tuple[float, float, float],
              size: tuple[int, int, int] = (24, 128, 128), meta: dict[str, str] | None = None) -> RealCrop:
    """Crop a series around its outlined lesion.

    Args:
        image: the whole series ``(Z, H, W)`` in HU.
        readers: reader counts on the same grid.
        spacing: ``(dz, dy, dx)`` mm.
        size: crop size ``(Z, H, W)``; centred on the bounding box of the voxels any reader drew and
            shifted inside the series where needed.
        meta: source, licence and attribution to keep with the crop.

    Returns:
        The :class:`RealCrop` (image as float32, readers as uint8).

    Raises:
        ValueError: shapes differ, no reader drew anything, or the crop is larger than the series.
    """
    if image.shape != readers.shape or image.ndim != 3:
        raise ValueError(f"image and readers must be (Z, H, W) of one shape, got {image.shape} and {readers.shape}")
    drawn = np.argwhere(readers > 0)
    if not len(drawn):
        raise ValueError("no reader drew anything: nothing to crop around")
    if any(s > n for s, n in zip(size, image.shape)):
        raise ValueError(f"crop {size} is larger than the series {image.shape}")
    centre = (drawn.min(axis=0) + drawn.max(axis=0)) / 2
    start = [int(min(max(round(c - s / 2), 0), n - s)) for c, s, n in zip(centre, size, image.shape)]
    box = tuple(slice(a, a + s) for a, s in zip(start, size))
    return RealCrop(image=image[box].astype(np.float32), readers=readers[box].astype(np.uint8),
                    spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
                    full_fov_mm=(image.shape[1] * spacing[1], image.shape[2] * spacing[2]),
                    origin=tuple(start), meta=dict(meta or {}))  # type: ignore[arg-type]


def save_crop(crop: RealCrop, path: str | os.PathLike[str]) -> Path:
    """Write a :class:`RealCrop` as a compressed npz (HU as int16, the values of a CT series)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(p) as fh:
        np.savez_compressed(fh, image_hu=np.round(crop.image).astype(np.int16), readers=crop.readers,
                            spacing=np.asarray(crop.spacing), full_fov_mm=np.asarray(crop.full_fov_mm),
                            origin=np.asarray(crop.origin), n_readers=crop.n_readers,
                            **{f"meta_{k}": np.asarray(v) for k, v in crop.meta.items()})
    return p


def load_crop(path: str | os.PathLike[str] | None = None) -> RealCrop:
    """Read a crop written by :func:`save_crop` (default: the committed :data:`LIDC_CROP`).

    Raises:
        FileNotFoundError: no such file.
    """
    from lungseg.paths import resolve

    p = resolve(path or LIDC_CROP)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such crop (the repository ships {LIDC_CROP}; "
                                "scripts/make_lidc_fixture.py makes it from the full series)")
    with np.load(p) as z:
        return RealCrop(image=z["image_hu"].astype(np.float32), readers=z["readers"].astype(np.uint8),
                        spacing=tuple(float(v) for v in z["spacing"]),  # type: ignore[arg-type]
                        full_fov_mm=tuple(float(v) for v in z["full_fov_mm"]),  # type: ignore[arg-type]
                        origin=tuple(int(v) for v in z["origin"]),  # type: ignore[arg-type]
                        n_readers=int(z["n_readers"]),
                        meta={k[5:]: str(z[k]) for k in z.files if k.startswith("meta_")})


def agreement_masks(readers: np.ndarray, n_readers: int = N_READERS) -> dict[str, np.ndarray]:
    """Masks of the voxels drawn by at least k readers, k = 1 .. ``n_readers``.

    Returns:
        ``{"≥1 of 4": mask, "≥2 of 4 (consensus)": ..., ..., "4 of 4": ...}`` (bool), from the widest
        to the narrowest outline.
    """
    half = math.ceil(n_readers / 2)
    out = {}
    for k in range(1, n_readers + 1):
        name = f"{k} of {n_readers}" if k == n_readers else f"≥{k} of {n_readers}"
        out[name + (" (consensus)" if k == half else "")] = readers >= k
    return out


def reader_pairwise_dice(readers: np.ndarray, n_readers: int = N_READERS) -> float:
    """The readers' pooled pairwise Dice, from the per-voxel reader counts alone.

    ``sum_{i<j} 2|R_i ∩ R_j| / sum_{i<j} (|R_i| + |R_j|)`` over the ``C(n, 2)`` pairs of readers,
    which equals ``sum_v c_v (c_v - 1) / ((n - 1) sum_v c_v)`` for counts ``c_v``: each voxel drawn by
    ``c`` readers lies in ``C(c, 2)`` pairwise intersections, and each reader's mask enters ``n - 1``
    pairs. 1.0 when all readers drew the same voxels.

    Args:
        readers: reader counts, any shape.
        n_readers: number of readers (at least 2).

    Returns:
        The pooled pairwise Dice; NaN when no reader drew anything.
    """
    if n_readers < 2:
        raise ValueError(f"pairwise agreement needs at least 2 readers, got {n_readers}")
    c = np.asarray(readers, dtype=np.float64)
    if c.size and (c.min() < 0 or c.max() > n_readers):
        raise ValueError(f"reader counts must lie in 0..{n_readers}")
    total = c.sum()
    return float((c * (c - 1)).sum() / ((n_readers - 1) * total)) if total > 0 else math.nan


def compare_with_readers(pred: np.ndarray, crop: RealCrop,
                         tolerance_mm: float = BOUNDARY_TOLERANCE_MM) -> list[dict[str, Any]]:
    """The prediction against each agreement mask of a crop (:func:`compare_with_reader_counts` on its grid).

    Args:
        pred: binary prediction ``(Z, H, W)`` on the crop's grid.
        crop: the crop with its reader counts.
        tolerance_mm: surface-Dice tolerance.

    Returns:
        As :func:`compare_with_reader_counts`.
    """
    return compare_with_reader_counts(pred, crop.readers, crop.spacing, crop.n_readers, tolerance_mm)


def compare_with_reader_counts(pred: np.ndarray, readers: np.ndarray, spacing: tuple[float, float, float],
                               n_readers: int = N_READERS,
                               tolerance_mm: float = BOUNDARY_TOLERANCE_MM) -> list[dict[str, Any]]:
    """A prediction against each agreement mask of per-voxel reader counts: Dice, precision, recall and 3D
    boundary figures. On a whole scan (:func:`reader_counts_on_series`) a model's false candidates far from
    the nodule count, as they do in the mask a user gets.

    Args:
        pred: binary prediction ``(Z, H, W)``.
        readers: how many readers drew each voxel, on the same grid.
        spacing: voxel size ``(dz, dy, dx)`` in mm.
        n_readers: number of readers.
        tolerance_mm: surface-Dice tolerance.

    Returns:
        One row per :func:`agreement_masks` entry: ``reference``, ``voxels``, ``volume_ml``,
        ``dice``, ``precision``, ``recall``, ``hd95_mm``, ``surface_dice`` (3D with the voxel
        spacing; :data:`lungseg.metrics.BOUNDARY_EMPTY_RULE`), plus ``predicted_voxels``.

    Raises:
        ValueError: ``pred`` and ``readers`` differ in shape.
    """
    p = np.asarray(pred).astype(bool)
    if p.shape != np.shape(readers):
        raise ValueError(f"pred must be on the readers' grid {np.shape(readers)}, got {p.shape}")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = []
    for name, ref in agreement_masks(np.asarray(readers), n_readers).items():
        c = confusion(p, ref)
        hd95, nsd = boundary_scores(p, ref, spacing, tolerance_mm)
        rows.append({"reference": name, "voxels": int(ref.sum()), "volume_ml": ref.sum() * voxel_ml,
                     "predicted_voxels": int(p.sum()), "dice": c.dice, "precision": c.precision,
                     "recall": c.recall, "hd95_mm": hd95, "surface_dice": nsd})
    return rows


def _model_scale(run: Any, crop: RealCrop) -> tuple[float, float]:
    """Pixel size (mm) at which the run sees the crop: the whole slice's field of view over the input size."""
    size = run.fingerprint.image_size
    return crop.full_fov_mm[0] / size, crop.full_fov_mm[1] / size


def predict_crop(run: Any, crop: RealCrop, batch_size: int = 8) -> np.ndarray:
    """Tumour probabilities of a crop, at the scale the run would see the whole slice.

    ``lungseg predict`` resizes every whole slice to the network's input size ``S``, so a structure
    of the real scan reaches the network at ``FOV / S`` mm per pixel (1.56 mm for a 400 mm field of
    view and S = 256, inside the phantom's 1.2–1.6 mm). Here the crop is resized to that pixel size
    (bilinear, after the same windowing and z-score of eq. 1 with the run's fingerprint), passed
    through the fully convolutional network (reflect-padded to a multiple of its downsampling), and
    the probabilities are resized back: :meth:`lungseg.inference.Predictor.probabilities` with a
    ``network_size``. What differs from the whole slice is only the context outside the crop; the
    medium runs were trained on 128-pixel patches, a context of the same order.

    Args:
        run: a :class:`lungseg.inference.Predictor` on HU data.
        crop: the crop.
        batch_size: slices per forward pass.

    Returns:
        float32 probabilities ``(Z, H, W)`` on the crop's grid.
    """
    if run.fingerprint.intensity != "hu":
        raise ValueError(f"{run.run_dir}: the run was trained on '{run.fingerprint.intensity}' images, not HU")
    _, h, w = crop.image.shape
    sy, sx = _model_scale(run, crop)
    size = (max(1, round(h * crop.spacing[1] / sy)), max(1, round(w * crop.spacing[2] / sx)))
    return run.probabilities(crop.image, batch_size=batch_size, network_size=size)


def hu_groups(image: np.ndarray, labels: np.ndarray, names: dict[str, int]) -> dict[str, np.ndarray]:
    """The HU values of each labelled tissue (e.g. the phantom's
    :data:`lungseg.data.phantom.TISSUE_LABELS`), leaving out labels with no voxel.

    Args:
        image: HU ``(…)``.
        labels: integer labels of the same shape.
        names: ``{tissue: label}``.

    Returns:
        ``{tissue: float32 HU values}``.
    """
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} must have one shape")
    return {name: image[labels == lab].astype(np.float32) for name, lab in names.items() if (labels == lab).any()}


def hu_table(groups: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Voxel count, mean, SD and 5/25/50/75/95th percentiles (HU) of each group of :func:`hu_groups`."""
    rows = []
    for name, v in groups.items():
        q = np.percentile(v, [5, 25, 50, 75, 95]) if v.size else [math.nan] * 5
        rows.append({"tissue": name, "voxels": int(v.size), "mean": float(v.mean()) if v.size else math.nan,
                     "sd": float(v.std()) if v.size else math.nan,
                     **{f"p{k}": float(x) for k, x in zip((5, 25, 50, 75, 95), q)}})
    return rows


def real_groups(crop: RealCrop, lung_hu: float = REAL_LUNG_HU) -> dict[str, np.ndarray]:
    """The HU values of the real crop's regions, for :func:`hu_table`: the nodule as the readers
    agree on it (consensus), its fringe (drawn by fewer readers), and the rest split at ``lung_hu``
    into aerated lung and soft tissue or bone (a threshold, not a segmentation: stated so)."""
    outside = crop.readers == 0
    return {
        "nodule (consensus)": crop.image[crop.consensus],
        "nodule fringe (fewer readers)": crop.image[(crop.readers > 0) & ~crop.consensus],
        f"rest < {lung_hu:g} HU (lung)": crop.image[outside & (crop.image < lung_hu)],
        f"rest >= {lung_hu:g} HU (soft tissue, bone)": crop.image[outside & (crop.image >= lung_hu)],
    }


def realct_dir() -> Path | None:
    """The folder of the project's real CT cases, when this machine has it: ``$LUNGSEG_REALCT``, else
    ``../shared/realct`` beside the repository; ``None`` elsewhere (a user's clone)."""
    from lungseg.paths import repo_root

    for candidate in (os.environ.get("LUNGSEG_REALCT"), repo_root().parent / "shared" / "realct"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def predict_whole_slices(run: Any, crop: RealCrop, series: str | os.PathLike[str],
                         batch_size: int = 8) -> tuple[np.ndarray, int]:
    """The whole-slice route, for comparison with :func:`predict_crop`: the crop's slices of the full
    series, segmented whole by :meth:`lungseg.inference.Predictor.probabilities` (what ``lungseg
    predict`` does).

    Args:
        run: a :class:`lungseg.inference.Predictor`.
        crop: the crop (its ``origin`` locates it in the series).
        series: the folder of the full DICOM series.
        batch_size: slices per forward pass.

    Returns:
        ``(probabilities on the crop's grid, voxels predicted outside the crop on those slices)``;
        the threshold is the run's.

    Raises:
        ValueError: the series does not hold the crop (another grid or case).
    """
    from lungseg.data.dicom import read_dicom_series

    volumes = read_dicom_series(series)
    if len(volumes) != 1:
        raise ValueError(f"{series}: expected one series, found {len(volumes)}")
    volume = volumes[0]
    box = tuple(slice(o, o + n) for o, n in zip(crop.origin, crop.image.shape))
    if any(b.stop > n for b, n in zip(box, volume.image.shape)) or not np.array_equal(
            np.round(volume.image[box]), np.round(crop.image)):
        raise ValueError(f"{series}: its voxels at {crop.origin} are not the crop's (another case or grid)")
    probs = run.probabilities(volume.image[box[0]], batch_size=batch_size)
    inside = probs[:, box[1], box[2]]
    outside = int((probs >= run.threshold).sum() - (inside >= run.threshold).sum())
    return inside, outside


def reference_on_series(volume: Any, reference: str | os.PathLike[str]) -> np.ndarray:
    """A NIfTI reference mask on the grid of a DICOM series read by :func:`lungseg.data.dicom.read_dicom_series`.

    The NIfTI affine (RAS) must be the series' own (its LPS affine converted): same voxels, same
    order; the mask is then the NIfTI array with its axes reversed to ``(Z, H, W)``.

    Raises:
        ValueError: the reference lies on another grid.
    """
    return _on_series(volume, reference) > 0


def reader_counts_on_series(volume: Any, readers: str | os.PathLike[str], n_readers: int = N_READERS) -> np.ndarray:
    """Per-voxel reader counts from a NIfTI (``nodule_readers.nii.gz``) on the grid of a DICOM series, as
    :func:`reference_on_series` reads a mask: uint8 ``(Z, H, W)`` in 0..``n_readers``.

    Raises:
        ValueError: the file lies on another grid, or holds values that are not counts of ``n_readers`` readers.
    """
    data = _on_series(volume, readers)
    counts = np.rint(data)
    if data.size and (not np.allclose(counts, data) or counts.min() < 0 or counts.max() > n_readers):
        raise ValueError(f"{readers}: expected whole reader counts 0..{n_readers}, got values in "
                         f"[{data.min()}, {data.max()}]")
    return counts.astype(np.uint8)


def _on_series(volume: Any, path: str | os.PathLike[str]) -> np.ndarray:
    """The array of a NIfTI on the series' grid, axes reversed to ``(Z, H, W)`` (see :func:`reference_on_series`)."""
    import nibabel as nib

    from lungseg.data.nifti import lps_to_ras

    image = nib.load(str(path))
    data = np.asarray(image.dataobj)
    if volume.affine is None or data.shape[::-1] != volume.image.shape or not np.allclose(
            lps_to_ras(volume.affine), image.affine, atol=1e-2):
        raise ValueError(f"{path}: not on the grid of the series ({data.shape[::-1]} vs {volume.image.shape}, "
                         "or another affine)")
    return data.transpose(2, 1, 0)


def score_series(run: Any, series: str | os.PathLike[str], reference: str | os.PathLike[str],
                 tolerance_mm: float = BOUNDARY_TOLERANCE_MM, batch_size: int = 8) -> dict[str, Any]:
    """A run on a whole real series against a reference outline, in numbers only (for cases whose
    licence lets numbers, not images, into the book).

    Args:
        run: a :class:`lungseg.inference.Predictor`.
        series: folder of one DICOM series.
        reference: NIfTI mask on the series' grid (:func:`reference_on_series`).
        tolerance_mm: surface-Dice tolerance.
        batch_size: slices per forward pass.

    Returns:
        ``slices``, ``pixel_mm`` (the scale at which the run sees the slices), ``reference_ml``,
        ``predicted_ml``, ``dice``, ``precision``, ``recall``, ``hd95_mm``, ``surface_dice`` (3D),
        and ``predicted_ml_off_reference_slices`` (predicted on slices without reference).
    """
    from lungseg.data.dicom import read_dicom_series

    volumes = read_dicom_series(series)
    if len(volumes) != 1:
        raise ValueError(f"{series}: expected one series, found {len(volumes)}")
    volume = volumes[0]
    ref = reference_on_series(volume, reference)
    pred = run.probabilities(volume.image, batch_size=batch_size) >= run.threshold
    c = confusion(pred, ref)
    hd95, nsd = boundary_scores(pred, ref, volume.spacing, tolerance_mm)
    ml = float(np.prod(volume.spacing)) / 1000.0
    on = ref.reshape(len(ref), -1).any(axis=1)
    return {
        "slices": int(len(ref)),
        "pixel_mm": volume.image.shape[1] * volume.spacing[1] / run.fingerprint.image_size,
        "reference_ml": float(ref.sum() * ml), "predicted_ml": float(pred.sum() * ml),
        "dice": c.dice, "precision": c.precision, "recall": c.recall, "hd95_mm": hd95, "surface_dice": nsd,
        "predicted_ml_off_reference_slices": float(pred[~on].sum() * ml),
    }
