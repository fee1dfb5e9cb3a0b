"""The choices the paper leaves open, made on validation data: α, λ, the learning rate, the threshold.

The paper states none of the focal loss's α and γ, the hybrid loss's λ, the learning rate, the
number of epochs or the decision threshold. :func:`tune` makes these choices the way a careful user
would, and never on test data: for each loss it trains a small set of candidate settings
(:data:`SEARCH_SPACE`) on the training split, scores each on the **validation** patients at the native
resolution over a range of thresholds, and keeps the best. The number of epochs is not searched:
every run keeps its checkpoint of best validation Dice, and the profile's patience stops it once
that has plateaued. Every candidate, the choice and the rule are written to the tuning folder
(:attr:`lungseg.experimentdir.ExperimentDir.tune_paths`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from lungseg.config import LOSSES, TrainConfig
from lungseg.errors import LungsegError
from lungseg.experiment.grid import run_is_finished
from lungseg.experiment.workers import check_workers, map_in_workers
from lungseg.experimentdir import ExperimentDir
from lungseg.files import check_output, write_csv, write_json
from lungseg.paths import portable
from lungseg.rundir import RunDir

__all__ = ["SEARCH_SPACE", "THRESHOLDS", "candidate_name", "chosen_settings", "tune", "validation_dice"]

#: Candidate settings per loss (each a set of TrainConfig overrides): α of the focal term (eq. 8) with
#: γ = 2 as in Lin et al.; λ of the hybrid loss (eq. 9); the Adam learning rate (eq. 5).
SEARCH_SPACE: dict[str, list[dict[str, Any]]] = {
    "dice": [{"lr": 1e-3}, {"lr": 3e-3}],
    "focal": [{"alpha": 0.25}, {"alpha": 0.75}],
    "hybrid": [{"alpha": 0.25, "lam": 0.5}, {"alpha": 0.75, "lam": 0.5}, {"alpha": 0.75, "lam": 0.25}],
}
#: Probability thresholds scored on the validation patients.
THRESHOLDS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)


def candidate_name(loss: str, overrides: dict[str, Any]) -> str:
    """Folder name of one candidate run, e.g. ``hybrid-alpha0.75-lam0.5``."""
    return "-".join([loss] + [f"{k}{v}" for k, v in sorted(overrides.items())])


def validation_dice(run_dir: str | os.PathLike[str], data: Any, thresholds: Sequence[float] = THRESHOLDS,
                    batch_size: int = 16, device: str = "auto", precision: str = "auto") -> dict[float, float]:
    """Pooled Dice of a run on its **validation** patients at the native resolution, per threshold."""
    from lungseg.data import open_dataset
    from lungseg.inference import Predictor
    from lungseg.metrics import confusion

    run = Predictor.load(run_dir, device=device, precision=precision)
    dataset = data if hasattr(data, "patient_ids") else open_dataset(data)
    counts = {float(t): np.zeros(3, dtype=np.int64) for t in thresholds}  # TP, FP, FN pooled over patients
    for pid in run.split["val"]:
        volume = dataset[pid]
        probs = run.probabilities(volume.image, batch_size=batch_size)
        for t in counts:
            c = confusion(probs >= t, volume.mask)
            counts[t] += (c.tp, c.fp, c.fn)
    return {t: (2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 1.0) for t, (tp, fp, fn) in counts.items()}


def _score_candidate(config: TrainConfig, run: RunDir, overrides: dict[str, Any], thresholds: Sequence[float],
                     progress: bool) -> dict[str, Any]:
    """Train one candidate (unless finished) and score it on the validation patients: one table row."""
    from lungseg.training import train

    if not run_is_finished(run, config):
        if progress:
            print(f"tuning: training {run.path.name}", flush=True)
        train(config, run.path, resume=run.config_path.is_file(), progress=progress)
    summary = run.read_metrics()
    by_threshold = validation_dice(run.path, config.data, thresholds, device=config.device, precision=config.precision)
    best_t = max(by_threshold, key=lambda t: (by_threshold[t], -abs(t - 0.5)))
    return {
        "loss": config.loss, **{k: overrides.get(k) for k in ("alpha", "lam", "lr")}, "run": portable(run),
        "best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"],
        "val_dice_network": summary["best_val_dice"],
        **{f"val_dice_t{t:g}": d for t, d in by_threshold.items()},
        "best_threshold": best_t, "val_dice": by_threshold[best_t],
    }


def tune(
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    base_config: TrainConfig | None = None,
    losses: Sequence[str] = ("dice", "focal", "hybrid"),
    search_space: dict[str, list[dict[str, Any]]] | None = None,
    thresholds: Sequence[float] = THRESHOLDS,
    progress: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """Train every candidate of each loss, score it on the validation patients, and choose per loss.

    Args:
        data: the dataset (its validation split is the only data the choice looks at).
        out_dir: the tuning folder (:class:`lungseg.experimentdir.ExperimentDir`): a run directory per
            candidate and the tables.
        base_config: everything else (model, sizes, epochs, patience, split); ``data`` and the
            searched fields are set per candidate.
        losses: the losses to tune.
        search_space: candidates per loss (default :data:`SEARCH_SPACE`).
        thresholds: the thresholds scored.
        progress: progress bars.
        workers: candidates trained side by side (:func:`lungseg.experiment.workers.map_in_workers`).

    Returns:
        ``{"candidates": [...], "chosen": {loss: {...}}, "settings": {...}}`` (also written as
        :attr:`~lungseg.experimentdir.ExperimentDir.tune_choice_path`; the candidates also as
        :attr:`~lungseg.experimentdir.ExperimentDir.tune_table_path`).
    """
    space = search_space or SEARCH_SPACE
    unknown = [lo for lo in losses if lo not in LOSSES or lo not in space]
    if unknown:
        raise LungsegError(f"no search space for loss(es) {unknown}; tunable: {sorted(space)}")
    base = base_config or TrainConfig()
    check_workers(workers)
    check_output(out_dir, [data])
    out = ExperimentDir(out_dir)
    started = time.time()
    jobs = []
    for loss in losses:
        for overrides in space[loss]:
            config = dataclasses.replace(base, data=str(data), loss=loss, **overrides)
            jobs.append((config, out.run(candidate_name(loss, overrides)), overrides, tuple(thresholds),
                         progress and workers == 1))
    rows = map_in_workers(_score_candidate, jobs, workers, progress=progress, desc="tuning runs")
    chosen = {}
    for loss in losses:
        best = max((r for r in rows if r["loss"] == loss), key=lambda r: r["val_dice"])
        chosen[loss] = {k: best[k] for k in ("alpha", "lam", "lr") if best[k] is not None}
        chosen[loss].update(threshold=best["best_threshold"], val_dice=best["val_dice"])
    result = {
        "candidates": rows, "chosen": chosen,
        "settings": {"data": portable(data), "rule": "highest pooled validation Dice at the native resolution over"
                     f" thresholds {list(thresholds)}; test patients are never used", "wall_time_s": time.time() - started,
                     "base_config": {k: portable(v) if k == "cache_dir" and v else v
                                     for k, v in base.to_dict().items() if k != "data"}},
    }
    write_json(result, out.tune_choice_path)
    write_csv(out.tune_table_path, rows)
    return result


def chosen_settings(tuning: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-loss training settings of a tuning's record (:func:`tune`'s ``chosen``, without the
    validation Dice each scored): the ``loss_settings`` of :func:`lungseg.experiment.run_experiment`."""
    return {loss: {k: v for k, v in c.items() if k != "val_dice"} for loss, c in tuning["chosen"].items()}
