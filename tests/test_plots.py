"""lungseg.plots (seaborn figures of the statistics) and the tables lungseg.analysis and lungseg.paper
give them: seed bands are the mean and spread of the seeds, every seed and patient is drawn, and
bad tables are clear errors."""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402

from lungseg import plots  # noqa: E402
from lungseg.analysis import paired_difference_rows, per_patient_dice  # noqa: E402
from lungseg.metrics import Confusion  # noqa: E402
from lungseg.paper import figure3_seed_values, figure3_values  # noqa: E402
from lungseg.rundir import RunDir  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _histories(seeds: int = 3, epochs: int = 5) -> dict[str, dict[str, list[float]]]:
    rng = np.random.default_rng(0)
    out = {}
    for model in ("unet", "attention"):
        for loss in ("dice", "hybrid"):
            for seed in range(seeds):
                out[f"{model}-{loss}-seed{seed}"] = {
                    "epoch": list(range(1, epochs + 1)),
                    "train_loss": list(np.linspace(1.0, 0.2, epochs) + rng.normal(0, 0.05, epochs)),
                    "val_dice": list(np.linspace(0.1, 0.7, epochs) + rng.normal(0, 0.05, epochs)),
                }
    return out


def test_parse_run_name() -> None:
    assert plots.parse_run_name("attention-hybrid-seed12") == {"model": "attention", "loss": "hybrid", "seed": 12}
    assert plots.parse_run_name("my run") == {"model": "my run", "loss": "", "seed": 0}


def test_learning_curves_draw_the_mean_over_seeds_with_a_band() -> None:
    histories = _histories()
    fig = plots.learning_curves(histories, metrics=("train_loss", "val_dice"))
    ax = fig.axes[1]
    # one line per model x loss (4), each the mean over its seeds, and one band per line
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 5]
    assert len(lines) == 4
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 4
    expected = {tuple(np.round(np.mean([histories[f"{m}-{loss}-seed{s}"]["val_dice"] for s in range(3)], axis=0), 6))
                for m in ("unet", "attention") for loss in ("dice", "hybrid")}
    assert {tuple(np.round(np.asarray(line.get_ydata(), dtype=float), 6)) for line in lines} == expected
    # the band spans mean +- SD of the seeds at each epoch
    unet_dice = np.array([histories[f"unet-dice-seed{s}"]["val_dice"] for s in range(3)])
    lo, hi = unet_dice.mean(0) - unet_dice.std(0, ddof=1), unet_dice.mean(0) + unet_dice.std(0, ddof=1)
    spans = [np.asarray(b.get_paths()[0].vertices)[:, 1] for b in bands]
    assert any(np.isclose(s.min(), lo.min()) and np.isclose(s.max(), hi.max()) for s in spans)


def test_learning_curves_with_one_seed_have_no_band_and_best_stars() -> None:
    histories = {k: v for k, v in _histories(seeds=1).items()}
    best = {"unet-dice-seed0": (3.0, 0.5), "attention-dice-seed0": (float("nan"), 0.5)}
    fig = plots.learning_curves(histories, best=best)
    ax = fig.axes[1]
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
    stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_xdata()) == [3.0]
    assert "no band" in fig._suptitle.get_text()


def test_learning_curves_errors() -> None:
    with pytest.raises(ValueError, match="histories is empty"):
        plots.learning_curves({})
    with pytest.raises(ValueError, match="'unet-dice-seed0' has no column 'lr'"):
        plots.learning_curves({"unet-dice-seed0": {"epoch": [1], "train_loss": [1.0]}}, metrics=("lr",))
    with pytest.raises(ValueError, match="spread must be one of"):
        plots.learning_curves(_histories(), spread="iqr")
    frame = pd.DataFrame({"train_loss": [1.0, 0.5], "val_dice": [0.1, 0.2]})
    assert plots.history_frame({"x": frame}, ["val_dice"])["epoch"].tolist() == [1.0, 2.0]


