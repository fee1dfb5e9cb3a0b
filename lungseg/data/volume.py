"""The one in-memory record every loader returns: a CT volume in Hounsfield units with its mask, and
the geometry it was stored in before the readers brought it to the common voxel orientation
(:mod:`lungseg.data.nifti` says which orientation that is, and does the reorienting)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class StoredGeometry:
    """How a volume lay in its file before it was reoriented: what a writer needs to put a result back.

    Attributes:
        shape: the in-memory ``(Z, H, W)`` shape of the array as stored.
        affine: ``(4, 4)`` voxel ``(j, i, k)`` to world matrix of the stored voxel order, in the world
            space of the volume's own affine (``CTVolume.meta["affine_space"]``).
        orientation: nibabel orientation (``(3, 2)``: world axis and direction of voxel axes ``j, i, k``,
            world axes named in RAS) of the stored order.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    orientation: np.ndarray


@dataclass
class CTVolume:
    """A CT study of one patient (or one 2D image) in a common layout.

    Attributes:
        image: float32 array ``(Z, H, W)``; Hounsfield units when ``intensity == "hu"``,
            values in [0, 1] when ``intensity == "unit"`` (already scaled, HU window skipped).
        mask: uint8 array ``(Z, H, W)`` in {0, 1} (tumour = 1), or ``None`` when the source has
            no pixel labels (e.g. the Kaggle image-level dataset).
        spacing: voxel size in mm as ``(z, y, x)``; ``z`` is the slice spacing.
        patient_id: identifier used for patient-level splits.
        affine: 4x4 voxel-to-world (RAS for NIfTI sources, LPS for DICOM, as stated in ``meta``)
            or ``None`` when unknown; predictions are written back with it.
        intensity: ``"hu"`` or ``"unit"``.
        source: path the volume was read from.
        meta: free-form provenance (series UID, slice positions, image-level label, ...); for a DICOM
            series its per-slice entries describe the series as stored (see ``stored``).
        stored: the file's own geometry when the reader reoriented the volume (``image``, ``affine``
            and ``spacing`` are then those of the common orientation); ``None`` when the volume is as stored.
    """

    image: np.ndarray
    mask: np.ndarray | None
    spacing: tuple[float, float, float]
    patient_id: str
    affine: np.ndarray | None = None
    intensity: str = "hu"
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    stored: StoredGeometry | None = None

    def __post_init__(self) -> None:
        if self.image.ndim != 3:
            raise ValueError(f"CTVolume.image must be (Z, H, W), got shape {self.image.shape}")
        if self.mask is not None and self.mask.shape != self.image.shape:
            raise ValueError(
                f"CTVolume.mask shape {self.mask.shape} does not match image shape {self.image.shape}"
                f" (patient {self.patient_id!r}, source {self.source!r})"
            )
        if self.intensity not in ("hu", "unit"):
            raise ValueError(f"CTVolume.intensity must be 'hu' or 'unit', got {self.intensity!r}")

    @property
    def n_slices(self) -> int:
        return int(self.image.shape[0])

    def tumour_slices(self) -> np.ndarray:
        """Indices of slices whose mask holds at least one tumour pixel (empty if no mask)."""
        if self.mask is None:
            return np.zeros(0, dtype=int)
        return np.flatnonzero(self.mask.reshape(self.n_slices, -1).any(axis=1))
