"""Training batches drawn and augmented as whole-batch tensor operations on the training device.

The training slices are preprocessed once (eq. 1, resized to the network's ``S × S``) and kept in
one tensor on the training device. Every optimisation step then draws a batch in a handful of tensor
operations, with no per-sample Python:

1. **Where**: a share ``foreground_fraction`` of the crops is centred (give or take a quarter of the
   patch) on a tumour pixel — a tumour slice drawn uniformly, then one of its tumour pixels — and the
   rest anywhere in a slice drawn uniformly (or, with ``tumour_fraction``, from tumour slices at that
   rate), as nnU-Net's foreground oversampling does. With ``patch_size`` ``None`` (the paper's
   whole-slice recipe) every sample is a whole slice.
2. **How**: flips, a small rotation and a zoom as one affine matrix per sample, applied to the whole
   batch by one :func:`torch.nn.functional.affine_grid` / :func:`~torch.nn.functional.grid_sample`
   (bilinear for the image, bilinear then ``>= 0.5`` for the mask, so both move together; what the
   transform uncovers is filled with air), then an intensity gain and offset per sample.

All random numbers of an epoch come from a CPU generator seeded with ``(seed, epoch)``, so a batch
is the same after a resume, on every DDP rank (each takes its share of the global batch) and on any
device; only the resampling runs on the device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lungseg.config import AugmentConfig

__all__ = ["BatchPlan", "PatchSampler", "epoch_generator"]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator of one epoch's random draws: a pure function of ``(seed, epoch)``."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


@dataclass
class BatchPlan:
    """The random choices of one global batch (CPU tensors of length ``B``).

    Attributes:
        slices: index of the source slice of each sample.
        centre_yx: ``(B, 2)`` crop centre in source pixels (the slice centre for whole slices).
        foreground: whether the sample was centred on a tumour pixel.
        angle: rotation in radians.
        zoom: zoom factor (> 1 enlarges the content).
        flip_x, flip_y: ``-1`` where the sample is flipped along that axis, else ``1``.
        gain, offset: intensity gain and offset (normalised units) per sample.
    """

    slices: torch.Tensor
    centre_yx: torch.Tensor
    foreground: torch.Tensor
    angle: torch.Tensor
    zoom: torch.Tensor
    flip_x: torch.Tensor
    flip_y: torch.Tensor
    gain: torch.Tensor
    offset: torch.Tensor

    def share(self, rank: int, world: int) -> BatchPlan:
        """Samples ``rank, rank + world, ...``: this process's share under DDP."""
        return BatchPlan(**{k: v[rank::world] for k, v in vars(self).items()})