def _results(tmp_path: Path, seeds=(0, 1), patients=("p1", "p2")) -> dict:
    """A results table whose runs have per-image evaluations on disk."""
    rng = np.random.default_rng(1)
    runs = []
    for model in ("unet", "attention"):
        for seed in seeds:
            run = RunDir(tmp_path / f"{model}-hybrid-seed{seed}").create()
            for crf in (False, True):
                with gzip.open(run.per_image_path(crf), "wt", newline="", encoding="utf-8") as fh:
                    w = csv.writer(fh)
                    w.writerow(["image_id", "patient_id", "slice", "tumour_pixels", "predicted_pixels", "dice",
                                "tp", "fp", "fn", "tn"])
                    for pid in patients:
                        for z in range(3):
                            tp, fp, fn = (int(v) for v in rng.integers(0, 20, 3))
                            w.writerow([f"{pid}:{z}", pid, z, tp + fn, tp + fp, "", tp, fp, fn, 1000])
            runs.append({"run": str(run.path), "model": model, "loss": "hybrid", "seed": seed, "status": "trained"})
    return {"runs": runs}


def test_per_patient_dice_pools_each_patients_slices(tmp_path: Path) -> None:
    results = _results(tmp_path)
    rows = per_patient_dice(results, crf=True)
    assert len(rows) == 2 * 2 * 2  # models x seeds x patients
    row = next(r for r in rows if r["model"] == "unet" and r["seed"] == 1 and r["patient_id"] == "p2")
    with gzip.open(RunDir(tmp_path / "unet-hybrid-seed1").per_image_path(True), "rt", encoding="utf-8") as fh:
        mine = [r for r in csv.DictReader(fh) if r["patient_id"] == "p2"]
    c = Confusion(tp=sum(int(r["tp"]) for r in mine), fp=sum(int(r["fp"]) for r in mine),
                  fn=sum(int(r["fn"]) for r in mine), tn=sum(int(r["tn"]) for r in mine))
    assert row["dice"] == pytest.approx(c.dice)
    fig = plots.dice_distributions(rows, x="loss", hue="model")
    dots = sum(len(c.get_offsets()) for c in fig.axes[0].collections if hasattr(c, "get_offsets"))
    assert dots >= len(rows)  # every patient of every seed is a dot
    with pytest.raises(FileNotFoundError, match="evaluate the run"):
        per_patient_dice({"runs": [{"run": str(tmp_path / "none"), "model": "unet", "loss": "x", "seed": 0}]}, crf=True)
    with pytest.raises(ValueError, match="lack the columns"):
        plots.dice_distributions([{"model": "unet", "dice": 0.5}])


def _medium_results() -> dict:
    import json

    path = Path(__file__).resolve().parents[1] / "results" / "medium" / "experiment" / "results.json"
    if not path.is_file():
        pytest.skip("no published medium results")
    return json.loads(path.read_text(encoding="utf-8"))


def _bars(ax) -> list:
    """The bars of a bar chart (seaborn also adds invisible patches for its legend)."""
    return [p for c in ax.containers if isinstance(c, BarContainer) for p in c]


def test_figure3_bars_intervals_and_seed_dots_from_the_published_results() -> None:
    results = _medium_results()
    values, paper = figure3_values(results, crf=True)
    seeds = figure3_seed_values(results, crf=True)
    fig = plots.figure3(values, seed_values=seeds, paper=paper)
    ax = fig.axes[0]
    models = list(values)
    metrics = list(values[models[0]])
    heights = sorted(round(p.get_height(), 6) for p in _bars(ax) if p.get_height() == p.get_height())
    means = sorted(round(v[0] if isinstance(v, tuple) else v, 6) for m in models for v in values[m].values()
                   if not (isinstance(v, float) and math.isnan(v)))
    assert heights == means
    n_seed_dots = sum(len(v) for m in models for v in seeds[m].values())
    offsets = [c.get_offsets() for c in ax.collections if hasattr(c, "get_offsets")]
    assert sum(len(o) for o in offsets) >= n_seed_dots + len(metrics)  # the seeds' dots and the paper's diamonds
    assert any(type(c).__name__ == "LineCollection" for c in ax.collections)  # the intervals


def test_figure3_checks_its_values() -> None:
    with pytest.raises(ValueError, match="does not contain the mean"):
        plots.figure3({"unet": {"Dice": (0.9, 0.1, 0.2)}})
    with pytest.raises(ValueError, match=r"\(mean, low, high\)"):
        plots.figure3({"unet": {"Dice": (0.9, 0.1)}})
    with pytest.raises(ValueError, match="values is empty"):
        plots.figure3({})
    fig = plots.figure3({"unet": {"Dice": 0.5}, "attention": {"Dice": 0.6}})  # one seed: bars without intervals
    assert sorted(round(p.get_height(), 6) for p in _bars(fig.axes[0])) == [0.5, 0.6]


