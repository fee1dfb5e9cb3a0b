"""The experiment folders: the one place that knows which files a profile's experiment consists of.

A profile's folder (``results/<profile>`` published, ``runs/<profile>`` with the checkpoints) holds::

    experiment/                 the comparison grid (lungseg.experiment.run_experiment)
        runs/<model>-<loss>-seed<k>/    one run directory each (lungseg.rundir.RunDir)
        results.json            every cell, paired difference and run, with the settings
        results.csv             the cells: mean and t-interval over seeds of every figure
        differences.csv         the seed-paired differences between cells
    tune/                       the open choices made on validation data (lungseg.experiment.tune)
        runs/<candidate>/
        tune.json               every candidate, the choice per loss and the rule
        tune.csv                every candidate's validation Dice per threshold
    whole-slice/                the whole-slice counterparts of grid runs (lungseg.experiment.whole_slice)
        runs/<model>-<loss>-seed<k>/
        patch_vs_whole.csv      per seed, the patch-trained run beside its whole-slice counterpart
        provenance.json         the comparison's wall time
    05_tables/claims.json       chapter 5's measured-vs-claimed rows, read by chapter 9
    provenance.json             the profile's record: settings, machine, wall times (scripts/run_profile.py)
    cache/                      preprocessed slices (the runs folder only)

:class:`ExperimentDir` is one folder of runs and the tables made from them (``experiment/``,
``tune/`` or ``whole-slice/``, or any ``--out`` of ``lungseg experiment`` and ``lungseg tune``);
:class:`ProfileDir` is the profile's folder above them. Every other module asks these two for paths
(``tests/test_architecture.py`` checks that no other module spells these names), as it asks
:class:`~lungseg.rundir.RunDir` for a run's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lungseg.paths import Folder, localize

if TYPE_CHECKING:
    from lungseg.rundir import RunDir

__all__ = ["ExperimentDir", "ProfileDir"]


class ExperimentDir(Folder):
    """A folder of runs (``runs/<name>/``) and the tables made from them.

    Args:
        path: the folder (it need not exist yet).
    """

    RUNS = "runs"
    RESULTS = "results.json"
    CELLS = "results.csv"
    DIFFERENCES = "differences.csv"
    TUNE_CHOICE = "tune.json"
    TUNE_TABLE = "tune.csv"
    COMPARISON = "patch_vs_whole.csv"
    PROVENANCE = "provenance.json"
    TUMOURS = "test_tumours.json"

    # ---------------------------------------------------------------- runs
    @property
    def runs_path(self) -> Path:
        """The folder of the run directories."""
        return self.path / self.RUNS

    def run(self, name: str) -> RunDir:
        """The run directory ``runs/<name>`` (e.g. :func:`lungseg.experiment.run_name`'s)."""
        # Imported here: RunDir brings torch, and `lungseg --help` names these files without it.
        from lungseg.rundir import RunDir

        return RunDir(self.runs_path / name)

    # ---------------------------------------------------------------- the grid's tables
    @property
    def results_path(self) -> Path:
        """The grid's full results (JSON): cells, paired differences, runs and settings."""
        return self.path / self.RESULTS

    @property
    def cells_path(self) -> Path:
        """The grid's cells (CSV)."""
        return self.path / self.CELLS

    @property
    def differences_path(self) -> Path:
        """The grid's paired differences (CSV)."""
        return self.path / self.DIFFERENCES

    @property
    def tumours_path(self) -> Path:
        """The grid's test tumours with each run's recall of them (JSON, :func:`lungseg.analysis.grid_tumour_table`)."""
        return self.path / self.TUMOURS

    @property
    def table_paths(self) -> tuple[Path, ...]:
        """Every table of a grid: what a profile publishes beside the runs."""
        return self.cells_path, self.results_path, self.differences_path

    def read_results(self) -> dict[str, Any]:
        """The grid's full results (:attr:`results_path`), each run's folder as a folder of this machine (the
        table records them relative to the repository; older tables, absolute)."""
        results = json.loads(self.results_path.read_text(encoding="utf-8"))
        for run in results.get("runs", []):
            run["run"] = str(localize(run["run"], self.results_path))
        return results

    # ---------------------------------------------------------------- tuning and the whole-slice comparison
    @property
    def tune_choice_path(self) -> Path:
        """A tuning's candidates, the choice per loss and the rule (JSON)."""
        return self.path / self.TUNE_CHOICE

    @property
    def tune_table_path(self) -> Path:
        """A tuning's candidates (CSV)."""
        return self.path / self.TUNE_TABLE

    @property
    def tune_paths(self) -> tuple[Path, ...]:
        """Both files of a tuning: what a profile publishes of it."""
        return self.tune_choice_path, self.tune_table_path

    def read_tune_choice(self) -> dict[str, Any]:
        """A tuning's record (:attr:`tune_choice_path`)."""
        return json.loads(self.tune_choice_path.read_text(encoding="utf-8"))

    @property
    def comparison_path(self) -> Path:
        """The per-seed table of patch-trained runs beside their whole-slice counterparts (CSV)."""
        return self.path / self.COMPARISON

    @property
    def provenance_path(self) -> Path:
        """The wall time and workers of the runs in this folder (the whole-slice comparison writes it)."""
        return self.path / self.PROVENANCE


class ProfileDir(Folder):
    """A profile's folder: its grid, tuning and whole-slice comparison, the claims and the provenance.

    Args:
        path: ``results/<profile>`` (what is published) or ``runs/<profile>`` (the full runs).
    """

    GRID = "experiment"
    TUNE = "tune"
    WHOLE_SLICE = "whole-slice"
    TEST_STUDY = "test-study"
    CLAIMS = "05_tables/claims.json"
    COVERAGE = "coverage.json"
    STUDY_SIZE = "training-study-size.json"
    SEED_STABILITY = "seed-stability"
    PROVENANCE = "provenance.json"
    CACHE = "cache"

    @property
    def grid(self) -> ExperimentDir:
        """The comparison grid's folder."""
        return ExperimentDir(self.path / self.GRID)

    @property
    def tune(self) -> ExperimentDir:
        """The tuning's folder."""
        return ExperimentDir(self.path / self.TUNE)

    @property
    def whole_slice(self) -> ExperimentDir:
        """The whole-slice comparison's folder."""
        return ExperimentDir(self.path / self.WHOLE_SLICE)

    @property
    def test_study(self) -> ExperimentDir:
        """The grid's runs scored on the large independent test study (:mod:`lungseg.experiment.teststudy`)."""
        return ExperimentDir(self.path / self.TEST_STUDY)

    @property
    def claims_path(self) -> Path:
        """Chapter 5's measured-vs-claimed rows (a JSON list of :func:`lungseg.paper.claims` rows)."""
        return self.path / self.CLAIMS

    @property
    def coverage_path(self) -> Path:
        """How often the results table's interval covered a large study's value, on fresh test studies
        (``benchmarks/interval_coverage.py``)."""
        return self.path / self.COVERAGE

    @property
    def study_size_path(self) -> Path:
        """Single grid cells retrained on a larger training study, scored on the test study beside the
        published runs (``benchmarks/training_study_size.py``)."""
        return self.path / self.STUDY_SIZE

    @property
    def seed_stability_dir(self) -> Path:
        """One cell retrained for several seeds and variants, best and last checkpoints scored on a
        development study (``benchmarks/seed_stability.py``): ``seed-stability-<machine>.json`` summaries,
        each beside its ``.jsonl`` of runs."""
        return self.path / self.SEED_STABILITY

    @property
    def provenance_path(self) -> Path:
        """The profile's record of settings, machine and wall times."""
        return self.path / self.PROVENANCE

    @property
    def cache_path(self) -> Path:
        """The preprocessed-slice cache shared by the profile's runs."""
        return self.path / self.CACHE
