"""The whole training step of ``lungseg train`` in patches/s, and the share of it spent outside the network.

For each of lungseg's networks (:data:`lungseg.models.MODELS`, at the bench's width and depth) one
training step is made as :meth:`lungseg.training.trainer.Trainer.train_epoch` makes it: a batch of
``train_batch`` patches of ``patch_size`` drawn by the :class:`~lungseg.training.patches.PatchSampler`
(plan on the CPU, crop + flips + rotation + zoom + intensity jitter rendered on the device by one
``affine_grid``/``grid_sample``) from the phantom's preprocessed slices, the forward pass, the hybrid
loss (eq. 9) with :class:`~lungseg.config.TrainConfig`'s default λ, α, γ, the finiteness check, the
backward pass and the Adam step (default learning rate and weight decay). The learning-rate schedule
(one multiplication per step) is left out. Three steps are timed in the same interleaved rounds:

* (a) ``full``: the step with a freshly sampled batch, as training runs it;
* (b) ``fixed``: the same step on one pre-rendered batch (the network, loss and optimiser alone);
* (c) ``sampler``: plan + render alone (one timing shared by the networks).

The share of the step spent outside the network is (c) / (a); (a − b) / a is the cross-check (it
differs from the first by the noise of two medians). The issue's target is a share below 10 %.

Precision and layout follow ``lungseg train``'s defaults (``--precision auto``): fp32 on the CPU; on
CUDA bf16 autocast with the parameters and the batch in ``channels_last``, without ``torch.compile``
(training's default). The CUDA path is deliberately the trainer's plain loop and has not been run:
no GPU was available when it was written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lungseg.bench.harness import BenchConfig, bench_sampler, interleaved, nominal_fingerprint, stats
from lungseg.bench.networks import build_bench_model, label
from lungseg.errors import LungsegError

__all__ = ["TARGET_SHARE", "training_step"]

#: The issue's target for the share of a training step spent outside the network.
TARGET_SHARE = 0.10
_SAMPLER = "__sampler__"  # the sampler's key among the interleaved steps


def _step(model: nn.Module, loss_fn: nn.Module, device: torch.device, precision: str,
          channels_last: bool) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One optimisation step on a given batch, as :meth:`Trainer.train_epoch` makes it."""
    from lungseg.config import TrainConfig
    from lungseg.device import autocast

    train = TrainConfig()
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)

    def step(images: torch.Tensor, masks: torch.Tensor) -> None:
        model.train()
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(images)
        loss = loss_fn(logits.float(), masks)
        if not torch.isfinite(loss):
            raise LungsegError(f"bench training step diverged (loss {loss.item()})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _slices(cfg: BenchConfig, study: Path) -> Any:
    """Every slice of the phantom study preprocessed in memory (eq. 1, ``image_size``), as training caches them."""
    from lungseg.data import open_dataset
    from lungseg.data.slices import SliceDataset

    dataset = open_dataset(study)
    return SliceDataset(dataset, list(dataset.patient_ids), nominal_fingerprint(cfg.image_size), cfg.image_size)


def _summary(name: str, full: list[float], fixed: list[float], sampler: list[float], batch: int) -> dict[str, Any]:
    """Rates and shares of one network from the seconds of its (a) full and (b) fixed steps and of (c) the sampler."""
    a, b, c = (stats(t)["median_s"] for t in (full, fixed, sampler))
    share = c / a
    return {
        "label": label(name),
        "train_patches_per_s": batch / a,
        "fixed_batch_patches_per_s": batch / b,
        "full_step": stats(full),
        "fixed_batch_step": stats(fixed),
        "share_outside_network": share,
        "share_outside_network_difference": (a - b) / a,
        "target_share": TARGET_SHARE,
        "target_met": share < TARGET_SHARE,
    }


def training_step(cfg: BenchConfig, study: Path, device: torch.device, names: tuple[str, ...] | None = None,
                  bar: Any = None) -> dict[str, Any]:
    """Time (a) the full training step, (b) the step on a fixed batch and (c) the sampler, per network.

    Args:
        cfg: sizes (``patch_size``, ``train_batch``, ``base_channels``, ``depth``) and the protocol
            (``warmup`` untimed calls of every step, then ``repeats`` interleaved rounds, medians).
        study: the phantom study whose slices the sampler draws from.
        device: where the slices live, batches are rendered and the networks train.
        names: networks (keys of :data:`lungseg.models.MODELS`); default all of them.
        bar: a progress bar advanced once per call (optional).

    Returns:
        ``{"patch_size", "batch", "precision", "channels_last", "slices", "sampler": {...},
        "models": {name: {"train_patches_per_s", "share_outside_network", "target_met", ...}}, "what"}``.
    """
    from lungseg.config import TrainConfig
    from lungseg.device import resolve_precision
    from lungseg.losses import build_loss
    from lungseg.models import MODELS
    from lungseg.training.patches import epoch_generator

    names, train, batch = names or tuple(MODELS), TrainConfig(), cfg.train_batch
    precision, channels_last = resolve_precision("auto", device), device.type == "cuda"
    slices = _slices(cfg, study)
    sampler = bench_sampler(slices, device, cfg.patch_size)
    generator = epoch_generator(0, 0)
    loss_fn = build_loss("hybrid", lam=train.lam, alpha=train.alpha, gamma=train.gamma)

    def sample() -> tuple[torch.Tensor, torch.Tensor]:
        return sampler.render(sampler.plan(generator, batch))

    images, masks = sample()
    fixed = (images.contiguous(memory_format=torch.channels_last) if channels_last else images, masks)
    steps: dict[str, Callable[[], Any]] = {_SAMPLER: sample}
    for name in names:
        model = build_bench_model(name, cfg.base_channels, cfg.depth).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        step = _step(model, loss_fn, device, precision, channels_last)
        steps[f"{name}/full"] = lambda step=step: step(*sample())
        steps[f"{name}/fixed"] = lambda step=step: step(*fixed)
    times = interleaved(steps, cfg.warmup, cfg.repeats, device, bar)
    models = {name: _summary(name, times[f"{name}/full"], times[f"{name}/fixed"], times[_SAMPLER], batch)
              for name in names}
    return {
        "patch_size": sampler.patch_size, "batch": batch, "precision": precision, "channels_last": channels_last,
        "slices": len(slices),
        "sampler": {"patches_per_s": batch / stats(times[_SAMPLER])["median_s"], "step": stats(times[_SAMPLER])},
        "models": models,
        "what": ("(a) sample + augment (PatchSampler plan + render) + forward + hybrid loss + backward + Adam step;"
                 " (b) the same on one fixed pre-rendered batch; (c) the sampler alone; share outside the network"
                 f" = c / a (target < {TARGET_SHARE:.0%}), cross-check (a - b) / a"),
    }
