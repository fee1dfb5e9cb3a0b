"""``lungseg bench``: speed, cost and memory of the networks and the pipeline, measured side by side in one run.

What one run measures (all in the same process, on the same device, with the same threads):

* for :class:`~lungseg.models.UNet`, :class:`~lungseg.models.AttentionResUNet` (the paper's configuration,
  ``base_channels=32, depth=4``) and MONAI's ``AttentionUnet`` at matched widths
  (``channels=(32, 64, 128, 256, 512), strides=(2, 2, 2, 2)``): parameters, forward FLOPs per image
  (``torch.utils.flop_counter``), training throughput (images/s of forward + hybrid loss (eq. 9) +
  backward + Adam step, train mode), inference throughput and single-slice latency
  (``torch.inference_mode``, eval mode) and peak memory;
* the machine's ceiling, a large matrix product in the same dtype, and from it the model FLOPs
  utilisation (MFU) ``achieved FLOP/s / ceiling`` with training FLOPs taken as 3x forward (backward ~ 2x);
* dense-CRF (eq. 10) milliseconds per slice and the parallel :func:`lungseg.crf.refine_batch` rate;
* data pipeline slices/s (DICOM series read, slice dataset built from DICOM, loaded from the cache,
  iterated through a ``DataLoader``) against the rate at which training consumes slices;
* phantom generation slices/s, and the wall time of ``lungseg predict --crf`` on a 100-slice series.

Timing protocol: ``warmup`` untimed iterations per model, then ``repeats`` timed iterations
*interleaved* across the three models (model A, B, C, A, B, C, ...) so that a change in machine load
hits all of them alike; the median is reported. CUDA timings synchronise before and after. Peak
memory on CPU is the ``ru_maxrss`` increase of a fresh subprocess per model (``tracemalloc`` does not
see torch's allocator); on CUDA ``torch.cuda.max_memory_allocated``.

Variants: on CPU fp32 in each network's own layout, fp32 with ``channels_last`` forced on all, and
bf16 autocast where the CPU has native bf16 (AVX-512 BF16 or AMX), plus ``torch.compile`` of both
dtypes with ``--compile``; on CUDA fp32, bf16 autocast + ``channels_last``, and the same under
``torch.compile`` (cudnn benchmark on). Every variant is applied identically to all three networks.
The end-to-end prediction runs in fp32 and, where fast bf16 exists, in bf16, and reports how many
mask voxels the two disagree on.

Run ``lungseg bench`` (or ``python -m lungseg.bench``); ``--quick`` is a < 1 minute smoke run on tiny
sizes whose numbers mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lungseg.device import autocast
from lungseg.errors import LungsegError
from lungseg.provenance import collect

__all__ = ["BenchConfig", "add_arguments", "main", "plot_bench", "run_bench", "run_from_args", "write_markdown"]

MODEL_NAMES: tuple[str, ...] = ("unet", "attention_resunet", "monai_attention_unet")
MODEL_LABELS: dict[str, str] = {
    "unet": "UNet (lungseg)",
    "attention_resunet": "AttentionResUNet (lungseg, paper)",
    "monai_attention_unet": "AttentionUnet (MONAI)",
}


@dataclass(frozen=True)
class BenchConfig:
    """Sizes and repetition counts of one benchmark run.

    Attributes:
        image_size: side ``S`` of the ``(B, 1, S, S)`` network input.
        base_channels: width of the first level (MONAI gets ``base * 2**l`` channels per level).
        depth: number of down-sampling steps.
        train_batch: images per training step.
        infer_batch: images per forward pass of the inference-throughput measurement.
        warmup: untimed iterations before timing (per model and variant).
        repeats: timed training / inference iterations (median reported).
        latency_repeats: timed single-slice forward passes.
        matmul_size: side ``n`` of the ``(n, n) @ (n, n)`` ceiling product.
        crf_slices: slices of the ``refine_batch`` measurement.
        phantom_patients: patients of the generated study (data pipeline and generation rate).
        phantom_slices: slices per phantom patient.
        series_slices: slices of the series of the end-to-end prediction measurement.
    """

    image_size: int = 256
    base_channels: int = 32
    depth: int = 4
    train_batch: int = 4
    infer_batch: int = 8
    warmup: int = 1
    repeats: int = 5
    latency_repeats: int = 10
    matmul_size: int = 2048
    crf_slices: int = 32
    phantom_patients: int = 2
    phantom_slices: int = 40
    series_slices: int = 100

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "warmup" else 1):
                raise ValueError(f"BenchConfig.{name} must be a {'non-negative' if name == 'warmup' else 'positive'}"
                                 f" int, got {value!r}")
        if self.image_size % 2**self.depth:
            raise ValueError(f"BenchConfig.image_size={self.image_size} must be a multiple of 2**depth={2**self.depth}")
        if self.image_size < 32:
            raise ValueError(f"BenchConfig.image_size must be >= 32 (phantom minimum), got {self.image_size}")


FULL = BenchConfig()
QUICK = BenchConfig(image_size=64, base_channels=8, train_batch=2, infer_batch=2, warmup=1, repeats=2,
                    latency_repeats=2, matmul_size=256, crf_slices=4, phantom_patients=1, phantom_slices=6,
                    series_slices=6)
# CUDA keeps the GPU busy with bigger batches; the CPU sizes would time the launch overhead.
CUDA_BATCHES: dict[str, int] = {"train_batch": 32, "infer_batch": 128, "matmul_size": 8192}


@dataclass(frozen=True)
class Variant:
    """One execution setting applied identically to every network."""

    name: str
    dtype: str  # "fp32" or "bf16" (autocast)
    channels_last: bool
    compiled: bool


def _variants(device: torch.device, compile_models: bool | None) -> list[Variant]:
    if device.type == "cuda":
        out = [Variant("fp32", "fp32", False, False), Variant("bf16+channels_last", "bf16", True, False)]
        if compile_models is not False:
            out.append(Variant("bf16+channels_last+compile", "bf16", True, True))
        return out
    from lungseg.device import has_fast_bf16

    out = [Variant("fp32", "fp32", False, False), Variant("fp32+channels_last", "fp32", True, False)]
    bf16 = has_fast_bf16(device)  # emulated bf16 would only measure the emulation
    if bf16:
        out.append(Variant("bf16", "bf16", False, False))
    if compile_models:  # needs a C++ toolchain and minutes of compilation on CPU: opt-in only
        out.append(Variant("fp32+compile", "fp32", False, True))
        if bf16:
            out.append(Variant("bf16+compile", "bf16", False, True))
    return out


# ---------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------
def _monai_available() -> bool:
    try:
        import monai.networks.nets  # noqa: F401
    except ImportError:
        return False
    return True


def build_bench_model(name: str, base_channels: int = 32, depth: int = 4) -> nn.Module:
    """One of the compared networks with one input and one output channel.

    Args:
        name: ``"unet"``, ``"attention_resunet"`` or ``"monai_attention_unet"``.
        base_channels: width of the first level; level ``l`` has ``base_channels * 2**l`` channels.
        depth: number of down-sampling steps (MONAI: ``depth`` stride-2 levels).

    Raises:
        ValueError: unknown name.
        LungsegError: MONAI requested but not installed.
    """
    from lungseg.models import AttentionResUNet, UNet

    if name == "unet":
        return UNet(1, 1, base_channels=base_channels, depth=depth)
    if name == "attention_resunet":
        return AttentionResUNet(1, 1, base_channels=base_channels, depth=depth)
    if name == "monai_attention_unet":
        if not _monai_available():
            raise LungsegError("MONAI is not installed: `pip install monai` (the 'bench' extra) to compare against it")
        from monai.networks.nets import AttentionUnet

        channels = tuple(base_channels * 2**level for level in range(depth + 1))
        return AttentionUnet(spatial_dims=2, in_channels=1, out_channels=1, channels=channels, strides=(2,) * depth)
    raise ValueError(f"unknown bench model {name!r}; expected one of {MODEL_NAMES}")


# ---------------------------------------------------------------------------------------------------------------
# timing helpers
# ---------------------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _interleaved(steps: dict[str, Callable[[], Any]], warmup: int, repeats: int, device: torch.device,
                 bar: Any = None) -> dict[str, list[float]]:
    """Seconds of each step: ``warmup`` untimed calls each, then ``repeats`` rounds over all steps."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
            if bar is not None:
                bar.update(1)
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for key, fn in steps.items():
            times[key].append(_timed(fn, device))
            if bar is not None:
                bar.update(1)
    return times


