"""Tumour-free lung patches from the phantom, in the format of the real MSD patches, as negatives.

The real patches (:mod:`lungseg.experiment.realct`) hold tumours and their surroundings: 85 % of them
show a tumour, so a network trained on them alone has never been shown a lung without one, and on a
whole scan it marks vessels, bronchial walls and the diaphragm's dome (``benchmarks/NOTES.md``). Real
tumour-free lung is not in ``../shared/realct`` for training (the two whole scans are test scans), so
the negatives come from the synthetic phantom, which has vessel and airway trees: 48 x 48 patches at
2 mm centred on random points of the lung region (:func:`lungseg.inference.region.lung_region`, where
a whole-scan prediction searches), holding no tumour voxel, clipped to the HU window of the real
patches and min-max scaled per patch, as the real patches were.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lungseg.inference.region import lung_region

__all__ = ["phantom_negative_patches"]

_PATCHES_PER_PATIENT = 10


def _unit_patch(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray | None:
    """``hu`` clipped to ``window`` and min-max scaled to [0, 1]; ``None`` for a constant patch."""
    clipped = np.clip(hu, *window)
    low, high = float(clipped.min()), float(clipped.max())
    return None if high - low < 1e-6 else ((clipped - low) / (high - low)).astype(np.float32)


def phantom_negative_patches(count: int, seed: int = 0, window: tuple[float, float] = (-970.0, 150.0),
                             pixel_mm: float = 2.0, size: int = 48) -> np.ndarray:
    """``count`` tumour-free phantom lung patches (see the module docstring).

    Args:
        count: patches wanted, ``>= 1``; ten per phantom patient, patients seeded ``(seed, k)``.
        seed: seed of the patients and of where the patches are taken.
        window: HU window before the per-patch min-max scaling.
        pixel_mm: pixel size the slices are resampled to.
        size: patch side in pixels.

    Returns:
        float32 ``(count, size, size)`` in [0, 1].

    Raises:
        ValueError: ``count`` or ``size`` below 1.
    """
    from lungseg.data.phantom.study import generate_patient

    if count < 1 or size < 1:
        raise ValueError(f"count and size must be >= 1, got count={count!r}, size={size!r}")
    rng = np.random.default_rng(seed)
    patches: list[np.ndarray] = []
    patient = 0
    while len(patches) < count:
        if patient >= 10 * count:  # every patient yields patches; this guards against a generator that stops
            raise RuntimeError(f"phantom_negative_patches: {len(patches)} of {count} patches from {patient} patients")
        vol, _ = generate_patient((seed, patient))
        patient += 1
        factor = vol.spacing[1] / pixel_mm
        region = lung_region(vol.image, vol.spacing)
        slices = np.nonzero(region.any(axis=(1, 2)))[0]
        wanted = min(_PATCHES_PER_PATIENT, count - len(patches))
        for _ in range(20 * wanted):
            if wanted == 0 or not len(slices):
                break
            z = int(rng.choice(slices))
            image = ndimage.zoom(vol.image[z], factor, order=1)
            inside = ndimage.zoom(region[z].astype(np.uint8), factor, order=0) > 0
            tumour = ndimage.zoom(vol.mask[z], factor, order=0) > 0
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
                patches.append(patch)
                wanted -= 1
    return np.stack(patches)
