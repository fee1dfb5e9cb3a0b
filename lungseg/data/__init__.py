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

This module only gathers the public names: the base class lives in :mod:`lungseg.data.base`, the
phantom and DICOM-folder datasets, detection and :func:`open_dataset` in :mod:`lungseg.data.sources`,
and every module of the package imports from those, never from here.
"""

from __future__ import annotations

from typing import Any

from lungseg.data.base import CTDataset
from lungseg.data.sources import KINDS, DicomFolderDataset, PhantomDataset, open_dataset
from lungseg.data.volume import CTVolume

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