def _stats(seconds: Sequence[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
            "repeats": len(seconds), "times_s": [round(t, 6) for t in seconds]}


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op threads (only when the user asked for a number)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _matmul_like_convolutions(device: torch.device) -> Iterator[None]:
    """Let fp32 matmuls use TF32 exactly when fp32 convolutions do (CUDA only).

    PyTorch's defaults run fp32 cuDNN convolutions on TF32 tensor cores (``torch.backends.cudnn.allow_tf32``)
    but fp32 matmuls in true fp32 (``torch.backends.cuda.matmul.allow_tf32``), a unit about 7x slower
    on an H100 (67 vs 495 dense TFLOP/s). Without this the fp32 ceiling would be the slow unit's and
    the fp32 MFU would exceed 100 %.
    """
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


# ---------------------------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------------------------
def matmul_ceiling(device: torch.device, n: int, dtype: torch.dtype, warmup: int = 2, repeats: int = 5) -> dict[str, Any]:
    """FLOP/s of an ``(n, n) @ (n, n)`` product (``2 n^3`` FLOPs): the machine's practical ceiling.

    Returns:
        ``{"n", "dtype", "flops", "median_s", "tflops_median", "tflops_best", ...}``.
    """
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    times = _interleaved({"mm": lambda: torch.mm(a, b, out=out)}, warmup, repeats, device)["mm"]
    flops = 2 * n**3
    st = _stats(times)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "flops": flops, **st,
            "tflops_median": flops / st["median_s"] / 1e12, "tflops_best": flops / st["min_s"] / 1e12}


def _hybrid_loss() -> nn.Module:
    from lungseg.losses import HybridLoss

    return HybridLoss()


