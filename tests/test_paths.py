"""lungseg.paths: paths recorded relative to the repository, read back on any machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lungseg.config import TrainConfig
from lungseg.paths import find_repo_root, localize, portable
from lungseg.rundir import RunDir


@pytest.fixture
def clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository clone at ``tmp_path/clone`` (``pyproject.toml`` + ``lungseg/``), the working directory."""
    root = tmp_path / "clone"
    (root / "lungseg").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'lungseg'\n")
    monkeypatch.chdir(root)
    return root


def test_a_path_in_the_repository_is_recorded_relative_to_it(clone: Path) -> None:
    assert find_repo_root(clone / "data") == clone
    assert portable(clone / "data" / "phantom-medium") == "data/phantom-medium"
    assert portable("data/phantom-medium") == "data/phantom-medium"
    assert portable(clone) == "."


def test_a_path_beside_the_repository_is_recorded_one_step_up(clone: Path) -> None:
    assert portable(clone.parent / "shared" / "realct") == "../shared/realct"


def test_outside_a_clone_the_path_stays_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_repo_root(tmp_path) is None
    assert portable("data") == str(tmp_path / "data")


def test_localize_reads_both_the_relative_and_the_old_absolute_form(clone: Path) -> None:
    run = clone / "results" / "medium" / "experiment" / "runs" / "unet-dice-seed0"
    run.mkdir(parents=True)
    assert localize("data/phantom-medium", run) == clone / "data" / "phantom-medium"
    assert localize("/elsewhere/data/phantom-medium", run) == Path("/elsewhere/data/phantom-medium")


def test_a_run_records_its_data_relative_and_reads_it_back_absolute(clone: Path) -> None:
    (clone / "data" / "study").mkdir(parents=True)
    run = RunDir(clone / "runs" / "a").create()
    run.write_config(TrainConfig(data=str(clone / "data" / "study"), cache_dir=str(clone / "runs" / "cache")))
    run.write_split({"train": ["p0"], "val": [], "test": []}, seed=0, fractions=(1.0, 0.0, 0.0),
                    data=str(clone / "data" / "study"))
    saved = json.loads(run.config_path.read_text())
    assert (saved["data"], saved["cache_dir"]) == ("data/study", "runs/cache")
    assert json.loads(run.split_path.read_text())["data"] == "data/study"
    config = run.read_config()
    assert (config.data, config.cache_dir) == (str(clone / "data" / "study"), str(clone / "runs" / "cache"))


def test_a_run_written_with_absolute_paths_still_reads(clone: Path) -> None:
    run = RunDir(clone / "runs" / "old").create()
    run.config_path.write_text(json.dumps({**TrainConfig().to_dict(), "data": "/work/main/data/phantom-medium"}))
    assert run.read_config().data == "/work/main/data/phantom-medium"
