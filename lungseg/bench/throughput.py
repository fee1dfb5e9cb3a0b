"""Training and inference throughput, single-slice latency and MFU of the networks, side by side."""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from lungseg.bench.harness import BenchConfig, Variant, interleaved, matmul_step, stats, warmup_calls
from lungseg.bench.networks import MONAI_REFERENCE, PAPER_MODEL
from lungseg.device import autocast
from lungseg.losses import build_loss

__all__ = ["add_mfu", "model_throughput", "ratios"]

_CEILING = "__matmul__"  # the ceiling matmul's key among the interleaved steps


def _inputs(cfg: BenchConfig, variant: Variant, device: torch.device) -> dict[str, torch.Tensor]:
    """Random ``(B, 1, S, S)`` images and a random binary target (the cost does not depend on values)."""
    s = cfg.image_size
    gen = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if variant.channels_last else torch.contiguous_format
    x_infer = torch.randn(cfg.infer_batch, 1, s, s, generator=gen).to(device).contiguous(memory_format=fmt)
    return {
        "x_train": torch.randn(cfg.train_batch, 1, s, s, generator=gen).to(device).contiguous(memory_format=fmt),
        "y_train": (torch.rand(cfg.train_batch, 1, s, s, generator=gen) > 0.9).float().to(device),
        "x_infer": x_infer,
        "x_one": x_infer[:1].contiguous(memory_format=fmt),
    }


def _steps(base: nn.Module, inputs: dict[str, torch.Tensor], variant: Variant, device: torch.device,
           loss_fn: nn.Module) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
    """The training step, inference batch and single-slice forward of a deep copy of ``base``."""
    model = copy.deepcopy(base).to(device)
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
    fwd: nn.Module = torch.compile(model) if variant.compiled else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        with autocast(device, variant.dtype):
            loss = loss_fn(fwd(inputs["x_train"]).float(), inputs["y_train"])
        loss.backward()
        opt.step()

    def infer(x: torch.Tensor) -> None:
        model.eval()
        with torch.inference_mode(), autocast(device, variant.dtype):
            fwd(x)

    return train_step, lambda: infer(inputs["x_infer"]), lambda: infer(inputs["x_one"])


def model_throughput(models: dict[str, nn.Module], cfg: BenchConfig, device: torch.device, variant: Variant,
                     bar: Any = None) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Training and inference throughput and single-slice latency of every model under one variant.

    Each model gets its own deep copy, Adam optimiser (lr 1e-3) and the hybrid loss of eq. (9); inputs
    are random ``(B, 1, S, S)`` images with a random binary target (the cost does not depend on values).
    Without ``channels_last`` each model keeps the memory layout it chooses itself; with it, the
    parameters of every model are converted. The ceiling matmul (in the variant's dtype) is one more
    member of the interleaved rounds, so it is sampled under the same machine load as the models.

    Returns:
        ``(per-model results, ceiling sampled during the training and inference rounds)``.
    """
    inputs = _inputs(cfg, variant, device)
    loss_fn = build_loss("hybrid")
    matmul = matmul_step(device, cfg.matmul_size, variant.torch_dtype)
    train: dict[str, Callable[[], Any]] = {}
    infer: dict[str, Callable[[], Any]] = {}
    latency: dict[str, Callable[[], Any]] = {}
    for name, base in models.items():
        train[name], infer[name], latency[name] = _steps(base, inputs, variant, device, loss_fn)
    warm = warmup_calls(cfg, variant)
    t_train = interleaved({**train, _CEILING: matmul}, warm, cfg.repeats, device, bar)
    t_infer = interleaved({**infer, _CEILING: matmul}, warm, cfg.repeats, device, bar)
    t_lat = interleaved(latency, warm, cfg.latency_repeats, device, bar)
    flops = 2 * cfg.matmul_size**3
    ceiling = {
        "n": cfg.matmul_size, "dtype": variant.dtype, "flops": flops,
        "train_rounds": stats(t_train[_CEILING]), "infer_rounds": stats(t_infer[_CEILING]),
        "train_rounds_tflops": flops / statistics.median(t_train[_CEILING]) / 1e12,
        "infer_rounds_tflops": flops / statistics.median(t_infer[_CEILING]) / 1e12,
    }
    out: dict[str, dict[str, Any]] = {}
    for name in models:
        tr, inf, lat = stats(t_train[name]), stats(t_infer[name]), stats(t_lat[name])
        out[name] = {
            "train_images_per_s": cfg.train_batch / tr["median_s"],
            "train_step": tr,
            "infer_images_per_s": cfg.infer_batch / inf["median_s"],
            "infer_batch": inf,
            "latency_ms": 1e3 * lat["median_s"],
            "latency": lat,
        }
    return out, ceiling


def add_mfu(measured: dict[str, Any], forward_flops: int, ceiling: dict[str, Any]) -> dict[str, Any]:
    """Add ``train_mfu`` and ``infer_mfu`` to one model's :func:`model_throughput` result (training FLOPs
    are 3x forward) against the ceiling of the same rounds; returns ``measured``."""
    measured["train_mfu"] = 3 * forward_flops * measured["train_images_per_s"] / (ceiling["train_rounds_tflops"] * 1e12)
    measured["infer_mfu"] = forward_flops * measured["infer_images_per_s"] / (ceiling["infer_rounds_tflops"] * 1e12)
    return measured


def _paired(ours: Sequence[float], ref: Sequence[float]) -> float:
    """Median over rounds of ``ref / ours`` (times taken back to back, so a load change cancels)."""
    return statistics.median(r / o for o, r in zip(ours, ref))


def ratios(models: dict[str, Any], variant_names: Sequence[str]) -> dict[str, Any]:
    """AttentionResUNet / MONAI AttentionUnet ratios per variant (throughput: >1 faster; latency: <1 faster).

    ``*_paired`` ratios are the median over the interleaved rounds of the per-round ratio: the two
    models ran back to back in each round, so a change of machine load between rounds cancels out.
    The unpaired ratios divide the medians.
    """
    ours, ref = models.get(PAPER_MODEL), models.get(MONAI_REFERENCE)
    if ours is None or ref is None:
        return {}
    out = {}
    for v in variant_names:
        a, m = ours["variants"].get(v), ref["variants"].get(v)
        if a is None or m is None:
            continue
        out[v] = {
            "train_throughput_ratio": a["train_images_per_s"] / m["train_images_per_s"],
            "train_throughput_ratio_paired": _paired(a["train_step"]["times_s"], m["train_step"]["times_s"]),
            "infer_throughput_ratio": a["infer_images_per_s"] / m["infer_images_per_s"],
            "infer_throughput_ratio_paired": _paired(a["infer_batch"]["times_s"], m["infer_batch"]["times_s"]),
            "latency_ratio": a["latency_ms"] / m["latency_ms"],
            "latency_ratio_paired": 1.0 / _paired(a["latency"]["times_s"], m["latency"]["times_s"]),
            "targets": {"train_throughput_ratio": ">= 1.3", "latency_ratio": "<= 1.0"},
        }
    return out
