"""Domain randomisation of a phantom patient's appearance, so that a network cannot rely on it.

SynthSeg (Billot et al., *Med. Image Anal.* 86:102789, 2023) segments real brain MRI with a network
trained on synthetic images only, because every image draws new tissue intensities, textures, bias
fields, blur and resolution: the network has to learn shapes and context, not one scanner's look.
The phantom of :mod:`lungseg.data.phantom` draws anatomy and tumours widely but paints them with
nearly fixed intensities: smooth, homogeneous tumours (an interquartile range of about 140 HU where
the real LIDC nodule has 410, chapter 10) in little-textured lung, under one blur and noise model.

:func:`randomise_appearance` repaints a generated patient from its tissue labels, within CT's own
bounds (a CT number is a physical quantity, so the contrasts stay those of CT rather than SynthSeg's
arbitrary ones):

* **each tissue** is shifted by its own random offset and given its own random texture (amplitude and
  grain), with soft edges so partial-volume boundaries stay soft;
* **tumours** get a strong internal heterogeneity and, when at least :attr:`cavity_min_diameter_mm`
  across, possibly an air-filled or necrotic core (the reference mask keeps it: a GTV includes its
  cavity, as LUNG1-001's does);
* **the scanner**: a smooth additive bias field (cupping, beam hardening), extra blur, a lower
  in-plane resolution (down- and up-sampled), extra correlated noise and, where
  :attr:`~AppearanceRandomisation.slice_thickness_mm` asks for it, a thicker reconstructed slice
  (each slice the average of a slab along z, as a scanner's slice sensitivity profile makes it, so a
  vessel crossing the slice obliquely and a tumour's top and bottom fade by partial volume).

Anatomy, masks and tumour records are unchanged: only ``image`` is new. The result is deterministic
from the seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from lungseg.data.phantom.anatomy import smooth_noise
from lungseg.data.phantom.config import TISSUE_LABELS
from lungseg.data.volume import CTVolume

__all__ = ["AppearanceRandomisation", "randomise_appearance", "thick_slices"]

#: Tissues that get their own offset and texture (air, bone and airway lumen keep theirs).
_TISSUES = ("fat", "muscle", "lung", "vessel", "mediastinum", "abdomen", "tumour")


@dataclass(frozen=True)
class AppearanceRandomisation:
    """Ranges of :func:`randomise_appearance`; every value is drawn uniformly per patient (or per tumour).

    Attributes:
        tissue_shift_hu: half-width of each tissue's additive offset (HU), by tissue name.
        texture_hu: upper bound of each tissue's texture amplitude (SD in HU), by tissue name.
        texture_grain_mm: range of the texture's correlation length (Gaussian sigma, mm in-plane).
        cavity_probability: chance that a tumour at least ``cavity_min_diameter_mm`` across gets a core.
        cavity_min_diameter_mm: smallest equivalent diameter (mm) with a possible core.
        cavity_hu: range of the core's HU (air to necrotic fluid).
        bias_hu: upper bound of the smooth additive bias field's amplitude (HU).
        blur_mm: range of the extra in-plane Gaussian blur (sigma, mm).
        low_resolution_probability: chance of down- and up-sampling the slices.
        low_resolution_factor: range of that down-sampling factor (> 1: coarser).
        noise_hu: range of the extra correlated noise (SD, HU).
        slice_thickness_mm: range of the reconstructed slice thickness (mm, the full width at half
            maximum of a Gaussian slice profile along z); a thickness at or below the slice spacing
            leaves the slices as they are. The default ``(0, 0)`` is off, which keeps the published
            variants' images as they were.
    """

    tissue_shift_hu: dict[str, float] = dataclasses.field(default_factory=lambda: {
        "fat": 40.0, "muscle": 30.0, "lung": 60.0, "vessel": 40.0, "mediastinum": 30.0, "abdomen": 30.0,
        "tumour": 60.0})
    texture_hu: dict[str, float] = dataclasses.field(default_factory=lambda: {
        "fat": 25.0, "muscle": 25.0, "lung": 45.0, "vessel": 30.0, "mediastinum": 25.0, "abdomen": 25.0,
        "tumour": 140.0})
    texture_grain_mm: tuple[float, float] = (0.8, 4.0)
    cavity_probability: float = 0.3
    cavity_min_diameter_mm: float = 20.0
    cavity_hu: tuple[float, float] = (-1000.0, 20.0)
    bias_hu: float = 40.0
    blur_mm: tuple[float, float] = (0.0, 1.0)
    low_resolution_probability: float = 0.4
    low_resolution_factor: tuple[float, float] = (1.2, 2.0)
    noise_hu: tuple[float, float] = (0.0, 40.0)
    slice_thickness_mm: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        for name in ("tissue_shift_hu", "texture_hu"):
            unknown = sorted(set(getattr(self, name)) - set(_TISSUES))
            if unknown:
                raise ValueError(f"AppearanceRandomisation.{name}: unknown tissue(s) {unknown}; "
                                 f"expected some of {list(_TISSUES)}")
            if any(v < 0 for v in getattr(self, name).values()):
                raise ValueError(f"AppearanceRandomisation.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("texture_grain_mm", "cavity_hu", "blur_mm", "low_resolution_factor", "noise_hu",
                     "slice_thickness_mm"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"AppearanceRandomisation.{name} must be (low, high) with low <= high, "
                                 f"got {getattr(self, name)!r}")
        if self.texture_grain_mm[0] <= 0 or self.low_resolution_factor[0] < 1 or self.blur_mm[0] < 0 \
                or self.noise_hu[0] < 0 or self.bias_hu < 0 or self.slice_thickness_mm[0] < 0:
            raise ValueError("AppearanceRandomisation: texture_grain_mm must be > 0, low_resolution_factor >= 1, "
                             "blur_mm, noise_hu, bias_hu and slice_thickness_mm >= 0")
        for name in ("cavity_probability", "low_resolution_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"AppearanceRandomisation.{name} must be in [0, 1], got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _soft(indicator: np.ndarray, sigma_px: tuple[float, float, float]) -> np.ndarray:
    """A 0/1 indicator with blurred edges (a partial-volume weight)."""
    return ndimage.gaussian_filter(indicator.astype(np.float32), sigma_px, mode="nearest")


def _repaint_tissues(hu: np.ndarray, tissue: np.ndarray, spacing: tuple[float, float, float],
                     rng: np.random.Generator, settings: AppearanceRandomisation,
                     params: dict[str, Any]) -> None:
    """Add each tissue's offset and texture to ``hu`` in place."""
    edge = (0.3, 0.6, 0.6)
    for name in _TISSUES:
        where = tissue == TISSUE_LABELS[name]
        if not where.any():
            continue
        shift = rng.uniform(-1, 1) * settings.tissue_shift_hu.get(name, 0.0)
        amplitude = rng.uniform(0, settings.texture_hu.get(name, 0.0))
        grain = rng.uniform(*settings.texture_grain_mm)
        sigma = (max(grain / spacing[0], 0.3), grain / spacing[1], grain / spacing[2])
        lo, hi = _bounding_box(where, pad=3)
        weight = _soft(where[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], edge)
        texture = smooth_noise(rng, weight.shape, sigma) * amplitude
        hu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += weight * (shift + texture)
        params[name] = {"shift_hu": round(float(shift), 1), "texture_hu": round(float(amplitude), 1),
                        "grain_mm": round(float(grain), 2)}


