"""The paper's comparison as a grid: {UNet, AttentionResUNet} × {Dice, Focal, Hybrid} × CRF × seeds.

Every (model, loss, seed) is trained once (a finished run with the same configuration is reused;
an interrupted one is resumed) and evaluated on the test split with and without the CRF of
eq. (10). All runs share one patient split (``split_seed``), so differences between cells are
*paired* by seed. The results table gives, per cell, the mean over seeds and its 95 % t-interval,
and the paired differences between cells that differ in exactly one factor (model, loss or CRF).
It feeds Tables 2–4 and Figure 3 of the book.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lungseg.errors import LungsegError
from lungseg.evaluate import evaluate_run, write_json
from lungseg.train import LOSSES, MODELS, TrainConfig, _atomic_write_text, _config_differences, train

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
    ("intensity_robustness_std", ("intensity_robustness_std",)),
)


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean and two-sided Student-t confidence interval of ``values`` (NaN/None dropped).

    Returns:
        ``{"mean", "low", "high", "n", "sd"}``; the interval is ``None`` for fewer than 2 values.
    """
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    n = len(v)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0, "sd": None}
    mean = float(v.mean())
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": 1, "sd": None}
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n, "sd": sd}


def _get(d: dict[str, Any], path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return None if d is None else float(d)  # type: ignore[arg-type]


def run_name(model: str, loss: str, seed: int) -> str:
    """Folder name of one grid run."""
    return f"{model}-{loss}-seed{seed}"


def _run_is_finished(run_dir: Path, config: TrainConfig) -> bool:
    metrics, cfg = run_dir / "metrics.json", run_dir / "config.json"
    if not (metrics.is_file() and cfg.is_file() and (run_dir / "best.pt").is_file()):
        return False
    try:
        finished = json.loads(metrics.read_text()).get("finished", False)
    except json.JSONDecodeError:
        return False
    saved = TrainConfig.from_json(cfg)
    if _config_differences(saved, config):
        raise LungsegError(
            f"{run_dir}: holds a run with a different configuration ("
            + "; ".join(_config_differences(saved, config)) + "); use another --out"
        )
    return bool(finished)


def run_experiment(
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    models: Sequence[str] = MODELS,
    losses: Sequence[str] = ("dice", "focal", "hybrid"),
    crf: Sequence[bool] = (False, True),
    seeds: Sequence[int] = (0, 1, 2),
    base_config: TrainConfig | None = None,
    n_boot: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Train and evaluate the grid, reusing finished runs, and write the results table.

    Args:
        data: dataset path (with masks).
        out_dir: experiment folder: ``runs/<model>-<loss>-seed<k>/`` (each a run directory with
            ``eval_crf_off.json`` / ``eval_crf_on.json``), ``results.csv``, ``results.json``,
            ``differences.csv``.
        models: subset of ``("unet", "attention")``.
        losses: subset of ``("hybrid", "dice", "focal", "bce")``.
        crf: which CRF settings to evaluate.
        seeds: training seeds (the patient split is the same for all: ``base_config.split_seed``).
        base_config: the other training settings (``data``, ``model``, ``loss``, ``seed`` are set
            per run).
        n_boot: patient-bootstrap resamples of each run's own CIs (0: none; the table's CIs are
            over seeds).
        device: training/evaluation device.
        progress: progress bars.

    Returns:
        ``{"cells": [...], "differences": [...], "runs": [...], "settings": {...}}`` (also written as
        ``results.json``).
    """
    for m in models:
        if m not in MODELS:
            raise LungsegError(f"--models: unknown model {m!r}; choose from {MODELS}")
    for lo in losses:
        if lo not in LOSSES:
            raise LungsegError(f"--losses: unknown loss {lo!r}; choose from {LOSSES}")
    if not (models and losses and crf and seeds):
        raise LungsegError("models, losses, crf and seeds must each hold at least one value")
    base = base_config or TrainConfig()
    out = Path(out_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    started = time.time()

    runs: list[dict[str, Any]] = []
    evaluations: dict[tuple[str, str, bool, int], dict[str, Any]] = {}
    for model, loss, seed in itertools.product(models, losses, seeds):
        config = dataclasses.replace(base, data=str(data), model=model, loss=loss, seed=int(seed), device=device)
        run_dir = out / "runs" / run_name(model, loss, seed)
        if _run_is_finished(run_dir, config):
            status = "reused"
        else:
            if progress:
                print(f"training {run_dir.name}", flush=True)
            train(config, run_dir, resume=(run_dir / "last.pt").is_file(), progress=progress)
            status = "trained"
        for use_crf in crf:
            eval_path = run_dir / f"eval_crf_{'on' if use_crf else 'off'}.json"
            fresh = eval_path.is_file() and eval_path.stat().st_mtime >= (run_dir / "best.pt").stat().st_mtime
            if fresh:
                result = json.loads(eval_path.read_text())
            else:
                result = evaluate_run(
                    run_dir, data, crf=use_crf, out=eval_path, split="test", n_boot=n_boot,
                    device=device, progress=progress,
                )
            evaluations[(model, loss, bool(use_crf), int(seed))] = result
        runs.append({"run": str(run_dir), "model": model, "loss": loss, "seed": int(seed), "status": status})

    cells = []
    for model, loss, use_crf in itertools.product(models, losses, crf):
        row: dict[str, Any] = {"model": model, "loss": loss, "crf": bool(use_crf), "n_seeds": len(seeds)}
        for name, path in TABLE_METRICS:
            row[name] = mean_ci([_get(evaluations[(model, loss, bool(use_crf), int(s))], path) for s in seeds])
        cells.append(row)

    differences = []
    keys = list(itertools.product(models, losses, [bool(c) for c in crf]))
    for a, b in itertools.combinations(keys, 2):
        changed = [f for f, x, y in zip(("model", "loss", "crf"), a, b) if x != y]
        if len(changed) != 1:
            continue
        diff: dict[str, Any] = {
            "factor": changed[0], "a": dict(zip(("model", "loss", "crf"), a)),
            "b": dict(zip(("model", "loss", "crf"), b)), "n_pairs": len(seeds),
        }
        for name, path in TABLE_METRICS:
            pairs = [(_get(evaluations[(*a, int(s))], path), _get(evaluations[(*b, int(s))], path)) for s in seeds]
            diff[name] = mean_ci([y - x for x, y in pairs if x is not None and y is not None])
        differences.append(diff)

    from lungseg.provenance import collect

    results = {
        "cells": cells,
        "differences": differences,
        "runs": runs,
        "settings": {
            "data": str(data), "models": list(models), "losses": list(losses), "crf": [bool(c) for c in crf],
            "seeds": [int(s) for s in seeds], "split": "test split shared by every run (split_seed "
            f"{base.split_seed})", "ci": "mean over seeds with a two-sided 95 % Student-t interval",
            "differences": "b - a per seed (paired: same seed and split), for cells differing in one factor",
            "base_config": {k: v for k, v in base.to_dict().items() if k not in ("data", "model", "loss", "seed")},
        },
        "provenance": collect(device, started=started),
    }
    write_json(results, out / "results.json")
    _write_cells_csv(out / "results.csv", cells)
    _write_differences_csv(out / "differences.csv", differences)
    return json.loads((out / "results.json").read_text())


def _ci_columns(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    cols = {}
    for name, _ in TABLE_METRICS:
        s = row[name]
        cols[f"{prefix}{name}_mean"] = "" if s["mean"] is None else f"{s['mean']:.6f}"
        cols[f"{prefix}{name}_ci_low"] = "" if s["low"] is None else f"{s['low']:.6f}"
        cols[f"{prefix}{name}_ci_high"] = "" if s["high"] is None else f"{s['high']:.6f}"
    return cols


def _write_cells_csv(path: Path, cells: list[dict[str, Any]]) -> None:
    rows = [{"model": c["model"], "loss": c["loss"], "crf": c["crf"], "n_seeds": c["n_seeds"], **_ci_columns(c)} for c in cells]
    _write_csv(path, rows)


def _write_differences_csv(path: Path, diffs: list[dict[str, Any]]) -> None:
    rows = [
        {"factor": d["factor"], **{f"a_{k}": v for k, v in d["a"].items()}, **{f"b_{k}": v for k, v in d["b"].items()},
         "n_pairs": d["n_pairs"], **_ci_columns(d, prefix="diff_")}
        for d in diffs
    ]
    _write_csv(path, rows)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    _atomic_write_text(path, buf.getvalue())
