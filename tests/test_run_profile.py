"""scripts/run_profile.py: a tiny grid end to end, then the published layout."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from lungseg.experimentdir import ExperimentDir
from lungseg.rundir import RunDir

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "run_profile.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("run_profile", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


rp = _load_script()

TINY = dict(n_patients=6, phantom_size=32, phantom_slices=4, image_size=32, base_channels=4, depth=2,
            epochs=2, batch_size=4, seeds=(0, 1), losses=("hybrid",), n_boot=0)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("profile")
    out = rp.run_profile(
        "quick", device="cpu", runs_dir=tmp / "runs", results_dir=tmp / "results",
        overrides={**TINY, "data_dir": str(tmp / "data")},
        train_overrides={"samples_per_epoch": 8, "patience": 1}, progress=False,
    )
    return out, tmp


@pytest.mark.slow
def test_published_layout(published: tuple[Path, Path]) -> None:
    out, tmp = published
    exp = out / "experiment"
    for path in ExperimentDir(exp).table_paths:
        assert path.is_file(), path.name
    with open(exp / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 1 * 2  # models x losses x CRF off/on
    run_dirs = sorted(p.name for p in (exp / "runs").iterdir())
    assert run_dirs == sorted(f"{m}-hybrid-seed{s}" for m in ("unet", "attention") for s in (0, 1))
    for folder in (exp / "runs").iterdir():
        run = RunDir(folder)
        for path in run.published_files():
            assert path.is_file(), f"{run.path.name}/{path.name}"
        assert not run.has_checkpoint("last")
    # the full runs (with checkpoints) stay outside the published folder
    assert RunDir(tmp / "runs" / "experiment" / "runs" / "unet-hybrid-seed0").has_checkpoint("last")
    # chapter 5's tumour table of the published weights is read back without the data
    from lungseg.analysis import grid_tumour_table

    found = grid_tumour_table([exp / "runs" / name for name in run_dirs],
                              lambda: pytest.fail("the published tumour table was not used"), ExperimentDir(exp).tumours_path)
    assert found["split"] == "test" and all(f"recall:{name}" in found["rows"][0] for name in run_dirs)


@pytest.mark.slow
def test_every_run_publishes_compact_weights_and_the_best_attention_run_a_card(published: tuple[Path, Path]) -> None:
    out, tmp = published
    runs = sorted((out / "experiment" / "runs").iterdir())
    for folder in runs:
        run = RunDir(folder)
        weights = torch.load(run.checkpoint_path("best"), weights_only=True)
        assert weights["weights_dtype"] == "float16" and run.checkpoint_path("best").stat().st_size < rp.MAX_MODEL_BYTES
        assert all(v.dtype != torch.float32 for v in weights["model"].values())
        assert run.is_finished()  # the book's grid reuses the published runs without retraining
    cards = list(out.rglob("MODEL_CARD.md"))
    assert len(cards) == 1 and cards[0].parent.name.startswith("attention-")
    card = cards[0].read_text()
    assert "synthetic" in card and "demonstration only" in card and "pooled" in card
    # the card goes with the attention run of the highest validation Dice
    dices = {p.name: RunDir(p).read_metrics()["best_val_dice"] for p in (out / "experiment" / "runs").glob("attention-*")}
    assert cards[0].parent.name == max(dices, key=dices.get)



@pytest.mark.slow
def test_provenance(published: tuple[Path, Path]) -> None:
    out, _ = published
    prov = json.loads((out / "provenance.json").read_text())
    for key in ("git", "device", "torch", "grid_wall_s", "time_per_epoch_s", "where_time_went_s", "per_run",
                "settings", "train_settings", "best_attention_model"):
        assert key in prov, key
    assert prov["profile"] == "quick" and prov["settings"]["n_patients"] == TINY["n_patients"]
    assert prov["train_settings"]["samples_per_epoch"] == 8
    assert len(prov["per_run"]) == 4
    for run in prov["per_run"].values():
        assert run["epochs_run"] >= 1 and run["time_per_epoch_s"] > 0
        assert run["train_wall_s"] >= run["train_and_validate_s"]
        assert run["evaluate_crf_off_s"] is not None and run["evaluate_crf_on_s"] is not None
    spent = sum(prov["where_time_went_s"].values())
    assert 0 < spent <= prov["grid_wall_s"] + 1.0
    assert 0 < prov["grid_span_from_files_s"] <= prov["grid_wall_s"] + 1.0


@pytest.mark.slow
def test_rerun_reuses_runs_and_replaces_stale_publication(published: tuple[Path, Path]) -> None:
    out, tmp = published
    stale = out / "experiment" / "runs" / "unet-dice-seed9"
    stale.mkdir()
    rp.run_profile(
        "quick", device="cpu", runs_dir=tmp / "runs", results_dir=tmp / "results",
        overrides={**TINY, "data_dir": str(tmp / "data")},
        train_overrides={"samples_per_epoch": 8, "patience": 1}, progress=False,
    )
    assert not stale.exists()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["runs_trained_in_this_call"] == 0
    assert {r["status"] for r in prov["per_run"].values()} == {"reused"}
    assert prov["grid_span_from_files_s"] > prov["grid_wall_s"]  # the span of the first call, kept


def test_cli_rejects_unknown_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert rp.main(["--profile", "huge"]) == 2
    assert "profile must be one of" in capsys.readouterr().err


def test_cli_rejects_bad_threads(capsys: pytest.CaptureFixture[str]) -> None:
    assert rp.main(["--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
