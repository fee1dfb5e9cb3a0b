"""The data pipeline that feeds training (DICOM, slice cache, the patch sampler), and the phantom generator
that makes the bench's data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from lungseg.bench.harness import BenchConfig, bench_sampler, interleaved, nominal_fingerprint, stats

__all__ = ["data_pipeline", "phantom_study"]


def phantom_study(cfg: BenchConfig, root: Path) -> dict[str, Any]:
    """Generate the phantom study under ``root`` (timed).

    Returns:
        ``{"study": its folder (for the data-pipeline and CRF measurements), "generation": the rate}``.
    """
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


def _timed_call(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def _sampler_passes(cfg: BenchConfig, cached: Any, device: torch.device) -> dict[str, dict[str, Any]]:
    """Patches/s and whole slices/s of the training sampler: one timed call is one pass of
    ``len(cached) // train_batch`` batches drawn (CPU) and rendered (``device``), as training makes them."""
    steps, batch = max(1, len(cached) // cfg.train_batch), cfg.train_batch
    samplers = {"patches": bench_sampler(cached, device, cfg.patch_size), "slices": bench_sampler(cached, device, None)}

    def one_pass(sampler: Any) -> Any:
        def run() -> None:
            for plan in sampler.epoch_plans(0, 0, steps, batch):
                sampler.render(plan)
        return run

    times = interleaved({k: one_pass(s) for k, s in samplers.items()}, cfg.warmup, cfg.repeats, device)
    where = f"on {device.type}, batch {batch}, default AugmentConfig, one affine_grid/grid_sample per batch"
    p, s = cfg.patch_size, cfg.image_size
    return {
        "sampler_patches": {"patches_per_s": steps * batch / stats(times["patches"])["median_s"], "patch_size": p,
                            "what": f"PatchSampler plan + render of {p}x{p} patches from cached {s}x{s} slices ({where})"},
        "sampler_slices": {"slices_per_s": steps * batch / stats(times["slices"])["median_s"],
                           "what": f"the same for whole {s}x{s} slices (patch_size None)"},
    }


def data_pipeline(cfg: BenchConfig, study: Path, root: Path, consume_rate: float | None,
                  device: torch.device | None = None, consume_patches: float | None = None) -> dict[str, Any]:
    """Rates of every stage that feeds training, and their headroom over the training consumption rate.

    The stages read the phantom's DICOM series, build the slice dataset from DICOM (cache miss) and
    from its cache, then draw and render training batches with the
    :class:`~lungseg.training.patches.PatchSampler` ``lungseg train`` uses, on ``device``: patches of
    ``cfg.patch_size`` and whole slices. Slice rates are compared with ``consume_rate`` (whole slices/s
    of the paper's network in the models section), the patch rate with ``consume_patches`` (patches/s of
    the paper's network on a fixed batch in the training-step section); ``None``: no headroom.
    On the CPU the sampler shares the cores with the network: its share of the step is what the
    training-step section reports.
    """
    from lungseg.data import open_dataset
    from lungseg.data.dicom import read_dicom_series
    from lungseg.data.slices import SliceDataset

    device = device or torch.device("cpu")
    dataset = open_dataset(study)
    pids = list(dataset.patient_ids)
    n_slices = cfg.phantom_patients * cfg.phantom_slices
    _, dicom_s = _timed_call(lambda: [read_dicom_series(study / pid / "ct") for pid in pids])
    fingerprint, cache = nominal_fingerprint(cfg.image_size), root / "slice-cache"
    _, build_s = _timed_call(SliceDataset, dataset, pids, fingerprint, cfg.image_size, cache_dir=cache)
    cached, load_s = _timed_call(SliceDataset, dataset, pids, fingerprint, cfg.image_size, cache_dir=cache)
    if not cached.cache_hit:
        raise RuntimeError(f"{cache}: the second SliceDataset did not hit the cache written by the first")
    stages = {
        "dicom_read": {"slices_per_s": n_slices / dicom_s, "what": "read_dicom_series (pydicom, HU)"},
        "dataset_from_dicom": {"slices_per_s": n_slices / build_s,
                               "what": "SliceDataset cache miss: DICOM + NIfTI read, preprocess_slices, cache write"},
        "dataset_from_cache": {"slices_per_s": n_slices / load_s,
                               "what": "SliceDataset cache hit (memory-mapped arrays)"},
        **_sampler_passes(cfg, cached, device),
    }
    out: dict[str, Any] = {"slices": n_slices, "stages": stages, "training_consumes_slices_per_s": consume_rate}
    if consume_patches:
        out["training_consumes_patches_per_s"] = consume_patches
    for stage in stages.values():
        rate, consume = ((stage["patches_per_s"], consume_patches) if "patches_per_s" in stage
                         else (stage["slices_per_s"], consume_rate))
        if consume:
            stage["headroom_over_training"] = rate / consume
    return out