def test_paired_differences_from_the_published_results() -> None:
    rows = paired_difference_rows(_medium_results(), "dice_pooled")
    assert rows and all(r["low"] <= r["mean"] <= r["high"] for r in rows if not math.isnan(r["low"]))
    fig = plots.paired_differences(rows[:6])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [r["label"] for r in rows[:6]]
    assert sum(len(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets")) >= sum(
        len(r["values"]) for r in rows[:6])
    with pytest.raises(ValueError, match="no metric 'nope'"):
        paired_difference_rows(_medium_results(), "nope")
    with pytest.raises(ValueError, match="no paired differences"):
        paired_difference_rows({"differences": []})


# ---------------------------------------------------------------- the field's evaluation figures
def test_froc_curve_draws_each_curve_in_threshold_order():
    from lungseg.metrics import froc

    target = np.zeros((2, 8, 8), np.uint8)
    target[:, 2:4, 2:4] = 1
    probs = target * np.array([0.9, 0.4])[:, None, None] + np.pad(np.full((2, 1, 1), 0.6), ((0, 0), (6, 1), (6, 1)))
    curve = froc(probs, target, ["a", "b"], [0.95, 0.3, 0.5])
    fig = plots.froc_curve({"attention": curve, "other": curve})
    (line, _) = fig.axes[0].get_lines()
    assert list(line.get_xdata()) == curve["fp_per_scan"] and list(line.get_ydata()) == curve["sensitivity"]
    assert line.get_color().lower() == plots.COLORS["attention"].lower()
    with pytest.raises(ValueError, match="missing"):
        plots.froc_curve({"x": {"sensitivity": [1.0]}})


def test_reliability_diagram_quotes_the_ece_and_draws_the_diagonal():
    from lungseg.metrics import reliability

    res = reliability(np.array([0.1, 0.1, 0.9, 0.9]), np.array([0, 1, 1, 1]), n_bins=2)
    fig = plots.reliability_diagram({"probabilities": res})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["perfect calibration", f"probabilities: ECE {res['ece']:.4f}"]
    assert list(fig.axes[0].get_lines()[1].get_ydata()) == res["observed"]


def test_bland_altman_plot_draws_bias_and_limits():
    from lungseg.metrics import bland_altman

    res = bland_altman([11.0, 22.0, 33.0], [10.0, 20.0, 30.0])
    fig = plots.bland_altman_plot(res, labels=["a", "b", "c"])
    heights = sorted({round(line.get_ydata()[0], 6) for line in fig.axes[0].get_lines()})
    assert heights == sorted({0.0, 2.0, round(res["limits"][0], 6), round(res["limits"][1], 6)})
    assert [t.get_text() for t in fig.axes[0].texts] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="missing"):
        plots.bland_altman_plot({"bias": 0.0})


def test_training_range_plot_puts_each_scan_beside_the_patches():
    record = {"patches": [{"diameter_mm": d, "attached_share": 0.1, "repeat_of": None} for d in (10.0, 20.0, 60.0)]
              + [{"diameter_mm": 90.0, "attached_share": 0.1, "repeat_of": 0}],  # a repeat: drawn once, not again
              "scans": {"A": {"cross_sections": [{"diameter_mm": 15.0, "attached_share": 0.0, "found": 0.9}]},
                        "B": {"cross_sections": [{"diameter_mm": 70.0, "attached_share": 0.2, "found": 0.0},
                                                 {"diameter_mm": 30.0, "attached_share": 0.3, "found": 0.1}]}}}
    fig = plots.training_range_plot(record)
    left, right = fig.axes
    assert len(left.collections) == 3 and [len(line.get_xdata()) for line in right.lines[:2]] == [1, 2]
    assert left.lines[0].get_xdata()[0] == 60.0  # the widest distinct training cross-section
    assert len(left.collections[0].get_offsets()) == 3
    plt.close(fig)
    with pytest.raises(ValueError, match="missing \\['scans'\\]"):
        plots.training_range_plot({"patches": []})
