"""lungseg.experiment.profiles (the run profiles and their grid) and lungseg.paths."""

from __future__ import annotations

import json

import pytest

from lungseg.experiment import profiles
from lungseg.paths import repo_root, resolve


@pytest.fixture
def fake_repo(tmp_path, monkeypatch):
    """An empty repository root as the current directory."""
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "lungseg").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_profiles_quick_is_small_and_overrides_apply():
    quick = profiles.profile_settings("quick")
    paper = profiles.profile_settings("paper")
    assert quick.image_size < paper.image_size and quick.n_patients < paper.n_patients
    assert quick.output_dir == "results/quick" and paper.output_dir == "results/paper"
    s = profiles.profile_settings("quick", epochs=7, seeds=[3, 4], device=None)
    assert s.epochs == 7 and s.seeds == (3, 4) and s.device == "auto"
    with pytest.raises(ValueError, match="profile must be one of"):
        profiles.profile_settings("huge")
    with pytest.raises(ValueError, match="unknown profile setting 'epoch'"):
        profiles.profile_settings("quick", epoch=3)


@pytest.mark.parametrize("name", ["medium", "paper"])
def test_the_published_profiles_train_on_100_patients_and_choose_on_20(name):
    """The split the grid makes of the profile's study: at least 100 training and 20 validation patients
    (a 32-patient study left 22 and 5), whatever the tumour-free share."""
    from lungseg.data.slices import patient_split

    settings = profiles.profile_settings(name)
    fractions = profiles.TRAIN_SETTINGS[name]["split_fractions"]
    ids = [f"phantom-{i:03d}" for i in range(settings.n_patients)]
    for tumour_free_every in (2, 5, 1000):
        split = patient_split(ids, [i % tumour_free_every != 0 for i in range(len(ids))], fractions)
        assert len(split["train"]) >= 100 and len(split["val"]) >= 20, (name, {k: len(v) for k, v in split.items()})


def test_every_profile_has_train_settings():
    assert set(profiles.PROFILES) <= set(profiles.TRAIN_SETTINGS)
    # The paper profile stops early on validation Dice; the medium one follows its cosine schedule to
    # the end (its runs are short, and stopping at full learning rate lost the schedule's tail).
    assert profiles.TRAIN_SETTINGS["paper"]["patience"] is not None
    assert profiles.TRAIN_SETTINGS["medium"]["patience"] is None
    for name in ("medium", "paper"):
        assert profiles.TRAIN_SETTINGS[name]["patch_size"] < profiles.PROFILES[name]["image_size"]


def test_runs_go_side_by_side_only_on_a_cpu(monkeypatch):
    medium = profiles.profile_settings("medium", device="cpu")
    assert medium.workers == 2 and profiles.grid_workers(medium) == 2
    monkeypatch.setattr("lungseg.device.resolve_device", lambda name="auto": __import__("torch").device("cuda"))
    assert profiles.grid_workers(medium) == 1


def test_resolve_is_relative_to_the_repository_root(fake_repo, monkeypatch):
    (fake_repo / "notebooks").mkdir()
    monkeypatch.chdir(fake_repo / "notebooks")
    assert repo_root() == fake_repo
    assert resolve("results/quick") == fake_repo / "results" / "quick"
    assert resolve(fake_repo / "x") == fake_repo / "x"
    quick = profiles.profile_settings("quick")
    assert profiles.experiment_dir(quick) == fake_repo / "results" / "quick" / "experiment"
    assert profiles.profile_dir(quick).path == fake_repo / "results" / "quick"
    assert profiles.tune_dir(quick) == profiles.profile_dir(quick).tune.path
    assert profiles.tuned_settings(quick) == {}  # not tuned: no choice published


def test_tuned_settings_are_the_published_choice_without_its_score():
    chosen = profiles.tuned_settings(profiles.profile_settings("medium"))
    assert set(chosen) == {"dice", "focal", "hybrid"} and all("val_dice" not in c and "threshold" in c
                                                              for c in chosen.values())


