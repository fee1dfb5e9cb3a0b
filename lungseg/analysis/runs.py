"""The runs of a finished experiment, read back from their run directories (chapters 4 and 6–8).

An experiment's results table (what :func:`lungseg.experiment.run_experiment` returns and writes)
lists its runs; everything read from a run goes through :class:`lungseg.rundir.RunDir`, which
alone knows the run directory's file names.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lungseg.rundir import RunDir

__all__ = ["PLATEAU_EPOCHS", "PLATEAU_TOLERANCE", "best_validation_run", "held_out_patients", "plateau", "run_dir",
           "run_histories", "run_summaries"]


def run_dir(results: dict[str, Any], model: str, loss: str, seed: int | None = None) -> Path:
    """The folder of one run of an experiment (``seed``: the first seed when ``None``).

    Raises:
        KeyError: the experiment has no such run.
    """
    for run in results["runs"]:
        if run["model"] == model and run["loss"] == loss and (seed is None or run["seed"] == seed):
            return Path(run["run"])
    raise KeyError(f"the experiment has no run with model={model!r}, loss={loss!r}, seed={seed!r}")


def best_validation_run(results: dict[str, Any], runs_folder: str | Path, model: str = "attention") -> Path | None:
    """The run of ``model`` with the highest best validation Dice: the one a profile publishes with a
    model card, chosen on validation patients so that its test figures stay unbiased.

    Args:
        results: the experiment's results table (which runs it holds).
        runs_folder: the folder holding the runs (the results table may name them by another
            absolute path, e.g. the machine that ran the grid); each run is looked up here by name.
        model: ``"attention"`` or ``"unet"``.

    Returns:
        The run's folder under ``runs_folder``, or ``None`` when no run of ``model`` has a
        training summary with a validation Dice.
    """
    best, best_dice = None, -math.inf
    for run in results["runs"]:
        if run["model"] != model:
            continue
        folder = RunDir(Path(runs_folder) / Path(run["run"]).name)
        dice = folder.read_metrics().get("best_val_dice") if folder.metrics_path.is_file() else None
        if dice is not None and float(dice) > best_dice:
            best, best_dice = folder.path, float(dice)
    return best


def held_out_patients(results: dict[str, Any]) -> list[str]:
    """The test patients shared by every run of an experiment (from its first run's split).

    Raises:
        FileNotFoundError: the first run has no split.
    """
    return RunDir(results["runs"][0]["run"]).read_split()["test"]


def run_summaries(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per run of an experiment: model, loss, seed, whether it was trained in this call or
    reused, the device, epochs, best validation Dice and wall time (from each run's training summary;
    empty where a run has none)."""
    rows = []
    for run in results["runs"]:
        folder = RunDir(run["run"])
        summary = folder.read_metrics() if folder.metrics_path.is_file() else {}
        epochs = summary.get("epochs_run") or 0
        wall = summary.get("wall_time_s")
        rows.append({
            "run": folder.path.name, "model": run["model"], "loss": run["loss"], "seed": run["seed"],
            "status": run["status"], "device": summary.get("device"), "epochs": epochs,
            "best epoch": summary.get("best_epoch"), "best val Dice": summary.get("best_val_dice"),
            "wall time (s)": wall, "s / epoch": wall / epochs if wall is not None and epochs else None,
        })
    return rows


def run_histories(results: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """``{run name: {column: values per epoch}}`` from every run's training history (runs without
    one are left out)."""
    histories = {}
    for run in results["runs"]:
        folder = RunDir(run["run"])
        if not folder.history_path.is_file():
            continue
        rows = folder.read_history()
        histories[folder.path.name] = {k: [r[k] for r in rows] for k in (rows[0] if rows else {})}
    return histories


#: The plateau test of :func:`plateau`: the last ``PLATEAU_EPOCHS`` validation Dice values span at
#: most ``PLATEAU_TOLERANCE``.
PLATEAU_EPOCHS = 4
PLATEAU_TOLERANCE = 0.05


def plateau(val_dice: list[float], epochs: int = PLATEAU_EPOCHS, tolerance: float = PLATEAU_TOLERANCE) -> dict[str, Any]:
    """Whether a run's validation Dice had settled by its end, and whether it had peaked before.

    A run *plateaued* when its last ``epochs`` validation Dice values lie within ``tolerance`` of each
    other: further epochs at the end of its schedule were no longer changing the result. It *peaked
    earlier* when its best value (the checkpoint every later chapter uses) lies more than ``tolerance``
    above the best of those last epochs: the run settled below an earlier spike. Too short a history
    cannot show a plateau.

    Args:
        val_dice: validation Dice per epoch.
        epochs: the window at the end of the run.
        tolerance: the largest spread counted as flat, and the margin of an earlier peak.

    Returns:
        ``{"plateaued", "peaked_earlier", "best", "best_epoch" (1-based), "last_spread",
        "last_best_shortfall"}``.

    Raises:
        ValueError: ``epochs < 2`` or a negative ``tolerance``.
    """
    if epochs < 2:
        raise ValueError(f"epochs must be at least 2 to show a plateau, got {epochs}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    values = [float(v) for v in val_dice]
    if not values:
        return {"plateaued": False, "peaked_earlier": False, "best": None, "best_epoch": None, "last_spread": None,
                "last_best_shortfall": None}
    best = max(values)
    last = values[-epochs:]
    spread, shortfall = max(last) - min(last), best - max(last)
    return {"plateaued": len(values) >= epochs and spread <= tolerance, "peaked_earlier": shortfall > tolerance,
            "best": best, "best_epoch": values.index(best) + 1, "last_spread": spread, "last_best_shortfall": shortfall}
