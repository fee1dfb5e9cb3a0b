"""The batched patch sampler: foreground rate, image/mask alignment under augmentation, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lungseg.config import AugmentConfig
from lungseg.training.patches import PatchSampler, epoch_generator

S = 96


def _slices(n: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Air slices with one bright rectangle (tumour) in some of them; the mask is the rectangle."""
    rng = np.random.default_rng(seed)
    images = np.full((n, S, S), -1.0, np.float32)
    masks = np.zeros((n, S, S), np.uint8)
    for i in range(0, n, 2):  # every other slice holds tumour
        h, w = rng.integers(4, 14, 2)
        y, x = rng.integers(0, S - 14, 2)
        images[i, y : y + h, x : x + w] = 2.0
        masks[i, y : y + h, x : x + w] = 1
    return images, masks


@pytest.mark.parametrize("fraction", [0.0, 0.33, 1.0])
def test_crops_contain_tumour_at_the_configured_rate(fraction: float) -> None:
    images, masks = _slices()
    sampler = PatchSampler(images, masks, patch_size=32, foreground_fraction=fraction, augment=None, value_range=(-1.0, 2.0))
    g = torch.Generator().manual_seed(1)
    plans = [sampler.plan(g, 64) for _ in range(20)]
    chosen = torch.cat([p.foreground for p in plans]).float().mean().item()
    assert abs(chosen - fraction) < 0.05
    for plan in plans[:5]:
        _, crops = sampler.render(plan)
        has = crops.flatten(1).amax(1) > 0
        # every foreground-centred crop holds tumour (the centre is at most a quarter patch from it)
        assert bool(has[plan.foreground].all())


def test_augmentation_keeps_image_and_mask_aligned() -> None:
    images, masks = _slices(seed=3)
    cfg = AugmentConfig(flip_lr=0.5, flip_ud=0.5, max_rotation_deg=30.0, zoom=1.3, hu_scale=0.2, hu_offset=0.0)
    sampler = PatchSampler(images, masks, patch_size=48, foreground_fraction=0.8, augment=cfg, value_range=(-1.0, 2.0))
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        plan = sampler.plan(g, 16)
        x, y = sampler.render(plan)
        assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
        bright = (x - plan.offset.view(-1, 1, 1, 1).float()) / plan.gain.view(-1, 1, 1, 1).float() > 0.5
        # interpolation may disagree on a boundary pixel; the shape itself must move with the mask
        assert (bright == (y > 0)).float().mean() > 0.995


def test_a_shape_survives_a_round_trip() -> None:
    """Render with a known transform, undo it with the inverse affine: the mask comes back."""
    images, masks = _slices(n=2, seed=5)
    sampler = PatchSampler(images, masks, patch_size=None, augment=AugmentConfig(max_rotation_deg=20.0, zoom=1.0),
                           value_range=(-1.0, 2.0))
    plan = sampler.plan(torch.Generator().manual_seed(4), 2)
    plan.slices[:] = 0
    _, forward = sampler.render(plan)
    theta = sampler.theta(plan)
    inverse = torch.linalg.inv(torch.cat([theta, torch.tensor([[[0.0, 0.0, 1.0]]]).double().expand(2, 1, 3)], 1))[:, :2]
    grid = torch.nn.functional.affine_grid(inverse.float(), [2, 1, S, S], align_corners=False)
    back = torch.nn.functional.grid_sample(forward, grid, mode="bilinear", align_corners=False) >= 0.5
    original = torch.from_numpy(masks[0]).bool()
    for b in range(2):
        overlap = (back[b, 0] & original).sum() / original.sum()
        assert overlap > 0.9


def test_whole_slices_without_augmentation_are_the_slices() -> None:
    images, masks = _slices()
    sampler = PatchSampler(images, masks, patch_size=None, augment=None, value_range=(-1.0, 2.0))
    plan = sampler.plan(torch.Generator().manual_seed(2), 5)
    x, y = sampler.render(plan)
    assert torch.allclose(x[:, 0], torch.from_numpy(images)[plan.slices], atol=1e-5)
    assert torch.equal(y[:, 0].to(torch.uint8), torch.from_numpy(masks)[plan.slices])
    assert not sampler.is_patch_mode and sampler.describe()["mode"] == "whole slices"


