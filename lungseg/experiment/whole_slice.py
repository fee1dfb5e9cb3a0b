"""The paper's literal recipe beside patch training: the same network, loss and budget on whole slices.

The paper trains on whole 256×256 slices. The grid trains on random crops with tumour oversampling
(as nnU-Net does) and runs the fully convolutional network on whole slices at validation, test and
prediction time. :func:`run_whole_slice` trains the whole-slice counterpart of grid runs for the same
arithmetic (a slice costs ``(S / P)²`` crops of ``P × P``), evaluates it on the same test patients,
and :func:`patch_vs_whole` lines the two up per seed (paired: same seed, same split).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from lungseg.config import TrainConfig
from lungseg.errors import LungsegError
from lungseg.experiment.grid import metric_value, run_name, train_and_evaluate
from lungseg.experiment.workers import check_workers, map_in_workers
from lungseg.experimentdir import ExperimentDir
from lungseg.files import check_output, write_csv

__all__ = ["COMPARED_METRICS", "patch_vs_whole", "run_whole_slice", "whole_slice_config"]

#: Test figures compared: (column, path into the evaluation dict).
COMPARED_METRICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dice_pooled", ("pooled", "dice")),
    ("dice_per_patient", ("per_patient", "dice")),
    ("small_tumor_recall", ("small_tumor_recall",)),
    ("lesion_recall", ("lesion_recall",)),
)


def whole_slice_config(config: TrainConfig) -> TrainConfig:
    """The whole-slice counterpart of a patch-trained ``config``: same network, loss, schedule and
    epochs; each epoch draws as many whole slices as cost the same arithmetic as its crops, with the
    crops' share of tumour slices (``tumour_fraction`` = ``foreground_fraction``).

    Raises:
        LungsegError: ``config`` does not train on patches, or has no fixed epoch length.
    """
    if config.patch_size is None or config.patch_size >= config.image_size:
        raise LungsegError(f"config already trains on whole slices (patch_size {config.patch_size},"
                           f" image_size {config.image_size})")
    if not config.samples_per_epoch:
        raise LungsegError("samples_per_epoch must be set to match the budget of patch and whole-slice training")
    per_slice = (config.image_size / config.patch_size) ** 2
    slices = max(config.batch_size, round(config.samples_per_epoch / per_slice))
    return dataclasses.replace(config, patch_size=None, samples_per_epoch=slices,
                               tumour_fraction=config.foreground_fraction)


def run_whole_slice(
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    base_config: TrainConfig,
    *,
    model: str = "attention",
    loss: str = "hybrid",
    seeds: Sequence[int] = (0, 1, 2),
    loss_settings: dict[str, Any] | None = None,
    device: str = "auto",
    workers: int = 1,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train and test-evaluate (CRF off) the whole-slice counterparts of the grid runs ``model``-``loss``.

    Args:
        data: the grid's dataset.
        out_dir: the folder of the whole-slice runs (:class:`lungseg.experimentdir.ExperimentDir`, a run
            directory per seed named as the grid's); finished runs are reused, interrupted ones resumed,
            as in the grid.
        base_config: the grid's patch-training configuration (see :func:`whole_slice_config`).
        model, loss, seeds: the grid runs to mirror.
        loss_settings: the tuned settings of ``loss`` the grid used.
        device: training device.
        workers: runs side by side (:func:`lungseg.experiment.workers.map_in_workers`).
        progress: progress bars.

    Returns:
        One ``{"run", "seed", "status", "evaluation"}`` per seed.
    """
    check_workers(workers)
    check_output(out_dir, [data])
    whole = whole_slice_config(dataclasses.replace(base_config, data=str(data), model=model, loss=loss, device=device,
                                                   **(loss_settings or {})))
    out = ExperimentDir(out_dir)
    jobs = [(dataclasses.replace(whole, seed=int(s)), out.run(run_name(model, loss, s)), (False,), 0, device,
             progress and workers == 1) for s in seeds]
    outcomes = map_in_workers(train_and_evaluate, jobs, workers, progress=progress, desc="whole-slice runs")
    return [{"run": str(job[1]), "seed": int(s), "status": status, "evaluation": by_crf[False]}
            for s, job, (status, by_crf) in zip(seeds, jobs, outcomes)]


def patch_vs_whole(grid: str | os.PathLike[str], whole: str | os.PathLike[str], *, model: str = "attention",
                   loss: str = "hybrid", seeds: Sequence[int] = (0, 1, 2), write: bool = False) -> list[dict[str, Any]]:
    """Per seed, the test figures (CRF off) of the patch-trained grid run and its whole-slice counterpart.

    Args:
        grid: the grid's experiment folder (:class:`lungseg.experimentdir.ExperimentDir`).
        whole: the whole-slice runs' experiment folder.
        model, loss, seeds: which runs.
        write: also write the table to ``whole``'s
            :attr:`~lungseg.experimentdir.ExperimentDir.comparison_path`.

    Returns:
        Rows ``{"seed", "<metric>_patch", "<metric>_whole", "<metric>_difference", "epochs_patch", ...}``
        (difference = patch − whole).

    Raises:
        LungsegError: a run or its test evaluation is missing.
    """
    rows = []
    for seed in seeds:
        row: dict[str, Any] = {"seed": int(seed)}
        for side, folder in (("patch", grid), ("whole", whole)):
            run = ExperimentDir(folder).run(run_name(model, loss, seed))
            if not run.evaluation_path(False).is_file():
                raise LungsegError(f"{run}: no test evaluation (CRF off); train and evaluate it first")
            evaluation = run.read_evaluation(False)
            for name, path in COMPARED_METRICS:
                row[f"{name}_{side}"] = metric_value(evaluation, path)
            metrics = run.read_metrics()
            row[f"epochs_{side}"] = metrics.get("epochs_run")
            row[f"best_val_dice_{side}"] = metrics.get("best_val_dice")
        for name, _ in COMPARED_METRICS:
            a, b = row[f"{name}_patch"], row[f"{name}_whole"]
            row[f"{name}_difference"] = None if a is None or b is None else a - b
        rows.append(row)
    if write:
        write_csv(ExperimentDir(whole).comparison_path, rows)
    return rows
