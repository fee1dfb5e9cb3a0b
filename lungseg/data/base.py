"""The interface every dataset shares: :class:`CTDataset`, a lazy, read-only collection of
:class:`~lungseg.data.volume.CTVolume` keyed by patient id.

Volumes are read on access (Task06 volumes are hundreds of MB each), a small LRU cache keeps the last
ones used, and input folders are never written to. Each source (phantom study, DICOM folder, MSD,
``.npz``, Kaggle) subclasses :class:`CTDataset` in its own module; :func:`lungseg.data.open_dataset`
picks the right one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lungseg.data.volume import CTVolume
from lungseg.errors import DataError

__all__ = ["CONTENT_HASH_CHARS", "CTDataset", "read_json_object"]

#: Hex digits kept of a patient's content hash (:meth:`CTDataset.content_hash`): 64 bits, no collisions
#: among any plausible number of scans.
CONTENT_HASH_CHARS = 16


class CTDataset:
    """A read-only collection of CT volumes keyed by patient id.

    Subclasses implement :meth:`_load` (and, where the source allows it cheaply, :meth:`_tumour`
    and :meth:`_files`). Iterating over a dataset yields :class:`CTVolume` objects in
    ``patient_ids`` order, so a dataset can be passed wherever an iterable of volumes is expected
    (e.g. ``Fingerprint.from_volumes``).

    Args:
        source: the file or folder the dataset was opened from.
        patient_ids: unique identifiers, in a stable order.
        has_masks: whether volumes carry pixel-level tumour masks.
        cache_size: number of most recently used volumes kept in memory.
    """

    kind: str = ""
    #: False when the source names no patients (e.g. an ``.npz`` without ``patient_ids``): each
    #: slice then stands for a patient, and a patient-level split is really a split by image.
    patient_ids_known: bool = True

    def __init__(
        self, source: str | os.PathLike[str], patient_ids: Sequence[str], *, has_masks: bool, cache_size: int = 2
    ) -> None:
        ids = [str(p) for p in patient_ids]
        duplicates = sorted({p for p in ids if ids.count(p) > 1})
        if duplicates:
            raise DataError(f"{source}: patient ids must be unique, repeated: {duplicates[:5]}")
        self.source = Path(source)
        self._ids = ids
        self._index = {p: i for i, p in enumerate(ids)}
        self.has_masks = bool(has_masks)
        self._cache: OrderedDict[str, CTVolume] = OrderedDict()
        self._cache_size = max(0, int(cache_size))
        self._tumour_flags: dict[str, bool] = {}
        self._hashes: dict[str, str] = {}

    # -- collection protocol -------------------------------------------------------------------
    @property
    def patient_ids(self) -> list[str]:
        """Patient identifiers in a stable order (a copy)."""
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, patient_id: object) -> bool:
        return patient_id in self._index

    def __getitem__(self, key: str | int) -> CTVolume:
        """The volume of ``key`` (a patient id, or an integer position in ``patient_ids``)."""
        pid = self._resolve(key)
        if pid in self._cache:
            self._cache.move_to_end(pid)
            return self._cache[pid]
        volume = self._load(pid)
        if volume.mask is not None:
            self._tumour_flags[pid] = bool(volume.mask.any())
        if self._cache_size:
            self._cache[pid] = volume
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return volume

    def __iter__(self) -> Iterator[CTVolume]:
        return self.volumes()

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers and pickles get the index, not the cached volumes.
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(kind={self.kind!r}, source={str(self.source)!r}, "
            f"patients={len(self)}, has_masks={self.has_masks})"
        )

    def volumes(self, patient_ids: Sequence[str] | None = None, progress: bool = False) -> Iterator[CTVolume]:
        """Yield volumes one at a time (only the LRU cache stays in memory).

        Args:
            patient_ids: subset to read, default all.
            progress: show a tqdm progress bar.
        """
        ids = self._ids if patient_ids is None else [self._resolve(p) for p in patient_ids]
        for pid in tqdm(ids, desc=f"reading {self.kind}", unit="patient", disable=not progress):
            yield self[pid]

    def content_hash(self, patient_id: str) -> str:
        """A fingerprint of the patient's images: the SHA-256 (first :data:`CONTENT_HASH_CHARS` hex
        digits) of the float32 voxels and their shape. Two datasets hold the same scan when these
        agree, whatever the ids (an ``.npz`` without ids numbers its slices in every file alike).
        Remembered per patient, so a volume is hashed once."""
        pid = self._resolve(patient_id)
        if pid not in self._hashes:
            image = np.ascontiguousarray(self[pid].image, dtype=np.float32)
            digest = hashlib.sha256(repr(image.shape).encode())
            digest.update(image.tobytes())
            self._hashes[pid] = digest.hexdigest()[:CONTENT_HASH_CHARS]
        return self._hashes[pid]

    # -- labels --------------------------------------------------------------------------------
    def has_tumour(self, patient_id: str) -> bool:
        """Whether the patient has at least one tumour pixel (image-level label for ``kaggle``).

        Read from metadata where the source has it (phantom manifest), otherwise from the mask,
        once; the answer is remembered.
        """
        pid = self._resolve(patient_id)
        if pid not in self._tumour_flags:
            self._tumour_flags[pid] = bool(self._tumour(pid))
        return self._tumour_flags[pid]

    def require_masks(self, purpose: str = "this operation") -> None:
        """Raise :class:`DataError` when the dataset has no pixel-level masks."""
        if not self.has_masks:
            raise DataError(
                f"{self.source}: the {self.kind!r} dataset has no pixel-level tumour masks, but {purpose} "
                "needs them; use a dataset with masks (phantom study, MSD Task06_Lung, .npz with 'masks',"
                " DICOM with an RTSTRUCT or SEG)"
            )

    # -- cache keys ----------------------------------------------------------------------------
    def source_token(self, patient_id: str) -> str:
        """A string that changes whenever the files behind ``patient_id`` change.

        Built from resolved paths, sizes and modification times, so a preprocessing cache keyed
        by it is invalidated when the data are edited or replaced.
        """
        pid = self._resolve(patient_id)
        parts = [f"{self.kind}:{pid}"]
        for path in self._files(pid):
            try:
                st = path.stat()
            except OSError as err:
                raise DataError(f"{path}: cannot read file of patient {pid!r}: {err.strerror}") from None
            parts.append(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}")
        return "\n".join(parts)

    # -- subclass hooks ------------------------------------------------------------------------
    def _load(self, patient_id: str) -> CTVolume:
        raise NotImplementedError

    def _tumour(self, patient_id: str) -> bool:
        volume = self[patient_id]
        return volume.mask is not None and bool(volume.mask.any())

    def _files(self, patient_id: str) -> list[Path]:
        return [self.source] if self.source.is_file() else sorted(p for p in self.source.rglob("*") if p.is_file())

    def _resolve(self, key: str | int) -> str:
        if isinstance(key, (int,)) and not isinstance(key, bool):
            if not -len(self._ids) <= key < len(self._ids):
                raise IndexError(f"patient index {key} out of range for {len(self._ids)} patients")
            return self._ids[key]
        if key not in self._index:
            shown = ", ".join(self._ids[:5]) + (", ..." if len(self._ids) > 5 else "")
            raise KeyError(f"unknown patient id {key!r} in {self.source} (known: {shown})")
        return str(key)


def read_json_object(path: Path, expected: str = "a JSON object") -> dict[str, Any]:
    """A JSON object from ``path``; :class:`DataError` naming the file when it is missing, unreadable or
    not an object (``expected`` describes what was wanted in that message)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected {expected}, got {type(data).__name__}")
    return data