def test_epochs_are_reproducible_and_ranks_share_one_global_batch() -> None:
    images, masks = _slices()
    sampler = PatchSampler(images, masks, patch_size=32, augment=AugmentConfig(), value_range=(-1.0, 2.0))
    a = list(sampler.epoch_plans(seed=3, epoch=2, steps=3, batch_size=8))
    b = list(sampler.epoch_plans(seed=3, epoch=2, steps=3, batch_size=8))
    c = list(sampler.epoch_plans(seed=3, epoch=3, steps=3, batch_size=8))
    assert all(torch.equal(p.centre_yx, q.centre_yx) and torch.equal(p.slices, q.slices) for p, q in zip(a, b))
    assert not torch.equal(a[0].centre_yx, c[0].centre_yx)
    halves = [a[0].share(r, 2) for r in (0, 1)]
    assert sorted(torch.cat([h.slices for h in halves]).tolist()) == sorted(a[0].slices.tolist())
    x_full, _ = sampler.render(a[0])
    x0, _ = sampler.render(halves[0])
    assert torch.allclose(x_full[0::2], x0)
    assert epoch_generator(3, 2).initial_seed() == epoch_generator(3, 2).initial_seed()


def test_tumour_fraction_oversamples_tumour_slices() -> None:
    images, masks = _slices(n=10)
    sampler = PatchSampler(images, masks, patch_size=None, tumour_fraction=0.9, augment=None, value_range=(-1.0, 2.0))
    plan = sampler.plan(torch.Generator().manual_seed(0), 2000)
    assert abs(float((plan.slices % 2 == 0).float().mean()) - 0.9) < 0.03


def test_bad_arguments_name_the_shapes() -> None:
    images, masks = _slices()
    with pytest.raises(ValueError, match=r"\(N, S, S\)"):
        PatchSampler(images[:, :, :10], masks)
    with pytest.raises(ValueError, match="foreground_fraction"):
        PatchSampler(images, masks, foreground_fraction=1.5)
    with pytest.raises(ValueError, match="zoom"):
        AugmentConfig(zoom=0.5)


def test_hu_jitter_equals_jitter_before_normalisation() -> None:
    """The gain and offset act on normalised values as ``x' = a x + b`` in HU would, clipped to the window."""
    mean, std, window = -600.0, 400.0, (-1000.0, 400.0)
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1000, 400, (4, S, S)).astype(np.float32)
    z = (hu - mean) / std
    low, high = ((w - mean) / std for w in window)
    cfg = AugmentConfig(flip_lr=0.0, flip_ud=0.0, max_rotation_deg=0.0, zoom=1.0, hu_scale=0.1, hu_offset=50.0)
    sampler = PatchSampler(z, np.zeros_like(z, np.uint8), patch_size=None, augment=cfg, value_range=(low, high),
                           intensity_scale=(mean, std, False))
    plan = sampler.plan(torch.Generator().manual_seed(3), 8)
    x, _ = sampler.render(plan)
    a = 1.0 + (plan.gain - 1.0)  # the gain is the HU gain
    b = plan.offset * std - (plan.gain - 1.0) * mean  # back to the HU offset
    assert float(b.abs().max()) <= 50.0 + 1e-6 and float((a - 1).abs().max()) <= 0.1 + 1e-9
    for k in range(8):
        expected = (np.clip(a[k].item() * hu[plan.slices[k]] + b[k].item(), *window) - mean) / std
        np.testing.assert_allclose(x[k, 0].numpy(), expected, atol=1e-4)
    assert plan.gain.std() > 0.01


def test_an_unaugmented_crop_is_the_slices_own_pixels() -> None:
    images, masks = _slices(n=2, seed=9)
    sampler = PatchSampler(images, masks, patch_size=32, foreground_fraction=1.0, augment=None, value_range=(-1.0, 2.0))
    plan = sampler.plan(torch.Generator().manual_seed(5), 8)
    x, y = sampler.render(plan)
    for k in range(8):
        top, left = (int(c - 15.5) for c in plan.centre_yx[k].tolist())
        i = int(plan.slices[k])
        np.testing.assert_allclose(x[k, 0].numpy(), images[i, top : top + 32, left : left + 32], atol=1e-5)
        assert np.array_equal(y[k, 0].numpy().astype(np.uint8), masks[i, top : top + 32, left : left + 32])
