"""Segmenting a whole CT scan: the model's intensities, its pixel size, and the region searched.

A model trained on whole phantom slices in HU takes a scan's slices as they are. A model trained on
real tumour patches scaled to [0, 1] (the published real-CT model) needs four things a scan does not
give it by itself, and :func:`segment_scan` supplies them:

- **intensities**: the scan's HU are clipped to the model's
  :attr:`~lungseg.preprocess.Fingerprint.unit_window` and scaled to [0, 1] (:func:`hu_to_unit`), as its
  training patches were;
- **pixel size**: the slices are resampled to the model's
  :attr:`~lungseg.preprocess.Fingerprint.pixel_mm` and the fully convolutional network runs on whole
  slices (:meth:`lungseg.inference.Predictor.network_size`), whatever the field of view;
- **which slices**: such a network sees a vessel's cross-section or the dome of the diaphragm in an
  axial slice as a round blob, like a nodule; by default it also runs on the coronal and sagittal slices
  of the volume resampled to its pixel size, and the three probability maps are averaged
  (:mod:`lungseg.inference.planes`; ``planes="axial"`` for axial slices only);
- **where to look**: such a model has seen tumours and their surroundings only, never a whole chest,
  and marks bright blobs anywhere; the search is limited to the lungs and their walls
  (:func:`lungseg.inference.region.lung_region`), and the network runs only on the box around them.
  That region has to reach past the lungs (a tumour on their wall), so it also takes in a band of the
  mediastinum and the abdomen under the diaphragm's dome, where the published real-CT model marks
  blobs of 10-50 mL as sure of themselves as a tumour. A candidate (a 26-connected component of the
  mask) of which less than half lies in the lungs proper (:func:`lungseg.inference.region.lung_envelope`)
  is therefore **set aside**: left out of the mask, and listed with its size, place and probability
  so that nothing disappears unseen (a tumour grown into the mediastinum can be one of them). On three
  planes, with the lungs searched, a candidate whose averaged probability never rises :data:`UNSURE_MARGIN`
  above the threshold (:func:`unsure_bar`) is set aside as *unsure* in the same way, with or without the CRF (most of them are a few voxels of vessel or parenchyma; the rule
  was chosen on synthetic whole scans, ``benchmarks/candidate_confidence.py``).

The last step serves every model given a scan in HU (``region="auto"``): a model trained on whole
phantom slices marks 1.9 million voxels of the real LIDC-IDRI-0314 series, the table and the
mediastinum among them, and 40 thousand inside its lungs; the CRF then sees everything outside the
lungs as background.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import ndimage

from lungseg.errors import DataWarning, LungsegError
from lungseg.inference.checks import require_hounsfield
from lungseg.inference.coarse import coarse_spacing, resolve_coarse_pass
from lungseg.inference.lesions import label_candidates, lesion_summary, world_affine
from lungseg.inference.planes import resolve_planes, three_plane_probabilities, too_short
from lungseg.inference.predictor import Predictor, Segmentation
from lungseg.inference.region import LungRegion, lung_region_and_envelope, set_aside_outside_lungs

__all__ = ["REGIONS", "UNSURE_MARGIN", "check_region", "hu_to_unit", "resolve_region", "segment_scan",
           "set_aside_unsure", "unsure_bar"]

#: ``"auto"``: the lungs for a scan in HU, the whole volume for one already scaled to [0, 1] (no HU to
#: find the lungs by); ``"lungs"``; ``"all"``.
REGIONS: tuple[str, ...] = ("auto", "lungs", "all")
# In-plane context (mm) the network sees around the lungs' box: a tumour on the box's edge is not
# segmented against the reflect padding.
_CONTEXT_MM = 16.0
#: On three planes, a candidate whose highest averaged probability is below the threshold plus this (or
#: halfway from the threshold to 1, when that is lower: a threshold of 0.9 or more) is set aside as unsure: at
#: the default threshold, a peak below 0.6 (chosen on synthetic whole scans by a rule written before the run,
#: ``benchmarks/candidate_confidence.py``; the other rules tried lost tumours on the set it was chosen on).
UNSURE_MARGIN = 0.1


def hu_to_unit(images: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """HU clipped to ``window`` and scaled to [0, 1], float32 (in one new array: a whole scan is 72 M voxels)."""
    low, high = window
    unit = np.clip(images, low, high).astype(np.float32, copy=False)
    unit -= np.float32(low)
    unit /= np.float32(high - low)
    return unit


def model_images(run: Predictor, vol: Any, where: str) -> np.ndarray:
    """``vol``'s slices in the intensities ``run`` was trained on.

    Raises:
        LungsegError: the model takes [0, 1] patches, states no HU window, and ``vol`` is in HU.
    """
    model, data = run.fingerprint.intensity, vol.intensity
    if model == data:
        return vol.image
    if model == "unit" and run.fingerprint.unit_window is not None:
        return hu_to_unit(vol.image, run.fingerprint.unit_window)
    raise LungsegError(
        f"{where}: the input's intensities are {data!r} but the model in {run.run_dir} was trained on {model!r} data"
        " and states no HU window to convert them (export it with --unit-window LOW HIGH if you know how its"
        " training images were scaled)"
    )


def check_region(region: str) -> None:
    """Refuse a ``region`` that is not one of :data:`REGIONS`, naming them."""
    if region not in REGIONS:
        raise LungsegError(f"region must be one of {', '.join(REGIONS)}; got {region!r}")


def resolve_region(region: str, vol: Any) -> str:
    """``"lungs"`` or ``"all"`` for ``region`` (one of :data:`REGIONS`): ``"auto"`` is ``"lungs"`` for a scan in
    HU and ``"all"`` for one in [0, 1] (its HU, by which the lungs are found, are gone)."""
    check_region(region)
    if region != "auto":
        return region
    return "lungs" if vol.intensity == "hu" else "all"


def unsure_bar(threshold: float) -> float:
    """The peak probability below which a candidate of three planes is unsure: ``threshold`` plus
    :data:`UNSURE_MARGIN`, or halfway from ``threshold`` to 1 when that is lower (a bar of 1 would set aside
    every candidate)."""
    return min(threshold + UNSURE_MARGIN, (1.0 + threshold) / 2.0)


def set_aside_unsure(mask: np.ndarray, probabilities: np.ndarray, min_peak: float) -> tuple[np.ndarray, np.ndarray]:
    """Split a predicted mask into the candidates whose highest probability reaches ``min_peak`` and the rest.

    Args:
        mask: binary ``(Z, H, W)``; candidates are its 26-connected components.
        probabilities: the network's probabilities, shaped like ``mask``.
        min_peak: a candidate whose highest probability is below it is set aside.

    Returns:
        ``(kept, set_aside)``: two boolean masks that partition ``mask``.

    Raises:
        ValueError: ``probabilities`` is not shaped like ``mask``.
    """
    if np.shape(probabilities) != np.shape(mask):
        raise ValueError(f"probabilities must be shaped like the mask {np.shape(mask)}, got {np.shape(probabilities)}")
    labels, n, box = label_candidates(mask)
    peaks = np.zeros(n + 1)
    where = labels > 0
    np.maximum.at(peaks, labels[where], np.asarray(probabilities)[box][where])
    unsure = np.zeros(np.shape(mask), dtype=bool)
    unsure[box] = where & (peaks < min_peak)[labels]
    return (np.asarray(mask) > 0) & ~unsure, unsure


def _set_aside(mask: np.ndarray, probs: np.ndarray, vol: Any, envelope: np.ndarray | None,
               min_peak: float | None) -> tuple[np.ndarray, dict[str, Any] | None]:
    """``mask`` less the candidates set aside, and their summary (``None`` when nothing was asked): those mostly
    outside ``envelope`` (the lungs) unless it is ``None``, then those peaking below ``min_peak`` unless it is
    ``None``."""
    parts = []
    if envelope is not None:
        kept, aside = set_aside_outside_lungs(mask, envelope, LungRegion().min_share_in_lungs)
        mask = kept.astype(np.uint8)
        parts.append((aside, "outside the lungs", f"less than {LungRegion().min_share_in_lungs:.0%} of the candidate"
                      " in the lungs (lungseg.inference.region.lung_envelope); --keep-outside-lungs keeps them"))
    if min_peak is not None:
        kept, unsure = set_aside_unsure(mask, probs, min_peak)
        mask = kept.astype(np.uint8)
        parts.append((unsure, "unsure", f"the averaged probability of the three planes peaks below {min_peak:.3g}"
                      " (lungseg.inference.scan.unsure_bar of the threshold); --keep-unsure keeps them"))
    return mask, (_set_aside_summary(parts, vol, probs) if parts else None)


def _set_aside_summary(parts: list[tuple[np.ndarray, str, str]], vol: Any, probs: np.ndarray) -> dict[str, Any]:
    """One lesion summary of the candidates set aside, each with its ``reason``; ``parts`` are ``(mask,
    reason, rule)``, and the rules are joined."""
    lesions, rules = [], []
    for aside, reason, rule in parts:
        summary = lesion_summary(aside, vol.spacing, probs, world_affine(vol))
        lesions += [{**les, "reason": reason} for les in summary["lesions"]]
        rules.append(f"{reason}: {rule}")
    lesions.sort(key=lambda e: -e["voxels"])
    for i, les in enumerate(lesions, 1):
        les["id"] = i
    return {"count": len(lesions), "total_volume_ml": round(sum(les["volume_ml"] for les in lesions), 4),
            "connectivity": "26-connected 3D components", "lesions": lesions, "rule": "; ".join(rules)}


def _box(inside: np.ndarray, spacing: tuple[float, float, float], in_plane: bool) -> tuple[slice, slice, slice]:
    """The slices holding ``inside`` and, when ``in_plane``, its in-plane bounding box widened by
    :data:`_CONTEXT_MM` (whole slices otherwise)."""
    (zs, ys, xs), = ndimage.find_objects(inside.astype(np.uint8))
    _, h, w = inside.shape
    if not in_plane:
        return zs, slice(0, h), slice(0, w)
    pad_y, pad_x = (int(np.ceil(_CONTEXT_MM / s)) for s in spacing[1:])
    return zs, slice(max(0, ys.start - pad_y), min(h, ys.stop + pad_y)), slice(max(0, xs.start - pad_x), min(w, xs.stop + pad_x))


def _probabilities(run: Predictor, images: np.ndarray, used: str, spacing: tuple[float, float, float],
                   batch_size: int, progress: bool, keep: np.ndarray | None) -> np.ndarray:
    """The network's probabilities of ``images`` on the planes ``used``, at the pixel size ``spacing`` gives."""
    if used == "three":
        return three_plane_probabilities(run, images, spacing, batch_size=batch_size, progress=progress, keep=keep)
    return run.probabilities(images, batch_size=batch_size, progress=progress, pixel_spacing=spacing[1:])


