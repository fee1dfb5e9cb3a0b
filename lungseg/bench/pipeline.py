"""The data pipeline that feeds training, and the phantom generator that makes the bench's data."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from lungseg.bench.harness import BenchConfig, nominal_fingerprint

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


def _pass_seconds(loader: Any) -> float:
    """Seconds of one pass over ``loader``."""
    start = time.perf_counter()
    for _batch in loader:
        pass
    return time.perf_counter() - start


def _timed_call(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


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

    dataset = open_dataset(study)
    pids = list(dataset.patient_ids)
    n_slices = cfg.phantom_patients * cfg.phantom_slices
    _, dicom_s = _timed_call(lambda: [read_dicom_series(study / pid / "ct") for pid in pids])
    fingerprint, cache = nominal_fingerprint(cfg.image_size), root / "slice-cache"
    _, build_s = _timed_call(SliceDataset, dataset, pids, fingerprint, cfg.image_size, cache_dir=cache)
    cached, load_s = _timed_call(SliceDataset, dataset, pids, fingerprint, cfg.image_size, cache_dir=cache)
    if not cached.cache_hit:
        raise RuntimeError(f"{cache}: the second SliceDataset did not hit the cache written by the first")

    def loader(ds: SliceDataset, **kwargs: Any) -> DataLoader:
        return DataLoader(ds, batch_size=cfg.train_batch, shuffle=True, generator=torch.Generator().manual_seed(0),
                          **kwargs)

    iter_s = _pass_seconds(loader(cached, num_workers=0))
    augmented = SliceDataset(dataset, pids, fingerprint, cfg.image_size, cache_dir=cache, augment=True)
    aug_s = _pass_seconds(loader(augmented, num_workers=0))
    workers = min(4, os.cpu_count() or 1)
    pinned = device is not None and device.type == "cuda"
    pooled = loader(augmented, num_workers=workers, persistent_workers=True, pin_memory=pinned)
    passes = [_pass_seconds(pooled) for _ in range(3)]
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
            "what": f"the same from {workers} persistent worker processes{', pinned memory' if pinned else ''}",
        },
    }
    out: dict[str, Any] = {"slices": n_slices, "stages": stages, "training_consumes_slices_per_s": consume_rate}
    if consume_rate:
        for stage in stages.values():
            stage["headroom_over_training"] = stage["slices_per_s"] / consume_rate
    return out
