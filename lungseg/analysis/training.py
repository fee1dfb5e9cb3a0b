"""How a profile's runs trained (chapter 4 and ``scripts/run_profile.py``): the tuning's candidates and
choice, whether each run converged, patch against whole-slice training, and where each run's time went.

Everything is read back from the profile's folders (:class:`lungseg.experimentdir.ProfileDir`) and its
run directories (:class:`lungseg.rundir.RunDir`); the tables are :class:`pandas.DataFrame` as the
chapter shows them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lungseg.analysis.runs import plateau, run_histories, run_summaries
from lungseg.experiment import run_name
from lungseg.experimentdir import ExperimentDir
from lungseg.rundir import RunDir

__all__ = [
    "CONVERGENCE_LABELS",
    "SEARCHED",
    "chosen_candidates",
    "convergence_table",
    "grid_span",
    "patch_vs_whole_means",
    "read_tuning",
    "run_timing",
    "time_by_model",
    "tuning_table",
]

#: The fields a tuning searches (:data:`lungseg.experiment.tune.SEARCH_SPACE`): α, λ, learning rate.
SEARCHED: tuple[str, ...] = ("alpha", "lam", "lr")
#: Column headings of :func:`convergence_table` as the chapter shows it.
CONVERGENCE_LABELS: dict[str, str] = {
    "best": "best val Dice", "best_epoch": "best epoch", "last_spread": "spread of last epochs",
    "last_best_shortfall": "best minus best of last", "peaked_earlier": "peaked earlier",
}


# --------------------------------------------------------------------------------------------------- tuning
def read_tuning(tune: ExperimentDir) -> tuple[dict[str, Any], pd.DataFrame] | None:
    """A tuning's record and its candidates (one row each), or ``None`` when the folder holds no tuning."""
    if not (tune.tune_choice_path.is_file() and tune.tune_table_path.is_file()):
        return None
    return tune.read_tune_choice(), pd.read_csv(tune.tune_table_path)


def chosen_candidates(candidates: pd.DataFrame, tuning: dict[str, Any]) -> pd.Series:
    """Per candidate, whether it is its loss's choice (its searched fields equal the chosen ones)."""

    def is_chosen(row: pd.Series) -> bool:
        choice = tuning["chosen"].get(row["loss"], {})
        return all(pd.notna(row[k]) and np.isclose(row[k], v) for k, v in choice.items() if k in SEARCHED)

    return candidates.apply(is_chosen, axis=1)


def tuning_table(candidates: pd.DataFrame, tuning: dict[str, Any]) -> pd.DataFrame:
    """One row per candidate (indexed by loss and its searched settings): the pooled validation Dice at
    every threshold, the best threshold, its best epoch, the epochs run, and ✓ at each loss's choice."""

    def candidate(row: pd.Series) -> str:
        return ", ".join(f"{k} {row[k]:g}" for k in SEARCHED if pd.notna(row[k]))

    thresholds = [c for c in candidates.columns if c.startswith("val_dice_t")]
    table = candidates.assign(candidate=candidates.apply(candidate, axis=1),
                              chosen=chosen_candidates(candidates, tuning).map(lambda c: "✓" if c else ""))
    columns = [*thresholds, "best_threshold", "best_epoch", "epochs_run", "chosen"]
    table = table.set_index(["loss", "candidate"])[columns]
    return table.rename(columns={**{c: f"Dice, t = {c.removeprefix('val_dice_t')}" for c in thresholds},
                                 "best_threshold": "best t", "best_epoch": "best epoch", "epochs_run": "epochs"})


