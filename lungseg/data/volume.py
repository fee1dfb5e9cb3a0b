"""The one in-memory record every loader returns: a CT volume in Hounsfield units with its mask."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
        meta: free-form provenance (series UID, slice positions, image-level label, ...).
    """

    image: np.ndarray
    mask: np.ndarray | None
    spacing: tuple[float, float, float]
    patient_id: str
    affine: np.ndarray | None = None
    intensity: str = "hu"
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

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