def test_prepare_data_reuses_a_matching_study_and_rebuilds_a_stale_one(fake_repo, monkeypatch):
    phantom = pytest.importorskip("lungseg.data.phantom")
    calls = []

    def fake_generate(out, n_patients, seed, config, progress, overwrite, workers):
        assert workers == 1  # the training study is written by one process unless asked otherwise
        calls.append(overwrite)
        out.mkdir(parents=True, exist_ok=True)
        manifest = {"format": phantom.MANIFEST_FORMAT, "generator_version": phantom.GENERATOR_VERSION, "seed": seed,
                    "n_patients": n_patients, "config": config.to_dict(), "patients": []}
        (out / "manifest.json").write_text(json.dumps(manifest))
        return out

    monkeypatch.setattr(phantom, "generate_study", fake_generate)
    settings = profiles.profile_settings("quick")
    path = profiles.prepare_data(settings)
    assert path == fake_repo / "data" / "phantom-quick" and calls == [False]
    assert profiles.prepare_data(settings) == path and calls == [False]  # reused
    profiles.prepare_data(profiles.profile_settings("quick", n_patients=3))
    assert calls == [False, True]  # different study in the same folder: regenerated
    with pytest.raises(FileNotFoundError, match="data_dir 'missing'"):
        profiles.prepare_data(settings, "missing")
    assert profiles.prepare_data(settings, path) == path  # a given folder is used as it is


def test_phantom_config_follows_the_profile():
    s = profiles.profile_settings("quick", phantom_size=64, phantom_slices=5)
    config = profiles.phantom_config(s)
    assert (config.image_size, config.n_slices) == (64, 5)


def test_train_config_follows_the_profile():
    s = profiles.profile_settings("quick", epochs=2)
    cfg = profiles.train_config(s)
    assert (cfg.epochs, cfg.image_size, cfg.base_channels, cfg.depth) == (2, s.image_size, s.base_channels, s.depth)
    assert cfg.tumour_fraction == profiles.TRAIN_SETTINGS[s.profile]["tumour_fraction"]
    assert cfg.samples_per_epoch == profiles.TRAIN_SETTINGS[s.profile]["samples_per_epoch"]
    assert profiles.train_config(s, "d", lr=0.5).lr == 0.5
    cfg.validate()


def test_run_grid_runs_the_profiles_grid_in_its_experiment_folder(fake_repo, monkeypatch):
    seen = {}

    def fake_run_experiment(data, out_dir, **kwargs):
        seen.update(data=data, out_dir=out_dir, **kwargs)
        return {"runs": []}

    monkeypatch.setattr(profiles, "run_experiment", fake_run_experiment)
    s = profiles.profile_settings("quick", seeds=[1, 2], losses=["dice"])
    assert profiles.run_grid(s, "data/x", progress=False) == {"runs": []}
    assert seen["out_dir"] == profiles.experiment_dir(s) and seen["data"] == "data/x"
    assert (seen["seeds"], seen["losses"], seen["models"]) == ((1, 2), ("dice",), s.models)
    assert seen["crf"] == (False, True) and seen["base_config"] == profiles.train_config(s)


def test_the_published_profiles_keep_the_settings_their_runs_were_trained_with():
    import dataclasses
    from pathlib import Path

    from lungseg.config import config_differences
    from lungseg.rundir import RunDir

    for profile in ("quick", "medium"):
        cfg = profiles.train_config(profiles.profile_settings(profile))
        assert (cfg.dice_reduction, cfg.flip_ud) == ("batch", 0.0)
    # every published medium run reads as a finished run of today's medium profile, so that
    # `make experiment` reuses the runs instead of refusing them as another configuration
    runs = Path(__file__).resolve().parents[1] / "results" / "medium" / "experiment" / "runs"
    medium = profiles.train_config(profiles.profile_settings("medium"))
    per_run = ("data", "model", "loss", "seed", "lam", "alpha", "lr", "threshold", "cache_dir", "device")
    for run_dir in sorted(runs.iterdir()):
        saved = RunDir(run_dir).read_config()
        assert config_differences(saved, dataclasses.replace(medium, **{k: getattr(saved, k) for k in per_run})) == [], run_dir.name
