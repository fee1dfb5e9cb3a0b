"""lungseg.book: where one chapter's output lies for the next, and what chapters 6–8 draw from."""

from __future__ import annotations

import json

import pytest

from lungseg import book
from lungseg.experiment import experiment_dir, profile_settings
from lungseg.rundir import RunDir


@pytest.fixture
def fake_repo(tmp_path, monkeypatch):
    """``tmp_path`` as the repository root that relative paths resolve against."""
    monkeypatch.setattr("lungseg.paths.repo_root", lambda start=None: tmp_path)
    return tmp_path


def _write_results(settings, test=("p01",)) -> dict:
    """A results table of the profile with one attention run whose split holds out ``test``."""
    run = RunDir(experiment_dir(settings) / "runs" / "attention-hybrid-seed3").create()
    run.write_split({"train": ["p00"], "val": [], "test": list(test)}, seed=0, fractions=(0.8, 0.1, 0.1), data="x")
    results = {"runs": [{"run": str(run), "model": "attention", "loss": "hybrid", "seed": 3, "status": "trained"}],
               "cells": [], "settings": {"losses": ["dice", "hybrid"], "seeds": [3], "models": ["attention"]}}
    (experiment_dir(settings) / "results.json").write_text(json.dumps(results))
    return results


def test_load_json_is_none_until_a_chapter_writes_it(fake_repo):
    assert book.load_json("results/none.json") is None
    (fake_repo / "results").mkdir()
    (fake_repo / "results" / "x.json").write_text('{"a": 1}')
    assert book.load_json("results/x.json") == {"a": 1}


def test_load_results_names_the_chapter_to_run_first(fake_repo):
    settings = profile_settings("quick")
    with pytest.raises(FileNotFoundError, match="run chapter 4"):
        book.load_results(settings)
    results = _write_results(settings)
    assert book.load_results(settings) == results


def test_load_results_finds_published_runs_recorded_in_another_clone(fake_repo):
    settings = profile_settings("quick")
    results = _write_results(settings)
    local = results["runs"][0]["run"]
    results["runs"][0]["run"] = "/elsewhere/clone/results/quick/experiment/runs/attention-hybrid-seed3"
    (experiment_dir(settings) / "results.json").write_text(json.dumps(results))
    assert book.load_results(settings)["runs"][0]["run"] == str(local)
    assert (experiment_dir(settings) / "results.json").read_text().count("/elsewhere/clone") == 1  # not rewritten


def test_published_results_of_the_other_profiles(fake_repo):
    results = _write_results(profile_settings("medium"))
    assert book.published_results(exclude="quick") == {"medium": results}
    assert book.published_results(exclude="medium") == {}


def test_write_claims_for_chapter_9(tmp_path):
    rows = [{"claim": "Table 2: unet dice = 0.82", "paper": 0.82, "measured": 0.5, "verdict": "not reproduced"}]
    settings = profile_settings("quick", output_dir=str(tmp_path / "out"))
    path = book.write_claims(rows, settings)
    assert path == tmp_path / "out" / book.CLAIMS_FILE
    assert json.loads(path.read_text()) == rows


def test_figure_inputs_gather_what_chapters_6_to_8_draw(tmp_path, make_npz):
    settings = profile_settings("quick", output_dir=str(tmp_path / "out"))
    data = make_npz(tmp_path / "toy.npz", n_patients=3, per_patient=2, size=16)
    with pytest.raises(FileNotFoundError, match="run chapter 4"):
        book.figure_inputs(settings, data)
    results = _write_results(settings)
    inputs = book.figure_inputs(settings, data)
    assert inputs.results == results and inputs.manifest is None  # not a phantom study
    assert (inputs.loss, inputs.seed, inputs.test_ids) == ("hybrid", 3, ["p01"])
    assert inputs.dataset["p01"].n_slices == 2
    assert inputs.run_dir("attention").name == "attention-hybrid-seed3"
    assert "p01" in inputs.describe() and "'hybrid'" in inputs.describe()


def test_chapter_setup_gives_the_settings_output_folder_and_provenance(fake_repo, capsys, monkeypatch):
    (fake_repo / "lungseg").mkdir()
    (fake_repo / "pyproject.toml").write_text("")
    monkeypatch.chdir(fake_repo)
    chapter = book.chapter_setup("04_training", "quick", epochs=2, seeds=[3], device="cpu")
    assert (chapter.settings.profile, chapter.settings.epochs, chapter.settings.seeds) == ("quick", 2, (3,))
    assert chapter.out == fake_repo / "results" / "quick" / "04_training" and chapter.out.is_dir()
    printed = capsys.readouterr().out
    assert "profile quick" in printed and "2 epochs, seeds [3]" in printed
    assert str(fake_repo) not in printed  # the output folder is printed relative, never as this machine's path
    assert "wall time" in chapter.provenance().lower() or "commit" in chapter.provenance().lower()


def test_chapter_setup_refuses_a_path_for_a_name(fake_repo):
    with pytest.raises(ValueError, match="notebook name"):
        book.chapter_setup("../04_training", "quick")


def test_a_crf_chapter_says_first_when_the_crf_cannot_run(fake_repo, capsys, monkeypatch):
    monkeypatch.setattr(book, "crf_available", lambda: False)
    book.chapter_setup("08_crf", "quick", uses_crf=True, show=False)
    assert "CRF skipped" in capsys.readouterr().out and "C++ compiler" in book.MISSING_CRF
    monkeypatch.setattr(book, "crf_available", lambda: True)
    book.chapter_setup("08_crf", "quick", uses_crf=True, show=False)
    assert capsys.readouterr().out == ""
