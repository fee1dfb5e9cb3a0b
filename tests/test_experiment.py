"""The experiment grid: runs reused, per-cell mean and 95 % CI over seeds, paired differences."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from lungseg.config import TrainConfig
from lungseg.experiment import mean_ci, refresh_results, run_experiment


def test_mean_ci_is_a_student_t_interval() -> None:
    v = [0.5, 0.7, 0.65, 0.6]
    r = mean_ci(v)
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert r["mean"] == pytest.approx(np.mean(v)) and r["low"] == pytest.approx(lo) and r["high"] == pytest.approx(hi)
    assert mean_ci([0.3])["low"] is None and mean_ci([])["mean"] is None
    assert mean_ci([0.2, float("nan"), 0.4])["n"] == 2


@pytest.mark.slow
def test_grid_with_reuse_and_paired_differences(make_npz, tmp_path: Path) -> None:
    data = make_npz(tmp_path / "d.npz", n_patients=8, per_patient=3, size=32, seed=8)
    base = TrainConfig(epochs=1, base_channels=4, depth=2, batch_size=8, lr=3e-3, split_fractions=(0.7, 0.15, 0.15))
    kw = dict(models=("unet", "attention"), losses=("dice",), crf=(False, True), seeds=(0, 1),
              base_config=base, device="cpu", progress=False)
    res = run_experiment(data, tmp_path / "exp", **kw)
    assert len(res["cells"]) == 4 and all(r["status"] == "trained" for r in res["runs"])
    for name in ("results.csv", "results.json", "differences.csv"):
        assert (tmp_path / "exp" / name).is_file()
    # Each cell's mean is the mean over seeds of the runs' own evaluations.
    cell = next(c for c in res["cells"] if c["model"] == "unet" and not c["crf"])
    per_seed = [json.loads((tmp_path / "exp" / "runs" / f"unet-dice-seed{s}" / "eval_crf_off.json").read_text())
                ["pooled"]["dice"] for s in (0, 1)]
    assert cell["dice_pooled"]["mean"] == pytest.approx(np.mean(per_seed))
    assert cell["dice_pooled"]["n"] == 2 and cell["dice_pooled"]["low"] <= cell["dice_pooled"]["high"]
    # Pixel figures resample seeds and test patients; lesion figures have a t-interval over seeds.
    assert cell["dice_pooled"]["interval"] == "seeds x patients" and cell["dice_pooled"]["n_patients"] >= 1
    assert cell["small_tumor_recall"]["interval"] == "seeds (t)"
    # Forming the table again from the saved evaluations gives the same table.
    assert refresh_results(tmp_path / "exp")["cells"] == json.loads((tmp_path / "exp" / "results.json").read_text())["cells"]
    # Differences only between cells differing in one factor, paired by seed.
    factors = sorted(d["factor"] for d in res["differences"])
    assert factors == ["crf", "crf", "model", "model"]
    d = next(d for d in res["differences"] if d["factor"] == "model" and not d["a"]["crf"])
    att = [json.loads((tmp_path / "exp" / "runs" / f"attention-dice-seed{s}" / "eval_crf_off.json").read_text())
           ["pooled"]["dice"] for s in (0, 1)]
    assert d["dice_pooled"]["mean"] == pytest.approx(np.mean(np.subtract(att, per_seed)))
    # All runs share one patient split.
    splits = {(p / "split.json").read_text() for p in (tmp_path / "exp" / "runs").iterdir()}
    assert len(splits) == 1
    # The boundary figures are columns of the table, means over the seeds' evaluations.
    hd = [json.loads((tmp_path / "exp" / "runs" / f"unet-dice-seed{s}" / "eval_crf_off.json").read_text())
          ["boundary"]["per_image"]["surface_dice"] for s in (0, 1)]
    assert cell["surface_dice_per_image"]["values"] == pytest.approx([h for h in hd if h is not None])
    assert "hd95_mm_per_patient_mean" in (tmp_path / "exp" / "results.csv").read_text().splitlines()[0]
    # An evaluation from before the boundary figures is made again; the others are reused.
    stale = tmp_path / "exp" / "runs" / "unet-dice-seed0" / "eval_crf_on.json"
    record = json.loads(stale.read_text())
    stale.write_text(json.dumps({k: v for k, v in record.items() if k != "boundary"}))
    # A second call reuses every finished run and gives the same table; the file, its figures unchanged,
    # keeps the provenance of the call that made them (re-executing the book must not restamp it).
    table = tmp_path / "exp" / "results.json"
    written = table.read_bytes()
    again = run_experiment(data, tmp_path / "exp", **kw)
    assert all(r["status"] == "reused" for r in again["runs"])
    assert "boundary" in json.loads(stale.read_text())
    assert again["cells"] == res["cells"]
    assert not math.isnan(again["cells"][0]["dice_pooled"]["mean"])
    assert table.read_bytes() == written and again["provenance"] == res["provenance"]
    # A table whose figures differ from what the runs give is written again, with this call's provenance.
    record = json.loads(written)
    record["cells"][0]["dice_pooled"]["mean"] = 0.123
    table.write_text(json.dumps(record))
    third = run_experiment(data, tmp_path / "exp", **kw)
    assert third["cells"] == res["cells"] and third["provenance"] != res["provenance"]
    assert json.loads(table.read_text())["cells"] == res["cells"]
    assert all(r["status"] == "reused" for r in json.loads(table.read_text())["runs"])


def test_seed_intervals_stay_inside_the_metrics_range() -> None:
    r = mean_ci([0.02, 0.9, 0.01], bounds=(0.0, 1.0))
    assert r["low"] == 0.0 and r["high"] == 1.0 and r["values"] == [0.02, 0.9, 0.01]
    d = mean_ci([-0.5, 0.4, 0.0], bounds=(-1.0, 1.0))
    assert -1.0 <= d["low"] < 0 < d["high"] <= 1.0


def test_a_figure_missing_from_some_runs_gives_no_number() -> None:
    """A grid extended with new seeds whose records hold a figure the older ones predate: the cell shows
    no number for it rather than a mean over the new seeds alone; figures every run holds are kept."""
    from lungseg.experiment.grid import NOT_IN_EVERY_RUN, grid_cells, grid_differences

    def record(dice: float, tumours: bool) -> dict:
        return {"pooled": {"dice": dice}, **({"tumour_recall": dice} if tumours else {})}

    evaluations = {(model, "dice", False, seed): record(0.5 + 0.1 * seed, tumours=seed > 0)
                   for model in ("unet", "attention") for seed in (0, 1, 2)}
    tables = dict.fromkeys(evaluations)
    cells = grid_cells(evaluations, tables, ("unet", "attention"), ("dice",), (False,), (0, 1, 2))
    assert cells[0]["tumour_recall"] == NOT_IN_EVERY_RUN and cells[0]["dice_pooled"]["mean"] == pytest.approx(0.6)
    assert cells[0]["lesion_recall"]["mean"] is None and cells[0]["lesion_recall"]["interval"] == "not in every run's evaluation (some were made before the figure existed)"
    diffs = grid_differences(evaluations, tables, ("unet", "attention"), ("dice",), (False,), (0, 1, 2))
    assert diffs[0]["tumour_recall"]["mean"] is None and diffs[0]["dice_pooled"]["mean"] == pytest.approx(0.0)
    for evaluation in evaluations.values():
        evaluation["tumour_recall"] = None  # held by every run, undefined on its data
    assert grid_cells(evaluations, tables, ("unet",), ("dice",), (False,), (0, 1, 2))[0]["tumour_recall"]["n"] == 0
