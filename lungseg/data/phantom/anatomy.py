"""The anatomy of one phantom patient: body wall, spine, mediastinum, abdomen, lungs, vessel and airway
trees, painted into a HU volume and a tissue-label volume, then the imaging effects (blur, streaks,
scanner offset and scale, correlated noise).

Everything is vectorised numpy/scipy and drawn from one ``numpy.random.Generator`` in a fixed order, so
the same seed always gives the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from lungseg.data.phantom.config import TISSUE_LABELS, PhantomConfig

__all__ = ["Grid", "Patient", "smooth_noise"]


@dataclass
class Grid:
    """Voxel-centre coordinates in LPS mm, broadcastable to ``(Z, H, W)``."""

    x: np.ndarray  # (1, 1, W)
    y: np.ndarray  # (1, H, 1)
    z: np.ndarray  # (Z, 1, 1)
    spacing: tuple[float, float, float]
    origin: np.ndarray  # LPS of voxel (0, 0, 0)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.z.shape[0], self.y.shape[1], self.x.shape[2])

    def index(self, points: np.ndarray) -> np.ndarray:
        """Nearest voxel ``(k, i, j)`` of LPS points ``(N, 3)``, clipped into the volume."""
        dz, dy, dx = self.spacing
        rel = points - self.origin
        idx = np.rint(np.stack([rel[:, 2] / dz, rel[:, 1] / dy, rel[:, 0] / dx], axis=1)).astype(np.int64)
        return np.clip(idx, 0, np.array(self.shape) - 1)

    def inside(self, points: np.ndarray) -> np.ndarray:
        dz, dy, dx = self.spacing
        rel = points - self.origin
        idx = np.stack([rel[:, 2] / dz, rel[:, 1] / dy, rel[:, 0] / dx], axis=1)
        return np.all((idx > -0.5) & (idx < np.array(self.shape) - 0.5), axis=1)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: tuple[float, ...]) -> np.ndarray:
    """Unit-variance Gaussian random field with the given smoothing sigmas (voxels)."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    return field_ / max(float(field_.std()), 1e-6)


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out, n_in)`` linear-interpolation weights (pixel-centre aligned)."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    np.add.at(m, (np.arange(n_out), lo), 1 - (pos - lo))
    np.add.at(m, (np.arange(n_out), hi), pos - lo)
    return m


