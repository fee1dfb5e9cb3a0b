"""Settings of the phantom generator, its tissue labels and tumour categories, and the study format names."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "GENERATOR_VERSION",
    "JUXTA_MEDIASTINAL",
    "MANIFEST_FORMAT",
    "TISSUE_LABELS",
    "TUMOUR_LOCATIONS",
    "TUMOUR_SHAPES",
    "TUMOUR_TYPES",
    "PhantomConfig",
]

GENERATOR_VERSION = "1.0"
MANIFEST_FORMAT = "lungseg-phantom"

#: Labels of ``CTVolume.meta["tissue"]`` (returned by :func:`generate_patient`, not written to disk).
TISSUE_LABELS: dict[str, int] = {
    "air": 0, "fat": 1, "muscle": 2, "bone": 3, "lung": 4, "vessel": 5, "airway": 6,
    "mediastinum": 7, "abdomen": 8, "tumour": 9,
}

TUMOUR_TYPES = ("solid", "part-solid", "ground-glass")
TUMOUR_SHAPES = ("smooth", "lobulated", "spiculated")
TUMOUR_LOCATIONS = ("isolated", "juxta-pleural", "juxta-vascular")
#: The placement of :attr:`PhantomConfig.juxta_mediastinal_share`, recorded as the location of a tumour
#: that touches the mediastinum.
JUXTA_MEDIASTINAL = "juxta-mediastinal"
#: Settings added after studies were published, and the default at which :meth:`PhantomConfig.to_dict` omits them.
_ADDED_LATER: dict[str, Any] = {"juxta_mediastinal_share": 0.0}


@dataclass
class PhantomConfig:
    """Settings of the synthetic study; ranges are sampled uniformly per patient.

    Attributes:
        image_size: in-plane size ``H = W`` in pixels.
        n_slices: slices per patient ``Z``.
        pixel_spacing_range: in-plane pixel size in mm at 256 px (scaled by ``256 / image_size`` so a
            smaller image still covers an adult chest); larger pixels mean a larger body.
        slice_thickness_range: slice thickness (= spacing, contiguous slices) in mm.
        tumour_count_probs: probabilities of 0, 1, 2, 3 tumours per patient.
        tumour_type_probs: probabilities of solid, part-solid, ground-glass.
        tumour_shape_probs: probabilities of smooth, lobulated, spiculated.
        tumour_location_probs: probabilities of the intended placement isolated, juxta-pleural,
            juxta-vascular (the manifest also records the location measured on the mask).
        juxta_mediastinal_share: share of tumours then moved against the mediastinum instead (a
            central tumour at the hilum, whose border with the mediastinum is soft tissue against soft
            tissue). The default 0 draws nothing more, so studies made before this setting stay the same.
        diameter_range_mm: equivalent-diameter range, sampled log-uniformly (small ones common).
        noise_std_range: standard deviation of the correlated noise in HU.
        blur_sigma_range_mm: in-plane sigma of the Gaussian point-spread function in mm.
        hu_offset_range: per-scanner additive HU offset.
        hu_scale_range: per-scanner multiplicative HU scale.
        streak_probability: chance that a patient has streaks radiating from the spine.
    """

    image_size: int = 256
    n_slices: int = 40
    pixel_spacing_range: tuple[float, float] = (1.2, 1.6)
    slice_thickness_range: tuple[float, float] = (2.0, 3.0)
    tumour_count_probs: tuple[float, ...] = (0.25, 0.35, 0.25, 0.15)
    tumour_type_probs: tuple[float, float, float] = (0.5, 0.2, 0.3)
    tumour_shape_probs: tuple[float, float, float] = (0.4, 0.35, 0.25)
    tumour_location_probs: tuple[float, float, float] = (0.4, 0.35, 0.25)
    diameter_range_mm: tuple[float, float] = (3.0, 50.0)
    noise_std_range: tuple[float, float] = (8.0, 30.0)
    blur_sigma_range_mm: tuple[float, float] = (0.5, 0.9)
    hu_offset_range: tuple[float, float] = (-15.0, 15.0)
    hu_scale_range: tuple[float, float] = (0.985, 1.015)
    streak_probability: float = 0.3
    juxta_mediastinal_share: float = 0.0

    def __post_init__(self) -> None:
        for name in [f.name for f in dataclasses.fields(self)]:
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        if int(self.image_size) != self.image_size or self.image_size < 32:
            raise ValueError(f"PhantomConfig.image_size must be an integer >= 32, got {self.image_size!r}")
        if int(self.n_slices) != self.n_slices or self.n_slices < 1:
            raise ValueError(f"PhantomConfig.n_slices must be an integer >= 1, got {self.n_slices!r}")
        for name in ("pixel_spacing_range", "slice_thickness_range", "diameter_range_mm",
                     "noise_std_range", "blur_sigma_range_mm", "hu_offset_range", "hu_scale_range"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
                raise ValueError(f"PhantomConfig.{name} must be (low, high) with low <= high, got {lo_hi!r}")
        for name in ("pixel_spacing_range", "slice_thickness_range", "diameter_range_mm", "hu_scale_range"):
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"PhantomConfig.{name} must be positive, got {getattr(self, name)!r}")
        if self.noise_std_range[0] < 0 or self.blur_sigma_range_mm[0] < 0:
            raise ValueError("PhantomConfig.noise_std_range and blur_sigma_range_mm must be >= 0")
        for name, n in (("tumour_count_probs", None), ("tumour_type_probs", 3),
                        ("tumour_shape_probs", 3), ("tumour_location_probs", 3)):
            probs = np.asarray(getattr(self, name), dtype=float)
            if (n is not None and len(probs) != n) or probs.ndim != 1 or len(probs) == 0 \
                    or np.any(probs < 0) or abs(probs.sum() - 1.0) > 1e-6:
                raise ValueError(
                    f"PhantomConfig.{name} must be {n or 'some'} non-negative probabilities summing to 1,"
                    f" got {getattr(self, name)!r}"
                )
        if not 0.0 <= self.juxta_mediastinal_share <= 1.0:
            raise ValueError(f"PhantomConfig.juxta_mediastinal_share must be in [0, 1], got {self.juxta_mediastinal_share!r}")
        if not 0.0 <= self.streak_probability <= 1.0:
            raise ValueError(f"PhantomConfig.streak_probability must be in [0, 1], got {self.streak_probability!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a manifest stores them. A setting added after a study format existed is left out
        at its default (:data:`_ADDED_LATER`), so the manifests, and the fingerprints, of studies made
        before it stay the same."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                if not (k in _ADDED_LATER and v == _ADDED_LATER[k])}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhantomConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown PhantomConfig field(s): {', '.join(unknown)}")
        return cls(**data)
