"""Data loaders behind one interface: :func:`open_dataset` returns a :class:`CTDataset`.

Supported sources (autodetected, or forced with ``kind=``):

========== ===========================================================================
``phantom``  a study written by :func:`lungseg.data.phantom.generate_study`
             (``manifest.json`` with ``"format": "lungseg-phantom"``).
``msd``      Medical Segmentation Decathlon Task06_Lung (``dataset.json``, ``imagesTr/``,
             ``labelsTr/`` NIfTI); see :mod:`lungseg.data.msd`.
``npz``      an arrays file (``images``, ``masks``, ...); see :mod:`lungseg.data.npz`.
``dicom``    a folder of DICOM studies (one patient per study): CT series, with tumour masks from the
             RT Structure Set or DICOM SEG that references them (ROI chosen by name); without
             those, the axial CT series with the most slices, no masks. See
             :class:`DicomFolderDataset` and :mod:`lungseg.data.dicom_study`.
``kaggle``   the paper's Kaggle "CT Scan Images for Lung Cancer" class-folder layout
             (image-level labels only, no masks); see :mod:`lungseg.data.kaggle`.
========== ===========================================================================

Every dataset is a lazy, read-only collection of :class:`~lungseg.data.volume.CTVolume` keyed by
patient id: volumes are read on access (Task06 volumes are hundreds of MB each), a small LRU
cache keeps the last ones used, and input folders are never written to.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from lungseg.data.volume import CTVolume
from lungseg.errors import DataError

__all__ = ["CTVolume", "CTDataset", "DicomFolderDataset", "PhantomDataset", "open_dataset", "KINDS"]

# Imported on first use so that ``import lungseg.data`` stays light (no torch).
_LAZY: dict[str, str] = {
    "patient_split": "slices",
    "SliceDataset": "slices",
    "read_npz": "npz",
    "write_npz": "npz",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"lungseg.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'lungseg.data' has no attribute {name!r}")


KINDS: tuple[str, ...] = ("phantom", "msd", "npz", "dicom", "kaggle")


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


class DicomFolderDataset(CTDataset):
    """A folder of DICOM studies: CT series, with tumour masks where an RTSTRUCT or SEG references them.

    The folder is indexed by headers when the dataset is opened (no pixels are decoded then) and
    each patient's series is read on access. One patient per study, its id the DICOM PatientID
    (``-1``, ``-2`` appended when one patient has several studies):

    * with RT Structure Sets or DICOM SEG files in the folder, each study that has one is a patient
      with a mask: the ROI ``roi`` (default: a name matching GTV/tumour/tumor/nodule/lesion) rasterised
      on the CT series the label references (:mod:`lungseg.data.dicom_study`); studies without
      labels are skipped with a warning;
    * without them, each study is a patient without mask, on its axial CT series with the most slices
      (the choice is reported by a :class:`~lungseg.data.dicom.DataWarning`).

    Args:
        folder: the folder (searched recursively).
        roi: ROI or segment name to use as the tumour (case-insensitive); ``None``: the default pattern.
        series_uid: read only the CT series with this SeriesInstanceUID.
    """

    kind = "dicom"

    def __init__(
        self, folder: str | os.PathLike[str], *, roi: str | None = None, series_uid: str | None = None
    ) -> None:
        from lungseg.data.dicom import scan_dicom_folder
        from lungseg.data.dicom_study import plan_studies

        index = scan_dicom_folder(Path(folder))
        plans = plan_studies(index, roi=roi, series_uid=series_uid)
        has_masks = any(plan.label is not None for plan in plans)
        super().__init__(folder, [plan.patient_id for plan in plans], has_masks=has_masks)
        self.roi, self.series_uid = roi, series_uid
        self._plans = {plan.patient_id: plan for plan in plans}

    def _load(self, patient_id: str) -> CTVolume:
        from lungseg.data.dicom_study import read_study

        return read_study(self._plans[patient_id], self.source, self.roi)

    def _tumour(self, patient_id: str) -> bool:
        if self._plans[patient_id].label is None:
            return False
        return super()._tumour(patient_id)

    def source_token(self, patient_id: str) -> str:
        """As :meth:`CTDataset.source_token`, plus the series read and the ROI asked for: another ``roi``
        gives another mask from the same files, so a cache keyed by the token must not be reused."""
        plan = self._plans[self._resolve(patient_id)]
        return f"{super().source_token(patient_id)}\nseries={plan.series.uid}\nroi={self.roi!r}"

    def _files(self, patient_id: str) -> list[Path]:
        plan = self._plans[patient_id]
        return list(plan.series.files) + ([plan.label.path] if plan.label is not None else [])


class PhantomDataset(CTDataset):
    """A synthetic study written by :func:`lungseg.data.phantom.generate_study`.

    Patient ids and tumour presence come from ``manifest.json`` (no image is read to answer
    :meth:`has_tumour`); volumes are read lazily through :func:`lungseg.data.phantom.load_study`
    (DICOM series + NIfTI mask, shape and geometry checked there).
    """

    kind = "phantom"

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        from lungseg.data.phantom import load_study

        self._study = load_study(Path(folder))
        records = self._study.manifest.get("patients") or []
        if not records:
            raise DataError(f"{Path(folder) / 'manifest.json'}: the study lists no patients")
        super().__init__(folder, self._study.patient_ids, has_masks=True)
        self.manifest = self._study.manifest
        self._manifest_tumours = {str(r["patient_id"]): bool(r.get("tumours")) for r in records}

    def _load(self, patient_id: str) -> CTVolume:
        return self._study[patient_id]

    def _tumour(self, patient_id: str) -> bool:
        return self._manifest_tumours[patient_id]

    def _files(self, patient_id: str) -> list[Path]:
        folder = self.source / patient_id
        return [self.source / "manifest.json"] + sorted(p for p in folder.rglob("*") if p.is_file())


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


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _detect(path: Path) -> str:
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "npz"
        raise DataError(
            f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}; expected an .npz arrays file "
            "or a folder (phantom study, MSD Task06_Lung, DICOM series, Kaggle class folders)"
        )
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise DataError(f"{path}: the folder is empty; expected a dataset (see `lungseg.data.open_dataset`)")
    manifest = path / "manifest.json"
    if manifest.is_file() and read_json_object(manifest).get("format") == "lungseg-phantom":
        return "phantom"
    if (path / "dataset.json").is_file() or ((path / "imagesTr").is_dir() and (path / "labelsTr").is_dir()):
        return "msd"
    from lungseg.data.kaggle import find_kaggle_root

    if find_kaggle_root(path) is not None:
        return "kaggle"
    for i, candidate in enumerate(p for p in path.rglob("*") if p.is_file()):
        if _is_dicom_file(candidate):
            return "dicom"
        if i > 10000:
            break
    shown = ", ".join(sorted(p.name for p in entries)[:8])
    raise DataError(
        f"{path}: could not recognise the dataset layout (found: {shown}); expected a phantom study "
        "(manifest.json), MSD Task06_Lung (dataset.json, imagesTr/, labelsTr/), an .npz file, "
        "a folder of CT DICOM files, or Kaggle train|valid|test/<class>/ image folders"
    )


def open_dataset(
    path: str | os.PathLike[str] | CTDataset,
    kind: str | None = None,
    *,
    roi: str | None = None,
    series_uid: str | None = None,
) -> CTDataset:
    """Open a dataset, detecting its format from the files.

    Args:
        path: file or folder (an already open :class:`CTDataset` is returned unchanged).
        kind: force one of :data:`KINDS` instead of autodetecting.
        roi: DICOM only: the RTSTRUCT ROI or SEG segment to use as the tumour mask (case-insensitive
            name); ``None``: a name matching GTV/tumour/tumor/nodule/lesion. See :class:`DicomFolderDataset`.
        series_uid: DICOM only: read the CT series with this SeriesInstanceUID (default: per study, the
            series an RTSTRUCT/SEG references, else the axial CT series with the most slices).

    Returns:
        A lazy :class:`CTDataset`.

    Raises:
        DataError: the path does not exist, is empty, or its layout/contents are invalid.
    """
    if isinstance(path, CTDataset):
        return path
    if not os.fspath(path):
        raise DataError("no dataset given (--data PATH)")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if kind is None:
        kind = _detect(path)
    elif kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind != "dicom" and (roi is not None or series_uid is not None):
        given = "an ROI name (--roi)" if roi is not None else "a SeriesInstanceUID (--series-uid)"
        raise DataError(f"{path}: {given} applies to DICOM folders only; this is a {kind!r} dataset")
    if kind == "phantom":
        return PhantomDataset(path)
    if kind == "msd":
        from lungseg.data.msd import MSDDataset

        return MSDDataset(path)
    if kind == "npz":
        from lungseg.data.npz import NpzDataset

        return NpzDataset(path)
    if kind == "kaggle":
        from lungseg.data.kaggle import KaggleDataset

        return KaggleDataset(path)
    return DicomFolderDataset(path, roi=roi, series_uid=series_uid)
