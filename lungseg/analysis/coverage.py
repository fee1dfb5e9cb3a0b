"""Does a results table's interval cover what it claims to? The resampling check of chapter 5.

The direct check (``benchmarks/interval_coverage.py``) scores one model on fresh phantom studies, which
costs minutes per study, so it can afford 20 and its coverage is known only to about ±0.15. This one
re-uses the patients a run was already scored on: it takes them as the population and draws hundreds
of studies from them (:func:`lungseg.metrics.resampled_coverage`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lungseg.experiment.figures import patient_figures
from lungseg.experimentdir import ExperimentDir

__all__ = ["resampled_coverage_table"]


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
