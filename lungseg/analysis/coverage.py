"""Does a results table's interval cover what it claims to, and what makes it as wide as it is? The
resampling checks of chapter 5.

The direct check (``benchmarks/interval_coverage.py``) scores one model on fresh phantom studies, which
costs minutes per study, so it can afford 20 and its coverage is known only to about ±0.15. This one
re-uses the patients a run was already scored on: it takes them as the population and draws hundreds
of studies from them (:func:`lungseg.metrics.resampled_coverage`). :func:`interval_width_table` splits
each cell's interval into what the training seeds and the test patients make of it, and projects how
many of either a target half-width needs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from lungseg.experiment.figures import patient_figures, stack_seeds
from lungseg.experiment.grid import run_name, seed_figures
from lungseg.experimentdir import ExperimentDir

__all__ = ["interval_width_table", "resampled_coverage_table"]


def resampled_coverage_table(study: ExperimentDir, runs: Sequence[str], study_sizes: Sequence[int], *,
                             crf: bool = False, n_studies: int = 400, n_boot: int = 2000,
                             seed: int = 0) -> list[dict[str, Any]]:
    """Per run and study size: how often the pooled-Dice interval of a simulated study holds the run's
    pooled Dice on all of ``study``'s patients.

    Args:
        study: an experiment folder whose runs were scored on a large test study (their per-image tables).
        runs: run names in it (e.g. ``"attention-hybrid-seed0"``).
        study_sizes: patients per simulated study.
        crf: which evaluation of the runs.
        n_studies, n_boot, seed: as :func:`lungseg.metrics.resampled_coverage`.

    Returns:
        One row per run and study size: ``run`` and the keys of :func:`lungseg.metrics.resampled_coverage`.

    Raises:
        FileNotFoundError: a run has no per-image table for ``crf``.
    """
    from lungseg.metrics import resampled_coverage

    table = []
    for name in runs:
        rows = study.run(name).read_per_image(crf)
        if rows is None:
            raise FileNotFoundError(f"{study.run(name).per_image_path(crf)}: no per-image table to resample")
        num, den = patient_figures(rows, sorted({r["patient_id"] for r in rows}))["dice_pooled"]
        for size in study_sizes:
            out = resampled_coverage(num, den, size, n_studies=n_studies, n_boot=n_boot, seed=seed)
            table.append({"run": name, **out})
    return table


def interval_width_table(study: ExperimentDir, *, target: float = 0.03, figure: str = "dice_pooled",
                         n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Per cell of a scored grid: the half-width of ``figure``'s interval, the parts the seeds and the
    patients make of it (:func:`lungseg.metrics.interval_sources`), and how many test patients (at today's
    seeds) or seeds (at today's patients) would bring it to ``target`` (:func:`lungseg.metrics.sample_needed`).

    Args:
        study: a grid's results folder holding per-image tables (the grid itself, or the test study that
            re-scored it: :func:`lungseg.experiment.evaluate_on_test_study`).
        target: the half-width wanted (chapter 5's goal is 0.03).
        figure: a figure of :func:`lungseg.experiment.figures.patient_figures`.
        n_boot, seed: the bootstrap of the results tables (the same draws give the same ``half_width``).

    Returns:
        One row per (model, loss, CRF): ``model``, ``loss``, ``crf``, ``n_seeds``, ``n_patients``, ``mean``,
        ``half_width``, ``seeds_alone``, ``patients_alone``, ``added_in_quadrature``
        (``sqrt(seeds_alone**2 + patients_alone**2)``, close to ``half_width`` where the sources add),
        ``patients_needed`` and ``seeds_needed`` (``None``: the other source alone is ``target`` or wider).

    Raises:
        FileNotFoundError: ``study`` has no results table, or a run of it no per-image table.
    """
    from lungseg.metrics import interval_sources, sample_needed

    settings = study.read_results()["settings"]
    table = []
    for model, loss, crf in itertools.product(settings["models"], settings["losses"], settings["crf"]):
        cell = (model, loss, bool(crf))
        tables = {}
        for s in settings["seeds"]:
            run = study.run(run_name(model, loss, s))
            tables[(*cell, int(s))] = run.read_per_image(bool(crf))
            if tables[(*cell, int(s))] is None:
                raise FileNotFoundError(f"{run.per_image_path(bool(crf))}: no per-image table")
        sources = interval_sources(*stack_seeds(seed_figures(tables, cell, settings["seeds"]), figure),
                                   n_boot=n_boot, seed=seed)
        row = {"model": model, "loss": loss, "crf": bool(crf), "n_seeds": sources["n_seeds"],
               "n_patients": sources["n_patients"], "mean": sources["mean"], "half_width": sources["both"],
               "seeds_alone": sources["seeds"], "patients_alone": sources["patients"]}
        if None in (sources["seeds"], sources["patients"]):
            row.update(added_in_quadrature=None, patients_needed=None, seeds_needed=None)
        else:
            row.update(added_in_quadrature=math.hypot(sources["seeds"], sources["patients"]),
                       patients_needed=sample_needed(sources["seeds"], sources["patients"], sources["n_patients"], target),
                       seeds_needed=sample_needed(sources["patients"], sources["seeds"], sources["n_seeds"], target))
        table.append(row)
    return table
