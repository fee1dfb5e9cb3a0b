"""The paper's comparison on real CT: the grid's cells by patient-level cross-validation on real patients.

The phantom grid (:mod:`lungseg.experiment.grid`) has exact truth and unlimited patients but is not CT.
This module runs the same comparison, {UNet, AttentionResUNet} × {Dice, Focal, Hybrid} × CRF off/on,
on the 130 real 48×48 tumour patches of 13 Medical Segmentation Decathlon Task06 patients (2 mm,
intensities min-max scaled to [0, 1] per patch; ``../shared/realct/msd-task06-2mm-patches``):

* **Patients.** The file stores no patient ids. Its patches come in 13 runs of 10 whose tumour sizes
  agree within a run and jump between runs, so patient ``k`` is taken to be patches ``10k … 10k+9``
  (:data:`PATCHES_PER_PATIENT`; an inference from the data, stated in every results table).
* **Folds.** :data:`REAL_FOLDS` holds every patient out exactly once. For each fold, each (model, loss,
  seed) is trained on the other patients' patches with ``lungseg train``'s defaults (the settings found
  on real CT, ``benchmarks/NOTES.md``) but at the phantom grid's network width (8), in bf16 where the
  CPU has it, and for the epochs the caller gives (``scripts/run_real_grid.py``: 15, half the default),
  and predicts the held-out patients' patches, with and without the CRF.
* **Runs.** The out-of-fold predictions of one (model, loss, seed) cover all 13 patients once; they are
  scored like one run of the phantom grid (per-image table, :func:`lungseg.metrics.summarize`), and the
  cells and paired differences are formed by the phantom grid's own functions, so the intervals resample
  seeds and patients alike (:func:`lungseg.metrics.crossed_interval`).

Only the tables are kept (``results/real-patches/grid``): the 5 × runs checkpoints would be tens of MB.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.config import TrainConfig, config_differences
from lungseg.errors import DataError
from lungseg.experiment.grid import GridKey, Rows, grid_cells, grid_differences, run_name, write_results
from lungseg.experimentdir import ExperimentDir
from lungseg.files import write_csv, write_json
from lungseg.paths import portable, resolve

__all__ = [
    "PATCHES_PER_PATIENT",
    "REAL_FOLDS",
    "REAL_GRID_DIR",
    "REAL_PATCHES",
    "RealPatches",
    "load_real_patches",
    "fold_record",
    "is_scored",
    "real_train_config",
    "run_real_grid",
]

#: The real patches, relative to the repository root (``LUNGSEG_REAL_PATCHES`` overrides it).
REAL_PATCHES = "../shared/realct/msd-task06-2mm-patches/patches_13_patients.h5"
#: Consecutive patches of one (inferred) patient.
PATCHES_PER_PATIENT = 10
#: Where the real-CT grid is published, relative to the repository root.
REAL_GRID_DIR = "results/real-patches/grid"
#: Held-out patients of each fold: every one of the 13 patients is held out exactly once.
REAL_FOLDS: tuple[tuple[int, ...], ...] = ((0, 5, 10), (1, 6, 11), (2, 7, 12), (3, 8, 4), (9,))
#: Pixel size of the patches in mm.
PATCH_SPACING_MM = 2.0
PATIENT_RULE = (f"inferred: patches {PATCHES_PER_PATIENT}k..{PATCHES_PER_PATIENT}k+{PATCHES_PER_PATIENT - 1} "
                "are patient k (the file stores no ids; tumour sizes agree within such a run and jump between runs)")


@dataclasses.dataclass(frozen=True)
class RealPatches:
    """The real patches: ``images`` float32 ``(N, 48, 48)`` in [0, 1], ``masks`` uint8, ``patient_ids`` ``(N,)`` str."""

    images: np.ndarray
    masks: np.ndarray
    patient_ids: np.ndarray
    source: str
    sha256: str

    def patients(self) -> list[str]:
        return sorted(set(self.patient_ids.tolist()))


def real_patches_path() -> Path:
    """Where the real patches are read from: ``LUNGSEG_REAL_PATCHES``, else :data:`REAL_PATCHES`."""
    return resolve(os.environ.get("LUNGSEG_REAL_PATCHES", REAL_PATCHES))


def load_real_patches(path: str | os.PathLike[str] | None = None) -> RealPatches:
    """Read the real MSD patches (HDF5 datasets ``images`` and ``labels``, both ``(N, 1, H, W)``).

    Raises:
        FileNotFoundError: no file at ``path`` (the shared real-CT folder is absent).
        DataError: the file lacks the datasets, or their shapes disagree.
        ImportError: h5py is not installed (``pip install h5py``, in the ``bench`` extra).
    """
    file = Path(path) if path is not None else real_patches_path()
    if not file.is_file():
        raise FileNotFoundError(f"{file}: the real MSD patches are not here (the shared real-CT folder is absent?)")
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - h5py is in the bench extra that make venv installs
        raise ImportError("reading the real patches needs h5py: pip install h5py (the 'bench' extra)") from err
    with h5py.File(file, "r") as fh:
        missing = [k for k in ("images", "labels") if k not in fh]
        if missing:
            raise DataError(f"{file}: no dataset {missing[0]!r}; expected 'images' and 'labels' of shape (N, 1, H, W)")
        images, labels = np.asarray(fh["images"], dtype=np.float32), np.asarray(fh["labels"])
    if images.ndim != 4 or images.shape[1] != 1 or images.shape != labels.shape:
        raise DataError(f"{file}: images {images.shape} and labels {labels.shape} must both be (N, 1, H, W)")
    if len(images) % PATCHES_PER_PATIENT:
        raise DataError(f"{file}: {len(images)} patches is not a multiple of {PATCHES_PER_PATIENT} per patient")
    patient = np.arange(len(images)) // PATCHES_PER_PATIENT
    ids = np.array([f"msd-{k:02d}" for k in patient])
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    return RealPatches(images[:, 0], (labels[:, 0] > 0.5).astype(np.uint8), ids, portable(file), digest)


def real_train_config(model: str, loss: str, seed: int, data: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
    """One fold's training: ``lungseg train``'s defaults with the model, loss and seed of the cell, at the
    phantom grid's network width (``base_channels=8``) and in bf16 where the CPU has it, so that the real
    column costs about what the phantom grid does, and without test-time augmentation, as the grid was
    published before ``tta="auto"`` became the default (the phantom grid has none either); ``overrides``
    replace any field."""
    from lungseg.device import cpu_has_bf16

    values: dict[str, Any] = dict(data=str(data), model=model, loss=loss, seed=int(seed), base_channels=8,
                                  device="cpu", precision="bf16" if cpu_has_bf16() else "fp32", tta="none")
    values.update(overrides)
    return TrainConfig(**values)


def _fold_arrays(patches: RealPatches, held_out: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    test_ids = {f"msd-{k:02d}" for k in held_out}
    test = np.isin(patches.patient_ids, sorted(test_ids))
    return ~test, test


def _predict_fold(patches: RealPatches, train: np.ndarray, test: np.ndarray, config: TrainConfig, work: Path,
                  crf: Sequence[bool]) -> dict[bool, np.ndarray]:
    """Train ``config`` on the ``train`` patches (patient ids kept, so validation is by patient) and
    return the masks of the ``test`` patches, per CRF setting."""
    from lungseg.data.npz import write_npz
    from lungseg.inference import Predictor
    from lungseg.training import train as train_run

    data = work / "train.npz"
    write_npz(data, patches.images[train], patches.masks[train], patient_ids=patches.patient_ids[train],
              spacing=np.full((int(train.sum()), 2), PATCH_SPACING_MM), intensity="unit")
    run_dir = work / "run"
    train_run(dataclasses.replace(config, data=str(data)), run_dir, progress=False)
    predictor = Predictor.from_run_dir(run_dir, checkpoint="best", device="cpu", precision=config.precision)
    images = patches.images[test]
    probs = predictor.probabilities(images)
    return {bool(c): predictor.binarize(images, probs, bool(c)) for c in crf}


def score_run(pred: np.ndarray, patches: RealPatches, order: np.ndarray) -> tuple[dict[str, Any], Rows]:
    """A (model, loss, seed)'s out-of-fold masks ``pred`` (patches in ``order``) as the phantom grid
    scores a run: the evaluation summary and the per-image table."""
    from lungseg.evaluation.segmentation import per_image_rows, tumour_recall_undefined
    from lungseg.metrics import boundary_per_image, summarize

    masks, ids = patches.masks[order], patches.patient_ids[order]
    spacing = np.full((len(order), 2), PATCH_SPACING_MM)
    result = summarize(pred, masks, ids, spacing)
    per_image = boundary_per_image(pred, masks, spacing)
    with np.errstate(all="ignore"):
        means = [float(np.nanmean(col)) if np.isfinite(col).any() else None for col in per_image.T]
    result["boundary"] = {"per_image": {"hd95_mm": means[0], "surface_dice": means[1]}}
    result.update(tumour_recall_undefined("2D patches without a slice spacing"))
    slice_index = np.asarray(order) % PATCHES_PER_PATIENT
    rows = per_image_rows(pred, {"masks": masks, "patient_ids": ids, "slice_index": slice_index,
                                 "boundary": per_image})
    return result, [{k: str(v) for k, v in r.items()} for r in rows]


def fold_record(config: TrainConfig, folds: Sequence[Sequence[int]], patches: RealPatches) -> dict[str, Any]:
    """What a scored (model, loss, seed) was trained with: the fold's configuration, the folds, and the
    patch file's SHA-256 (so that other patches are never scored with these evaluations)."""
    return {"config": {k: v for k, v in config.to_dict().items() if k != "data"}, "folds": [list(f) for f in folds],
            "patches_sha256": patches.sha256}


