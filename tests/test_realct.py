"""Tests of lungseg.experiment.realct: the paper's comparison by patient-level CV on real patches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lungseg.errors import DataError
from lungseg.experiment import realct
from lungseg.files import read_csv
from lungseg.paper import claims, with_real_column

h5py = pytest.importorskip("h5py")
ROOT = Path(__file__).resolve().parents[1]


def _write_patches(path: Path, n_patients: int = 3, size: int = 32, seed: int = 0, labels_key: str = "labels") -> Path:
    """Bright discs on darker noise in [0, 1], 10 patches per patient, as the MSD patch file stores them."""
    rng = np.random.default_rng(seed)
    n = n_patients * realct.PATCHES_PER_PATIENT
    images = rng.uniform(0.0, 0.3, (n, 1, size, size)).astype(np.float32)
    labels = np.zeros((n, 1, size, size))
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        r, (cy, cx) = rng.uniform(3, 8), rng.uniform(size / 3, 2 * size / 3, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        labels[i, 0][disc] = 1.0
        images[i, 0][disc] = rng.uniform(0.6, 0.9)
    with h5py.File(path, "w") as fh:
        fh["images"] = images
        fh[labels_key] = labels
    return path


def test_patients_are_runs_of_ten_patches(tmp_path: Path) -> None:
    patches = realct.load_real_patches(_write_patches(tmp_path / "p.h5", n_patients=3))
    assert patches.images.shape == (30, 32, 32) and patches.masks.dtype == np.uint8
    assert patches.patients() == ["msd-00", "msd-01", "msd-02"]
    assert list(patches.patient_ids[9:11]) == ["msd-00", "msd-01"]
    assert set(np.unique(patches.masks)) == {0, 1}


def test_bad_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent"):
        realct.load_real_patches(tmp_path / "none.h5")
    with pytest.raises(DataError, match="no dataset 'labels'"):
        realct.load_real_patches(_write_patches(tmp_path / "a.h5", labels_key="masks"))
    with h5py.File(tmp_path / "b.h5", "w") as fh:
        fh["images"], fh["labels"] = np.zeros((15, 1, 8, 8), np.float32), np.zeros((15, 1, 8, 8))
    with pytest.raises(DataError, match="not a multiple of 10"):
        realct.load_real_patches(tmp_path / "b.h5")


def test_folds_must_hold_every_patient_once(tmp_path: Path) -> None:
    data = _write_patches(tmp_path / "p.h5", n_patients=3)
    with pytest.raises(ValueError, match="exactly once"):
        realct.run_real_grid(tmp_path / "out", folds=((0,), (1,)), patches_path=data)
    with pytest.raises(ValueError, match="exactly once"):
        realct.run_real_grid(tmp_path / "out", folds=((0, 1), (1, 2)), patches_path=data)


def test_real_grid_scores_every_patch_once_out_of_fold(tiny, tmp_path: Path) -> None:
    """Three patients, three folds: each patch predicted once by the model that did not train on its
    patient; the cells carry intervals over patients and the claims get a real-CT column."""
    from lungseg.crf import crf_available

    data = _write_patches(tmp_path / "p.h5", n_patients=3)
    crf = (False, True) if crf_available() else (False,)
    results = realct.run_real_grid(
        tmp_path / "grid", models=("unet", "attention"), losses=("hybrid",), crf=crf, seeds=(0,),
        folds=((0,), (1,), (2,)), patches_path=data, epochs=2, patch_size=None,
        **{k: v for k, v in tiny.items() if k != "device"})
    assert [r["model"] for r in results["runs"]] == ["unet", "attention"]
    run = tmp_path / "grid" / "runs" / "attention-hybrid-seed0"
    rows = read_csv(run / "eval_crf_off_per_image.csv.gz")
    assert len(rows) == 30 and len({(r["patient_id"], r["slice"]) for r in rows}) == 30
    # 2D patches have no tumours in 3D: the tumour-level recall is stated undefined, with the reason
    evaluation = json.loads((run / "eval_crf_off.json").read_text())
    assert evaluation["tumour_recall"] is None and "2D patches" in evaluation["tumour_rule"]
    cell = next(c for c in results["cells"] if c["model"] == "attention" and not c["crf"])
    assert cell["dice_pooled"]["interval"] == "seeds x patients" and cell["dice_pooled"]["n_patients"] == 3
    assert 0.0 <= cell["dice_pooled"]["low"] <= cell["dice_pooled"]["mean"] <= cell["dice_pooled"]["high"] <= 1.0
    assert {d["factor"] for d in results["differences"]} == ({"model", "crf"} if len(crf) == 2 else {"model"})
    again = realct.run_real_grid(
        tmp_path / "grid", models=("unet", "attention"), losses=("hybrid",), crf=crf, seeds=(0,),
        folds=((0,), (1,), (2,)), patches_path=data, epochs=2, patch_size=None,
        **{k: v for k, v in tiny.items() if k != "device"})
    assert {r["status"] for r in again["runs"]} == {"reused"} and again["cells"] == results["cells"]
    assert again["seconds"] == results["seconds"] > 0  # the runs' own times, kept when they are reused
    # a run recorded before a configuration field existed is still reused: the field reads as what it did
    record = run / "folds.json"
    older = json.loads(record.read_text())
    for added_since in ("ema_decay", "tta"):
        older["config"].pop(added_since)
    record.write_text(json.dumps(older))
    once_more = realct.run_real_grid(
        tmp_path / "grid", models=("attention",), losses=("hybrid",), crf=crf, seeds=(0,),
        folds=((0,), (1,), (2,)), patches_path=data, epochs=2, patch_size=None,
        **{k: v for k, v in tiny.items() if k != "device"})
    assert [r["status"] for r in once_more["runs"]] == ["reused"]
    rows = with_real_column(claims(results), claims(results))
    assert all(r["real_verdict"] == r["verdict"] for r in rows)
    assert with_real_column(claims(results), None)[0]["real_verdict"] == "not comparable"


@pytest.mark.skipif(not realct.real_patches_path().is_file(),
                    reason="../shared/realct (the real MSD patches) is absent in this clone")
def test_the_published_real_grid_is_reused_by_todays_code() -> None:
    """``make real-grid`` re-uses every published run instead of retraining 45 minutes of folds."""
    from lungseg.experiment.grid import run_name
    from lungseg.experimentdir import ExperimentDir

    published = ExperimentDir(ROOT / realct.REAL_GRID_DIR)
    settings = json.loads(published.results_path.read_text())["settings"]
    base = settings["base_config"]
    patches = realct.load_real_patches()
    for model in settings["models"]:
        for loss in settings["losses"]:
            for seed in settings["seeds"]:
                config = realct.real_train_config(model, loss, seed, "", epochs=base["epochs"])
                record = realct.fold_record(config, settings["folds"], patches)
                assert realct.is_scored(published.run(run_name(model, loss, seed)), record, settings["crf"]), \
                    run_name(model, loss, seed)


@pytest.mark.skipif(not realct.real_patches_path().is_file(),
                    reason="../shared/realct (the real MSD patches) is absent in this clone")
def test_the_shared_patches_are_13_patients() -> None:
    patches = realct.load_real_patches()
    assert len(patches.patients()) == 13 and patches.images.shape[1:] == (48, 48)
    assert sorted(k for fold in realct.REAL_FOLDS for k in fold) == list(range(13))
