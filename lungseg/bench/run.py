"""One benchmark run: resolve the settings, run the chosen measurements in order, write the files."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lungseg.bench.crf import crf_speed
from lungseg.bench.harness import (
    BenchConfig,
    Variant,
    default_config,
    matmul_ceiling,
    matmul_like_convolutions,
    torch_threads,
    variants,
    warmup_calls,
)
from lungseg.bench.memory import cpu_peak_memory, cuda_peak_memory
from lungseg.bench.networks import MONAI_REFERENCE, NETWORKS, PAPER_MODEL, build_bench_model, label, monai_available
from lungseg.bench.pipeline import data_pipeline, phantom_study
from lungseg.bench.prediction import real_series_prediction, series_prediction
from lungseg.bench.report import write_outputs
from lungseg.bench.throughput import add_mfu, model_throughput, ratios
from lungseg.bench.training_step import training_step
from lungseg.errors import LungsegError
from lungseg.provenance import collect

__all__ = ["SECTIONS", "run_bench"]

#: The measurements a run can choose (``--sections``), in the order they run.
SECTIONS: tuple[str, ...] = ("models", "memory", "crf", "train_step", "data", "predict")


def _load_average() -> Any:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def _header(quick: bool, cfg: BenchConfig, dev: torch.device) -> dict[str, Any]:
    """The result's settings, before anything is measured."""
    return {
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


def _total_steps(chosen: Sequence[str], cfg: BenchConfig, measured: Sequence[Variant], n_models: int) -> int:
    """Progress-bar steps: one per section, and one per timed or warm-up call of the models section."""
    n = sum(1 for s in chosen if s != "models")
    if "models" in chosen:
        for v in measured:
            warm = warmup_calls(cfg, v)
            n += n_models * (3 * warm + 2 * cfg.repeats + cfg.latency_repeats) + 2 * (warm + cfg.repeats)
    return n


@contextlib.contextmanager
def _section(name: str, seconds: dict[str, float], bar: Any) -> Iterator[None]:
    """Time one section into ``seconds[name]`` and advance the progress bar by one step."""
    bar.set_postfix_str(name)
    start = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - start
    bar.update(1)


def _networks(result: dict[str, Any], names: Sequence[str], cfg: BenchConfig, dev: torch.device,
              measured: Sequence[Variant], timed_rounds: bool, bar: Any) -> dict[str, torch.nn.Module]:
    """Size and cost of every network, the ceilings, and (``timed_rounds``) throughput under every variant."""
    from lungseg.models import count_parameters, forward_flops

    models = {n: build_bench_model(n, cfg.base_channels, cfg.depth) for n in names}
    for name, model in models.items():
        result["models"][name] = {"label": label(name), "parameters": count_parameters(model),
                                  "forward_flops": forward_flops(model, cfg.image_size, 1), "variants": {}}
    result["ceiling"] = {"fp32": matmul_ceiling(dev, cfg.matmul_size, torch.float32)}
    if any(v.dtype == "bf16" for v in measured):
        result["ceiling"]["bf16"] = matmul_ceiling(dev, cfg.matmul_size, torch.bfloat16)
    result["variant_ceilings"] = {}
    if not timed_rounds:
        return models
    for variant in measured:
        bar.set_postfix_str(variant.name)
        per_model, ceiling = model_throughput(models, cfg, dev, variant, bar)
        result["variant_ceilings"][variant.name] = ceiling
        for name, m in per_model.items():
            add_mfu(m, result["models"][name]["forward_flops"], ceiling)
            m["variant"] = asdict(variant)
            result["models"][name]["variants"][variant.name] = m
    result["ratios"] = ratios(result["models"], [v.name for v in measured])
    return models


def _measure(result: dict[str, Any], chosen: Sequence[str], names: Sequence[str], cfg: BenchConfig,
             dev: torch.device, measured: Sequence[Variant], root: Path, bar: Any) -> None:
    """Run the chosen sections in order on the networks ``names``, filling ``result``."""
    if dev.type == "cuda":
        result["notes"].append(
            f"fp32 on CUDA: convolutions and the ceiling matmul both {'use' if torch.backends.cudnn.allow_tf32 else 'avoid'}"
            " TF32 tensor cores (torch.backends.cudnn.allow_tf32)")
        torch.backends.cudnn.benchmark = True
    sec: dict[str, float] = {}
    result["section_seconds"] = sec
    start = time.perf_counter()
    models = _networks(result, names, cfg, dev, measured, "models" in chosen, bar)
    sec["models"] = time.perf_counter() - start
    if "memory" in chosen:
        with _section("memory", sec, bar):
            mem = cpu_peak_memory(names, cfg) if dev.type == "cpu" else cuda_peak_memory(models, cfg, dev)
            for name, m in mem.items():
                result["models"][name]["memory"] = m
    if {"data", "crf", "train_step"} & set(chosen):
        bar.set_postfix_str("phantom")
        phantom = phantom_study(cfg, root)
        result["phantom_generation"] = phantom["generation"]
        if "crf" in chosen:
            with _section("crf", sec, bar):
                result["crf"] = crf_speed(cfg, phantom["study"])
        if "train_step" in chosen:
            with _section("train_step", sec, bar):
                ours = tuple(n for n in names if n != MONAI_REFERENCE)
                result["training_step"] = training_step(cfg, phantom["study"], dev, ours)
        if "data" in chosen:
            with _section("data", sec, bar):
                paper = result["models"].get(PAPER_MODEL, {}).get("variants", {})
                consume = max(v["train_images_per_s"] for v in paper.values()) if paper else None
                step = result.get("training_step", {}).get("models", {}).get(PAPER_MODEL, {})
                result["data_pipeline"] = data_pipeline(cfg, phantom["study"], root, consume, dev,
                                                        step.get("fixed_batch_patches_per_s"))
    if "predict" in chosen:
        with _section("predict", sec, bar):
            result["series_prediction"] = series_prediction(cfg, root, dev)
            real = real_series_prediction(cfg, root, dev, quick=bool(result.get("quick")))
            result["real_series_prediction"] = real
            if "skipped" in real:
                result["notes"].append(f"real-series prediction not measured: {real['skipped']}")


#: The sections that run the dense CRF (pydensecrf2): ``crf`` times it, ``predict`` times ``predict --crf``.
CRF_SECTIONS: tuple[str, ...] = ("crf", "predict")


def _without_crf_sections(chosen: Sequence[str], notes: list[str]) -> tuple[str, ...]:
    """``chosen`` less :data:`CRF_SECTIONS` when pydensecrf2 is missing, said in ``notes`` and as a warning,
    so that a machine without the CRF gets the other sections instead of a traceback after them."""
    from lungseg.crf import MISSING_CRF, crf_available

    dropped = [s for s in chosen if s in CRF_SECTIONS]
    if not dropped or crf_available():
        return tuple(chosen)
    kept = tuple(s for s in chosen if s not in CRF_SECTIONS)
    if not kept:
        raise LungsegError(f"--sections {','.join(chosen)}: nothing to measure without the CRF: {MISSING_CRF}")
    note = f"sections {', '.join(dropped)} not measured: {MISSING_CRF}"
    notes.append(note)
    warnings.warn(f"lungseg bench: {note}", stacklevel=3)
    return kept


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
        config: explicit sizes; default :data:`~lungseg.bench.harness.FULL` (or
            :data:`~lungseg.bench.harness.QUICK`), with larger batches on CUDA.
        threads: torch intra-op threads for the run (default: leave torch's setting).
        compile_models: add ``torch.compile`` variants (default: on CUDA only).
        sections: subset of :data:`SECTIONS` (``"models"``, ``"memory"``, ``"crf"``, ``"train_step"``,
            ``"data"``, ``"predict"``); default all.
        progress: show a tqdm bar.

    Returns:
        The JSON-serialisable result (also written to ``out_dir/bench.json``).
    """
    from lungseg.device import resolve_device

    chosen = tuple(SECTIONS if sections is None else sections)
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        raise LungsegError(f"--sections: unknown {unknown}; expected some of {list(SECTIONS)}")
    dev = resolve_device(device)
    if dev.type not in ("cpu", "cuda"):
        raise LungsegError(f"--device {device}: the benchmark supports cpu and cuda, got {dev.type}")
    cfg = config or default_config(quick, dev)
    started, load_before = time.time(), _load_average()
    measured = variants(dev, compile_models)
    names = [n for n in NETWORKS if n != MONAI_REFERENCE or monai_available()]
    result = _header(quick, cfg, dev)
    if MONAI_REFERENCE not in names:
        result["notes"].append("MONAI not installed: AttentionUnet not measured (pip install monai)")
    chosen = _without_crf_sections(chosen, result["notes"])
    cudnn_before = torch.backends.cudnn.benchmark
    bar = tqdm(total=_total_steps(chosen, cfg, measured, len(names)), desc="lungseg bench", unit="step",
               disable=not progress)
    try:
        with torch_threads(threads), matmul_like_convolutions(dev), \
                tempfile.TemporaryDirectory(prefix="lungseg-bench-") as tmp:
            result["threads"]["intra_op"] = torch.get_num_threads()
            _measure(result, chosen, names, cfg, dev, measured, Path(tmp), bar)
    finally:
        bar.close()
        torch.backends.cudnn.benchmark = cudnn_before
    result["load_average"] = {"start": load_before, "end": _load_average()}
    result["provenance"] = collect(str(dev), started)
    if out_dir is not None:
        write_outputs(result, out_dir)
    return result