def _lowres_noise(rng: np.random.Generator, shape: tuple[int, int, int], factor: int, sigma: float) -> np.ndarray:
    """Smooth texture built at ``1/factor`` in-plane resolution and upsampled (cheap large-scale noise)."""
    z, h, w = shape
    hs, ws = -(-h // factor), -(-w // factor)
    small = smooth_noise(rng, (z, hs, ws), (0.7, sigma, sigma))
    # Bilinear upsampling as two matrix products: far cheaper than ndimage.zoom on a full volume.
    wide = (small.reshape(z * hs, ws) @ _interp_matrix(w, ws).T).reshape(z, hs, w)
    tall = _interp_matrix(h, hs) @ wide.transpose(1, 0, 2).reshape(hs, z * w)
    return np.ascontiguousarray(tall.reshape(h, z, w).transpose(1, 0, 2))


def _grow_tree(
    rng: np.random.Generator,
    roots: np.ndarray,
    directions: np.ndarray,
    radius: float,
    length: float,
    generations: int,
    inside: Any,
    radius_ratio: float = 0.74,
    length_ratio: float = 0.8,
    min_radius: float = 0.5,
    attractor: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grow bifurcating trees of straight tapered segments, all tips of one generation at once.

    Returns ``(start (N, 3), end (N, 3), r_start (N,), r_end (N,))`` in mm. Branches whose end leaves
    the region (``inside(points) -> bool``) stop there; children lean towards ``attractor`` (a
    point, e.g. the centre of the lung) so that the tree fills the lung instead of leaving it.
    """
    starts, ends, r0s, r1s = [], [], [], []
    tips = np.asarray(roots, float)
    dirs = np.asarray(directions, float)
    dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    r = np.full(len(tips), radius)
    seg_len = np.full(len(tips), length)
    for _ in range(generations):
        if len(tips) == 0:
            break
        ends_g = tips + dirs * (seg_len * rng.uniform(0.8, 1.2, len(tips)))[:, None]
        r_end = r * radius_ratio
        starts.append(tips), ends.append(ends_g), r0s.append(r), r1s.append(r_end)
        alive = inside(ends_g) & (r_end >= min_radius)
        tips, dirs, r_c, len_c = ends_g[alive], dirs[alive], r_end[alive], seg_len[alive] * length_ratio
        if len(tips) == 0:
            break
        perp = np.cross(dirs, rng.standard_normal(dirs.shape))
        perp /= np.maximum(np.linalg.norm(perp, axis=1, keepdims=True), 1e-9)
        spread = np.tan(np.deg2rad(rng.uniform(20, 38, len(tips))))[:, None]
        jitter = 0.15 * rng.standard_normal(dirs.shape)
        child_a = dirs + spread * perp + jitter
        child_b = dirs - spread * perp * rng.uniform(0.6, 1.0, (len(tips), 1)) - jitter
        dirs = np.concatenate([child_a, child_b])
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        tips = np.concatenate([tips, tips])
        if attractor is not None:
            pull = attractor - tips
            dirs += 0.2 * pull / np.maximum(np.linalg.norm(pull, axis=1, keepdims=True), 1e-9)
            dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        r = np.concatenate([r_c, r_c * rng.uniform(0.8, 1.0, len(r_c))])
        seg_len = np.concatenate([len_c, len_c])
    if not starts:
        empty = np.zeros((0, 3))
        return empty, empty, np.zeros(0), np.zeros(0)
    return np.concatenate(starts), np.concatenate(ends), np.concatenate(r0s), np.concatenate(r1s)


def _sample_segments(
    start: np.ndarray, end: np.ndarray, r0: np.ndarray, r1: np.ndarray, step: float
) -> tuple[np.ndarray, np.ndarray]:
    """Points every ``step`` mm along each segment with linearly interpolated radius."""
    lengths = np.linalg.norm(end - start, axis=1)
    counts = np.maximum(np.ceil(lengths / step).astype(int), 1) + 1
    seg = np.repeat(np.arange(len(start)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    t = offsets / (counts[seg] - 1)
    points = start[seg] + (end - start)[seg] * t[:, None]
    radii = r0[seg] + (r1 - r0)[seg] * t
    return points, radii


def _rasterise_tubes(
    grid: Grid, points: np.ndarray, radii: np.ndarray, reach_mm: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance from every voxel to the nearest sampled centreline point, via one distance transform.

    The transform finds the nearest seed voxel; the exact distance to that seed's centreline point
    then gives sub-voxel partial volume. Returns ``(distance mm, radius of nearest point, point id)``
    for all voxels (distance ``inf`` farther than ``reach_mm`` from any seed).
    """
    shape = grid.shape
    keep = grid.inside(points)
    points, radii = points[keep], radii[keep]
    ids = np.full(shape, -1, dtype=np.int32)
    dist = np.full(shape, np.inf, dtype=np.float32)
    rad = np.zeros(shape, dtype=np.float32)
    if len(points) == 0:
        return dist, rad, ids
    order = np.argsort(radii)  # thicker points written last win shared voxels
    idx = grid.index(points[order])
    ids[idx[:, 0], idx[:, 1], idx[:, 2]] = order.astype(np.int32)
    lo = np.maximum(idx.min(axis=0) - np.ceil(reach_mm / np.array(grid.spacing)).astype(int), 0)
    hi = np.minimum(idx.max(axis=0) + np.ceil(reach_mm / np.array(grid.spacing)).astype(int) + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub = ids[box]
    edt, nearest = ndimage.distance_transform_edt(sub < 0, sampling=grid.spacing, return_indices=True)
    near = edt <= reach_mm
    pid = sub[nearest[0][near], nearest[1][near], nearest[2][near]]
    kk, ii, jj = np.nonzero(near)
    vox = np.stack([grid.x.ravel()[jj + lo[2]], grid.y.ravel()[ii + lo[1]], grid.z.ravel()[kk + lo[0]]], axis=1)
    d_sub = np.full(sub.shape, np.inf, dtype=np.float32)
    r_sub = np.zeros(sub.shape, dtype=np.float32)
    i_sub = np.full(sub.shape, -1, dtype=np.int32)
    d_sub[near] = np.linalg.norm(vox - points[pid], axis=1)
    r_sub[near] = radii[pid]
    i_sub[near] = pid
    dist[box], rad[box], ids[box] = d_sub, r_sub, i_sub
    return dist, rad, ids



class Patient:
    """The anatomy of one patient, painted into a HU volume and a tissue-label volume.

    Built in steps that must run in this order (each draws from ``rng`` in turn): :meth:`build_anatomy`,
    :meth:`build_trees`, :func:`lungseg.data.phantom.tumours.add_tumours`, :meth:`image_effects`.
    """

    def __init__(self, rng: np.random.Generator, config: PhantomConfig) -> None:
        self.rng, self.cfg = rng, config
        n, nz = config.image_size, config.n_slices
        scale = 256.0 / n
        s = round(float(rng.uniform(*config.pixel_spacing_range)) * scale, 3)
        dz = round(float(rng.uniform(*config.slice_thickness_range)), 2)
        self.spacing = (dz, s, s)
        extent = nz * dz
        # The slab runs from below the diaphragm dome (u = -0.12) to above the carina (u = 0.78).
        self.lung_height = extent / 0.9
        origin = np.array([round(-(n - 1) / 2 * s, 2), round(-(n - 1) / 2 * s, 2), 0.0])
        self.grid = Grid(
            x=(origin[0] + np.arange(n) * s).reshape(1, 1, n).astype(np.float32),
            y=(origin[1] + np.arange(n) * s).reshape(1, n, 1).astype(np.float32),
            z=(np.arange(nz) * dz).reshape(nz, 1, 1).astype(np.float32),
            spacing=self.spacing,
            origin=origin,
        )
        self.z_base = 0.12 * self.lung_height
        self.hu = np.full((nz, n, n), -1000.0, dtype=np.float32)
        self.tissue = np.zeros((nz, n, n), dtype=np.uint8)
        self.mask = np.zeros((nz, n, n), dtype=np.uint8)  # the tumours (lungseg.data.phantom.tumours)
        self.params: dict[str, Any] = {"pixel_spacing_mm": s, "slice_thickness_mm": dz}

    def u(self, z: np.ndarray | float) -> np.ndarray | float:
        """Anatomical height: 0 at the lung base, 1 at the apex."""
        return (z - self.z_base) / self.lung_height

    def z_of(self, u: float) -> float:
        return self.z_base + u * self.lung_height

    def paint(self, where: np.ndarray, hu: float | np.ndarray, label: str) -> None:
        """Overwrite ``where`` (broadcast to ``(Z, H, W)``) with ``hu`` and its tissue label."""
        np.copyto(self.hu, np.asarray(hu, dtype=np.float32), where=where)
        np.copyto(self.tissue, np.uint8(TISSUE_LABELS[label]), where=where)

    def blend(self, occupancy: np.ndarray, hu: float | np.ndarray, label: str, region: np.ndarray | None = None) -> None:
        """Partial-volume paint: ``hu_new = (1 - o) hu_old + o hu``; label where ``o >= 0.5``."""
        o = occupancy if region is None else occupancy * region
        touched = o > 0
        self.hu[touched] += (o[touched] * (np.broadcast_to(hu, o.shape)[touched] - self.hu[touched])).astype(np.float32)
        self.tissue[o >= 0.5] = TISSUE_LABELS[label]

    def build_anatomy(self) -> None:
        """Paint body wall (fat, muscle, ribs, sternum), spine, mediastinum, heart, great vessels, abdomen
        and lungs into the HU volume and its tissue labels.

        Each step draws its random numbers from ``self.rng`` in turn, and the phantoms (hence every
        committed result) depend on that order: the steps below must not be reordered.
        """
        cy, depth, fat, muscle, rib_zone, wall = self._paint_body_wall()
        self._paint_ribs(cy, depth, fat, muscle, rib_zone)
        # Thoracic cavity: mediastinal fat by default, lungs carved out below.
        cavity2 = depth > wall + 1.0
        a_c, b_c = self.body_axes[0] - wall, self.body_axes[1] - wall
        self.cav = (a_c, b_c, cy)
        self.paint(cavity2[None], -90.0, "mediastinum")
        r_v, yb, spine_block = self._paint_spine(cy, b_c, depth, fat)
        band, heart_r, d_aorta, great = self._paint_mediastinum(cavity2, r_v, yb)
        below = self._paint_abdomen(cavity2, spine_block, d_aorta)
        exclude = (band | spine_block | d_aorta)[None] | (heart_r < 1.2) | great | below
        self._paint_lungs(cavity2 & ~exclude)
        self.hilum_u, self.carina_u = self.rng.uniform(0.4, 0.5), self.rng.uniform(0.6, 0.7)
        self.y_trachea = yb - r_v - self.rng.uniform(12, 18)
        self.cavity2 = cavity2
        self.depth = depth
        self.wall = wall

    def _paint_body_wall(self) -> tuple[float, np.ndarray, float, float, float, float]:
        """Body outline (a superellipse), subcutaneous fat and muscle; returns ``(cy, depth, fat, muscle,
        rib_zone, wall)``: the body's centre offset, each pixel's depth inside the skin (mm) and the layer
        thicknesses (mm). Sets :attr:`body_axes`."""
        rng, g, fov = self.rng, self.grid, self.cfg.image_size * self.spacing[1]
        x2, y2 = g.x[0], g.y[0]  # (1, W), (H, 1)
        a = fov / 2 * rng.uniform(0.80, 0.92)
        b = a * rng.uniform(0.62, 0.74)
        cy = b * rng.uniform(0.0, 0.06)
        p = rng.uniform(2.0, 2.3)
        r_body = ((np.abs(x2) / a) ** p + (np.abs(y2 - cy) / b) ** p) ** (1 / p)
        radial = np.sqrt(x2**2 + (y2 - cy) ** 2)
        depth = np.where(r_body > 0, radial * (1 - r_body) / np.maximum(r_body, 1e-6), b)  # mm inside skin
        fat, muscle, rib_zone = rng.uniform(8, 25), rng.uniform(7, 13), rng.uniform(8, 11)
        wall = fat + muscle + rib_zone
        self.params.update(body_semi_axes_mm=[round(a, 1), round(b, 1)], fat_mm=round(fat, 1))
        self.body_axes = (a, b)
        body = depth > 0
        fat_tex = 8 * _lowres_noise(rng, (1,) + body.shape, 4, 1.5)[0]
        self.paint(body[None], (-100 + fat_tex)[None], "fat")
        self.paint(((depth > fat) & (depth <= wall))[None], 40.0, "muscle")
        return cy, depth, fat, muscle, rib_zone, wall

    def _paint_ribs(self, cy: float, depth: np.ndarray, fat: float, muscle: float, rib_zone: float) -> None:
        """Ribs: oblique bands crossing each slice at several angular positions; sternum anteriorly."""
        rng, g = self.rng, self.grid
        x2, y2 = g.x[0], g.y[0]
        theta = np.arctan2(y2 - cy, np.abs(x2))  # -pi/2 anterior midline .. +pi/2 posterior
        t = (depth - fat - muscle) / rib_zone
        in_zone = (t > 0) & (t < 1)
        pitch, turns = rng.uniform(24, 32), rng.uniform(5.0, 7.0)
        phase = (g.z / pitch - turns * theta[None] / np.pi + rng.uniform()) % 1.0
        duty = 0.25
        q = phase / duty
        # Oval cross-sections: a unit disc in (depth, phase) coordinates, cortex on its outer shell.
        oval = (2 * t - 1)[None] ** 2 + (2 * q - 1) ** 2
        rib = in_zone[None] & (oval < 1) & (np.abs(theta) < 1.35)[None]
        sternum = in_zone & (np.abs(x2) < 14) & (y2 < cy)
        bone_hu = np.where(oval > 0.5, rng.uniform(700, 950), rng.uniform(220, 300)).astype(np.float32)
        self.paint(rib, bone_hu, "bone")
        self.paint(sternum[None], np.where(np.minimum(t, 1 - t) < 0.2, 600.0, 250.0)[None], "bone")

    def _paint_spine(self, cy: float, b_c: float, depth: np.ndarray, fat: float) -> tuple[float, float, np.ndarray]:
        """Spine (constant along z): vertebral body, canal, posterior elements, paraspinal muscles; returns
        ``(vertebral radius, its centre's y, the in-plane region the spine and its muscles take)``."""
        rng, g = self.rng, self.grid
        x2, y2 = g.x[0], g.y[0]
        body = depth > 0
        r_v = rng.uniform(13, 17)
        yb = cy + b_c - r_v * 0.9
        vb = ((x2 / (1.1 * r_v)) ** 2 + ((y2 - yb) / r_v) ** 2)
        canal_c = yb + r_v + 8
        canal = (x2**2 + (y2 - canal_c) ** 2) < 7.0**2
        arch = ((x2**2 + (y2 - canal_c) ** 2) < 12.0**2) & ~canal
        spinous = (np.abs(x2) < 4) & (y2 > canal_c) & (y2 < canal_c + 30) & (depth > fat)
        paraspinal = (((np.abs(x2) - 32) / 24) ** 2 + ((y2 - canal_c - 6) / 22) ** 2) < 1
        self.paint((paraspinal & body)[None], 45.0, "muscle")
        cortical = (vb < 1) & (vb > 0.72)
        self.paint((vb < 1)[None], np.where(cortical, rng.uniform(700, 1000), rng.uniform(220, 300))[None], "bone")
        self.paint((arch | spinous)[None], 500.0, "bone")
        self.paint(canal[None], 15.0, "muscle")
        return r_v, yb, (vb < 1.8) | paraspinal | arch | canal

    def _paint_mediastinum(
        self, cavity2: np.ndarray, r_v: float, yb: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Mediastinum: a central band, the heart (3D ellipsoid on the diaphragm), great vessels; returns
        ``(band, heart's ellipsoid radius, descending aorta, ascending great vessels)``. Sets
        :attr:`x_mid` and :attr:`blood_hu`."""
        rng, g = self.rng, self.grid
        x2, y2 = g.x[0], g.y[0]
        a_c, b_c, cy = self.cav
        u3 = self.u(g.z)
        yn = (y2 - cy) / b_c
        x_mid = a_c * rng.uniform(0.0, 0.06)
        band = np.abs(x2 - x_mid) < a_c * (0.09 + 0.12 * np.clip(yn + 0.2, 0, 1))
        hx, hy, hu_ = a_c * rng.uniform(0.15, 0.25), -b_c * rng.uniform(0.05, 0.2), rng.uniform(0.15, 0.25)
        ha, hb, hc = a_c * rng.uniform(0.32, 0.4), b_c * rng.uniform(0.45, 0.55), rng.uniform(0.25, 0.32)
        heart_r = ((x2 - hx) / ha) ** 2 + ((y2 - hy) / hb) ** 2 + ((u3 - hu_) / hc) ** 2
        heart = heart_r < 1
        d_aorta = ((x2 - r_v * 1.2) ** 2 + (y2 - (yb - r_v * 0.6)) ** 2) < rng.uniform(10, 13) ** 2
        asc = ((x2 + 0.1 * a_c) ** 2 + (y2 - (cy - 0.35 * b_c)) ** 2) < rng.uniform(13, 17) ** 2
        trunk = ((x2 - 0.18 * a_c) ** 2 + (y2 - (cy - 0.4 * b_c)) ** 2) < rng.uniform(11, 14) ** 2
        svc = ((x2 + 0.32 * a_c) ** 2 + (y2 - (cy - 0.3 * b_c)) ** 2) < 9.0**2
        upper = u3 > 0.42
        blood = rng.uniform(35, 50)
        self.paint(cavity2[None] & (heart_r < 1.12) & ~heart, -95.0, "mediastinum")
        self.paint(cavity2[None] & heart, blood, "mediastinum")
        self.paint(cavity2[None] & d_aorta[None], blood, "mediastinum")
        great = (asc | svc)[None] & upper | trunk[None] & upper & (u3 < 0.6)
        self.paint(cavity2[None] & great, blood, "mediastinum")
        self.blood_hu = blood
        self.x_mid = x_mid
        return band, heart_r, d_aorta, great

    def _paint_abdomen(self, cavity2: np.ndarray, spine_block: np.ndarray, d_aorta: np.ndarray) -> np.ndarray:
        """Diaphragm domes: liver under the right dome, spleen/stomach under the left, in the lowest slices;
        returns the region below the domes ``(Z, H, W)``."""
        rng, g = self.rng, self.grid
        x2, y2 = g.x[0], g.y[0]
        a_c, b_c, cy = self.cav
        dome_r = rng.uniform(0.02, 0.12) - 0.6 * (((x2 + 0.45 * a_c) / (0.6 * a_c)) ** 2 + ((y2 - cy) / b_c) ** 2)
        dome_l = rng.uniform(-0.02, 0.08) - 0.6 * (((x2 - 0.45 * a_c) / (0.6 * a_c)) ** 2 + ((y2 - cy) / b_c) ** 2)
        below = self.u(g.z) < np.maximum(dome_r, dome_l)[None]
        abdomen = cavity2[None] & below & ~(spine_block | d_aorta)[None]
        organ_hu = np.where(dome_r >= dome_l, rng.uniform(50, 65), rng.uniform(30, 45)).astype(np.float32)
        self.paint(abdomen, organ_hu[None] + 6 * _lowres_noise(rng, self.hu.shape, 4, 1.0), "abdomen")
        return below

    def _paint_lungs(self, lung: np.ndarray) -> None:
        """Lungs (the cavity minus mediastinum, heart, great vessels, spine and abdomen), opened to drop
        slivers, at about -850 HU with texture and a dependent (posterior) density gradient."""
        rng = self.rng
        a_c, b_c, cy = self.cav
        yn = (self.grid.y[0] - cy) / b_c
        lung = ndimage.binary_opening(lung, structure=np.ones((1, 3, 3), bool))
        gradient = rng.uniform(40, 100) * np.clip((yn + 1) / 2, 0, 1)[None]
        base = rng.uniform(-880, -840)
        texture = rng.uniform(12, 25) * _lowres_noise(rng, self.hu.shape, 4, 1.2)
        self.paint(lung, base + gradient + texture, "lung")
        self.lung = lung
        self.params["lung_base_hu"] = round(float(base), 1)

    def build_trees(self) -> None:
        """Vessel and airway trees from the hila, rasterised together with one distance transform."""
        rng, g = self.rng, self.grid
        a_c, b_c, cy = self.cav
        lung = self.lung

        def in_cavity(points: np.ndarray) -> np.ndarray:
            idx = g.index(points)
            return g.inside(points) & self.cavity2[idx[:, 1], idx[:, 2]]

        z_h = self.z_of(self.hilum_u)
        step = 0.5 * min(self.spacing[1:])
        vessel_segments, airway_segments = [], []
        for side in (-1.0, 1.0):
            k_h = int(np.clip(round(z_h / self.spacing[0]), 0, g.shape[0] - 1))
            kk, ii, jj = np.nonzero(lung[max(k_h - 2, 0):k_h + 3])
            on_side = (np.sign(g.x[0, 0, jj] - self.x_mid) == side) & (np.abs(g.y[0, ii, 0] - cy) < 0.3 * b_c)
            if not on_side.any():
                continue
            medial = np.argmin(np.abs(g.x[0, 0, jj[on_side]] - self.x_mid))
            hilum = np.array([g.x[0, 0, jj[on_side][medial]], g.y[0, ii[on_side][medial], 0], z_h], float)
            kk, ii, jj = np.nonzero(lung)
            keep = np.sign(g.x[0, 0, jj] - self.x_mid) == side
            centroid = np.array([g.x[0, 0, jj[keep]].mean(), g.y[0, ii[keep], 0].mean(), g.z[kk[keep], 0, 0].mean()])
            lat = side
            base_dirs = np.array([[0.5 * lat, -0.2, 0.9], [1.0 * lat, -0.3, 0.1], [0.8 * lat, 0.3, -0.6],
                                  [0.5 * lat, 0.7, -0.4], [0.6 * lat, -0.6, -0.4]])
            dirs = base_dirs + 0.15 * rng.standard_normal(base_dirs.shape)
            roots = hilum + 0.03 * a_c * rng.standard_normal((len(dirs), 3))
            vessel_segments.append(_grow_tree(
                rng, roots, dirs, rng.uniform(3.5, 4.5), 0.12 * self.lung_height + 10, 9, in_cavity,
                radius_ratio=0.8, length_ratio=0.82, attractor=centroid,
            ))
            bronchus_start = np.array([self.x_mid, self.y_trachea, self.z_of(self.carina_u)])
            main = (bronchus_start, hilum + np.array([0, 8.0, 0]))
            airway_segments.append((np.array([main[0]]), np.array([main[1]]), np.array([6.5]), np.array([5.0])))
            adirs = base_dirs[:3] + 0.2 * rng.standard_normal((3, 3))
            airway_segments.append(_grow_tree(
                rng, np.repeat(main[1][None], 3, 0), adirs, 4.0, 0.1 * self.lung_height + 6, 4, in_cavity, 0.7,
                attractor=centroid,
            ))
        top = np.array([self.x_mid, self.y_trachea, g.z.max() + 5])
        carina = np.array([self.x_mid, self.y_trachea, self.z_of(self.carina_u)])
        airway_segments.append((top[None], carina[None], np.array([8.5]), np.array([7.5])))

        v_pts, v_rad = _sample_segments(*[np.concatenate(a) for a in zip(*vessel_segments)], step)
        a_pts, a_rad = _sample_segments(*[np.concatenate(a) for a in zip(*airway_segments)], step)
        wall = 0.25 * a_rad + 0.6
        points = np.concatenate([v_pts, a_pts])
        radii = np.concatenate([v_rad, a_rad + wall])  # airway reach includes the wall
        is_airway = np.concatenate([np.zeros(len(v_pts), bool), np.ones(len(a_pts), bool)])
        lumen = np.concatenate([np.zeros(len(v_pts)), a_rad])
        dist, rad, ids = _rasterise_tubes(g, points, radii, reach_mm=float(radii.max()) + 2 * max(self.spacing))
        pv = max(self.spacing[1], 0.5)
        has = ids >= 0
        airway_vox = np.zeros(self.hu.shape, bool)
        airway_vox[has] = is_airway[ids[has]]
        occ = np.clip((rad - dist) / pv + 0.5, 0, 1).astype(np.float32)
        vessel_occ = np.where(airway_vox, 0, occ) * lung
        self.blend(vessel_occ, self.blood_hu, "vessel")
        self.vessel_occ, self.vessel_rad = vessel_occ, np.where(airway_vox, 0, rad)
        airway_region = (self.cavity2[None] & (self.tissue != TISSUE_LABELS["bone"])) & airway_vox
        self.blend(occ * airway_region, 40.0, "muscle")
        lumen_r = np.zeros(self.hu.shape, np.float32)
        lumen_r[has] = lumen[ids[has]]
        lumen_occ = np.clip((lumen_r - dist) / pv + 0.5, 0, 1) * airway_region
        self.blend(lumen_occ, -1000.0, "airway")
        self.params["n_vessel_segments"] = int(sum(len(s[0]) for s in vessel_segments))

    def image_effects(self) -> np.ndarray:
        """The CT image: the painted HU blurred, with streaks (some patients), scanner offset and scale and
        correlated noise, rounded to integral HU in ``[-1024, 3071]`` (float32 ``(Z, H, W)``)."""
        rng, cfg = self.rng, self.cfg
        dz, dy, dx = self.spacing
        sigma_mm = rng.uniform(*cfg.blur_sigma_range_mm)
        img = ndimage.gaussian_filter(self.hu, (0.35, sigma_mm / dy, sigma_mm / dx), mode="nearest")
        streaks = bool(rng.uniform() < cfg.streak_probability)
        if streaks:
            a_c, b_c, cy = self.cav
            x2, y2 = self.grid.x[0], self.grid.y[0]
            sx, sy = 0.0, cy + b_c * 0.8
            n_lines = 8
            angles = rng.uniform(0, np.pi, n_lines)
            lines = []
            for ang in angles:
                across = -(x2 - sx) * np.sin(ang) + (y2 - sy) * np.cos(ang)
                along = np.abs((x2 - sx) * np.cos(ang) + (y2 - sy) * np.sin(ang))
                lines.append(np.exp(-0.5 * (across / (1.2 * dx)) ** 2) * np.exp(-along / 120.0))
            weights = rng.uniform(60, 180, (self.hu.shape[0], n_lines)) * rng.choice([-1, 1], n_lines)
            img += np.einsum("zk,khw->zhw", weights.astype(np.float32), np.stack(lines).astype(np.float32))
        offset, scale = rng.uniform(*cfg.hu_offset_range), rng.uniform(*cfg.hu_scale_range)
        noise_std = rng.uniform(*cfg.noise_std_range)
        noise = smooth_noise(rng, self.hu.shape, (0.0, 0.8, 0.8)) * noise_std
        img = img * scale + offset + noise
        self.params.update(
            blur_sigma_mm=round(float(sigma_mm), 3), streaks=streaks, hu_offset=round(float(offset), 2),
            hu_scale=round(float(scale), 4), noise_std_hu=round(float(noise_std), 2),
        )
        return np.clip(np.rint(img), -1024, 3071).astype(np.float32)