def _bounding_box(where: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.nonzero(where)
    lo = np.maximum([int(i.min()) - pad for i in idx], 0)
    hi = np.minimum([int(i.max()) + pad + 1 for i in idx], where.shape)
    return lo, hi


def _carve_cavities(hu: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float],
                    rng: np.random.Generator, settings: AppearanceRandomisation) -> list[dict[str, Any]]:
    """Give some large tumours an air-filled or necrotic core, in place; the mask is not changed."""
    labels, n = ndimage.label(mask > 0)
    cores = []
    voxel_ml = float(np.prod(spacing)) / 1000.0
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        inside = labels[box] == k
        diameter = float(np.cbrt(6 * inside.sum() * voxel_ml * 1000.0 / np.pi))
        if diameter < settings.cavity_min_diameter_mm or rng.uniform() >= settings.cavity_probability:
            continue
        depth = ndimage.distance_transform_edt(inside, sampling=spacing)
        # a ragged core: deeper than a random share of the tumour's depth, the edge roughened by noise
        share = rng.uniform(0.35, 0.7)
        ragged = depth / max(float(depth.max()), 1e-6) + 0.12 * smooth_noise(rng, depth.shape, (0.7, 1.5, 1.5))
        core = inside & (ragged > share)
        if not core.any():
            continue
        level = rng.uniform(*settings.cavity_hu)
        weight = _soft(core, (0.3, 0.6, 0.6)) * inside
        region = hu[box]
        region += weight * (level - region)
        cores.append({"diameter_mm": round(diameter, 1), "core_hu": round(float(level), 1),
                      "core_share": round(float(core.sum() / inside.sum()), 3)})
    return cores