# --------------------------------------------------------------------------------------------------- convergence
def convergence_table(results: dict[str, Any]) -> pd.DataFrame:
    """Per run of an experiment (indexed by run name): model, loss, seed, epochs, the :func:`plateau`
    test of its validation Dice, and how it ``ended`` (stopped early by patience, or at the end of its
    schedule). :data:`CONVERGENCE_LABELS` names the columns for display."""
    runs = pd.DataFrame(run_summaries(results)).set_index("run")
    histories = run_histories(results)
    early = {Path(run["run"]).name: _stopped_early(RunDir(run["run"])) for run in results["runs"]}
    tests = pd.DataFrame({name: plateau(history.get("val_dice", [])) for name, history in histories.items()}).T
    tested = ["best", "best_epoch", "last_spread", "last_best_shortfall", "plateaued", "peaked_earlier"]
    table = runs[["model", "loss", "seed", "epochs"]].join(tests[tested])
    table["ended"] = ["stopped early (patience)" if early.get(name) else "end of schedule" for name in table.index]
    return table


def _stopped_early(run: RunDir) -> bool:
    return bool(run.read_metrics().get("stopped_early")) if run.metrics_path.is_file() else False


# --------------------------------------------------------------------------------------------------- whole slices
def patch_vs_whole_means(comparison: pd.DataFrame, metrics: tuple[str, ...] = ("dice_pooled", "dice_per_patient",
                                                                               "small_tumor_recall")
                         ) -> dict[str, tuple[float, float]]:
    """``{metric: (mean over seeds with patches, with whole slices)}`` of a
    :func:`lungseg.experiment.whole_slice.patch_vs_whole` table."""
    return {m: (comparison[f"{m}_patch"].mean(), comparison[f"{m}_whole"].mean()) for m in metrics}


# --------------------------------------------------------------------------------------------------- time
def time_by_model(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and sum over each model's runs of wall time, time per epoch and epochs (rows of
    :func:`lungseg.analysis.run_summaries`)."""
    return runs.groupby("model")[["wall time (s)", "s / epoch", "epochs"]].agg(["mean", "sum"]).round(1)


def _mtime(path: Path) -> float | None:
    return path.stat().st_mtime if path.is_file() else None


def run_timing(run: RunDir) -> dict[str, Any]:
    """Where one run's time went, from its history and the files it wrote.

    ``train_and_validate_s`` sums the epoch times of the run's history (optimisation plus the
    validation pass of every epoch); ``setup_s`` is the rest of the training wall time (reading and
    preprocessing the slices, the fingerprint, model construction); the two evaluation times are
    the gaps between the modification times of the training summary and of the evaluations with
    the CRF off and on (written one after the other by the experiment).
    """
    metrics = run.read_metrics()
    history = run.read_history()
    epoch_s = [float(r["time_s"]) for r in history]
    wall = float(metrics["wall_time_s"])
    files = (run.metrics_path, run.evaluation_path(False), run.evaluation_path(True))
    t_metrics, t_off, t_on = (_mtime(p) for p in files)
    eval_off = None if t_metrics is None or t_off is None or t_off < t_metrics else t_off - t_metrics
    eval_on = None if t_off is None or t_on is None or t_on < t_off else t_on - t_off
    return {
        "train_wall_s": round(wall, 2),
        "epochs_run": len(history),
        "stopped_early": bool(metrics.get("stopped_early", False)),
        "time_per_epoch_s": round(sum(epoch_s) / len(epoch_s), 3) if epoch_s else None,
        "train_and_validate_s": round(sum(epoch_s), 2),
        "setup_s": round(max(wall - sum(epoch_s), 0.0), 2),
        "evaluate_crf_off_s": None if eval_off is None else round(eval_off, 2),
        "evaluate_crf_on_s": None if eval_on is None else round(eval_on, 2),
    }


def grid_span(results: dict[str, Any], grid: ExperimentDir) -> float | None:
    """Seconds from the first run's configuration file to the last evaluation written in ``grid``: the
    grid's wall time even when a call only reused finished runs."""
    first, last = None, None
    for row in results["runs"]:
        run = grid.run(run_name(row["model"], row["loss"], row["seed"]))
        files = (run.config_path, run.evaluation_path(False), run.evaluation_path(True))
        times = [t for t in (_mtime(p) for p in files) if t is not None]
        if times:
            first = min(times) if first is None else min(first, *times)
            last = max(times) if last is None else max(last, *times)
    return None if first is None or last is None else round(last - first, 2)
