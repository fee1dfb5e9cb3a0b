"""Medical Segmentation Decathlon Task06_Lung (non-small-cell lung tumours, CT, NIfTI).

Layout (as distributed, CC-BY-SA 4.0)::

    Task06_Lung/
        dataset.json          {"training": [{"image": "./imagesTr/lung_001.nii.gz",
                                              "label": "./labelsTr/lung_001.nii.gz"}, ...], ...}
        imagesTr/lung_001.nii.gz   CT in HU, int16
        labelsTr/lung_001.nii.gz   tumour mask in {0, 1}
        imagesTs/...               unlabelled test cases (not used: no masks)

Only the labelled ``training`` cases are exposed (patient id = file name without ``.nii.gz``).
Without ``dataset.json`` the ``imagesTr``/``labelsTr`` files are paired by name. The archive's
macOS ``._*`` companion files are ignored. Volumes are read lazily (each is hundreds of MB), the
label of a case is read once for :meth:`MSDDataset.has_tumour`, and image/label shape and
geometry are checked on every read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lungseg.data.base import CTDataset, read_json_object
from lungseg.data.nifti import read_nifti
from lungseg.data.volume import CTVolume
from lungseg.errors import DataError

__all__ = ["MSDDataset", "read_label", "AFFINE_TOLERANCE_MM"]

#: Largest difference (mm) allowed between image and label affines.
AFFINE_TOLERANCE_MM = 1e-2


def _nii_stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_nifti(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name.endswith((".nii", ".nii.gz"))


def read_label(path: str | os.PathLike[str]) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """Read a NIfTI tumour mask as uint8 ``(Z, H, W)`` in {0, 1}.

    Raises:
        DataError: unreadable file, or values other than 0 and 1 (named in the message).
    """
    array, spacing, affine = read_nifti(Path(path))
    bad = (array != 0) & (array != 1)
    if bad.any():
        values = np.unique(array[bad])[:5].tolist()
        raise DataError(f"{path}: a tumour mask must hold only 0 and 1, found other values such as {values}")
    return array.astype(np.uint8), spacing, affine


class MSDDataset(CTDataset):
    """The labelled cases of a Task06_Lung-style folder."""

    kind = "msd"

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        folder = Path(folder)
        pairs = self._pairs_from_json(folder) if (folder / "dataset.json").is_file() else self._pairs_by_name(folder)
        if not pairs:
            raise DataError(f"{folder}: no labelled cases found (dataset.json 'training' list / imagesTr + labelsTr)")
        super().__init__(folder, list(pairs), has_masks=True)
        self._pairs = pairs

    @staticmethod
    def _pairs_from_json(folder: Path) -> dict[str, tuple[Path, Path]]:
        meta = read_json_object(folder / "dataset.json")
        training = meta.get("training")
        if not isinstance(training, list):
            raise DataError(f"{folder / 'dataset.json'}: expected a 'training' list of {{'image', 'label'}} entries")
        pairs: dict[str, tuple[Path, Path]] = {}
        for i, entry in enumerate(training):
            if not isinstance(entry, dict) or not {"image", "label"} <= set(entry):
                raise DataError(f"{folder / 'dataset.json'}: training entry {i} needs 'image' and 'label' keys")
            image, label = folder / entry["image"], folder / entry["label"]
            for path in (image, label):
                if not path.is_file():
                    raise DataError(f"{path}: listed in {folder / 'dataset.json'} but not found")
            pairs[_nii_stem(image)] = (image, label)
        return pairs

    @staticmethod
    def _pairs_by_name(folder: Path) -> dict[str, tuple[Path, Path]]:
        images = {_nii_stem(p): p for p in sorted((folder / "imagesTr").iterdir()) if _is_nifti(p)}
        labels = {_nii_stem(p): p for p in sorted((folder / "labelsTr").iterdir()) if _is_nifti(p)}
        unpaired = sorted(set(images) ^ set(labels))
        if unpaired:
            raise DataError(f"{folder}: imagesTr/ and labelsTr/ do not pair up by file name; unmatched: {unpaired[:5]}")
        return {k: (images[k], labels[k]) for k in sorted(images)}

    def _load(self, patient_id: str) -> CTVolume:
        image_path, label_path = self._pairs[patient_id]
        image, spacing, affine = read_nifti(image_path)
        mask, _, label_affine = read_label(label_path)
        if mask.shape != image.shape:
            raise DataError(
                f"{label_path}: mask shape {mask.shape} (Z, H, W) does not match image {image_path} shape {image.shape}"
            )
        deviation = float(np.abs(label_affine - affine).max())
        if deviation > AFFINE_TOLERANCE_MM:
            raise DataError(
                f"{label_path}: mask geometry (affine) differs from image {image_path} by up to {deviation:.3g} mm"
            )
        return CTVolume(
            image=image.astype(np.float32, copy=False),
            mask=mask,
            spacing=spacing,
            patient_id=patient_id,
            affine=affine,
            intensity="hu",
            source=str(image_path),
            meta={"affine_space": "RAS", "label_path": str(label_path)},
        )

    def _tumour(self, patient_id: str) -> bool:
        mask, _, _ = read_label(self._pairs[patient_id][1])
        return bool(mask.any())

    def _files(self, patient_id: str) -> list[Path]:
        return list(self._pairs[patient_id])