def _segment_box(run: Predictor, images: np.ndarray, *, planes: str, spacing: tuple[float, float, float],
                 crf: bool, threshold: float | None, attention: bool, batch_size: int, progress: bool,
                 coarse: bool = False, keep: np.ndarray | None = None) -> tuple[Segmentation, str, str | None]:
    """:meth:`Predictor.segment` of ``images`` (a box of the scan), on axial slices or on three planes, and with the
    coarse pass (:mod:`lungseg.inference.coarse`: the voxel-wise higher of the maps at the model's pixel size and at
    :data:`~lungseg.inference.coarse.COARSE_FACTOR` times it) when ``coarse``; with the planes used and, where three
    were asked of a volume too short for them (:func:`too_short`), why not."""
    why_not = too_short(images.shape, spacing) if planes == "three" else None
    used = "axial" if planes == "axial" or why_not else "three"
    pixel_spacing = spacing[1:]
    if used == "axial" and not coarse:
        return run.segment(images, crf=crf, threshold=threshold, attention=attention, batch_size=batch_size,
                           progress=progress, pixel_spacing=pixel_spacing, keep=keep), used, why_not
    probs = _probabilities(run, images, used, spacing, batch_size, progress, keep)
    if coarse:
        np.maximum(probs, _probabilities(run, images, used, coarse_spacing(spacing), batch_size, progress, keep), out=probs)
    # the gate maps are the axial slices' at the model's pixel size (an extra pass; its probabilities are not used)
    alphas = run.attention_maps(images, batch_size, progress, pixel_spacing)[1] if attention else []
    return run.segmentation_of(images, probs, alphas, crf, threshold, keep), used, why_not


