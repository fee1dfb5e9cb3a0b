"""lungseg.experimentdir: where an experiment's files lie, spelled once."""

from __future__ import annotations

import json
from pathlib import Path

from lungseg.experimentdir import ExperimentDir, ProfileDir
from lungseg.rundir import RunDir


def test_a_profile_folder_holds_the_grid_the_tuning_and_the_whole_slice_comparison(tmp_path: Path) -> None:
    profile = ProfileDir(tmp_path / "results" / "medium")
    assert profile.grid.path == profile.path / ProfileDir.GRID
    assert profile.tune.path == profile.path / ProfileDir.TUNE
    assert profile.whole_slice.path == profile.path / ProfileDir.WHOLE_SLICE
    assert profile.claims_path.parent.parent == profile.path and profile.claims_path.suffix == ".json"
    assert profile.provenance_path.parent == profile.path and profile.cache_path.parent == profile.path
    # the published medium profile is laid out this way
    published = ProfileDir(Path(__file__).resolve().parents[1] / "results" / "medium")
    for path in (*published.grid.table_paths, *published.tune.tune_paths, published.whole_slice.comparison_path,
                 published.provenance_path):
        assert path.is_file(), path


def test_an_experiment_folder_names_its_runs_and_tables(tmp_path: Path) -> None:
    grid = ExperimentDir(tmp_path / "exp")
    run = grid.run("unet-dice-seed0")
    assert isinstance(run, RunDir) and run.path == grid.runs_path / "unet-dice-seed0"
    assert grid.table_paths == (grid.cells_path, grid.results_path, grid.differences_path)
    assert len({*grid.table_paths, *grid.tune_paths, grid.comparison_path, grid.provenance_path}) == 7
    assert all(p.parent == grid.path for p in (*grid.table_paths, *grid.tune_paths, grid.comparison_path))
    assert str(grid) == str(tmp_path / "exp") and Path(grid) == grid.path  # usable wherever a path is
    grid.path.mkdir()
    grid.results_path.write_text(json.dumps({"cells": []}))
    grid.tune_choice_path.write_text(json.dumps({"chosen": {}}))
    assert grid.read_results() == {"cells": []} and grid.read_tune_choice() == {"chosen": {}}