def is_scored(run: Any, record: dict[str, Any], crf: Sequence[bool]) -> bool:
    """Whether ``run`` holds the evaluations of this fold ``record`` (so it is reused)."""
    if not run.folds_path.is_file() or not all(run.evaluation_path(bool(c)).is_file() for c in crf):
        return False
    saved = json.loads(run.folds_path.read_text(encoding="utf-8"))
    saved.pop("seconds", None)
    wanted = json.loads(json.dumps(record))
    saved_config, wanted_config = saved.pop("config"), wanted.pop("config")
    # configurations compared as runs are: a field added since the run was saved reads as what the run did
    older = TrainConfig.from_dict(saved_config, saved_run=True)
    return saved == wanted and not config_differences(older, TrainConfig.from_dict(wanted_config))


def _cross_validate(patches: RealPatches, config: TrainConfig, folds: Sequence[Sequence[int]],
                    crf: Sequence[bool]) -> dict[bool, tuple[dict[str, Any], Rows]]:
    """Train ``config`` once per fold and score the out-of-fold masks of all patients, per CRF setting."""
    order, preds = [], {bool(c): [] for c in crf}
    for fold in folds:
        train, test = _fold_arrays(patches, fold)
        with tempfile.TemporaryDirectory(prefix="lungseg-real-grid-") as tmp:
            for c, mask in _predict_fold(patches, train, test, config, Path(tmp), crf).items():
                preds[c].append(mask)
        order.append(np.flatnonzero(test))
    index = np.concatenate(order)
    return {c: score_run(np.concatenate(masks), patches, index) for c, masks in preds.items()}


