"""Phantom patches in the format of the real MSD patches: tumour patches and tumour-free lung.

The real patches (:mod:`lungseg.experiment.realct`, ``../shared/realct/msd-task06-2mm-patches``) are
48 x 48 pixels at 2 mm, each min-max scaled to [0, 1]; 85 % of them show a tumour near their centre.
Phantom patches in that format serve two purposes:

* **negatives**: the real patches hold tumours and their surroundings, so a network trained on them
  alone has never been shown a lung without one, and on a whole scan it marks vessels, bronchial walls
  and the diaphragm's dome (``benchmarks/NOTES.md``). Real tumour-free lung is not in
  ``../shared/realct`` for training (the two whole scans are test scans), so the negatives come from
  the phantom, which has vessel and airway trees;
* **pretraining and transfer**: a network trained on phantom tumour patches only (optionally with the
  appearance randomised, :mod:`lungseg.data.phantom.randomise`) and scored on the real patches
  measures how well the phantom transfers to real CT; its weights can start a real-CT training.

Every patch is cut from a slice resampled to ``pixel_mm``, clipped to a HU window and min-max scaled
per patch, as the real patches were. Tumour patches are centred on a random tumour pixel of a random
slice through a tumour, shifted by a few pixels (the real patches' tumour centres lie within about
3.5 pixels of the patch centre); negatives are centred on a random point of the lung region
(:func:`lungseg.inference.region.lung_region`, where a whole-scan prediction searches) and hold no
tumour pixel.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy import ndimage

from lungseg.inference.region import LungRegion, lung_region

__all__ = ["phantom_negative_patches", "phantom_patches"]

_PATCHES_PER_PATIENT = 10
#: SD (pixels) of a tumour patch's centre around the tumour pixel it was drawn on.
_CENTRE_SHIFT_PX = 3.5
#: The region the published phantom patches were drawn from: the lungs widened by 5 mm, as prediction
#: searched until 2026-12-04 (it now widens by 10 mm); kept so the patches stay reproducible.
_PATCH_REGION = LungRegion(margin_mm=5.0)


def _unit_patch(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray | None:
    """``hu`` clipped to ``window`` and min-max scaled to [0, 1]; ``None`` for a constant patch."""
    clipped = np.clip(hu, *window)
    low, high = float(clipped.min()), float(clipped.max())
    return None if high - low < 1e-6 else ((clipped - low) / (high - low)).astype(np.float32)


class _Slices:
    """One patient's slices resampled to ``pixel_mm`` on demand, with their lung region and tumour mask."""

    def __init__(self, vol: Any, pixel_mm: float) -> None:
        self.vol, self.factor = vol, vol.spacing[1] / pixel_mm
        self.region = lung_region(vol.image, vol.spacing, _PATCH_REGION)

    def image(self, z: int) -> np.ndarray:
        return ndimage.zoom(self.vol.image[z], self.factor, order=1)

    def labels(self, z: int, which: np.ndarray) -> np.ndarray:
        return ndimage.zoom(which[z].astype(np.uint8), self.factor, order=0) > 0


def _negatives(s: _Slices, rng: np.random.Generator, wanted: int, window: tuple[float, float],
               size: int) -> Iterator[np.ndarray]:
    """Up to ``wanted`` tumour-free patches centred in the lung region (at most ``20 * wanted`` tries)."""
    slices = np.nonzero(s.region.any(axis=(1, 2)))[0]
    for _ in range(20 * wanted):
        if wanted == 0 or not len(slices):
            return
        z = int(rng.choice(slices))
        image, inside, tumour = s.image(z), s.labels(z, s.region), s.labels(z, s.vol.mask)
        half = size // 2
        ys, xs = np.nonzero(inside[half: image.shape[0] - size + half, half: image.shape[1] - size + half])
        if not len(ys):
            continue
        k = int(rng.integers(len(ys)))
        y, x = int(ys[k]), int(xs[k])  # the patch's top-left corner
        if tumour[y: y + size, x: x + size].any():
            continue
        patch = _unit_patch(image[y: y + size, x: x + size], window)
        if patch is not None:
            wanted -= 1
            yield patch


