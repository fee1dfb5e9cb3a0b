"""Experiment stage: the paper's comparison grid over models, losses, CRF and seeds.

* :mod:`lungseg.experiment.grid` — :func:`run_experiment` (train, evaluate, seed-paired table).
"""

from lungseg.experiment.grid import TABLE_METRICS, mean_ci, run_experiment, run_name

__all__ = ["TABLE_METRICS", "mean_ci", "run_experiment", "run_name"]
