"""The paper's Kaggle dataset layout: PNG/JPEG slices in class folders, image-level labels only.

The paper trains on "CT Scan Images for Lung Cancer" (Kaggle, ref. [20]). The public CT-slice
datasets of that kind are organised as ``[train|valid|test/]<class folder>/*.png|jpg`` (the
split level is optional), with class folders such as ``normal``, ``adenocarcinoma_left.lower.
lobe_T2_N0_M0_Ib``, ``large.cell.carcinoma...``, ``squamous.cell.carcinoma...``, ``Benign cases``
(also spelt ``Bengin cases``), ``Malignant cases``. They carry **no pixel masks**: a slice is only
labelled with its class, so they can serve slice-level detection evaluation (does the
predicted mask contain tumour?) but not training or evaluation of segmentation; a
:class:`KaggleDataset` has ``has_masks == False`` and every caller that needs masks gets a
:class:`~lungseg.errors.DataError` saying so (:meth:`CTDataset.require_masks`).

Label mapping (folder names lower-cased, separators unified, matched by prefix):

* cancer (label 1): ``adenocarcinoma``, ``large cell carcinoma``, ``squamous cell carcinoma``,
  ``malignant``, ``cancer``, ``carcinoma``;
* not cancer (label 0): ``normal``, ``benign`` / ``bengin`` (benign lesions are not cancer),
  ``non cancer`` / ``noncancer``.

Unknown class folders are an error (so that a new class is never silently mislabelled).
Each image is its own "patient" (the layout has no patient ids), ``f"{split}/{class}/{file}"``.
Pixel spacing is unknown (PNG export): ``spacing`` is a 1.0 mm placeholder flagged
``meta["spacing_known"] = False``, and intensities are grey levels in [0, 1] (``"unit"``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lungseg.data.base import CTDataset
from lungseg.data.images import is_image_file, read_image
from lungseg.data.volume import CTVolume
from lungseg.errors import DataError

__all__ = ["KaggleDataset", "class_label", "find_kaggle_root", "CANCER_CLASSES", "NORMAL_CLASSES", "SPLIT_NAMES"]

CANCER_CLASSES: tuple[str, ...] = (
    "adenocarcinoma",
    "large.cell.carcinoma",
    "squamous.cell.carcinoma",
    "malignant",
    "cancer",
    "carcinoma",
)
NORMAL_CLASSES: tuple[str, ...] = ("normal", "benign", "bengin", "non.cancer", "noncancer")
#: Split folder names and the split they stand for.
SPLIT_NAMES: dict[str, str] = {"train": "train", "valid": "val", "val": "val", "validation": "val", "test": "test"}


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", ".", name.lower()).strip(".")


def class_label(folder_name: str) -> int | None:
    """1 for a cancer class folder, 0 for normal/benign, ``None`` when the name is not recognised."""
    name = _normalise(folder_name)
    if any(name.startswith(p) for p in NORMAL_CLASSES):
        return 0
    if any(name.startswith(p) for p in CANCER_CLASSES):
        return 1
    return None


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _has_images(folder: Path) -> bool:
    return any(is_image_file(p) for p in folder.iterdir() if p.is_file())


def _is_class_level(folder: Path) -> bool:
    return any(class_label(d.name) is not None and _has_images(d) for d in _subdirs(folder))


def find_kaggle_root(path: str | os.PathLike[str]) -> tuple[Path, bool] | None:
    """Locate the Kaggle layout under ``path``.

    Returns:
        ``(root, has_split_level)`` or ``None``: ``root`` holds either split folders
        (``train``/``valid``/``test``) or class folders directly; a single wrapper folder
        (e.g. Kaggle's ``Data/``) is looked through.
    """
    path = Path(path)
    for candidate in (path, *(_subdirs(path)[:1] if len(_subdirs(path)) == 1 else [])):
        splits = [d for d in _subdirs(candidate) if d.name.lower() in SPLIT_NAMES]
        if any(_is_class_level(d) for d in splits):
            return candidate, True
        if _is_class_level(candidate):
            return candidate, False
    return None


class KaggleDataset(CTDataset):
    """Kaggle class-folder images, each a one-slice volume with an image-level label.

    ``has_tumour(pid)`` is the image-level label (cancer = True), so patient splits are
    stratified on it; each volume's ``meta["split"]`` names the dataset's own folder it came from
    (``train``/``val``/``test``, or ``all`` if unsplit).
    """

    kind = "kaggle"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        found = find_kaggle_root(path)
        if found is None:
            raise DataError(
                f"{path}: not a Kaggle class-folder layout; expected [train|valid|test/]<class>/*.png|jpg "
                f"with classes named like {', '.join(NORMAL_CLASSES[:2] + CANCER_CLASSES[:4])}"
            )
        root, has_split = found
        splits = [d for d in _subdirs(root) if d.name.lower() in SPLIT_NAMES] if has_split else [root]
        self._files_by_id: dict[str, Path] = {}
        self._labels: dict[str, int] = {}
        self._info: dict[str, tuple[str, str]] = {}
        for split_dir in splits:
            split = SPLIT_NAMES[split_dir.name.lower()] if has_split else "all"
            for class_dir in _subdirs(split_dir):
                label = class_label(class_dir.name)
                if label is None:
                    raise DataError(
                        f"{class_dir}: unknown class folder {class_dir.name!r}; cancer classes start with "
                        f"{CANCER_CLASSES}, non-cancer classes with {NORMAL_CLASSES} (separators ignored)"
                    )
                for file in sorted(p for p in class_dir.iterdir() if p.is_file() and is_image_file(p)):
                    pid = (
                        f"{split_dir.name}/{class_dir.name}/{file.name}"
                        if has_split
                        else f"{class_dir.name}/{file.name}"
                    )
                    self._files_by_id[pid] = file
                    self._labels[pid] = label
                    self._info[pid] = (split, class_dir.name)
        if not self._files_by_id:
            raise DataError(f"{root}: no PNG/JPEG images found in the class folders")
        super().__init__(root, list(self._files_by_id), has_masks=False)

    def label(self, patient_id: str) -> int:
        """Image-level label: 1 = cancer, 0 = normal or benign."""
        return self._labels[self._resolve(patient_id)]

    def _load(self, patient_id: str) -> CTVolume:
        file = self._files_by_id[patient_id]
        split, class_name = self._info[patient_id]
        return CTVolume(
            image=read_image(file)[None],
            mask=None,
            spacing=(1.0, 1.0, 1.0),
            patient_id=patient_id,
            intensity="unit",
            source=str(file),
            meta={
                "label": self._labels[patient_id],
                "class_name": class_name,
                "split": split,
                "spacing_known": False,
            },
        )

    def _tumour(self, patient_id: str) -> bool:
        return bool(self._labels[patient_id])

    def _files(self, patient_id: str) -> list[Path]:
        return [self._files_by_id[patient_id]]
