"""Tumours of a phantom patient: 0-3 per patient, solid, part-solid or ground-glass; smooth, lobulated or
spiculated; placed isolated, juxta-pleural or juxta-vascular in the lungs (or, where asked, against the
mediastinum); painted into the HU volume and
the tumour mask, and described (type, shape, measured location, centre, equivalent diameter, slices).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from lungseg.data.phantom.anatomy import Patient, smooth_noise
from lungseg.data.phantom.config import (
    JUXTA_MEDIASTINAL,
    TISSUE_LABELS,
    TUMOUR_LOCATIONS,
    TUMOUR_SHAPES,
    TUMOUR_TYPES,
)
from lungseg.metrics import equivalent_sphere_diameter_mm

__all__ = ["add_tumours"]


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _choice(rng: np.random.Generator, names: Sequence[str], probs: Sequence[float]) -> str:
    return str(names[int(rng.choice(len(names), p=np.asarray(probs, float)))])


def _lung_distance(p: Patient) -> np.ndarray:
    """Distance (mm) from each lung voxel to the nearest non-lung voxel, on the lungs' bounding box."""
    dt = np.zeros(p.hu.shape, dtype=np.float32)
    nz = np.nonzero(p.lung.any(axis=(0, 1)))[0], np.nonzero(p.lung.any(axis=(0, 2)))[0]
    box = (slice(None), slice(nz[1][0], nz[1][-1] + 1), slice(nz[0][0], nz[0][-1] + 1))
    padded = np.pad(p.lung[box], ((0, 0), (1, 1), (1, 1)))
    dt[box] = ndimage.distance_transform_edt(padded, sampling=p.spacing)[:, 1:-1, 1:-1]
    return dt


def _mediastinum_distance(p: Patient) -> np.ndarray:
    """Distance (mm) from each voxel to the nearest mediastinum voxel."""
    return ndimage.distance_transform_edt(p.tissue != TISSUE_LABELS["mediastinum"], sampling=p.spacing).astype(np.float32)


