"""The datasets of the phantom study and of DICOM folders, format detection, and :func:`open_dataset`.

The other sources have their own modules (:mod:`lungseg.data.msd`, :mod:`lungseg.data.npz`,
:mod:`lungseg.data.kaggle`), imported here only when a dataset of theirs is opened, so that
``import lungseg.data`` stays light.
"""

from __future__ import annotations

import os
from pathlib import Path

from lungseg.data.base import CTDataset, read_json_object
from lungseg.data.volume import CTVolume
from lungseg.errors import DataError

__all__ = ["KINDS", "DicomFolderDataset", "PhantomDataset", "open_dataset"]

KINDS: tuple[str, ...] = ("phantom", "msd", "npz", "dicom", "kaggle")


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
      (the choice is reported by a :class:`~lungseg.errors.DataWarning`).

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