class PatchSampler:
    """Draws augmented training batches (patches or whole slices) from slices resident on a device.

    Args:
        images: preprocessed training slices ``(N, S, S)`` (eq. 1 normalised, resized to ``S``).
        masks: their tumour masks ``(N, S, S)`` in {0, 1}.
        patch_size: side ``P`` of the crops; ``None`` (or ``>= S``): whole slices.
        foreground_fraction: share of crops centred on a tumour pixel (patch mode).
        tumour_fraction: share of samples drawn from tumour slices (whole-slice mode, and the
            background crops of patch mode); ``None``: slices drawn uniformly.
        augment: the augmentation, or ``None`` for none.
        value_range: the normalised values of the HU window's ends: the lowest is air, which fills
            what a transform uncovers, and the jittered intensities are clipped to the range, as a
            jitter of the windowed HU image would be (``-inf``/``inf``: no window).
        intensity_scale: ``(mean, std)`` of the normalisation (to express ``hu_offset`` and the
            gain in normalised units) and whether the data are ``"unit"`` intensities.
        device: where the slices live and batches are made.

    Raises:
        ValueError: shapes or fractions out of range (the message quotes them).
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        masks: np.ndarray | torch.Tensor,
        *,
        patch_size: int | None = None,
        foreground_fraction: float = 0.33,
        tumour_fraction: float | None = None,
        augment: AugmentConfig | None = None,
        value_range: tuple[float, float] = (-math.inf, math.inf),
        intensity_scale: tuple[float, float, bool] = (0.0, 1.0, False),
        device: torch.device | str = "cpu",
    ) -> None:
        images_t = torch.from_numpy(np.array(images, dtype=np.float32))  # a copy: the source may be read-only
        masks_t = torch.from_numpy(np.array(masks, dtype=np.uint8))
        if images_t.ndim != 3 or images_t.shape[1] != images_t.shape[2] or masks_t.shape != images_t.shape:
            raise ValueError(f"images and masks must both be (N, S, S); got {tuple(images_t.shape)} and {tuple(masks_t.shape)}")
        if len(images_t) == 0:
            raise ValueError("PatchSampler needs at least one training slice")
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction!r}")
        if tumour_fraction is not None and not 0.0 < tumour_fraction <= 1.0:
            raise ValueError(f"tumour_fraction must be in (0, 1] or None, got {tumour_fraction!r}")
        self.device = torch.device(device)
        self.size = int(images_t.shape[-1])
        self.patch_size = self.size if patch_size is None or patch_size >= self.size else int(patch_size)
        self.augment = augment
        self.low, self.high = (float(v) for v in value_range)
        self.air = self.low if math.isfinite(self.low) else 0.0
        self.mean, self.std, unit = intensity_scale
        self.hu_to_units = 1.0 / 1400.0 if unit else 1.0
        self.images = images_t.to(self.device)[:, None]
        self.masks = masks_t.to(self.device)[:, None]
        # Tumour pixels grouped by slice (CPU): a tumour slice is drawn uniformly, then one of its pixels,
        # so that small tumours are centred as often as large ones.
        n, y, x = torch.nonzero(masks_t, as_tuple=True)
        self.tumour_slice_ids, counts = torch.unique_consecutive(n, return_counts=True)
        self.tumour_starts = torch.cumsum(counts, 0) - counts
        self.tumour_counts = counts
        self.tumour_yx = torch.stack((y, x), 1).double()
        self.foreground_fraction = float(foreground_fraction) if self.is_patch_mode and len(n) else 0.0
        has = torch.zeros(len(masks_t), dtype=torch.bool)
        has[self.tumour_slice_ids] = True
        self.slice_weights = self._slice_weights(has, tumour_fraction)

    @property
    def is_patch_mode(self) -> bool:
        return self.patch_size < self.size

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @staticmethod
    def _slice_weights(has_tumour: torch.Tensor, tumour_fraction: float | None) -> torch.Tensor | None:
        if tumour_fraction is None:
            return None
        n_t, n_f = int(has_tumour.sum()), int((~has_tumour).sum())
        if n_t == 0:
            raise ValueError(f"tumour_fraction={tumour_fraction} but no training slice holds tumour")
        if n_f == 0 or tumour_fraction == 1.0:
            return has_tumour.double()
        return torch.where(has_tumour, tumour_fraction / n_t, (1 - tumour_fraction) / n_f).double()

    # ------------------------------------------------------------------ random choices (CPU)
    def plan(self, generator: torch.Generator, batch_size: int) -> BatchPlan:
        """Draw the random choices of one global batch of ``batch_size`` samples."""
        b, g = int(batch_size), generator
        if self.slice_weights is None:
            slices = torch.randint(len(self), (b,), generator=g)
        else:
            slices = torch.multinomial(self.slice_weights, b, replacement=True, generator=g)
        half = self.patch_size / 2.0
        low, high = half - 0.5, self.size - half - 0.5
        centre = low + torch.rand(b, 2, generator=g, dtype=torch.float64) * (high - low)
        foreground = torch.rand(b, generator=g) < self.foreground_fraction
        k = int(foreground.sum())
        if k:
            pick = torch.randint(len(self.tumour_slice_ids), (k,), generator=g)
            within = (torch.rand(k, generator=g, dtype=torch.float64) * self.tumour_counts[pick]).long()
            yx = self.tumour_yx[self.tumour_starts[pick] + within]
            jitter = (torch.rand(k, 2, generator=g, dtype=torch.float64) - 0.5) * (self.patch_size / 2.0)
            slices[foreground] = self.tumour_slice_ids[pick]
            centre[foreground] = (yx + jitter).clamp(low, high)
        if self.is_patch_mode:
            # on the pixel grid, so that an unaugmented crop is the slice's own pixels, not a resampling
            # (half-integers for an even patch, whose pixel centres sit half a pixel off its centre)
            centre = torch.floor(centre) + 0.5 if self.patch_size % 2 == 0 else torch.round(centre)
            centre = centre.clamp(low, high)
        else:
            centre[:] = (self.size - 1) / 2.0
        u = torch.rand(b, 6, generator=g, dtype=torch.float64)
        a = self.augment
        if a is None:
            ones = torch.ones(b, dtype=torch.float64)
            return BatchPlan(slices, centre, foreground, ones * 0, ones, ones, ones, ones, ones * 0)
        sign = lambda p, col: torch.where(u[:, col] < p, -1.0, 1.0).double()  # noqa: E731
        gain = 1.0 + (2.0 * u[:, 4] - 1.0) * a.hu_scale
        offset_hu = (2.0 * u[:, 5] - 1.0) * a.hu_offset * self.hu_to_units
        return BatchPlan(
            slices=slices, centre_yx=centre, foreground=foreground,
            angle=(2.0 * u[:, 2] - 1.0) * math.radians(a.max_rotation_deg),
            zoom=torch.exp((2.0 * u[:, 3] - 1.0) * math.log(a.zoom)),
            flip_x=sign(a.flip_lr, 0), flip_y=sign(a.flip_ud, 1),
            gain=gain, offset=((gain - 1.0) * self.mean + offset_hu) / self.std,
        )

    def epoch_plans(self, seed: int, epoch: int, steps: int, batch_size: int) -> Iterator[BatchPlan]:
        """The ``steps`` global batches of one epoch (a pure function of ``(seed, epoch)``)."""
        generator = epoch_generator(seed, epoch)
        for _ in range(int(steps)):
            yield self.plan(generator, batch_size)

    # ------------------------------------------------------------------ resampling (device)
    def theta(self, plan: BatchPlan) -> torch.Tensor:
        """``(B, 2, 3)`` affine matrices mapping patch coordinates to slice coordinates (normalised,
        ``align_corners=False``): rotation, flips and zoom about the crop centre."""
        cos, sin = torch.cos(plan.angle), torch.sin(plan.angle)
        scale = (self.patch_size / self.size) / plan.zoom
        theta = torch.zeros(len(plan.angle), 2, 3, dtype=torch.float64)
        theta[:, 0, 0] = cos * plan.flip_x * scale
        theta[:, 0, 1] = -sin * plan.flip_y * scale
        theta[:, 1, 0] = sin * plan.flip_x * scale
        theta[:, 1, 1] = cos * plan.flip_y * scale
        theta[:, 0, 2] = (2.0 * plan.centre_yx[:, 1] + 1.0) / self.size - 1.0
        theta[:, 1, 2] = (2.0 * plan.centre_yx[:, 0] + 1.0) / self.size - 1.0
        return theta

    @torch.no_grad()
    def render(self, plan: BatchPlan) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of ``plan``: images ``(B, 1, P, P)`` float32 and masks ``(B, 1, P, P)`` in {0, 1}."""
        index = plan.slices.to(self.device)
        images, masks = self.images[index], self.masks[index].float()
        b, p = len(index), self.patch_size
        theta = self.theta(plan).to(self.device, torch.float32)
        grid = F.affine_grid(theta, [b, 1, p, p], align_corners=False)
        # grid_sample pads with zeros: shift so that zero is air, and back.
        image = F.grid_sample(images - self.air, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        image = image + self.air
        mask = (F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False) >= 0.5).float()
        if self.augment is not None:
            gain = plan.gain.to(self.device, torch.float32).view(b, 1, 1, 1)
            offset = plan.offset.to(self.device, torch.float32).view(b, 1, 1, 1)
            image = (gain * image + offset).clamp(self.low, self.high)
        return image, mask

    def describe(self) -> dict[str, Any]:
        """The sampler's settings, for the run summary."""
        return {
            "mode": "patches" if self.is_patch_mode else "whole slices",
            "patch_size": self.patch_size, "slice_size": self.size, "training_slices": len(self),
            "tumour_slices": int(len(self.tumour_slice_ids)), "foreground_fraction": self.foreground_fraction,
            "augment": None if self.augment is None else vars(self.augment),
        }