def _tumour_field(
    p: Patient, centre: np.ndarray, radius: float, axes: np.ndarray, rot: np.ndarray, bumps: list[tuple],
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray]:
    """``(box, signed distance mm (inside > 0), normalised radius)`` of one tumour in its bounding box."""
    g = p.grid
    amps = np.array([a for a, _, _ in bumps], dtype=np.float32)
    dirs = np.stack([v for _, v, _ in bumps]).astype(np.float32)
    kappas = np.array([k for _, _, k in bumps], dtype=np.float32)
    reach = radius * float(axes.max()) * (1.2 + float(amps.max())) + 2 * max(p.spacing)
    c_idx = g.index(centre[None])[0]
    half = np.ceil(reach / np.array(p.spacing)).astype(int)
    lo, hi = np.maximum(c_idx - half, 0), np.minimum(c_idx + half + 1, g.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    px = g.x[0, 0, box[2]] - centre[0]
    py = g.y[0, box[1], 0] - centre[1]
    pz = g.z[box[0], 0, 0] - centre[2]
    pts = np.stack(np.broadcast_arrays(px[None, None, :], py[None, :, None], pz[:, None, None]), axis=-1)
    local = (pts @ rot / (radius * axes)).astype(np.float32)
    rho = np.sqrt((local**2).sum(axis=-1))
    n = local / np.maximum(rho, 1e-6)[..., None]
    f = 1.0 + np.exp((n @ dirs.T - 1.0) / kappas) @ amps
    return box, ((f - rho) * radius).astype(np.float32), rho / f


def add_tumours(p: Patient) -> list[dict[str, Any]]:
    """Draw 0-3 tumours (:attr:`PhantomConfig.tumour_count_probs <lungseg.data.phantom.PhantomConfig>`),
    place each in the lungs, paint it into ``p.hu``, ``p.tissue`` and ``p.mask``, and describe it.

    Runs after :meth:`Patient.build_trees` (juxta-vascular tumours need the vessels) and before
    :meth:`Patient.image_effects`; a tumour that finds no place after 8 tries is dropped.

    Returns:
        One record per tumour painted (see :func:`lungseg.data.phantom.generate_patient`).
    """
    rng, cfg = p.rng, p.cfg
    n_tumours = int(rng.choice(len(cfg.tumour_count_probs), p=np.asarray(cfg.tumour_count_probs)))
    tumours: list[dict[str, Any]] = []
    voxel_volume = float(np.prod(p.spacing))
    lung_idx = np.flatnonzero(p.lung)
    if len(lung_idx) == 0 or n_tumours == 0:
        return tumours
    lung_dt = _lung_distance(p)
    # drawn only when asked for, so that the default config consumes the random stream as before
    mediastinum_dt = _mediastinum_distance(p) if cfg.juxta_mediastinal_share > 0 else None
    for t_i in range(n_tumours):
        ttype = _choice(rng, TUMOUR_TYPES, cfg.tumour_type_probs)
        shape = _choice(rng, TUMOUR_SHAPES, cfg.tumour_shape_probs)
        placement = _choice(rng, TUMOUR_LOCATIONS, cfg.tumour_location_probs)
        if mediastinum_dt is not None and rng.random() < cfg.juxta_mediastinal_share:
            placement = JUXTA_MEDIASTINAL
        lo, hi = np.log(cfg.diameter_range_mm[0]), np.log(cfg.diameter_range_mm[1])
        for _attempt in range(8):
            target = float(np.exp(rng.uniform(lo, hi)))
            result = _place_tumour(p, target, shape, placement, lung_idx, voxel_volume, lung_dt, mediastinum_dt)
            if result is not None:
                break
        if result is None:
            continue
        box, sd, rho_n, measured, used_shape = result
        inside = (sd > 0) & p.lung[box] & (p.mask[box] == 0)
        pv = max(p.spacing[1], 0.5)
        occ = np.clip(sd / pv + 0.5, 0, 1) * p.lung[box]
        tex = smooth_noise(rng, sd.shape, (0.5, 1.0, 1.0))
        if ttype == "solid":
            level = rng.uniform(15, 45) + 10 * tex
        else:
            ggo = rng.uniform(-600, -300)
            level = ggo + 35 * tex
            if ttype == "part-solid":
                level = np.where(rho_n < rng.uniform(0.35, 0.6), rng.uniform(10, 40) + 10 * tex, level)
        region_hu = p.hu[box]
        blended = region_hu + occ * (level - region_hu)
        p.hu[box] = np.maximum(region_hu, blended).astype(np.float32)
        p.tissue[box][inside] = TISSUE_LABELS["tumour"]
        p.mask[box][inside] = 1
        tumours.append(_describe(p, t_i, ttype, used_shape, placement, box, inside, target, voxel_volume))
    return tumours


def _place_tumour(
    p: Patient, target: float, shape: str, placement: str, lung_idx: np.ndarray, voxel_volume: float,
    lung_dt: np.ndarray, mediastinum_dt: np.ndarray | None = None,
) -> tuple | None:
    """A tumour of about ``target`` mm at a random ``placement`` in the lungs: ``(box, signed distance,
    normalised radius, measured diameter, shape used)``, or ``None`` when no place fits; ``lung_dt`` is
    :func:`_lung_distance`, ``mediastinum_dt`` :func:`_mediastinum_distance` (needed for
    :data:`~lungseg.data.phantom.config.JUXTA_MEDIASTINAL`)."""
    rng, g = p.rng, p.grid
    radius = target / 2
    if shape == "spiculated" and target < 8:
        shape = "lobulated"  # spicules narrower than a pixel do not exist on a small nodule
    if shape == "smooth":
        bumps = [(0.05, v, 0.4) for v in rng.standard_normal((3, 3))]
    elif shape == "lobulated":
        bumps = [(rng.uniform(0.15, 0.35), v, rng.uniform(0.08, 0.2)) for v in rng.standard_normal((rng.integers(4, 8), 3))]
    else:
        spikes = []
        for v in rng.standard_normal((rng.integers(8, 20), 3)):
            width = rng.uniform(0.7, 1.5) / (1.4 * radius)
            spikes.append((rng.uniform(0.5, 1.1), v, width**2 / 2))
        bumps = [(0.1, v, 0.3) for v in rng.standard_normal((3, 3))] + spikes
    bumps = [(a, v / np.linalg.norm(v), k) for a, v, k in bumps]
    axes = np.exp(rng.uniform(-0.2, 0.2, 3))
    axes /= np.cbrt(axes.prod())
    rot = _random_rotation(rng)
    dt = lung_dt.ravel()[lung_idx]
    if placement == "isolated":
        cand = lung_idx[dt > radius * 1.1 + 2]
    elif placement == "juxta-pleural":
        near_wall = p.depth.ravel()[lung_idx % p.depth.size] < p.wall + radius + 4
        cand = lung_idx[(dt > 0.45 * radius) & (dt < 0.85 * radius + 1.5) & near_wall]
    elif placement == JUXTA_MEDIASTINAL:  # as against the chest wall, but the lung's medial border
        near_mediastinum = mediastinum_dt.ravel()[lung_idx] < radius + 4
        cand = lung_idx[(dt > 0.45 * radius) & (dt < 0.85 * radius + 1.5) & near_mediastinum]
    else:
        vessel_near = (p.vessel_rad.ravel()[lung_idx] >= 1.2) & (p.vessel_occ.ravel()[lung_idx] < 0.2)
        vessel_near &= p.vessel_rad.ravel()[lung_idx] <= 4.0
        cand = lung_idx[vessel_near & (dt > radius * 0.9)]
    if len(cand) == 0:
        return None
    flat = int(cand[rng.integers(len(cand))])
    k, i, j = np.unravel_index(flat, p.hu.shape)
    centre = np.array([g.x[0, 0, j], g.y[0, i, 0], g.z[k, 0, 0]], dtype=float)
    centre += rng.uniform(-0.5, 0.5, 3) * np.array([p.spacing[2], p.spacing[1], p.spacing[0]])
    if placement == "juxta-vascular":
        # Move the centre away from the vessel so the lesion abuts it rather than engulfing it.
        centre += rng.standard_normal(3) * 0.3 * radius
    best = None
    scale = 1.0
    for _ in range(6):
        box, sd, rho_n = _tumour_field(p, centre, radius * scale, axes, rot, bumps)
        n_vox = int(((sd > 0) & p.lung[box] & (p.mask[box] == 0)).sum())
        if n_vox == 0:
            scale *= 1.5
            continue
        measured = equivalent_sphere_diameter_mm(n_vox, voxel_volume)
        ok = p.cfg.diameter_range_mm[0] <= measured <= p.cfg.diameter_range_mm[1]
        if ok and (best is None or abs(measured - target) < abs(best[3] - target)):
            best = (box, sd, rho_n, measured, shape)
        if abs(measured - target) <= 0.1 * target:
            break
        scale *= float(np.clip(target / measured, 0.6, 1.6))
    return best


def _describe(
    p: Patient, t_i: int, ttype: str, shape: str, placement: str, box: tuple[slice, ...], inside: np.ndarray,
    target: float, voxel_volume: float,
) -> dict[str, Any]:
    """The manifest record of one painted tumour, with the location measured on its mask."""
    g = p.grid
    kk, ii, jj = np.nonzero(inside)
    kk, ii, jj = kk + box[0].start, ii + box[1].start, jj + box[2].start
    centre_vox = [float(kk.mean()), float(ii.mean()), float(jj.mean())]
    centre_mm = [
        float(g.origin[0] + centre_vox[2] * p.spacing[2]),
        float(g.origin[1] + centre_vox[1] * p.spacing[1]),
        float(g.origin[2] + centre_vox[0] * p.spacing[0]),
    ]
    grown = ndimage.binary_dilation(inside, structure=ndimage.generate_binary_structure(3, 1)) & ~inside
    lung_box = p.lung[box]
    touches_pleura = bool(np.any(grown & ~lung_box))
    touches_vessel = bool(np.any(grown & (p.vessel_occ[box] >= 0.5) & (p.vessel_rad[box] >= 1.2)))
    location = "juxta-pleural" if touches_pleura else "juxta-vascular" if touches_vessel else "isolated"
    if placement == JUXTA_MEDIASTINAL and np.any(grown & (p.tissue[box] == TISSUE_LABELS["mediastinum"])):
        location = JUXTA_MEDIASTINAL  # only for this placement: earlier studies' records stay as they were
    n_vox = int(len(kk))
    return {
        "id": t_i,
        "type": ttype,
        "shape": shape,
        "placement": placement,
        "location": location,
        "centre_voxel_zyx": [round(c, 3) for c in centre_vox],
        "centre_mm_lps": [round(c, 3) for c in centre_mm],
        "equivalent_diameter_mm": round(float(equivalent_sphere_diameter_mm(n_vox, voxel_volume)), 3),
        "target_diameter_mm": round(target, 3),
        "n_voxels": n_vox,
        "slices": [int(kk.min()), int(kk.max())],
    }
