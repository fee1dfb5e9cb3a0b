"""The paper's comparison as a grid: {UNet, AttentionResUNet} × {Dice, Focal, Hybrid} × CRF × seeds.

Every (model, loss, seed) is trained once (a finished run with the same configuration is reused;
an interrupted one is resumed) and evaluated on the test split with and without the CRF of
eq. (10). All runs share one patient split (``split_seed``), so differences between cells are
*paired* by seed and patient. The results table gives, per cell, the mean over seeds and its 95 %
interval, and the paired differences between cells that differ in exactly one factor (model, loss or
CRF). The interval of a figure that a run's per-image table rebuilds per patient
(:data:`lungseg.experiment.figures.PATIENT_FIGURES`: the pixel figures) resamples training seeds and
test patients together (:func:`lungseg.metrics.crossed_interval`); the others (lesion recalls, the
robustness, per-patient boundary figures) have a Student-t interval over seeds.
It feeds Tables 2–4 and Figure 3 of the book.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.config import LOSSES, MODEL_NAMES, TrainConfig, config_differences
from lungseg.errors import LungsegError
from lungseg.evaluation import evaluate_run
from lungseg.experiment.figures import PATIENT_FIGURES, patient_figures, stack_seeds
from lungseg.experiment.workers import check_workers, map_in_workers
from lungseg.experimentdir import ExperimentDir
from lungseg.files import check_output, json_safe, write_csv, write_json
from lungseg.metrics import CROSSED_INTERVAL, crossed_interval, paired_crossed_interval
from lungseg.paths import portable
from lungseg.provenance import collect
from lungseg.rundir import RunDir
from lungseg.training import train

#: The patient split of the grid when none is given: train / validation / test.
GRID_SPLIT: tuple[float, float, float] = (0.7, 0.15, 0.15)

#: One evaluation of the grid: ``(model, loss, CRF on, seed)``.
GridKey = tuple[str, str, bool, int]
#: A run's per-image table, as rows.
Rows = list[dict[str, str]]
#: How the results table's intervals are formed (its ``settings``).
INTERVALS = {
    "ci": f"pixel figures ({', '.join(PATIENT_FIGURES)}): {CROSSED_INTERVAL}; the other figures: mean over seeds "
          "with a two-sided 95 % Student-t interval over seeds, cut to the figure's range",
    "differences": "b - a, paired by seed and test patient, for cells differing in one factor",
    "interval": "each figure's 'interval' says which: 'seeds x patients' or 'seeds (t)'; the seeds' own values "
                "are listed",
}

#: Figures of the results table: (column name, path into the evaluation dict).
TABLE_METRICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dice_pooled", ("pooled", "dice")),
    ("iou_pooled", ("pooled", "iou")),
    ("dice_per_image", ("per_image", "dice")),
    ("iou_per_image", ("per_image", "iou")),
    ("dice_per_patient", ("per_patient", "dice")),
    ("precision_pooled", ("pooled", "precision")),
    ("recall_pooled", ("pooled", "recall")),
    ("accuracy_pooled", ("pooled", "accuracy")),
    ("small_tumor_recall", ("small_tumor_recall",)),
    ("lesion_recall", ("lesion_recall",)),
    # each tumour once (a 3D component of a patient's mask), small by its equivalent-sphere diameter
    ("tumour_recall", ("tumour_recall",)),
    ("small_tumour_recall_3d", ("small_tumour_recall_3d",)),
    ("intensity_robustness_std", ("intensity_robustness_std",)),
    # boundary figures (lungseg.metrics.boundary_summary): HD95 in mm, surface Dice at the evaluation's tolerance
    ("hd95_mm_per_image", ("boundary", "per_image", "hd95_mm")),
    ("surface_dice_per_image", ("boundary", "per_image", "surface_dice")),
    ("hd95_mm_per_patient", ("boundary", "per_patient", "hd95_mm")),
    ("surface_dice_per_patient", ("boundary", "per_patient", "surface_dice")),
)


#: The range of each table figure (a ratio lies in [0, 1]; the robustness is a standard deviation,
#: HD95 a distance in mm).
METRIC_RANGE: dict[str, tuple[float, float]] = {
    "intensity_robustness_std": (0.0, math.inf),
    "hd95_mm_per_image": (0.0, math.inf),
    "hd95_mm_per_patient": (0.0, math.inf),
}


def mean_ci(values: Sequence[float], level: float = 0.95,
            bounds: tuple[float, float] = (-math.inf, math.inf)) -> dict[str, Any]:
    """Mean and two-sided Student-t confidence interval of ``values`` (NaN/None dropped).

    Args:
        values: one value per seed.
        level: the interval's confidence level.
        bounds: the metric's range (``(0, 1)`` for Dice and the other ratios): with three seeds the
            t-interval is wide, and the part outside the range says nothing, so it is cut there.

    Returns:
        ``{"mean", "low", "high", "n", "sd", "values"}``; the interval is ``None`` for fewer than 2
        values; ``values`` are the seeds' own values, which the book shows beside the interval.
    """
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    n = len(v)
    kept = [float(x) for x in v]
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0, "sd": None, "values": kept}
    mean = float(v.mean())
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": 1, "sd": None, "values": kept}
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    low, high = max(mean - half, bounds[0]), min(mean + half, bounds[1])
    return {"mean": mean, "low": low, "high": high, "n": n, "sd": sd, "values": kept}


def metric_value(d: dict[str, Any], path: tuple[str, ...]) -> float | None:
    """The number at ``path`` in an evaluation dict (e.g. ``("pooled", "dice")``); ``None`` where absent."""
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return None if d is None else float(d)  # type: ignore[arg-type]


def has_figure(evaluation: dict[str, Any], path: tuple[str, ...]) -> bool:
    """True when an evaluation record holds the figure at ``path`` (its value may be ``None``: undefined on
    its data); a record made before the figure existed does not."""
    for key in path:
        if not isinstance(evaluation, dict) or key not in evaluation:
            return False
        evaluation = evaluation[key]
    return True


#: A figure's statistic where some of the runs' records predate it: no number rather than one over some seeds.
NOT_IN_EVERY_RUN = {"mean": None, "low": None, "high": None, "n": 0, "sd": None, "values": [],
                    "interval": "not in every run's evaluation (some were made before the figure existed)"}


def run_name(model: str, loss: str, seed: int) -> str:
    """Folder name of one grid run."""
    return f"{model}-{loss}-seed{seed}"


def run_is_finished(run: RunDir, config: TrainConfig) -> bool:
    """True when ``run`` holds a finished training of ``config``; raises when it holds another configuration."""
    if not run.is_finished():
        return False
    diffs = config_differences(run.read_config(), config)
    if diffs:
        raise LungsegError(f"{run}: holds a run with a different configuration (" + "; ".join(diffs) + "); use another --out")
    return True


def train_and_evaluate(config: TrainConfig, run: RunDir, crf: Sequence[bool], n_boot: int, device: str,
                        progress: bool) -> tuple[str, dict[bool, dict[str, Any]]]:
    """Train ``config`` into ``run`` unless finished (resuming an interrupted one), then evaluate it on
    the test split for each CRF setting (reusing evaluations of the current best weights that hold the
    boundary figures; older ones are made again)."""
    if run_is_finished(run, config):
        status = "reused"
    else:
        if progress:
            print(f"training {run.path.name}", flush=True)
        # resume whatever an interrupted call left (from its saved config, even without a checkpoint)
        train(config, run.path, resume=run.config_path.is_file(), progress=progress)
        status = "trained"
    evaluations = {}
    for use_crf in crf:
        # an evaluation made before the boundary figures existed is re-made (same weights, more figures); one
        # made before a later figure is kept (the book re-renders published grids without evaluating), and
        # a cell whose runs do not all hold a figure shows none (:func:`_figure`)
        if run.evaluation_is_fresh(use_crf) and "boundary" in run.read_evaluation(use_crf):
            evaluations[bool(use_crf)] = run.read_evaluation(use_crf)
        else:
            # Robustness to intensity variation re-segments the tumour slices once per perturbation;
            # with the CRF that costs minutes per run on a CPU, so the grid measures it without the CRF.
            evaluations[bool(use_crf)] = evaluate_run(
                run.path, config.data, crf=use_crf, out=run.evaluation_path(use_crf), split="test", n_boot=n_boot,
                robustness=not use_crf, device=device, precision=config.precision, progress=progress,
            )
    return status, evaluations


def run_experiment(
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    models: Sequence[str] = MODEL_NAMES,
    losses: Sequence[str] = ("dice", "focal", "hybrid"),
    crf: Sequence[bool] = (False, True),
    seeds: Sequence[int] = (0, 1, 2),
    base_config: TrainConfig | None = None,
    loss_settings: dict[str, dict[str, Any]] | None = None,
    n_boot: int = 0,
    device: str = "auto",
    progress: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """Train and evaluate the grid, reusing finished runs, and write the results table.

    Args:
        data: dataset path (with masks).
        out_dir: experiment folder (:class:`lungseg.experimentdir.ExperimentDir`): a run directory per
            model, loss and seed (each holding its test evaluations with the CRF off and on,
            :meth:`lungseg.rundir.RunDir.evaluation_path`) and the grid's three tables.
        models: subset of ``("unet", "attention")``.
        losses: subset of ``("hybrid", "dice", "focal", "bce")``.
        crf: which CRF settings to evaluate.
        seeds: training seeds (the patient split is the same for all: ``base_config.split_seed``).
        base_config: the other training settings (``data``, ``model``, ``loss``, ``seed`` are set
            per run).
        loss_settings: per-loss overrides of ``base_config`` (e.g. the α, λ, learning rate and
            threshold :func:`lungseg.experiment.tune.tune` chose on validation data).
        n_boot: patient-bootstrap resamples of each run's own CIs (0: none; the table's CIs are
            over seeds).
        device: training/evaluation device.
        progress: progress bars (with ``workers > 1``: one bar over the runs).
        workers: runs trained side by side, each in its own process with ``cores // workers`` torch
            threads (:func:`lungseg.experiment.workers.map_in_workers`); the results are the same
            runs, in the same table.

    Returns:
        ``{"cells": [...], "differences": [...], "runs": [...], "settings": {...}, "provenance": {...}}`` (also
        written as :attr:`~lungseg.experimentdir.ExperimentDir.results_path`). A table that already holds the
        same runs, settings and figures is left as it is, with the provenance of the call that made them
        (re-executing the book reuses every run and must not restamp the published numbers); the runs'
        ``status`` returned is this call's.
    """
    base = _grid_base_config(models, losses, crf, seeds, base_config)
    check_output(out_dir, [data])
    exp = ExperimentDir(out_dir)
    exp.runs_path.mkdir(parents=True, exist_ok=True)
    started = time.time()
    check_workers(workers)
    cells_trained = list(itertools.product(models, losses, seeds))
    jobs = [(dataclasses.replace(base, data=str(data), model=model, loss=loss, seed=int(seed), device=device,
                                 **(loss_settings or {}).get(loss, {})),
             exp.run(run_name(model, loss, seed)), tuple(crf), n_boot, device, progress and workers == 1)
            for model, loss, seed in cells_trained]
    outcomes = map_in_workers(train_and_evaluate, jobs, workers, progress=progress, desc="grid runs")
    runs, evaluations, tables = _collect(cells_trained, [job[1] for job in jobs], outcomes)
    results = {
        "cells": grid_cells(evaluations, tables, models, losses, crf, seeds),
        "differences": grid_differences(evaluations, tables, models, losses, crf, seeds),
        "runs": runs,
        "settings": _grid_settings(data, models, losses, crf, seeds, base, loss_settings),
        "provenance": collect(device, started=started),
    }
    if not _table_holds(exp, results):
        write_results(exp, results)
    table = exp.read_results()
    for row, now in zip(table["runs"], runs):
        row["status"] = now["status"]
    return table


def _table_holds(exp: ExperimentDir, results: dict[str, Any]) -> bool:
    """Whether the grid's stored tables already hold ``results``: the same runs (whether trained or reused), settings,
    cells and differences, whatever the provenance."""
    if not all(p.is_file() for p in (exp.results_path, exp.cells_path, exp.differences_path)):
        return False

    def numbers(table: dict[str, Any]) -> dict[str, Any]:
        runs = [{k: v for k, v in run.items() if k != "status"} for run in table.get("runs", [])]
        return {**{k: v for k, v in table.items() if k != "provenance"}, "runs": runs}

    stored = json.loads(exp.results_path.read_text(encoding="utf-8"))
    return numbers(stored) == numbers(json.loads(json.dumps(json_safe(results))))


def _grid_base_config(models: Sequence[str], losses: Sequence[str], crf: Sequence[bool], seeds: Sequence[int],
                      base_config: TrainConfig | None) -> TrainConfig:
    """The grid's shared configuration (default: :class:`TrainConfig` with :data:`GRID_SPLIT`), after
    checking the grid's factors and that it has test patients to score on."""
    for m in models:
        if m not in MODEL_NAMES:
            raise LungsegError(f"--models: unknown model {m!r}; choose from {MODEL_NAMES}")
    for lo in losses:
        if lo not in LOSSES:
            raise LungsegError(f"--losses: unknown loss {lo!r}; choose from {LOSSES}")
    if not (models and losses and crf and seeds):
        raise LungsegError("models, losses, crf and seeds must each hold at least one value")
    base = base_config or dataclasses.replace(TrainConfig(), split_fractions=GRID_SPLIT)
    if base.split_fractions[2] <= 0:
        raise LungsegError(
            f"the grid is scored on held-out test patients, but split_fractions {list(base.split_fractions)} has"
            f" no test share; use e.g. {list(GRID_SPLIT)} (--test-fraction 0.15)"
        )
    return base