def _progress(done: int, total: int, started: float, label: str) -> None:
    elapsed = time.perf_counter() - started
    eta = elapsed / done * (total - done) if done else math.nan
    print(f"[{done}/{total}] {label}  {elapsed / 60:.1f} min, about {eta / 60:.0f} min left", flush=True)


def run_real_grid(out_dir: str | os.PathLike[str], *, models: Sequence[str] = ("unet", "attention"),
                  losses: Sequence[str] = ("dice", "focal", "hybrid"), crf: Sequence[bool] = (False, True),
                  seeds: Sequence[int] = (0,), folds: Sequence[Sequence[int]] = REAL_FOLDS,
                  patches_path: str | os.PathLike[str] | None = None, **train_overrides: Any) -> dict[str, Any]:
    """The phantom grid's comparison on the real patches, by patient-level cross-validation.

    Args:
        out_dir: the results folder (the results table and its CSVs; one folder per (model, loss, seed)
            with the evaluations and per-image tables, as the phantom grid's runs have).
        models, losses, crf, seeds: the grid.
        folds: held-out patient indices per fold; together they must hold every patient exactly once.
        patches_path: the HDF5 file (default :func:`real_patches_path`).
        **train_overrides: :class:`TrainConfig` fields replacing :func:`real_train_config`'s (e.g. ``epochs``).

    Returns:
        The results table, with ``cells`` and ``differences`` as :func:`lungseg.experiment.run_experiment` writes them.

    Raises:
        ValueError: the folds do not hold every patient exactly once.
    """
    patches = load_real_patches(patches_path)
    n_patients = len(patches.patients())
    held = sorted(k for fold in folds for k in fold)
    if held != list(range(n_patients)):
        raise ValueError(f"folds {[list(f) for f in folds]} must hold each of the {n_patients} patients exactly once")
    exp = ExperimentDir(out_dir)
    exp.path.mkdir(parents=True, exist_ok=True)
    evaluations: dict[GridKey, dict[str, Any]] = {}
    tables: dict[GridKey, Rows | None] = {}
    runs, started = [], time.perf_counter()
    jobs = list(itertools.product(models, losses, seeds))
    for done, (model, loss, seed) in enumerate(jobs):
        _progress(done, len(jobs), started, f"{run_name(model, loss, seed)}")
        run_started = time.perf_counter()
        config = real_train_config(model, loss, seed, "", **train_overrides)
        run = exp.run(run_name(model, loss, seed))
        record = fold_record(config, folds, patches)
        if is_scored(run, record, crf):
            for c in crf:
                evaluations[(model, loss, bool(c), int(seed))] = run.read_evaluation(bool(c))
                tables[(model, loss, bool(c), int(seed))] = run.read_per_image(bool(c))
            seconds = json.loads(run.folds_path.read_text(encoding="utf-8")).get("seconds")
            runs.append({"run": portable(run.path), "model": model, "loss": loss, "seed": int(seed), "status": "reused",
                         "seconds": seconds})
            continue
        run.path.mkdir(parents=True, exist_ok=True)
        for c, (result, rows) in _cross_validate(patches, config, folds, crf).items():
            evaluations[(model, loss, c, int(seed))], tables[(model, loss, c, int(seed))] = result, rows
            write_json(result, run.evaluation_path(c))
            write_csv(run.per_image_path(c), rows)
        seconds = round(time.perf_counter() - run_started, 1)
        write_json({**record, "seconds": seconds}, run.folds_path)
        runs.append({"run": portable(run.path), "model": model, "loss": loss, "seed": int(seed), "status": "trained",
                     "seconds": seconds})
    _progress(len(jobs), len(jobs), started, "done")
    config = real_train_config(models[0], losses[0], seeds[0], "", **train_overrides)
    results = {
        "settings": {
            "data": patches.source, "patients": PATIENT_RULE, "n_patients": n_patients,
            "folds": [list(f) for f in folds], "models": list(models), "losses": list(losses),
            "crf": [bool(c) for c in crf], "seeds": [int(s) for s in seeds],
            "split": "patient-level cross-validation: every patient's patches predicted by the fold that held it out",
            "base_config": {k: v for k, v in config.to_dict().items() if k not in ("data", "model", "loss", "seed")},
            "intensity": "unit: the patches are min-max scaled to [0, 1] per patch, not HU",
        },
        "runs": runs,
        "cells": grid_cells(evaluations, tables, models, losses, crf, seeds),
        "differences": grid_differences(evaluations, tables, models, losses, crf, seeds),
        "seconds": round(sum(r["seconds"] or 0.0 for r in runs), 1),
        "seconds_note": "training and scoring of every run, summed over the calls that made them",
    }
    write_results(exp, results)
    return exp.read_results()