def _tumour_patches(s: _Slices, rng: np.random.Generator, wanted: int, window: tuple[float, float],
                    size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Up to ``wanted`` ``(image, mask)`` patches around the patient's tumours."""
    slices = np.nonzero(s.vol.mask.any(axis=(1, 2)))[0]
    for _ in range(4 * wanted):
        if wanted == 0 or not len(slices):
            return
        z = int(rng.choice(slices))
        image, tumour = s.image(z), s.labels(z, s.vol.mask)
        ys, xs = np.nonzero(tumour)
        if not len(ys) or min(image.shape) < size:
            continue
        k = int(rng.integers(len(ys)))
        centre = np.array([ys[k], xs[k]]) + rng.normal(0, _CENTRE_SHIFT_PX, 2)
        y, x = (np.clip(np.rint(centre).astype(int) - size // 2, 0, np.array(image.shape) - size))
        patch = _unit_patch(image[y: y + size, x: x + size], window)
        if patch is not None:
            wanted -= 1
            yield patch, tumour[y: y + size, x: x + size].astype(np.uint8)


def phantom_patches(count: int, seed: int = 0, tumour_share: float = 0.85,
                    window: tuple[float, float] = (-970.0, 150.0), pixel_mm: float = 2.0, size: int = 48,
                    config: Any = None, randomisation: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``count`` phantom patches in the real patches' format (see the module docstring).

    Args:
        count: patches wanted, ``>= 1``; at most ten per phantom patient, patients seeded ``(seed, k)``.
        seed: seed of the patients, of their appearance and of where the patches are taken.
        tumour_share: share of tumour patches (the rest are tumour-free lung); the real patches' is 0.85.
        window: HU window before the per-patch min-max scaling.
        pixel_mm: pixel size the slices are resampled to.
        size: patch side in pixels.
        config: :class:`~lungseg.data.phantom.PhantomConfig` of the patients (default settings if ``None``).
        randomisation: an :class:`~lungseg.data.phantom.randomise.AppearanceRandomisation` to repaint
            each patient with (seeded ``(seed, k, 1)``), or ``None`` for the phantom as generated.

    Returns:
        ``(images, masks)``: float32 ``(count, size, size)`` in [0, 1] and uint8 ``(count, size, size)``;
        the tumour patches come first.

    Raises:
        ValueError: ``count`` or ``size`` below 1, or ``tumour_share`` outside [0, 1].
    """
    from lungseg.data.phantom.randomise import randomise_appearance
    from lungseg.data.phantom.study import generate_patient

    if count < 1 or size < 1:
        raise ValueError(f"count and size must be >= 1, got count={count!r}, size={size!r}")
    if not 0 <= tumour_share <= 1:
        raise ValueError(f"tumour_share must be in [0, 1], got {tumour_share!r}")
    rng = np.random.default_rng(seed)
    need_tumour = int(round(count * tumour_share))
    need_negative = count - need_tumour
    tumours: list[tuple[np.ndarray, np.ndarray]] = []
    negatives: list[np.ndarray] = []
    patient = 0
    while len(tumours) < need_tumour or len(negatives) < need_negative:
        if patient >= 10 * count:  # every patient yields patches; this guards against a generator that stops
            raise RuntimeError(f"phantom_patches: {len(tumours) + len(negatives)} of {count} patches from "
                               f"{patient} patients")
        vol, _ = generate_patient((seed, patient), config)
        if randomisation is not None:
            vol = randomise_appearance(vol, (seed, patient, 1), randomisation)
        patient += 1
        s = _Slices(vol, pixel_mm)
        side = int(round(min(vol.image.shape[1:]) * s.factor))
        if side < size:
            raise ValueError(f"size {size} is larger than the phantom's slices at {pixel_mm} mm ({side} pixels): "
                             "lower size or pixel_mm")
        room = _PATCHES_PER_PATIENT
        if len(tumours) < need_tumour and vol.mask.any():
            take = min(int(round(room * tumour_share)) or room, need_tumour - len(tumours))
            tumours.extend(_tumour_patches(s, rng, take, window, size))
            room -= take
        if len(negatives) < need_negative and room > 0:
            negatives.extend(_negatives(s, rng, min(room, need_negative - len(negatives)), window, size))
    images = [t[0] for t in tumours] + negatives
    masks = [t[1] for t in tumours] + [np.zeros((size, size), np.uint8)] * len(negatives)
    return np.stack(images), np.stack(masks)


def phantom_negative_patches(count: int, seed: int = 0, window: tuple[float, float] = (-970.0, 150.0),
                             pixel_mm: float = 2.0, size: int = 48) -> np.ndarray:
    """``count`` tumour-free phantom lung patches: :func:`phantom_patches` with ``tumour_share=0``.

    Returns:
        float32 ``(count, size, size)`` in [0, 1].

    Raises:
        ValueError: ``count`` or ``size`` below 1.
    """
    return phantom_patches(count, seed, tumour_share=0.0, window=window, pixel_mm=pixel_mm, size=size)[0]
