"""Patient-level splits and the 2D axial slice dataset used for training and evaluation.

* :func:`patient_split` splits **patients**, never slices (slices of one patient are strongly
  correlated, a slice-level split leaks them into the test set), stratified on tumour presence.
* :class:`SliceDataset` turns the volumes of some patients into preprocessed ``(1, S, S)`` slices
  (eq. 1 normalisation with the training fingerprint, then bilinear resize to ``S``; masks
  nearest-neighbour), optionally caches them on disk and flags the tumour slices. Training
  draws and augments its batches from these arrays on the training device
  (:mod:`lungseg.training.patches`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from lungseg.data.base import CTDataset
from lungseg.data.sources import open_dataset
from lungseg.errors import DataError
from lungseg.preprocess import Fingerprint, preprocess_slices, resize_mask

__all__ = [
    "SPLITS",
    "patient_split",
    "SliceInfo",
    "SliceDataset",
    "CACHE_VERSION",
]

SPLITS: tuple[str, str, str] = ("train", "val", "test")
#: Bump when the cached arrays change meaning (invalidates every cache file).
CACHE_VERSION = 1
#: Slices preprocessed per call, bounding peak memory on 500-slice volumes.
_CHUNK = 32


# ---------------------------------------------------------------------------------------------
# Patient-level split
# ---------------------------------------------------------------------------------------------
def _largest_remainder(n: int, fractions: np.ndarray) -> np.ndarray:
    ideal = np.asarray(fractions, dtype=np.float64) * n
    counts = np.floor(ideal).astype(int)
    for k in np.argsort(-(ideal - counts), kind="stable")[: n - counts.sum()]:
        counts[k] += 1
    positive = np.flatnonzero(np.asarray(fractions) > 0)
    if n >= len(positive):
        # Every requested part gets at least one patient (a val/test split of 0 patients is useless).
        for k in positive:
            if counts[k] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[k] = 1
    return counts


def _controlled_round(ideal: np.ndarray, row_totals: np.ndarray, col_totals: np.ndarray) -> np.ndarray:
    """Integer matrix with the given row/column sums, each cell the floor or ceiling of ``ideal``."""
    counts = np.floor(ideal).astype(int)
    row_def = row_totals - counts.sum(axis=1)
    col_def = col_totals - counts.sum(axis=0)
    frac = ideal - counts
    cells = sorted(np.ndindex(*ideal.shape), key=lambda c: -frac[c])
    for s, k in cells:
        if row_def[s] > 0 and col_def[k] > 0:
            counts[s, k] += 1
            row_def[s] -= 1
            col_def[k] -= 1
    while row_def.sum() > 0:
        s, k = int(np.argmax(row_def > 0)), int(np.argmax(col_def > 0))
        counts[s, k] += 1
        row_def[s] -= 1
        col_def[k] -= 1
    return counts


def patient_split(
    patient_ids: Sequence[str],
    has_tumour: Sequence[bool] | Mapping[str, bool],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> dict[str, list[str]]:
    """Split patients into train/val/test, stratified on tumour presence.

    The overall part sizes follow ``fractions`` (largest-remainder rounding; when there are at
    least as many patients as non-zero fractions, every such part gets one patient or more), and
    within each part the share of tumour patients matches the whole set as closely as integers
    allow. The result depends only on the set of ids, their labels and ``seed`` (not on the order
    of ``patient_ids``).

    Args:
        patient_ids: unique patient identifiers.
        has_tumour: per patient, aligned with ``patient_ids`` or a mapping id -> bool.
        fractions: ``(train, val, test)`` non-negative, summing to 1.
        seed: random seed of the shuffle.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` with sorted ids; no id is in two parts.

    Raises:
        ValueError: duplicate ids, mismatched lengths, or invalid fractions.
    """
    ids = [str(p) for p in patient_ids]
    if not ids:
        raise ValueError("patient_split: patient_ids is empty")
    if len(set(ids)) != len(ids):
        dup = sorted({p for p in ids if ids.count(p) > 1})
        raise ValueError(f"patient_split: patient_ids must be unique, repeated: {dup[:5]}")
    if isinstance(has_tumour, Mapping):
        missing = [p for p in ids if p not in has_tumour]
        if missing:
            raise ValueError(f"patient_split: has_tumour lacks patients {missing[:5]}")
        flags = [bool(has_tumour[p]) for p in ids]
    else:
        flags = [bool(v) for v in has_tumour]
        if len(flags) != len(ids):
            raise ValueError(f"patient_split: has_tumour has {len(flags)} entries for {len(ids)} patient_ids")
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.shape != (3,) or not np.isfinite(frac).all() or (frac < 0).any() or abs(frac.sum() - 1.0) > 1e-6:
        raise ValueError(f"patient_split: fractions must be three non-negative numbers summing to 1, got {fractions!r}")

    label = dict(zip(ids, flags))
    strata = [sorted(p for p in ids if label[p]), sorted(p for p in ids if not label[p])]
    totals = _largest_remainder(len(ids), frac)
    sizes = np.array([len(s) for s in strata])
    ideal = np.outer(sizes, totals) / len(ids)
    counts = _controlled_round(ideal, sizes, totals)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[str]] = {name: [] for name in SPLITS}
    for stratum, row in zip(strata, counts):
        order = [stratum[i] for i in rng.permutation(len(stratum))]
        start = 0
        for name, c in zip(SPLITS, row):
            parts[name].extend(order[start : start + c])
            start += c
    return {name: sorted(parts[name]) for name in SPLITS}


# ---------------------------------------------------------------------------------------------
# Slice dataset
# ---------------------------------------------------------------------------------------------
def _read_only(array: np.ndarray) -> np.ndarray:
    """A view of ``array`` that cannot be written through (the cache and the dataset stay intact)."""
    view = array.view()
    view.flags.writeable = False
    return view


class SliceInfo(NamedTuple):
    """Where a slice of a :class:`SliceDataset` comes from.

    Attributes:
        patient_id: the patient.
        slice_index: index ``z`` in the patient's volume.
        tumour_pixels: tumour pixels in the resized ``(S, S)`` mask.
        spacing: ``(row, column)`` pixel size in mm after resizing to ``(S, S)``.
    """

    patient_id: str
    slice_index: int
    tumour_pixels: int
    spacing: tuple[float, float]


class SliceDataset(Dataset):
    """Preprocessed 2D axial slices of some patients, as ``(image, mask)`` tensors ``(1, S, S)``.

    Every slice of every listed patient is preprocessed once with
    :func:`lungseg.preprocess.preprocess_slices` (HU window, eq. 1 z-score with the fingerprint's
    dataset statistics, bilinear resize to ``S``; masks nearest-neighbour) and kept in memory
    (``S = 256``: 256 kB per slice). With ``cache_dir`` they are streamed instead to
    ``cache_dir/<sha256>/{images,masks}.npy`` (+ ``index.npz``) and memory-mapped, so a large
    study (MSD: ~20k slices, 5 GB) needs no RAM beyond the page cache; the hash covers the files'
    paths, sizes and modification times, the patient list, the fingerprint, ``image_size`` and
    :data:`CACHE_VERSION`, and a second dataset with the same inputs opens the cache without
    reading any volume. The cache folder is written under a temporary name and renamed when
    complete, so an interrupted run never leaves a half cache.

    Args:
        dataset: a :class:`CTDataset` with masks (or a path for :func:`open_dataset`).
        patient_ids: patients whose slices are used (e.g. one part of :func:`patient_split`).
        fingerprint: normalisation statistics of the training split.
        image_size: network input side ``S``; must equal ``fingerprint.image_size``.
        cache_dir: folder of the preprocessed-slice cache (created; never an input folder).
        progress: show a tqdm bar while preprocessing.

    Raises:
        DataError: the dataset has no masks, unknown patients, or intensity mismatch with the fingerprint.
    """

    def __init__(
        self,
        dataset: CTDataset | str | os.PathLike[str],
        patient_ids: Sequence[str],
        fingerprint: Fingerprint,
        image_size: int,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = False,
    ) -> None:
        self.dataset = open_dataset(dataset)
        self.dataset.require_masks("a slice dataset for segmentation")
        ids = [str(p) for p in patient_ids]
        if not ids:
            raise ValueError("SliceDataset: patient_ids is empty")
        unknown = [p for p in ids if p not in self.dataset]
        if unknown:
            raise DataError(f"{self.dataset.source}: unknown patient ids {unknown[:5]}")
        if len(set(ids)) != len(ids):
            raise ValueError("SliceDataset: patient_ids must be unique")
        if int(image_size) != fingerprint.image_size:
            raise ValueError(
                f"SliceDataset: image_size={image_size} differs from fingerprint.image_size="
                f"{fingerprint.image_size}; compute the fingerprint with the same image_size"
            )
        self.patient_ids = ids
        self.fingerprint = fingerprint
        self.image_size = int(image_size)
        self.cache_path: Path | None = None
        self.cache_hit = False
        cached: dict[str, np.ndarray] | None = None
        if cache_dir is not None:
            self.cache_path = Path(cache_dir) / self.cache_key()
            cached = self._read_cache()
            self.cache_hit = cached is not None
            if cached is None:
                self._write_cache(progress)
                cached = self._read_cache()
                if cached is None:
                    raise DataError(f"{self.cache_path}: the slice cache just written cannot be read back")
        arrays = cached if cached is not None else self._build(progress, None)
        self._images: np.ndarray = arrays["images"]
        self._masks: np.ndarray = arrays["masks"]
        pids = arrays["patient_ids"]
        self.slice_info: list[SliceInfo] = [
            SliceInfo(str(pids[p]), int(z), int(t), (float(s[0]), float(s[1])))
            for p, z, t, s in zip(
                arrays["patient_index"], arrays["slice_index"], arrays["tumour_pixels"], arrays["spacing"]
            )
        ]

    # -- cache ---------------------------------------------------------------------------------
    def cache_key(self) -> str:
        """SHA-256 of the source files' identity and every preprocessing setting."""
        payload = {
            "version": CACHE_VERSION,
            "kind": self.dataset.kind,
            "sources": [self.dataset.source_token(p) for p in self.patient_ids],
            "fingerprint": dataclasses.asdict(self.fingerprint),
            "image_size": self.image_size,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def _read_cache(self) -> dict[str, np.ndarray] | None:
        """Memory-map a complete cache folder, or ``None`` (missing or damaged: then it is removed)."""
        assert self.cache_path is not None
        if not self.cache_path.is_dir():
            return None
        try:
            with np.load(self.cache_path / "index.npz", allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            arrays["images"] = np.load(self.cache_path / "images.npy", mmap_mode="r")
            arrays["masks"] = np.load(self.cache_path / "masks.npy", mmap_mode="r")
            n, size = len(arrays["slice_index"]), self.image_size
            if arrays["images"].shape != (n, size, size) or arrays["masks"].shape != (n, size, size):
                raise ValueError(f"array shapes {arrays['images'].shape}, {arrays['masks'].shape} for {n} slices")
        except (OSError, ValueError, KeyError, EOFError) as err:
            warnings.warn(f"{self.cache_path}: unreadable slice cache ({err}); rebuilding it", stacklevel=3)
            shutil.rmtree(self.cache_path, ignore_errors=True)
            return None
        return arrays

    def _write_cache(self, progress: bool) -> None:
        """Preprocess into a temporary folder next to the cache, then rename it into place."""
        assert self.cache_path is not None
        tmp = self.cache_path.with_name(f"{self.cache_path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            self._build(progress, tmp)
            try:
                os.replace(tmp, self.cache_path)
            except OSError:  # another process finished the same cache first
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _build(self, progress: bool, out: Path | None) -> dict[str, np.ndarray]:
        """Preprocess every slice; with ``out``, stream them to ``out/{images,masks}.npy`` (bounded memory)."""
        size = self.image_size
        images: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        p_index, z_index, spacing, tumour = [], [], [], []
        raw = {name: (out / f"{name}.raw").open("wb") for name in ("images", "masks")} if out else {}
        try:
            for i, pid in enumerate(
                tqdm(self.patient_ids, desc="preprocessing slices", unit="patient", disable=not progress)
            ):
                volume = self.dataset[pid]
                if volume.intensity != self.fingerprint.intensity:
                    raise DataError(
                        f"{volume.source}: patient {pid!r} has {volume.intensity!r} intensities but the "
                        f"fingerprint was computed on {self.fingerprint.intensity!r} data"
                    )
                assert volume.mask is not None
                for start in range(0, volume.n_slices, _CHUNK):
                    img = preprocess_slices(volume.image[start : start + _CHUNK], self.fingerprint)
                    msk = resize_mask(volume.mask[start : start + _CHUNK], size).astype(np.uint8)
                    tumour.append(msk.reshape(len(msk), -1).sum(axis=1, dtype=np.int64))
                    if raw:
                        raw["images"].write(np.ascontiguousarray(img, dtype=np.float32).tobytes())
                        raw["masks"].write(np.ascontiguousarray(msk).tobytes())
                    else:
                        images.append(img.astype(np.float32, copy=False))
                        masks.append(msk)
                _, h, w = volume.image.shape
                p_index.append(np.full(volume.n_slices, i, dtype=np.int32))
                z_index.append(np.arange(volume.n_slices, dtype=np.int32))
                spacing.append(
                    np.tile([volume.spacing[1] * h / size, volume.spacing[2] * w / size], (volume.n_slices, 1))
                )
        finally:
            for fh in raw.values():
                fh.close()
        index = {
            "patient_ids": np.array(self.patient_ids, dtype=str),
            "patient_index": np.concatenate(p_index),
            "slice_index": np.concatenate(z_index),
            "tumour_pixels": np.concatenate(tumour),
            "spacing": np.concatenate(spacing).astype(np.float64),
        }
        if out is None:
            return {"images": np.concatenate(images), "masks": np.concatenate(masks), **index}
        n = len(index["slice_index"])
        for name, dtype in (("images", np.float32), ("masks", np.uint8)):
            src = np.memmap(out / f"{name}.raw", dtype=dtype, mode="r", shape=(n, size, size))
            dst = np.lib.format.open_memmap(out / f"{name}.npy", mode="w+", dtype=dtype, shape=(n, size, size))
            for start in range(0, n, 256):
                dst[start : start + 256] = src[start : start + 256]
            dst.flush()
            del src, dst
            (out / f"{name}.raw").unlink()
        np.savez(out / "index.npz", **index)  # type: ignore[arg-type]
        return index

    def __getstate__(self) -> dict:
        # Memory-mapped arrays are reopened in DataLoader workers instead of being copied into them.
        state = self.__dict__.copy()
        if isinstance(self._images, np.memmap):
            state["_images"] = state["_masks"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self._images is None and self.cache_path is not None:
            self._images = np.load(self.cache_path / "images.npy", mmap_mode="r")
            self._masks = np.load(self.cache_path / "masks.npy", mmap_mode="r")

    # -- torch Dataset -------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image (1, S, S) float32, mask (1, S, S) float32 in {0, 1})`` of slice ``index``."""
        image = np.array(self._images[index], dtype=np.float32)
        mask = np.array(self._masks[index], dtype=np.float32)
        return torch.from_numpy(image)[None], torch.from_numpy(mask)[None]

    @property
    def images(self) -> np.ndarray:
        """Preprocessed images ``(N, S, S)`` float32 (read-only view, no augmentation)."""
        return _read_only(self._images)

    @property
    def masks(self) -> np.ndarray:
        """Resized masks ``(N, S, S)`` uint8 in {0, 1} (read-only view)."""
        return _read_only(self._masks)

    @property
    def tumour_slices(self) -> np.ndarray:
        """Boolean ``(N,)``: whether each slice holds tumour pixels (after resizing)."""
        return np.array([info.tumour_pixels > 0 for info in self.slice_info], dtype=bool)

    def normalised_range(self) -> tuple[float, float]:
        """The normalised values of the window's ends (eq. 1): the lowest is air."""
        fp = self.fingerprint
        lo, hi = fp.window if fp.window is not None else (0.0, 1.0)
        return (lo - fp.mean) / fp.std, (hi - fp.mean) / fp.std
