"""Three-plane prediction: a 2D network run on the axial, coronal and sagittal slices of a volume.

A network trained on axial 2D patches sees what any axial slice shows: the cross-section of a vessel
running through the slice, or the dome of the diaphragm cut by it, is a round blob like a nodule. In
the other two planes the vessel is a tube and the dome a sheet, while a tumour stays a blob in all
three. :func:`three_plane_probabilities` resamples a volume to the network's own pixel size in all three
directions (isotropic), runs the network on the slices of each plane and averages the three probability
maps, so a candidate has to look like a tumour in every plane to keep a high probability. Views of a
candidate from several planes are the classical way to remove the false positives of nodule detection
(Setio et al., *IEEE Trans. Med. Imaging* 35:1160-1169, 2016, multi-view networks; Roth et al.,
*MICCAI* 2014, 2.5D views); here the same 2D network serves all three planes, with no retraining.

It needs a model that states its pixel size (:attr:`lungseg.preprocess.Fingerprint.pixel_mm`; trained on
patches at a fixed millimetres per pixel, such as the real-CT model): such a network has learnt tumours at
a scale in millimetres, which a coronal or sagittal slice resampled to the same pixel size shows. A model
that resizes every axial slice to its square input (the phantom study's networks) has no such scale, and
gets the axial slices only. Where the choice was measured: ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lungseg.errors import LungsegError

__all__ = ["MIN_EXTENT_MM", "PLANES", "check_planes", "resolve_planes", "three_plane_probabilities", "too_short"]

#: Shortest extent (mm, along any axis) of the volume searched for three planes; shorter ones get axial slices
#: (:func:`too_short`). Two thirds of the 96 mm patches (48 pixels of 2 mm) the real-CT model was trained on:
#: on synthetic crops three planes found less than axial slices at extents of 18-44 mm, as much at 33-74 mm
#: and more on whole volumes (``benchmarks/NOTES.md``); the value was not tuned.
MIN_EXTENT_MM = 64.0

#: ``planes`` values of :func:`lungseg.inference.scan.segment_scan` and ``lungseg predict --planes``.
PLANES = ("auto", "axial", "three")


def check_planes(planes: str) -> None:
    """Refuse a ``planes`` value not in :data:`PLANES`, naming it."""
    if planes not in PLANES:
        raise LungsegError(f"planes must be one of {', '.join(PLANES)}; got {planes!r}")


def resolve_planes(planes: str, run: Any, where: str = "planes") -> str:
    """The planes a model runs on: ``"auto"`` is ``"three"`` for a model that states its pixel size and
    ``"axial"`` for one that resizes whole slices.

    Args:
        planes: one of :data:`PLANES`.
        run: the :class:`~lungseg.inference.Predictor`.
        where: what to name in an error (the input, or ``--planes``).

    Returns:
        ``"three"`` or ``"axial"``.

    Raises:
        LungsegError: ``planes`` not in :data:`PLANES`, or ``"three"`` for a model that states no pixel size.
    """
    check_planes(planes)
    stated = run.fingerprint.pixel_mm is not None
    if planes == "auto":
        return "three" if stated else "axial"
    if planes == "three" and not stated:
        raise LungsegError(
            f"{where}: three-plane prediction needs a model trained at a stated pixel size (millimetres per"
            f" pixel); the model in {run.run_dir} resizes every axial slice to its input, so it takes axial slices"
            " only (planes 'axial' or 'auto')")
    return planes


def too_short(shape: tuple[int, ...], spacing: tuple[float, float, float]) -> str | None:
    """Why a volume is too short for three planes, or ``None`` when it is long enough.

    A coronal or sagittal slice is as tall as the volume is long along z; in a slab of a few centimetres (a
    crop around a nodule) the network sees a strip with the tumour filling its height, unlike anything it
    was trained on, and misses it. Below :data:`MIN_EXTENT_MM` along any axis the volume gets axial slices
    only (where the limit comes from: ``benchmarks/NOTES.md``).

    Args:
        shape: ``(Z, H, W)`` voxels of the volume searched.
        spacing: ``(z, row, column)`` voxel size in mm.

    Returns:
        ``None``, or a sentence for the summary naming the shortest extent and the limit.
    """
    extents = [n * float(s) for n, s in zip(shape, spacing)]
    if min(extents) >= MIN_EXTENT_MM:
        return None
    return (f"the volume searched is {min(extents):.0f} mm along its shortest axis, less than the {MIN_EXTENT_MM:g} mm"
            " three planes need: axial slices only")


def _resize(volume: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``volume`` resampled trilinearly to ``shape`` (voxel centres aligned, as the slices' own resampling)."""
    import torch
    import torch.nn.functional as F

    if tuple(volume.shape) == tuple(shape):
        return np.ascontiguousarray(volume, dtype=np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    return F.interpolate(tensor, size=tuple(shape), mode="trilinear", align_corners=False)[0, 0].numpy()


def _slices_read(present: np.ndarray, size: int) -> np.ndarray:
    """Which of ``size`` resampled slices along an axis the trilinear resampling back to the native grid (voxel
    centres aligned, :func:`_resize`) reads for the native slices where ``present`` is true, with one slice of
    margin on either side."""
    native = np.flatnonzero(present)
    source = np.maximum((native + 0.5) * size / present.size - 0.5, 0.0)  # where each native slice samples
    first = np.floor(source).astype(int)
    read = np.zeros(size, dtype=bool)
    for shift in (-1, 0, 1, 2):
        read[np.clip(first + shift, 0, size - 1)] = True
    return np.flatnonzero(read)


def three_plane_probabilities(run: Any, images: np.ndarray, spacing: tuple[float, float, float],
                              batch_size: int = 16, progress: bool = False, keep: np.ndarray | None = None) -> np.ndarray:
    """Tumour probabilities of a volume, averaged over its axial, coronal and sagittal slices.

    Args:
        run: a :class:`~lungseg.inference.Predictor` whose fingerprint states ``pixel_mm``.
        images: ``(Z, H, W)`` intensities as the network takes them (after
            :func:`lungseg.inference.scan.model_images`).
        spacing: ``(z, row, column)`` voxel size in mm.
        batch_size, progress: as for :meth:`~lungseg.inference.Predictor.probabilities`.
        keep: boolean, shaped like ``images``, or ``None``: the voxels whose probabilities are wanted. Each plane
            then runs only its slices that those voxels are resampled from (a 2D network's slices are
            independent), and leaves the others at 0: on ``keep`` the result is the whole run's (up to float
            rounding, the batches holding other slices), outside it it is not meant for use (in the lungs' box of a
            scan, the slices in front of and behind the lungs are skipped).

    Returns:
        float32 ``(Z, H, W)`` probabilities on the grid of ``images``: the mean of the three planes' maps,
        each computed on the volume resampled to ``pixel_mm`` in every direction (with the model's
        test-time augmentation) and resampled back.

    Raises:
        ValueError: ``images`` not 3D, a spacing that is not three positive numbers, a ``keep`` not shaped
            like ``images``, or a model that states no pixel size.
    """
    pixel_mm = run.fingerprint.pixel_mm
    if pixel_mm is None:
        raise ValueError("three-plane prediction needs a model that states its pixel size (fingerprint.pixel_mm)")
    if np.ndim(images) != 3:
        raise ValueError(f"images must be a volume (Z, H, W), got shape {np.shape(images)}")
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive millimetre sizes (z, row, column), got {tuple(spacing)}")
    if keep is not None and np.shape(keep) != np.shape(images):
        raise ValueError(f"keep must be shaped like images {np.shape(images)}, got {np.shape(keep)}")
    z, h, w = (max(1, round(n * float(s) / pixel_mm)) for n, s in zip(images.shape, spacing))
    iso = _resize(images, (z, h, w))
    square = (pixel_mm, pixel_mm)

    def plane(order: tuple[int, int, int]) -> np.ndarray:
        slices = iso.transpose(order)
        axis = order[0]
        if keep is None:
            run_on = np.arange(iso.shape[axis])
        else:
            present = np.asarray(keep, dtype=bool).any(axis=tuple(a for a in range(3) if a != axis))
            run_on = _slices_read(present, iso.shape[axis])
        probs = np.zeros(slices.shape, dtype=np.float32)
        if run_on.size:
            probs[run_on] = run.probabilities(np.ascontiguousarray(slices[run_on]), batch_size=batch_size,
                                              progress=progress, pixel_spacing=square)
        return probs.transpose(np.argsort(order))

    mean = (plane((0, 1, 2)) + plane((1, 0, 2)) + plane((2, 0, 1))) / 3.0
    return _resize(mean, (images.shape[0], images.shape[1], images.shape[2]))