def _warmup(cfg: BenchConfig, variant: Variant) -> int:
    """Untimed calls per step: compiled graphs need two more to settle (one compilation per mode and shape)."""
    return cfg.warmup + (2 if variant.compiled else 0)


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
    import copy

    s = cfg.image_size
    gen = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if variant.channels_last else torch.contiguous_format
    x_train = torch.randn(cfg.train_batch, 1, s, s, generator=gen).to(device).contiguous(memory_format=fmt)
    y_train = (torch.rand(cfg.train_batch, 1, s, s, generator=gen) > 0.9).float().to(device)
    x_infer = torch.randn(cfg.infer_batch, 1, s, s, generator=gen).to(device).contiguous(memory_format=fmt)
    x_one = x_infer[:1].contiguous(memory_format=fmt)
    loss_fn = _hybrid_loss()
    n = cfg.matmul_size
    dtype = torch.bfloat16 if variant.dtype == "bf16" else torch.float32
    mm_a, mm_b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    mm_out = torch.empty(n, n, device=device, dtype=dtype)
    ceiling_key = "__matmul__"

    def matmul() -> None:
        torch.mm(mm_a, mm_b, out=mm_out)

    train_steps: dict[str, Callable[[], Any]] = {}
    infer_steps: dict[str, Callable[[], Any]] = {}
    latency_steps: dict[str, Callable[[], Any]] = {}
    for name, base in models.items():
        model = copy.deepcopy(base).to(device)
        if variant.channels_last:
            model = model.to(memory_format=torch.channels_last)
        fwd: nn.Module = torch.compile(model) if variant.compiled else model
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def train_step(model: nn.Module = model, fwd: nn.Module = fwd, opt: torch.optim.Optimizer = opt) -> None:
            model.train()
            opt.zero_grad(set_to_none=True)
            with autocast(device, variant.dtype):
                loss = loss_fn(fwd(x_train).float(), y_train)
            loss.backward()
            opt.step()

        def infer_step(x: torch.Tensor, model: nn.Module = model, fwd: nn.Module = fwd) -> None:
            model.eval()
            with torch.inference_mode(), autocast(device, variant.dtype):
                fwd(x)

        train_steps[name] = train_step
        infer_steps[name] = lambda f=infer_step: f(x_infer)
        latency_steps[name] = lambda f=infer_step: f(x_one)

    warm = _warmup(cfg, variant)
    t_train = _interleaved({**train_steps, ceiling_key: matmul}, warm, cfg.repeats, device, bar)
    t_infer = _interleaved({**infer_steps, ceiling_key: matmul}, warm, cfg.repeats, device, bar)
    t_lat = _interleaved(latency_steps, warm, cfg.latency_repeats, device, bar)
    flops = 2 * n**3
    ceiling = {
        "n": n, "dtype": variant.dtype, "flops": flops,
        "train_rounds": _stats(t_train[ceiling_key]), "infer_rounds": _stats(t_infer[ceiling_key]),
        "train_rounds_tflops": flops / statistics.median(t_train[ceiling_key]) / 1e12,
        "infer_rounds_tflops": flops / statistics.median(t_infer[ceiling_key]) / 1e12,
    }
    out: dict[str, dict[str, Any]] = {}
    for name in models:
        tr, inf, lat = _stats(t_train[name]), _stats(t_infer[name]), _stats(t_lat[name])
        out[name] = {
            "train_images_per_s": cfg.train_batch / tr["median_s"],
            "train_step": tr,
            "infer_images_per_s": cfg.infer_batch / inf["median_s"],
            "infer_batch": inf,
            "latency_ms": 1e3 * lat["median_s"],
            "latency": lat,
        }
    return out, ceiling


_PROBE = r"""
import json, resource, sys, torch
from lungseg.bench import BenchConfig, build_bench_model, _hybrid_loss
args = json.loads(sys.argv[1])
cfg = BenchConfig(**args["cfg"])
def status_mb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise OSError(key)
def reset_peak():
    # Linux: writing 5 to clear_refs resets VmHWM to the current RSS (ru_maxrss would be inherited from the parent)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
model = build_bench_model(args["name"], cfg.base_channels, cfg.depth)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = _hybrid_loss()
s = cfg.image_size
x_inf = torch.randn(cfg.infer_batch, 1, s, s)
x = torch.randn(cfg.train_batch, 1, s, s)
y = (torch.rand(cfg.train_batch, 1, s, s) > 0.9).float()
base = status_mb("VmRSS")
reset_peak()
model.eval()
with torch.inference_mode():
    model(x_inf)
infer = status_mb("VmHWM") - base
reset_peak()
model.train()
for _ in range(2):
    opt.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()
    opt.step()
train = status_mb("VmHWM") - base
print(json.dumps({"baseline_rss_mb": base, "infer_peak_delta_mb": infer, "train_peak_delta_mb": train}))
"""


def cpu_peak_memory(names: Sequence[str], cfg: BenchConfig) -> dict[str, dict[str, Any]]:
    """Peak resident-memory increase of inference and training, one fresh subprocess per model (Linux).

    Each model runs alone in its own interpreter, so freed memory of another model cannot hide its
    peak. The peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs`` before each phase; Python's
    ``ru_maxrss`` is inherited from the parent process and useless here) minus the RSS after building
    the model and inputs is the activation peak of inference, and the activation + gradient +
    optimiser-state peak of two training steps. The subprocesses run concurrently: memory is per
    process, so sharing the CPU does not change it.
    """
    if not Path("/proc/self/clear_refs").exists():
        return {name: {"error": "peak RSS needs Linux /proc (VmHWM)"} for name in names}
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", _PROBE, json.dumps({"name": name, "cfg": asdict(cfg)})],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for name in names
    }
    out: dict[str, dict[str, Any]] = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            tail = " | ".join(stderr.strip().splitlines()[-3:])
            out[name] = {"error": f"memory probe exited with {proc.returncode}: {tail}"}
            continue
        out[name] = {**json.loads(stdout.strip().splitlines()[-1]),
                     "method": "peak RSS (VmHWM) over the RSS after building model and inputs, fresh subprocess"}
    return out


def cuda_peak_memory(models: dict[str, nn.Module], cfg: BenchConfig, device: torch.device) -> dict[str, dict[str, Any]]:
    """``torch.cuda.max_memory_allocated`` above the model's own footprint, fp32, inference then training."""
    import copy

    s, out = cfg.image_size, {}
    loss_fn = _hybrid_loss()
    for name, base_model in models.items():
        torch.cuda.empty_cache()
        model = copy.deepcopy(base_model).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x_inf = torch.randn(cfg.infer_batch, 1, s, s, device=device)
        x = torch.randn(cfg.train_batch, 1, s, s, device=device)
        y = (torch.rand(cfg.train_batch, 1, s, s, device=device) > 0.9).float()
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        model.eval()
        with torch.inference_mode():
            model(x_inf)
        torch.cuda.synchronize(device)
        infer = torch.cuda.max_memory_allocated(device) - base
        torch.cuda.reset_peak_memory_stats(device)
        model.train()
        for _ in range(2):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
        torch.cuda.synchronize(device)
        train = torch.cuda.max_memory_allocated(device) - base
        out[name] = {"infer_peak_delta_mb": infer / 2**20, "train_peak_delta_mb": train / 2**20,
                     "method": "torch.cuda.max_memory_allocated above the model's allocation (fp32)"}
        del model, opt
    return out