def _planes_record(used: str, why_not: str | None, asked: str, where: str) -> dict[str, str]:
    """The summary's ``planes`` (and ``planes_note`` when three planes fell back to axial slices; a warning
    too when they were asked for by name)."""
    if why_not is None:
        return {"planes": used}
    if asked == "three":
        warnings.warn(DataWarning(f"{where}: {why_not}"), stacklevel=3)
    return {"planes": used, "planes_note": why_not}


def segment_scan(run: Predictor, vol: Any, *, crf: bool = False, threshold: float | None = None,
                 attention: bool = False, batch_size: int = 16, progress: bool = False,
                 region: str = "auto", keep_outside_lungs: bool = False, keep_unsure: bool = False,
                 planes: str = "auto", coarse: str = "auto", where: str = "input") -> tuple[Segmentation, dict[str, Any]]:
    """Segment a CT volume (:class:`lungseg.data.volume.CTVolume`) with ``run`` (see the module docstring).

    For a model that states its pixel size the network runs on the lungs' box only; a model that resizes
    every slice to its square input gets whole slices (a box would change the scale it sees).

    Args:
        run: the trained network.
        vol: the scan; HU or [0, 1] intensities, spacing in mm.
        crf, threshold, attention, batch_size, progress: as for :meth:`Predictor.segment`.
        region: one of :data:`REGIONS`.
        keep_outside_lungs: keep the candidates that lie mostly outside the lungs (see the module
            docstring) in the mask; by default they are set aside.
        keep_unsure: keep the unsure candidates of three planes (peak below :func:`unsure_bar` of the
            threshold; only where the lungs are searched) in the mask; by default they are set aside.
        planes: one of :data:`lungseg.inference.planes.PLANES`: ``"three"`` averages the network's
            probabilities over the axial, coronal and sagittal slices
            (:func:`~lungseg.inference.planes.three_plane_probabilities`; the gate maps of ``attention`` stay
            the axial slices'), ``"axial"`` runs it on axial slices only, ``"auto"`` is ``"three"`` for a model
            that states its pixel size and ``"axial"`` otherwise (:func:`~lungseg.inference.planes.resolve_planes`).
        coarse: one of :data:`lungseg.inference.coarse.COARSE_PASSES`: whether the network also runs on the same
            planes at twice its pixel size, for tumours larger than it learnt
            (:func:`~lungseg.inference.coarse.resolve_coarse_pass`).
        where: names the input in errors.

    Returns:
        ``(segmentation on vol's grid, {"region": "lungs"/"all", "region_ml": volume searched or None,
        "planes": "three"/"axial" (and "planes_note": why a volume shorter than
        :data:`~lungseg.inference.planes.MIN_EXTENT_MM` got axial slices), "coarse_pass": whether it ran, and for the lungs "set_aside": the lesion summary (:func:`~lungseg.inference.lesions.lesion_summary`)
        of the candidates set aside, each with its ``reason`` ("outside the lungs" or "unsure"), or None when
        both kinds are kept})``; outside the region the mask, probabilities and
        gate maps are 0, and the set-aside candidates are 0 in the mask (not in the probabilities). A scan
        in which no lung is found is searched whole, with a :class:`~lungseg.errors.DataWarning`.

    Raises:
        DataError: the lungs asked of a scan taken as HU whose values are not
            (:func:`~lungseg.inference.checks.require_hounsfield`).
        LungsegError: intensities the model cannot take (:func:`model_images`), a bad ``region`` or
            ``planes`` or ``coarse``, a region asked of a volume not in HU, three planes or the coarse pass asked of
            a model that states no pixel size, or slices the network cannot take.
    """
    chosen = resolve_region(region, vol)
    if chosen == "lungs" and vol.intensity == "hu":  # --region all is the way for a scan with no air or lung
        require_hounsfield(vol.image, where)
    images = model_images(run, vol, where)
    views = resolve_planes(planes, run, where)
    coarse_pass = resolve_coarse_pass(coarse, run, where)
    if chosen == "lungs" and vol.intensity != "hu":
        raise LungsegError(f"{where}: the lung region needs a scan in HU; this one is {vol.intensity!r}")
    spacing = tuple(float(s) for s in vol.spacing)
    options = dict(crf=crf, threshold=threshold, attention=attention, batch_size=batch_size, progress=progress,
                   planes=views, spacing=spacing, coarse=coarse_pass)
    try:
        # the lungs found once, for where to search and for which candidates lie in them
        inside, envelope = lung_region_and_envelope(vol.image, vol.spacing) if chosen == "lungs" else (None, None)
        if inside is not None and not inside.any():  # no lung found (not a chest, or cut by the field of view)
            warnings.warn(DataWarning(f"{where}: no lungs found (no air-like region of {LungRegion().min_lung_ml:g}"
                                      " mL or more inside the body); the whole scan is searched"), stacklevel=2)
            inside = None
        if inside is None:
            seg, used, why_not = _segment_box(run, images, **options)
            return seg, {"region": "all", "region_ml": None, **_planes_record(used, why_not, planes, where),
                         "coarse_pass": coarse_pass, "set_aside": None}
        box = _box(inside, vol.spacing, in_plane=run.network_size(images.shape[1:], spacing[1:]) is not None)
        seg, used, why_not = _segment_box(run, np.ascontiguousarray(images[box]), keep=inside[box], **options)
    except ValueError as exc:
        raise LungsegError(f"{where}: {exc}") from None
    mask, probs, alphas = _on_whole_volume(seg, box, vol.image.shape)
    min_peak = None if used != "three" or keep_unsure else unsure_bar(run.threshold if threshold is None else threshold)
    mask, set_aside = _set_aside(mask, probs, vol, None if keep_outside_lungs else envelope, min_peak)
    info = {"region": "lungs", "region_ml": round(float(inside.sum() * np.prod(vol.spacing)) / 1000.0, 1),
            **_planes_record(used, why_not, planes, where), "coarse_pass": coarse_pass, "set_aside": set_aside}
    return Segmentation(mask, probs, alphas), info


def _on_whole_volume(seg: Segmentation, box: tuple[slice, slice, slice],
                     shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The mask, probabilities and gate maps of the box ``seg`` was computed on, put in a volume of ``shape``
    that is 0 elsewhere."""
    empty = np.zeros(shape, dtype=np.float32)
    mask, probs = empty.astype(np.uint8), empty.copy()
    mask[box], probs[box] = seg.mask, seg.probs
    alphas = []
    for alpha in seg.alphas:
        full = empty.copy()
        full[box] = alpha
        alphas.append(full)
    return mask, probs, alphas
