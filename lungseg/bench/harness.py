"""The bench harness: sizes, variants, the timing protocol, the matmul ceiling and the training sampler.

Everything here is shared by the measurement modules (:mod:`lungseg.bench.throughput`,
:mod:`~lungseg.bench.memory`, :mod:`~lungseg.bench.training_step`, :mod:`~lungseg.bench.pipeline`,
:mod:`~lungseg.bench.crf`, :mod:`~lungseg.bench.prediction`); it imports no other module of the bench.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

__all__ = [
    "CUDA_BATCHES", "FULL", "QUICK", "BenchConfig", "Variant", "bench_sampler", "default_config", "interleaved",
    "matmul_ceiling", "matmul_like_convolutions", "matmul_step", "nominal_fingerprint", "stats", "sync", "timed",
    "torch_threads", "variants", "warmup_calls",
]


@dataclass(frozen=True)
class BenchConfig:
    """Sizes and repetition counts of one benchmark run.

    Attributes:
        image_size: side ``S`` of the ``(B, 1, S, S)`` network input.
        base_channels: width of the first level (MONAI gets ``base * 2**l`` channels per level).
        depth: number of down-sampling steps.
        train_batch: images (patches) per training step.
        patch_size: side ``P`` of the training crops of the training-step measurement and of the
            sampler stage of the data pipeline (``lungseg train``'s default is 128).
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
    patch_size: int = 128
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
        if self.patch_size % 2**self.depth or self.patch_size > self.image_size:
            raise ValueError(f"BenchConfig.patch_size={self.patch_size} must be a multiple of 2**depth={2**self.depth}"
                             f" and at most image_size={self.image_size}")
        if self.image_size < 32:
            raise ValueError(f"BenchConfig.image_size must be >= 32 (phantom minimum), got {self.image_size}")


FULL = BenchConfig()
QUICK = BenchConfig(image_size=64, base_channels=8, train_batch=2, patch_size=32, infer_batch=2, warmup=1, repeats=2,
                    latency_repeats=2, matmul_size=256, crf_slices=4, phantom_patients=1, phantom_slices=6,
                    series_slices=6)
# CUDA keeps the GPU busy with bigger batches; the CPU sizes would time the launch overhead.
CUDA_BATCHES: dict[str, int] = {"train_batch": 32, "infer_batch": 128, "matmul_size": 8192}


def default_config(quick: bool, device: torch.device) -> BenchConfig:
    """:data:`QUICK` or :data:`FULL`; the full sizes get :data:`CUDA_BATCHES` on CUDA."""
    if quick:
        return QUICK
    return replace(FULL, **CUDA_BATCHES) if device.type == "cuda" else FULL


def nominal_fingerprint(image_size: int) -> Any:
    """A :class:`~lungseg.preprocess.Fingerprint` with nominal CT statistics: the cost of the z-score
    (eq. 1) does not depend on them."""
    from lungseg.preprocess import Fingerprint

    return Fingerprint(mean=-500.0, std=450.0, image_size=image_size)


def bench_sampler(slices: Any, device: torch.device, patch_size: int | None) -> Any:
    """The :class:`~lungseg.training.patches.PatchSampler` ``lungseg train`` builds over ``slices`` (a
    :class:`~lungseg.data.slices.SliceDataset`), with :class:`~lungseg.config.TrainConfig`'s default
    foreground and tumour fractions and the default augmentation, on ``device``.

    Args:
        patch_size: side of the crops; ``None``: whole slices (the paper's recipe).
    """
    from lungseg.config import TrainConfig
    from lungseg.training.patches import PatchSampler

    train, fp = TrainConfig(), slices.fingerprint
    return PatchSampler(slices.images, slices.masks, patch_size=patch_size,
                        foreground_fraction=train.foreground_fraction, tumour_fraction=train.tumour_fraction,
                        augment=train.augment_config(), value_range=slices.normalised_range(),
                        intensity_scale=(fp.mean, fp.std, fp.intensity == "unit"), device=device)


# ---------------------------------------------------------------------------------------------------------------
# variants
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One execution setting applied identically to every network."""

    name: str
    dtype: str  # "fp32" or "bf16" (autocast)
    channels_last: bool
    compiled: bool

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.dtype == "bf16" else torch.float32


def variants(device: torch.device, compile_models: bool | None) -> list[Variant]:
    """The variants a run measures on ``device`` (see the package docstring)."""
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


def warmup_calls(cfg: BenchConfig, variant: Variant) -> int:
    """Untimed calls per step: compiled graphs need two more to settle (one compilation per mode and shape)."""
    return cfg.warmup + (2 if variant.compiled else 0)


# ---------------------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call of ``fn``, synchronising the device before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(steps: dict[str, Callable[[], Any]], warmup: int, repeats: int, device: torch.device,
                bar: Any = None) -> dict[str, list[float]]:
    """Seconds of each step: ``warmup`` untimed calls each, then ``repeats`` rounds over all steps."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
            if bar is not None:
                bar.update(1)
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for key, fn in steps.items():
            times[key].append(timed(fn, device))
            if bar is not None:
                bar.update(1)
    return times


def stats(seconds: Sequence[float]) -> dict[str, Any]:
    """Median, extremes and the rounded samples of a list of timings."""
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
            "repeats": len(seconds), "times_s": [round(t, 6) for t in seconds]}


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
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


# ---------------------------------------------------------------------------------------------------------------
# the ceiling
# ---------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def matmul_like_convolutions(device: torch.device) -> Iterator[None]:
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


def matmul_step(device: torch.device, n: int, dtype: torch.dtype) -> Callable[[], None]:
    """One ``(n, n) @ (n, n)`` product (``2 n^3`` FLOPs) into a preallocated output, as a timeable call."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)

    def step() -> None:
        torch.mm(a, b, out=out)

    return step


def matmul_ceiling(device: torch.device, n: int, dtype: torch.dtype, warmup: int = 2, repeats: int = 5) -> dict[str, Any]:
    """FLOP/s of an ``(n, n) @ (n, n)`` product (``2 n^3`` FLOPs): the machine's practical ceiling.

    Returns:
        ``{"n", "dtype", "flops", "median_s", "tflops_median", "tflops_best", ...}``.
    """
    times = interleaved({"mm": matmul_step(device, n, dtype)}, warmup, repeats, device)["mm"]
    flops = 2 * n**3
    st = stats(times)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "flops": flops, **st,
            "tflops_median": flops / st["median_s"] / 1e12, "tflops_best": flops / st["min_s"] / 1e12}