def _scanner(hu: np.ndarray, spacing: tuple[float, float, float], rng: np.random.Generator,
             settings: AppearanceRandomisation, params: dict[str, Any]) -> np.ndarray:
    """Bias field, extra blur, lower resolution and extra noise of one patient's scanner."""
    z, h, w = hu.shape
    coarse = rng.standard_normal((2, 4, 4)).astype(np.float32)
    bias = ndimage.zoom(coarse, (z / 2, h / 4, w / 4), order=3, mode="nearest")[:z, :h, :w]
    bias_amplitude = rng.uniform(0, settings.bias_hu)
    hu = hu + bias_amplitude * bias / max(float(np.abs(bias).max()), 1e-6)
    blur = rng.uniform(*settings.blur_mm)
    if blur > 0:
        hu = ndimage.gaussian_filter(hu, (0, blur / spacing[1], blur / spacing[2]), mode="nearest")
    factor = 1.0
    if rng.uniform() < settings.low_resolution_probability:
        factor = rng.uniform(*settings.low_resolution_factor)
        small = ndimage.zoom(hu, (1, 1 / factor, 1 / factor), order=1, mode="nearest")
        hu = ndimage.zoom(small, (1, h / small.shape[1], w / small.shape[2]), order=1, mode="nearest")
    noise = rng.uniform(*settings.noise_hu)
    hu = hu + noise * smooth_noise(rng, hu.shape, (0.0, 0.7, 0.7))
    params.update(bias_hu=round(float(bias_amplitude), 1), blur_mm=round(float(blur), 2),
                  resolution_factor=round(float(factor), 2), noise_hu=round(float(noise), 1))
    if settings.slice_thickness_mm[1] > 0:
        # drawn last, and only when asked for, so that the other draws stay those of the published variants;
        # after the noise, so the slab averages it as a thick reconstruction does (``noise_hu`` is the thin slices')
        thickness = rng.uniform(*settings.slice_thickness_mm)
        hu = thick_slices(hu, spacing[0], thickness)
        params["slice_thickness_mm"] = round(float(thickness), 2)
    return hu


def thick_slices(hu: np.ndarray, slice_spacing_mm: float, thickness_mm: float) -> np.ndarray:
    """``hu`` as reconstructed with slices ``thickness_mm`` thick: each slice the Gaussian-weighted mean of
    its neighbours along z (the slice sensitivity profile; FWHM = ``thickness_mm``). Only the part of the
    thickness beyond what the slice spacing already averages is added, so a thickness at or below the
    spacing returns ``hu`` unchanged. Noise uncorrelated along z is averaged too, as in a thick
    reconstruction made from thin slices: at 5 mm over 2 mm slices its SD about halves."""
    fwhm_to_sigma = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    extra = thickness_mm ** 2 - slice_spacing_mm ** 2
    if extra <= 0:
        return hu
    return ndimage.gaussian_filter1d(hu, np.sqrt(extra) * fwhm_to_sigma / slice_spacing_mm, axis=0, mode="nearest")


def randomise_appearance(volume: CTVolume, seed: int | tuple[int, ...],
                         settings: AppearanceRandomisation | None = None) -> CTVolume:
    """A phantom patient repainted with random tissue intensities, textures, tumour cores and scanner.

    Args:
        volume: a patient of :func:`lungseg.data.phantom.generate_patient` (its ``meta["tissue"]``
            labels are needed); not modified.
        seed: seed of the draws (the same seed, volume and settings give the same image).
        settings: the ranges; default :class:`AppearanceRandomisation`.

    Returns:
        A new :class:`~lungseg.data.volume.CTVolume` with the same mask, geometry and labels, a new
        integral-HU image in ``[-1024, 3071]``, and ``meta["appearance"]`` recording what was drawn.

    Raises:
        ValueError: ``volume`` is not a HU phantom volume with tissue labels of its shape.
    """
    settings = settings or AppearanceRandomisation()
    tissue = volume.meta.get("tissue")
    if volume.intensity != "hu" or tissue is None or np.shape(tissue) != volume.image.shape:
        raise ValueError("randomise_appearance needs a HU phantom volume with meta['tissue'] labels of shape "
                         f"{volume.image.shape}; got intensity={volume.intensity!r}, tissue shape "
                         f"{None if tissue is None else np.shape(tissue)}")
    rng = np.random.default_rng(seed)
    hu = volume.image.astype(np.float32, copy=True)
    params: dict[str, Any] = {"seed": list(np.atleast_1d(seed).tolist()), "tissues": {}}
    _repaint_tissues(hu, np.asarray(tissue), volume.spacing, rng, settings, params["tissues"])
    if volume.mask is not None and volume.mask.any():
        params["cavities"] = _carve_cavities(hu, volume.mask, volume.spacing, rng, settings)
    hu = _scanner(hu, volume.spacing, rng, settings, params)
    image = np.clip(np.rint(hu), -1024, 3071).astype(np.float32)
    meta = {**volume.meta, "appearance": params}
    return dataclasses.replace(volume, image=image, meta=meta)
