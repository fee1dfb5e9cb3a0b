"""Experiment stage: the paper's comparison grid over models, losses, CRF and seeds.

* :mod:`lungseg.experiment.grid` — :func:`run_experiment` (train, evaluate, seed-paired table);
* :mod:`lungseg.experiment.profiles` — the run profiles (quick, medium, paper) and their grid;
* :mod:`lungseg.experiment.tune` — the open choices (α, λ, learning rate, threshold) made on validation data;
* :mod:`lungseg.experiment.whole_slice` — the paper's whole-slice recipe beside patch training;
* :mod:`lungseg.experiment.workers` — runs side by side.

Their folders and files are :class:`lungseg.experimentdir.ExperimentDir`'s and
:class:`~lungseg.experimentdir.ProfileDir`'s.
"""

from lungseg.experiment.grid import TABLE_METRICS, mean_ci, refresh_results, run_experiment, run_name
from lungseg.experiment.profiles import (
    PROFILES,
    TRAIN_SETTINGS,
    ProfileSettings,
    experiment_dir,
    grid_workers,
    phantom_config,
    prepare_data,
    profile_dir,
    profile_settings,
    run_grid,
    train_config,
    tune_dir,
    tuned_settings,
)

__all__ = [
    "PROFILES", "TABLE_METRICS", "TRAIN_SETTINGS", "ProfileSettings", "experiment_dir", "grid_workers", "mean_ci",
    "phantom_config", "prepare_data", "profile_dir", "profile_settings", "refresh_results", "run_experiment", "run_grid", "run_name",
    "train_config", "tune_dir", "tuned_settings",
]