def _phantom_inputs(cfg: BenchConfig, root: Path) -> dict[str, Any]:
    """Generate the phantom study (timed) and return the pieces the other sections use."""
    from lungseg.data.phantom import PhantomConfig, generate_study

    pc = PhantomConfig(image_size=cfg.image_size, n_slices=cfg.phantom_slices)
    study = root / "study"
    start = time.perf_counter()
    generate_study(study, cfg.phantom_patients, seed=0, config=pc, progress=False)
    seconds = time.perf_counter() - start
    n = cfg.phantom_patients * cfg.phantom_slices
    return {"study": study, "generation": {"patients": cfg.phantom_patients, "slices": n, "seconds": seconds,
                                           "slices_per_s": n / seconds,
                                           "what": "generate_study: anatomy, tumours, DICOM + NIfTI writing"}}


def data_pipeline(cfg: BenchConfig, study: Path, root: Path, consume_rate: float | None,
                  device: torch.device | None = None) -> dict[str, Any]:
    """Slices/s of every stage that feeds training, and the headroom over the training consumption rate.

    The last stage is what ``lungseg train --augment on --num-workers N`` uses on an accelerator:
    augmented batches from ``N = min(4, CPU count)`` persistent worker processes, pinned on CUDA,
    timed over the second and third pass (the first pays the worker start-up).
    """
    from torch.utils.data import DataLoader

    from lungseg.data import open_dataset
    from lungseg.data.dicom import read_dicom_series
    from lungseg.data.slices import SliceDataset
    from lungseg.preprocess import Fingerprint

    dataset = open_dataset(study)
    pids = list(dataset.patient_ids)
    n_slices = cfg.phantom_patients * cfg.phantom_slices
    start = time.perf_counter()
    for pid in pids:
        read_dicom_series(study / pid / "ct")
    dicom_s = time.perf_counter() - start
    # nominal statistics: the cost of the z-score does not depend on them
    fingerprint = Fingerprint(mean=-500.0, std=450.0, image_size=cfg.image_size)
    cache = root / "slice-cache"
    start = time.perf_counter()
    SliceDataset(dataset, pids, fingerprint, cfg.image_size, cache_dir=cache)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    cached = SliceDataset(dataset, pids, fingerprint, cfg.image_size, cache_dir=cache)
    load_s = time.perf_counter() - start
    if not cached.cache_hit:
        raise RuntimeError(f"{cache}: the second SliceDataset did not hit the cache written by the first")

    def iterate(ds: SliceDataset) -> float:
        loader = DataLoader(ds, batch_size=cfg.train_batch, shuffle=True, num_workers=0,
                            generator=torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        for _ in loader:
            pass
        return time.perf_counter() - t0

    iter_s = iterate(cached)
    augmented = SliceDataset(dataset, pids, fingerprint, cfg.image_size, cache_dir=cache, augment=True)
    aug_s = iterate(augmented)
    workers = min(4, os.cpu_count() or 1)
    pooled = DataLoader(augmented, batch_size=cfg.train_batch, shuffle=True, num_workers=workers,
                        persistent_workers=True, pin_memory=device is not None and device.type == "cuda",
                        generator=torch.Generator().manual_seed(0))
    passes = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _batch in pooled:
            pass
        passes.append(time.perf_counter() - t0)
    del pooled
    workers_s = sum(passes[1:]) / 2
    stages = {
        "dicom_read": {"slices_per_s": n_slices / dicom_s, "what": "read_dicom_series (pydicom, HU)"},
        "dataset_from_dicom": {"slices_per_s": n_slices / build_s,
                               "what": "SliceDataset cache miss: DICOM + NIfTI read, preprocess_slices, cache write"},
        "dataset_from_cache": {"slices_per_s": n_slices / load_s, "what": "SliceDataset cache hit (.npz load)"},
        "loader_from_cache": {"slices_per_s": n_slices / iter_s,
                              "what": f"DataLoader(batch {cfg.train_batch}, shuffle, 0 workers) over cached slices"},
        "loader_augmented": {"slices_per_s": n_slices / aug_s,
                             "what": "the same with augment=True (default AugmentConfig)"},
        "loader_augmented_workers": {
            "slices_per_s": n_slices / workers_s, "workers": workers,
            "what": f"the same from {workers} persistent worker processes"
                    f"{', pinned memory' if device is not None and device.type == 'cuda' else ''}",
        },
    }
    out: dict[str, Any] = {"slices": n_slices, "stages": stages, "training_consumes_slices_per_s": consume_rate}
    if consume_rate:
        for stage in stages.values():
            stage["headroom_over_training"] = stage["slices_per_s"] / consume_rate
    return out


def crf_speed(cfg: BenchConfig, study: Path) -> dict[str, Any]:
    """Dense CRF (eq. 10): ms per slice of :func:`refine`, and slices/s of :func:`refine_batch`."""
    from scipy.ndimage import gaussian_filter

    from lungseg.crf import refine, refine_batch
    from lungseg.data.phantom import load_study

    vol = load_study(study)[0]
    # a soft probability map around the true tumour plus faint noise: the work is the same for any map
    rng = np.random.default_rng(0)
    idx = np.arange(cfg.crf_slices) % vol.n_slices
    images = vol.image[idx].astype(np.float32)
    masks = (vol.mask[idx] if vol.mask is not None else np.zeros_like(images)).astype(np.float32)
    probs = np.clip(gaussian_filter(masks, (0, 2, 2)) * 0.9 + 0.05 + 0.02 * rng.standard_normal(masks.shape), 0, 1)
    probs = probs.astype(np.float32)
    k = int(np.argmax(masks.reshape(len(masks), -1).sum(1)))
    one = _interleaved({"crf": lambda: refine(images[k], probs[k])}, 1, max(3, cfg.repeats), torch.device("cpu"))["crf"]
    t_serial = _interleaved({"b": lambda: refine_batch(images, probs, workers=0)}, 0, 1, torch.device("cpu"))["b"][0]
    t_par = _interleaved({"b": lambda: refine_batch(images, probs)}, 0, 1, torch.device("cpu"))["b"][0]
    workers = min(os.cpu_count() or 1, len(images) // 4)
    return {
        "image_size": list(vol.image.shape[1:]),
        "ms_per_slice": 1e3 * statistics.median(one),
        "refine": _stats(one),
        "batch_slices": len(images),
        "batch_serial_slices_per_s": len(images) / t_serial,
        "batch_parallel_slices_per_s": len(images) / t_par,
        "batch_parallel_workers": workers,
        "parallel_speedup": t_serial / t_par,
    }


def series_prediction(cfg: BenchConfig, root: Path, device: torch.device) -> dict[str, Any]:
    """Wall time of :func:`lungseg.inference.predict` with ``crf=True`` on a phantom DICOM series.

    The run directory holds an untrained AttentionResUNet (the cost does not depend on the weights);
    the time covers DICOM reading, preprocessing, the forward passes, restoring to the native grid,
    the CRF, and writing the NIfTI mask. It runs once per precision the device does fast (fp32, and
    bf16 where :func:`lungseg.device.has_fast_bf16`); ``seconds_with_crf`` is the default
    precision's (``--precision auto``). The masks of the two precisions are compared voxel by voxel
    (with untrained weights this checks the numerics, not accuracy: see ``benchmarks/NOTES.md`` for a
    trained model).
    """
    import nibabel as nib

    from lungseg.data.dicom import write_dicom_series
    from lungseg.device import has_fast_bf16, resolve_precision
    from lungseg.data.phantom import PhantomConfig, generate_patient
    from lungseg.inference import predict
    from lungseg.preprocess import Fingerprint
    from lungseg.training import TrainConfig

    vol, _ = generate_patient(1, PhantomConfig(image_size=cfg.image_size, n_slices=cfg.series_slices))
    series = root / "series"
    write_dicom_series(vol, series)
    run = root / "run"
    run.mkdir()
    TrainConfig(model="attention", base_channels=cfg.base_channels, depth=cfg.depth,
                image_size=cfg.image_size).to_json(run / "config.json")
    Fingerprint(mean=-500.0, std=450.0, image_size=cfg.image_size).to_json(run / "fingerprint.json")
    model = build_bench_model("attention_resunet", cfg.base_channels, cfg.depth)
    torch.save({"model": model.state_dict(), "epoch": 0}, run / "best.pt")
    precisions = ["fp32"] + (["bf16"] if has_fast_bf16(device) else [])
    runs: dict[str, dict[str, Any]] = {}
    masks: dict[str, np.ndarray] = {}
    for precision in precisions:
        out = root / f"prediction-{precision}.nii.gz"
        start = time.perf_counter()
        predict(run, series, out, crf=True, device=str(device), precision=precision, progress=False)
        seconds = time.perf_counter() - start
        runs[precision] = {"seconds_with_crf": seconds, "slices_per_s_with_crf": cfg.series_slices / seconds}
        masks[precision] = np.asarray(nib.load(str(out)).dataobj) > 0
    default = resolve_precision("auto", device)
    result: dict[str, Any] = {
        "slices": cfg.series_slices, "image_size": cfg.image_size, "default_precision": default,
        "seconds_with_crf": runs[default]["seconds_with_crf"],
        "slices_per_s_with_crf": runs[default]["slices_per_s_with_crf"], "precisions": runs,
        "what": "lungseg.inference.predict(run, dicom_series, out.nii.gz, crf=True, precision=...): read, segment,"
                " CRF, write",
    }
    if "bf16" in masks:
        a, b = masks["fp32"], masks["bf16"]
        union = int((a | b).sum())
        result["bf16_vs_fp32"] = {
            "voxels_differing_fraction": float((a != b).mean()),
            "mask_dice": 2 * int((a & b).sum()) / (int(a.sum()) + int(b.sum())) if union else 1.0,
            "weights": "untrained weights: a numerics check",
        }
    return result


# ---------------------------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------------------------
def run_bench(
    quick: bool = False,
    device: str = "auto",
    out_dir: str | os.PathLike[str] | None = "results/bench",
    *,
    config: BenchConfig | None = None,
    threads: int | None = None,
    compile_models: bool | None = None,
    sections: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the benchmark and write ``bench.json``, ``bench.md`` and the chart ``bench.png`` to ``out_dir``.

    Args:
        quick: tiny sizes and few iterations (< 1 minute on 2 CPU cores); numbers are not meaningful.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        out_dir: output folder (created); ``None`` writes nothing.
        config: explicit sizes; default :data:`FULL` (or :data:`QUICK`), with larger batches on CUDA.
        threads: torch intra-op threads for the run (default: leave torch's setting).
        compile_models: add ``torch.compile`` variants (default: on CUDA only).
        sections: subset of ``("models", "memory", "crf", "data", "predict")``; default all.
        progress: show a tqdm bar.

    Returns:
        The JSON-serialisable result (also written to ``out_dir/bench.json``).
    """
    from lungseg.device import resolve_device
    from lungseg.models import count_parameters, forward_flops

    all_sections = ("models", "memory", "crf", "data", "predict")
    chosen = tuple(all_sections if sections is None else sections)
    unknown = sorted(set(chosen) - set(all_sections))
    if unknown:
        raise LungsegError(f"--sections: unknown {unknown}; expected some of {list(all_sections)}")
    dev = resolve_device(device)
    if dev.type not in ("cpu", "cuda"):
        raise LungsegError(f"--device {device}: the benchmark supports cpu and cuda, got {dev.type}")
    cfg = config or (QUICK if quick else FULL)
    if config is None and dev.type == "cuda" and not quick:
        cfg = replace(cfg, **CUDA_BATCHES)
    started = time.time()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    names = [n for n in MODEL_NAMES if n != "monai_attention_unet" or _monai_available()]
    variants = _variants(dev, compile_models)
    cudnn_before = torch.backends.cudnn.benchmark
    result: dict[str, Any] = {
        "quick": bool(quick),
        "config": asdict(cfg),
        "device": str(dev),
        "threads": {"intra_op": None, "inter_op": torch.get_num_interop_threads(), "cpu_count": os.cpu_count()},
        "protocol": (f"{cfg.warmup} warm-up iteration(s) per model and variant, then {cfg.repeats} timed iterations"
                     f" ({cfg.latency_repeats} for latency) interleaved across models and the ceiling matmul;"
                     " median reported; MFU = achieved FLOP/s over the matmul's median FLOP/s in the same rounds;"
                     " training = forward + hybrid loss (eq. 9) + backward + Adam step in train mode;"
                     " inference = eval mode under torch.inference_mode; train FLOPs = 3 x forward"),
        "models": {},
        "notes": [],
    }
    if "monai_attention_unet" not in names:
        result["notes"].append("MONAI not installed: AttentionUnet not measured (pip install monai)")
    n_steps = sum(1 for s in chosen if s != "models")
    if "models" in chosen:
        for v in variants:
            warm = _warmup(cfg, v)
            n_steps += len(names) * (3 * warm + 2 * cfg.repeats + cfg.latency_repeats) + 2 * (warm + cfg.repeats)
    bar = tqdm(total=n_steps, desc="lungseg bench", unit="step", disable=not progress)
    try:
        with _threads(threads), _matmul_like_convolutions(dev), \
                tempfile.TemporaryDirectory(prefix="lungseg-bench-") as tmp:
            result["threads"]["intra_op"] = torch.get_num_threads()
            if dev.type == "cuda":
                result["notes"].append(
                    f"fp32 on CUDA: convolutions and the ceiling matmul both {'use' if torch.backends.cudnn.allow_tf32 else 'avoid'}"
                    " TF32 tensor cores (torch.backends.cudnn.allow_tf32)")
            if dev.type == "cuda":
                torch.backends.cudnn.benchmark = True
            root = Path(tmp)
            sec: dict[str, float] = {}
            result["section_seconds"] = sec
            t0 = time.perf_counter()
            models = {n: build_bench_model(n, cfg.base_channels, cfg.depth) for n in names}
            for name, model in models.items():
                result["models"][name] = {"label": MODEL_LABELS[name], "parameters": count_parameters(model),
                                          "forward_flops": forward_flops(model, cfg.image_size, 1), "variants": {}}
            ceilings = {"fp32": matmul_ceiling(dev, cfg.matmul_size, torch.float32)}
            if any(v.dtype == "bf16" for v in variants):
                ceilings["bf16"] = matmul_ceiling(dev, cfg.matmul_size, torch.bfloat16)
            result["ceiling"] = ceilings
            result["variant_ceilings"] = {}
            if "models" in chosen:
                for variant in variants:
                    bar.set_postfix_str(variant.name)
                    measured, ceiling = model_throughput(models, cfg, dev, variant, bar)
                    result["variant_ceilings"][variant.name] = ceiling
                    for name, m in measured.items():
                        flops = result["models"][name]["forward_flops"]
                        m["train_mfu"] = 3 * flops * m["train_images_per_s"] / (ceiling["train_rounds_tflops"] * 1e12)
                        m["infer_mfu"] = flops * m["infer_images_per_s"] / (ceiling["infer_rounds_tflops"] * 1e12)
                        m["variant"] = asdict(variant)
                        result["models"][name]["variants"][variant.name] = m
                result["ratios"] = _ratios(result["models"], [v.name for v in variants])
            sec["models"] = time.perf_counter() - t0
            if "memory" in chosen:
                t0 = time.perf_counter()
                bar.set_postfix_str("memory")
                mem = cpu_peak_memory(names, cfg) if dev.type == "cpu" else cuda_peak_memory(models, cfg, dev)
                for name, m in mem.items():
                    result["models"][name]["memory"] = m
                bar.update(1)
                sec["memory"] = time.perf_counter() - t0
            study: Path | None = None
            if {"data", "crf"} & set(chosen):
                bar.set_postfix_str("phantom")
                phantom = _phantom_inputs(cfg, root)
                study = phantom["study"]
                result["phantom_generation"] = phantom["generation"]
            if "crf" in chosen and study is not None:
                t0 = time.perf_counter()
                bar.set_postfix_str("crf")
                result["crf"] = crf_speed(cfg, study)
                sec["crf"] = time.perf_counter() - t0
                bar.update(1)
            if "data" in chosen and study is not None:
                t0 = time.perf_counter()
                bar.set_postfix_str("data")
                consume = None
                attn = result["models"].get("attention_resunet", {}).get("variants", {})
                if attn:
                    consume = max(v["train_images_per_s"] for v in attn.values())
                result["data_pipeline"] = data_pipeline(cfg, study, root, consume, dev)
                bar.update(1)
                sec["data"] = time.perf_counter() - t0
            if "predict" in chosen:
                bar.set_postfix_str("predict")
                t0 = time.perf_counter()
                result["series_prediction"] = series_prediction(cfg, root, dev)
                bar.update(1)
                sec["predict"] = time.perf_counter() - t0
    finally:
        bar.close()
        torch.backends.cudnn.benchmark = cudnn_before
    result["load_average"] = {"start": load_before, "end": os.getloadavg() if hasattr(os, "getloadavg") else None}
    result["provenance"] = collect(str(dev), started)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / "bench.md").write_text(write_markdown(result))
        fig = plot_bench(result)
        if fig is not None:
            fig.savefig(out / "bench.png", dpi=120)
    return result


def _paired(ours: Sequence[float], ref: Sequence[float]) -> float:
    """Median over rounds of ``ref / ours`` (times taken back to back, so a load change cancels)."""
    return statistics.median(r / o for o, r in zip(ours, ref))


def _ratios(models: dict[str, Any], variant_names: Sequence[str]) -> dict[str, Any]:
    """AttentionResUNet / MONAI AttentionUnet ratios per variant (throughput: >1 faster; latency: <1 faster).

    ``*_paired`` ratios are the median over the interleaved rounds of the per-round ratio: the two
    models ran back to back in each round, so a change of machine load between rounds cancels out.
    The unpaired ratios divide the medians.
    """
    ours, ref = models.get("attention_resunet"), models.get("monai_attention_unet")
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


# ---------------------------------------------------------------------------------------------------------------
# markdown
# ---------------------------------------------------------------------------------------------------------------
def _f(x: Any, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _load(avg: Sequence[float] | None) -> str:
    return "–" if not avg else f"{avg[0]:.1f}"


def write_markdown(result: dict[str, Any]) -> str:
    """The benchmark as markdown tables (the book's performance appendix includes this text)."""
    cfg = result["config"]
    prov = result.get("provenance", {})
    git = prov.get("git", {}) or {}
    lines = [
        f"# lungseg bench{' (quick: tiny sizes, numbers not meaningful)' if result.get('quick') else ''}",
        "",
        f"Device: {prov.get('device', result['device'])}; torch {prov.get('packages', {}).get('torch')}, "
        f"MONAI {prov.get('packages', {}).get('monai')}; threads: {result['threads']['intra_op']} intra-op, "
        f"{result['threads']['inter_op']} inter-op; commit {(git.get('commit') or 'unknown')[:12]}"
        f"{' (modified)' if git.get('dirty') else ''}; {prov.get('time_utc')}; 1-minute load average at start / end "
        f"{_load(result['load_average']['start'])} / {_load(result['load_average']['end'])}.",
        "",
        f"Input `(B, 1, {cfg['image_size']}, {cfg['image_size']})`, base width {cfg['base_channels']}, depth "
        f"{cfg['depth']}; training batch {cfg['train_batch']}, inference batch {cfg['infer_batch']}. {result['protocol']}.",
        "",
    ]
    models = result["models"]
    lines += ["## Networks", "",
              "| network | parameters | forward GFLOPs / image | train peak mem (MB) | inference peak mem (MB) |",
              "|---|---:|---:|---:|---:|"]
    for m in models.values():
        mem = m.get("memory", {})
        lines.append(f"| {m['label']} | {m['parameters']:,} | {m['forward_flops'] / 1e9:.2f} | "
                     f"{_f(mem.get('train_peak_delta_mb'), 1)} | {_f(mem.get('infer_peak_delta_mb'), 1)} |")
    lines.append("")
    ceil = result.get("ceiling", {})
    if ceil:
        lines += ["Ceiling at the start of the run: " + "; ".join(
            f"{k} matmul {c['n']}x{c['n']}: {c['tflops_median'] * 1e3:,.1f} GFLOP/s median, "
            f"{c['tflops_best'] * 1e3:,.1f} best" for k, c in ceil.items()) + ".", ""]
    vceil = result.get("variant_ceilings", {})
    if vceil:
        lines += ["Ceiling sampled inside the timed rounds (the MFU denominator): " + "; ".join(
            f"{v}: {c['train_rounds_tflops'] * 1e3:,.1f} GFLOP/s (training rounds), "
            f"{c['infer_rounds_tflops'] * 1e3:,.1f} (inference rounds)" for v, c in vceil.items()) + ".", ""]
    variant_names = list(dict.fromkeys(v for m in models.values() for v in m["variants"]))
    if variant_names:
        lines += ["## Throughput", "",
                  "| variant | network | train img/s | train MFU | inference img/s | inference MFU | latency 1 slice (ms) |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for v in variant_names:
            for m in models.values():
                r = m["variants"].get(v)
                if r:
                    lines.append(f"| {v} | {m['label']} | {r['train_images_per_s']:.2f} | {100 * r['train_mfu']:.1f} % | "
                                 f"{r['infer_images_per_s']:.2f} | {100 * r['infer_mfu']:.1f} % | {r['latency_ms']:.1f} |")
        lines.append("")
    ratios = result.get("ratios", {})
    if ratios:
        lines += ["## AttentionResUNet vs MONAI AttentionUnet (same run, matched width)", "",
                  "| variant | train throughput ratio (target ≥ 1.3) | inference throughput ratio | latency ratio (target ≤ 1) |",
                  "|---|---:|---:|---:|"]
        for v, r in ratios.items():
            lines.append(f"| {v} | {r['train_throughput_ratio_paired']:.2f} ({r['train_throughput_ratio']:.2f}) | "
                         f"{r['infer_throughput_ratio_paired']:.2f} ({r['infer_throughput_ratio']:.2f}) | "
                         f"{r['latency_ratio_paired']:.2f} ({r['latency_ratio']:.2f}) |")
        lines += ["", "Each ratio is the median over the interleaved rounds of the per-round ratio (the models ran"
                  " back to back, so load changes cancel); in brackets the ratio of the medians.", ""]
    rows = []
    if "phantom_generation" in result:
        g = result["phantom_generation"]
        rows.append(f"| phantom generation ({g['patients']} patients, {g['slices']} slices) | {g['slices_per_s']:.1f} slices/s |")
    if "crf" in result:
        c = result["crf"]
        rows.append(f"| dense CRF, one {c['image_size'][0]}x{c['image_size'][1]} slice | {c['ms_per_slice']:.1f} ms |")
        rows.append(f"| dense CRF `refine_batch`, {c['batch_slices']} slices, {c['batch_parallel_workers']} workers | "
                    f"{c['batch_parallel_slices_per_s']:.1f} slices/s ({c['parallel_speedup']:.2f}x serial) |")
    if "data_pipeline" in result:
        d = result["data_pipeline"]
        for key, s in d["stages"].items():
            head = f" ({s['headroom_over_training']:.1f}x training's rate)" if "headroom_over_training" in s else ""
            rows.append(f"| data: {s['what']} | {s['slices_per_s']:,.1f} slices/s{head} |")
        if d.get("training_consumes_slices_per_s"):
            rows.append(f"| training consumes (AttentionResUNet, fastest variant) | "
                        f"{d['training_consumes_slices_per_s']:.2f} slices/s |")
    if "series_prediction" in result:
        p = result["series_prediction"]
        for precision, r in p.get("precisions", {"": p}).items():
            flag = f" --precision {precision}" if precision else ""
            rows.append(f"| `lungseg predict --crf{flag}`, {p['slices']}-slice {p['image_size']}² DICOM series"
                        f" (target < 60 s) | {r['seconds_with_crf']:.1f} s |")
        agree = p.get("bf16_vs_fp32")
        if agree:
            rows.append(f"| bf16 vs fp32 masks of that series ({agree['weights']}) | "
                        f"{100 * agree['voxels_differing_fraction']:.4f} % of voxels differ, mask Dice "
                        f"{agree['mask_dice']:.4f} |")
    if rows:
        lines += ["## Pipeline", "", "| stage | rate |", "|---|---:|", *rows, ""]
    for note in result.get("notes", []):
        lines.append(f"Note: {note}")
    return "\n".join(lines).rstrip() + "\n"


def plot_bench(result: dict[str, Any]) -> Any:
    """Training throughput and single-slice latency of every network under every variant, side by side.

    Returns:
        A :class:`matplotlib.figure.Figure` (drawn without pyplot, so no display backend is needed), or
        ``None`` when the run measured no models.
    """
    from matplotlib.figure import Figure

    models = {k: m for k, m in result["models"].items() if m.get("variants")}
    if not models:
        return None
    variants = list(dict.fromkeys(v for m in models.values() for v in m["variants"]))
    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    width = 0.8 / len(models)
    x = np.arange(len(variants))
    panels = (("train_images_per_s", "training, images/s (higher is faster)"),
              ("latency_ms", "one-slice latency, ms (lower is faster)"))
    for ax, (key, title) in zip(axes, panels):
        for i, (name, m) in enumerate(models.items()):
            values = [m["variants"].get(v, {}).get(key, np.nan) for v in variants]
            bars = ax.bar(x + (i - (len(models) - 1) / 2) * width, values, width, label=m["label"])
            ax.bar_label(bars, fmt="%.2f" if key != "latency_ms" else "%.0f", fontsize=7, padding=1)
        ax.set_xticks(x, variants, rotation=15, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.08)  # room for the bar labels
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(models), fontsize=8)
    size = result["config"]["image_size"]
    fig.suptitle(f"lungseg bench on {result['device']}: {size}x{size}, width {result['config']['base_channels']}"
                 f"{' (quick: numbers not meaningful)' if result.get('quick') else ''}", fontsize=11)
    return fig


# ---------------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``lungseg bench`` flags to ``parser`` (used by :func:`main` and the ``lungseg`` CLI)."""
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few iterations, < 1 minute (default: off)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--out", default="results/bench", help="output folder for bench.json and bench.md "
                                                               "(default: results/bench)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--compile", dest="compile_models", action=argparse.BooleanOptionalAction, default=None,
                        help="add torch.compile variants (default: on CUDA only)")
    parser.add_argument("--sections", default=None,
                        help="comma list of models,memory,crf,data,predict (default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="timed iterations (default: 5; quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default: 1)")
    parser.add_argument("--train-batch", type=int, default=None, help="training batch (default: 4 CPU, 32 CUDA)")
    parser.add_argument("--infer-batch", type=int, default=None, help="inference batch (default: 8 CPU, 128 CUDA)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (default: off)")
    return parser


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`run_bench` from parsed :func:`add_arguments` flags and print the markdown summary."""
    from lungseg.device import resolve_device

    overrides = {k: v for k, v in (("repeats", args.repeats), ("warmup", args.warmup),
                                   ("train_batch", args.train_batch), ("infer_batch", args.infer_batch))
                 if v is not None}
    config = None
    if overrides:
        base = QUICK if args.quick else FULL
        if resolve_device(args.device).type == "cuda" and not args.quick:
            base = replace(base, **CUDA_BATCHES)
        try:
            config = replace(base, **overrides)
        except ValueError as exc:
            raise LungsegError(str(exc).replace("BenchConfig.", "--").replace("_", "-")) from None
    if args.threads is not None and args.threads < 1:
        raise LungsegError(f"--threads must be a positive integer, got {args.threads}")
    sections = [s.strip() for s in args.sections.split(",") if s.strip()] if args.sections else None
    result = run_bench(quick=args.quick, device=args.device, out_dir=args.out, config=config, threads=args.threads,
                       compile_models=args.compile_models, sections=sections, progress=not args.quiet)
    print(write_markdown(result))
    print(f"wrote {Path(args.out) / 'bench.json'} and {Path(args.out) / 'bench.md'}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``lungseg bench [flags]``; returns 0 (errors propagate to the ``lungseg`` CLI, which prints them)."""
    parser = add_arguments(argparse.ArgumentParser(
        prog="lungseg bench", description=__doc__.split("\n\n")[0]))
    run_from_args(parser.parse_args(argv))
    return 0


if __name__ == "__main__":  # pragma: no cover
    try:
        sys.exit(main())
    except LungsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
