"""Tests of lungseg.experiment.teststudy: the published grid scored on an independent test study."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from lungseg.config import TrainConfig
from lungseg.data.phantom import PhantomConfig, generate_study, load_study
from lungseg.errors import LungsegError
from lungseg.experiment import profile_settings, run_experiment, teststudy


def test_composition_counts_patients_tumours_sizes_and_places() -> None:
    manifest = {"seed": 9, "patients": [
        {"tumours": []},
        {"tumours": [{"equivalent_diameter_mm": 6.0, "location": "juxta-pleural"},
                     {"equivalent_diameter_mm": 10.0, "location": "isolated"}]},
        {"tumours": [{"equivalent_diameter_mm": 9.9, "location": "juxta-vascular"}]},
    ]}
    assert teststudy.study_composition(manifest) == {
        "patients": 3, "tumour_free_patients": 1, "tumours": 3, "tumours_under_10mm": 2,
        "locations": {"isolated": 1, "juxta-pleural": 1, "juxta-vascular": 1}, "data_seed": 9}


def test_the_test_study_cannot_share_the_training_seed() -> None:
    settings = profile_settings("quick")
    with pytest.raises(ValueError, match="not be independent"):
        teststudy.prepare_test_study(settings, n_patients=2, data_seed=settings.data_seed)


@pytest.mark.slow
def test_every_run_is_scored_on_every_test_patient(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 2-seed grid trained on one phantom study, scored on another: the cells' intervals resample the
    seeds and the 6 test patients; the robustness stays the grid's, marked as such."""
    config = PhantomConfig(image_size=48, n_slices=4)
    train_data = generate_study(tmp_path / "train", 8, seed=1, config=config, progress=False)
    test_data = generate_study(tmp_path / "test", 6, seed=2, config=config, progress=False)
    settings = profile_settings("quick", output_dir=str(tmp_path / "results"))
    base = TrainConfig(epochs=1, base_channels=4, depth=2, batch_size=8, min_samples_per_epoch=1,
                       split_fractions=(0.7, 0.15, 0.15))
    grid = run_experiment(train_data, tmp_path / "results" / "experiment", models=("unet",), losses=("dice",),
                          crf=(False,), seeds=(0, 1), base_config=base, device="cpu", progress=False)
    with pytest.warns(UserWarning, match="tumours under 10 mm, fewer than the 100"):
        scored = teststudy.evaluate_on_test_study(settings, test_data, progress=True)
    printed = capsys.readouterr().out  # a line per run as it is done
    assert all(f"unet-dice-seed{seed}: pooled Dice CRF off" in printed for seed in (0, 1)), printed
    cell = scored["cells"][0]
    assert cell["dice_pooled"]["n_patients"] == 6 and cell["dice_pooled"]["interval"] == "seeds x patients"
    assert cell["intensity_robustness_std"]["measured_on"] == "the grid's own test split"
    assert cell["intensity_robustness_std"]["mean"] == grid["cells"][0]["intensity_robustness_std"]["mean"]
    assert scored["settings"]["composition"]["patients"] == 6
    for seed in (0, 1):
        evaluation = json.loads((tmp_path / "results" / "test-study" / "runs" / f"unet-dice-seed{seed}"
                                 / "eval_crf_off.json").read_text())
        assert evaluation["n_patients"] == 6 and evaluation["split"] == "all"
        # each generated tumour once, in 3D, as the study's manifest lists them
        assert evaluation["n_tumours"] == scored["settings"]["composition"]["tumours"]
        assert evaluation["n_small_tumours"] == scored["settings"]["composition"]["tumours_under_10mm"]
    grid_runs = tmp_path / "results" / "experiment" / "runs"
    before = {p: p.read_bytes() for p in grid_runs.rglob("*") if p.is_file()}
    for inside_the_grid in (tmp_path / "results" / "experiment", grid_runs):
        with pytest.raises(LungsegError, match="lies in the published grid"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            teststudy.evaluate_on_test_study(settings, test_data, out_dir=inside_the_grid, progress=False)
    assert {p: p.read_bytes() for p in grid_runs.rglob("*") if p.is_file()} == before  # not even a record
    assert load_study(test_data).manifest["seed"] == 2
    with pytest.warns(UserWarning, match="tumours under 10 mm"):  # two runs side by side score the same
        side_by_side = teststudy.evaluate_on_test_study(settings, test_data, tmp_path / "side-by-side", progress=False,
                                                        workers=2)
    assert side_by_side["cells"] == scored["cells"] and side_by_side["differences"] == scored["differences"]
    assert side_by_side["settings"]["workers"] == 2 and scored["settings"]["workers"] == 1
    assert {r["status"] for r in scored["runs"]} == {"scored"}
    again = teststudy.evaluate_on_test_study(settings, test_data, progress=True)  # same weights, study, precision
    assert "2 of 2 runs reused" in capsys.readouterr().out
    assert [r["status"] for r in again["runs"]] == ["reused", "reused"]
    assert [r["seconds"] for r in again["runs"]] == [r["seconds"] for r in scored["runs"]]
    assert again["cells"] == scored["cells"] and again["differences"] == scored["differences"]
    # a grid given more seeds scores only what is new: here a record of another precision is scored again
    record_path = tmp_path / "results" / "test-study" / "runs" / "unet-dice-seed1" / "eval_crf_off.json"
    record_path.write_text(json.dumps({**json.loads(record_path.read_text()), "precision": "fp16"}))
    mixed = teststudy.evaluate_on_test_study(settings, test_data, progress=False)
    assert [r["status"] for r in mixed["runs"]] == ["reused", "scored"] and mixed["cells"] == scored["cells"]
    # the study regenerated in place with another seed: nothing of the first one is reused
    other = generate_study(tmp_path / "test", 6, seed=3, config=config, progress=False, overwrite=True)
    with pytest.warns(UserWarning, match="tumours under 10 mm"):
        rescored = teststudy.evaluate_on_test_study(settings, other, progress=False)
    assert [r["status"] for r in rescored["runs"]] == ["scored", "scored"]
    assert rescored["settings"]["study_fingerprint"] != scored["settings"]["study_fingerprint"]
    # each run says, once both CRF settings are written, which study it scores and where it ran
    runs_dir = tmp_path / "results" / "test-study" / "runs"
    records = [json.loads((runs_dir / f"unet-dice-seed{seed}" / teststudy.SCORED_RECORD).read_text()) for seed in (0, 1)]
    assert {r["study_fingerprint"] for r in records} == {rescored["settings"]["study_fingerprint"]}
    assert all(r["complete"] for r in records)
    assert {r["device"] for r in records} == {"cpu"} and [r["device"] for r in rescored["runs"]] == ["cpu", "cpu"]
    # a scoring stopped half-way leaves its run's record incomplete: that run is scored again even where the
    # results table names this very study, while the finished one is reused
    seed1_record = runs_dir / "unet-dice-seed1" / teststudy.SCORED_RECORD
    seed1_record.write_text(json.dumps({"complete": False, "study_fingerprint": records[1]["study_fingerprint"]}))
    with pytest.warns(UserWarning, match="tumours under 10 mm"):
        resumed = teststudy.evaluate_on_test_study(settings, other, progress=False)
    assert [r["status"] for r in resumed["runs"]] == ["reused", "scored"]
    assert resumed["cells"] == rescored["cells"] and json.loads(seed1_record.read_text())["complete"]
    # stopped before the table was written: each finished run is reused on its own record alone
    (tmp_path / "results" / "test-study" / "results.json").unlink()
    with pytest.warns(UserWarning, match="tumours under 10 mm"):
        again = teststudy.evaluate_on_test_study(settings, other, progress=False)
    assert [r["status"] for r in again["runs"]] == ["reused", "reused"] and again["cells"] == rescored["cells"]


def test_the_test_study_refuses_a_bad_worker_count(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers must be a positive integer, got 0"):
        teststudy.evaluate_on_test_study(profile_settings("quick"), tmp_path, workers=0)