def _collect(cells_trained: Sequence[tuple[str, str, int]], run_dirs: Sequence[RunDir],
             outcomes: Sequence[tuple[str, dict[bool, dict[str, Any]]]],
             ) -> tuple[list[dict[str, Any]], dict[GridKey, dict[str, Any]], dict[GridKey, Rows | None]]:
    """The results table's ``runs`` rows, and every evaluation and per-image table by :data:`GridKey`, from
    the runs' outcomes (:func:`train_and_evaluate`'s, in the order of ``cells_trained``)."""
    runs: list[dict[str, Any]] = []
    evaluations: dict[GridKey, dict[str, Any]] = {}
    tables: dict[GridKey, Rows | None] = {}
    for (model, loss, seed), run, (status, by_crf) in zip(cells_trained, run_dirs, outcomes):
        for use_crf, result in by_crf.items():
            evaluations[(model, loss, use_crf, int(seed))] = result
            tables[(model, loss, use_crf, int(seed))] = run.read_per_image(use_crf)
        runs.append({"run": portable(run.path), "model": model, "loss": loss, "seed": int(seed), "status": status})
    return runs, evaluations, tables


def _grid_settings(data: str | os.PathLike[str], models: Sequence[str], losses: Sequence[str], crf: Sequence[bool],
                   seeds: Sequence[int], base: TrainConfig,
                   loss_settings: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """The results table's ``settings``: the grid, how its figures are formed, and the shared configuration."""
    return {
        "data": portable(data), "models": list(models), "losses": list(losses), "crf": [bool(c) for c in crf],
        "seeds": [int(s) for s in seeds], "split": "test split shared by every run (split_seed "
        f"{base.split_seed})", **INTERVALS,
        "base_config": {k: portable(v) if k == "cache_dir" and v else v for k, v in base.to_dict().items()
                        if k not in ("data", "model", "loss", "seed")},
        "loss_settings": loss_settings or {},
    }


def refresh_results(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Form a finished grid's cells and differences again from its runs' saved evaluations, without
    training or evaluating: what a change in how the table's intervals are formed needs. The runs,
    settings (but for :data:`INTERVALS`) and provenance of the table are kept.

    Args:
        out_dir: the grid's experiment folder (its results table and a folder per run with the evaluations).

    Raises:
        FileNotFoundError: the results table or a run's evaluation is missing.
    """
    exp = ExperimentDir(out_dir)
    if not exp.results_path.is_file():
        raise FileNotFoundError(f"{exp.results_path}: no results table to refresh")
    results = exp.read_results()
    settings = results["settings"]
    models, losses, crf, seeds = settings["models"], settings["losses"], settings["crf"], settings["seeds"]
    evaluations: dict[GridKey, dict[str, Any]] = {}
    tables: dict[GridKey, Rows | None] = {}
    for model, loss, seed in itertools.product(models, losses, seeds):
        run = exp.run(run_name(model, loss, seed))
        for use_crf in crf:
            evaluations[(model, loss, bool(use_crf), int(seed))] = run.read_evaluation(use_crf)
            tables[(model, loss, bool(use_crf), int(seed))] = run.read_per_image(use_crf)
    results["cells"] = grid_cells(evaluations, tables, models, losses, crf, seeds)
    results["differences"] = grid_differences(evaluations, tables, models, losses, crf, seeds)
    settings.update(INTERVALS)
    results["runs"] = [{**r, "run": portable(r["run"])} for r in results["runs"]]
    write_results(exp, results)
    return exp.read_results()


def write_results(exp: ExperimentDir, results: dict[str, Any]) -> None:
    """Write a grid's results as its three tables: the full record (JSON), the cells and the paired
    differences (CSV, one column per figure's mean, interval and seeds)."""
    write_json(results, exp.results_path)
    _write_cells_csv(exp.cells_path, results["cells"])
    _write_differences_csv(exp.differences_path, results["differences"])


def seed_figures(tables: dict[GridKey, Rows | None], cell: tuple[str, str, bool],
                  seeds: Sequence[int]) -> list[dict[str, tuple[np.ndarray, np.ndarray]]] | None:
    """A cell's :func:`patient_figures` per seed on the test patients (sorted ids, the same for every run of
    the grid); ``None`` when a seed has no per-image table."""
    rows = [tables.get((*cell, int(s))) for s in seeds]
    if any(r is None for r in rows):
        return None
    patients = sorted({r["patient_id"] for seed_rows in rows for r in seed_rows})
    return [patient_figures(seed_rows, patients) for seed_rows in rows]


def _figure(name: str, path: tuple[str, ...], evaluations: dict[GridKey, dict[str, Any]],
            figures: list[dict[str, tuple[np.ndarray, np.ndarray]]] | None, cell: tuple[str, str, bool],
            seeds: Sequence[int]) -> dict[str, Any]:
    """One figure of a cell: the mean over seeds with the seeds' values, and its interval (seeds x
    patients where the per-image tables rebuild it, else Student-t over seeds)."""
    if not all(has_figure(evaluations[(*cell, int(s))], path) for s in seeds):
        return dict(NOT_IN_EVERY_RUN)
    stat = mean_ci([metric_value(evaluations[(*cell, int(s))], path) for s in seeds],
                   bounds=METRIC_RANGE.get(name, (0.0, 1.0)))
    if figures is None or name not in PATIENT_FIGURES:
        return {**stat, "interval": "seeds (t)"}
    crossed = crossed_interval(*stack_seeds(figures, name))
    return {**stat, "low": crossed["low"], "high": crossed["high"], "n_patients": crossed["n_patients"],
            "interval": "seeds x patients"}


def grid_cells(evaluations: dict[GridKey, dict[str, Any]], tables: dict[GridKey, Rows | None], models: Sequence[str],
           losses: Sequence[str], crf: Sequence[bool], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One row per (model, loss, CRF): every :data:`TABLE_METRICS` figure as mean over seeds with its interval."""
    cells = []
    for cell in itertools.product(models, losses, [bool(c) for c in crf]):
        figures = seed_figures(tables, cell, seeds)
        row: dict[str, Any] = {"model": cell[0], "loss": cell[1], "crf": cell[2], "n_seeds": len(seeds)}
        for name, path in TABLE_METRICS:
            row[name] = _figure(name, path, evaluations, figures, cell, seeds)
        cells.append(row)
    return cells


def _difference(name: str, path: tuple[str, ...], evaluations: dict[GridKey, dict[str, Any]],
                figures: tuple[Any, Any], a: tuple[str, str, bool], b: tuple[str, str, bool],
                seeds: Sequence[int]) -> dict[str, Any]:
    """``b - a`` of one figure: the mean of the seed-paired differences, and its interval (seeds x patients,
    both cells resampled alike, where the per-image tables rebuild the figure; else Student-t over seeds)."""
    if not all(has_figure(evaluations[(*key, int(s))], path) for key in (a, b) for s in seeds):
        return dict(NOT_IN_EVERY_RUN)
    pairs = [(metric_value(evaluations[(*a, int(s))], path), metric_value(evaluations[(*b, int(s))], path))
             for s in seeds]
    low, high = METRIC_RANGE.get(name, (0.0, 1.0))
    stat = mean_ci([y - x for x, y in pairs if x is not None and y is not None], bounds=(low - high, high - low))
    fig_a, fig_b = figures
    if fig_a is None or fig_b is None or name not in PATIENT_FIGURES:
        return {**stat, "interval": "seeds (t)"}
    crossed = paired_crossed_interval(*stack_seeds(fig_a, name), *stack_seeds(fig_b, name))
    return {**stat, "low": crossed["low"], "high": crossed["high"], "n_patients": crossed["n_patients"],
            "interval": "seeds x patients"}


def grid_differences(evaluations: dict[GridKey, dict[str, Any]], tables: dict[GridKey, Rows | None],
                 models: Sequence[str], losses: Sequence[str], crf: Sequence[bool],
                 seeds: Sequence[int]) -> list[dict[str, Any]]:
    """Differences ``b - a`` between every two cells that differ in exactly one factor, paired by seed and patient."""
    differences = []
    keys = list(itertools.product(models, losses, [bool(c) for c in crf]))
    figures = {key: seed_figures(tables, key, seeds) for key in keys}
    for a, b in itertools.combinations(keys, 2):
        changed = [f for f, x, y in zip(("model", "loss", "crf"), a, b) if x != y]
        if len(changed) != 1:
            continue
        diff: dict[str, Any] = {
            "factor": changed[0], "a": dict(zip(("model", "loss", "crf"), a)),
            "b": dict(zip(("model", "loss", "crf"), b)), "n_pairs": len(seeds),
        }
        for name, path in TABLE_METRICS:
            diff[name] = _difference(name, path, evaluations, (figures[a], figures[b]), a, b, seeds)
        differences.append(diff)
    return differences


def _ci_columns(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    cols = {}
    for name, _ in TABLE_METRICS:
        s = row[name]
        cols[f"{prefix}{name}_mean"] = "" if s["mean"] is None else f"{s['mean']:.6f}"
        cols[f"{prefix}{name}_ci_low"] = "" if s["low"] is None else f"{s['low']:.6f}"
        cols[f"{prefix}{name}_ci_high"] = "" if s["high"] is None else f"{s['high']:.6f}"
        cols[f"{prefix}{name}_seeds"] = " ".join(f"{x:.4f}" for x in s.get("values", []))
    return cols


def _write_cells_csv(path: Path, cells: list[dict[str, Any]]) -> None:
    write_csv(path, [{"model": c["model"], "loss": c["loss"], "crf": c["crf"], "n_seeds": c["n_seeds"], **_ci_columns(c)}
                     for c in cells])


def _write_differences_csv(path: Path, diffs: list[dict[str, Any]]) -> None:
    write_csv(path, [
        {"factor": d["factor"], **{f"a_{k}": v for k, v in d["a"].items()}, **{f"b_{k}": v for k, v in d["b"].items()},
         "n_pairs": d["n_pairs"], **_ci_columns(d, prefix="diff_")}
        for d in diffs
    ])
