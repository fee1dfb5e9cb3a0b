"""``benchmarks/central_pretraining.py``: the rule's published baselines are the committed measurements, and the
rule adopts only when both of its parts hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_baselines_are_the_published_measurements(load_benchmark: Any) -> None:
    module = load_benchmark("central_pretraining")
    bf16 = json.loads((ROOT / "results/real-ct/three-plane-bf16-synthetic.json").read_text(encoding="utf-8"))
    assert module.PUBLISHED_SETS == {r["seed"]: (r["bf16"]["pooled_dice"], r["bf16"]["recall"]) for r in bf16["sets"]}
    rows = [json.loads(line) for line in module.CV_ROWS.read_text(encoding="utf-8").splitlines() if line.strip()]
    defaults = [r["scores"][module.CV_KEY] for r in rows if r["variant"] == "defaults" and r["seed"] == 0]
    assert len(defaults) == 5 and module.PUBLISHED_CV == pytest.approx(np.mean(defaults), abs=5e-4)


def test_adopted_only_when_the_cross_validation_and_every_synthetic_set_hold(load_benchmark: Any) -> None:
    module = load_benchmark("central_pretraining")
    rows = [{"variant": module.VARIANT, "seed": 0, "fold": f, "scores": {module.CV_KEY: d}}
            for f, d in enumerate((0.8, 0.6, 0.7, 0.72, 0.75))]
    cv = module.cross_validation(rows + [{"variant": "defaults", "seed": 0, "fold": 0, "scores": {module.CV_KEY: 0.0}}])
    assert cv["per_fold"] == [0.8, 0.6, 0.7, 0.72, 0.75] and cv["mean"] == pytest.approx(0.714) and cv["bar"] == pytest.approx(0.712) and cv["holds"]
    assert not module.cross_validation([{**r, "scores": {module.CV_KEY: 0.70}} for r in rows])["holds"]
    with pytest.raises(SystemExit, match="five folds"):
        module.cross_validation(rows[:4])
    better = [{"seed": seed, "candidate": {"pooled_dice": dice + 0.01, "recall": recall - 0.03}}
              for seed, (dice, recall) in module.PUBLISHED_SETS.items()]
    assert module.whole_scans_hold(better)
    assert not module.whole_scans_hold([{**better[0], "candidate": {"pooled_dice": 0.0, "recall": 1.0}}, *better[1:]])
    assert not module.whole_scans_hold([{**better[0], "candidate": {"pooled_dice": 1.0, "recall": 0.0}}, *better[1:]])


def test_the_seeds_report_pairs_each_seed_by_fold_and_averages_seeds_before_pairing(load_benchmark: Any) -> None:
    module = load_benchmark("central_pretraining")

    def rows(variant: str, seed: int, values: tuple[float, ...]) -> list[dict[str, Any]]:
        return [{"variant": variant, "seed": seed, "fold": f, "scores": {module.CV_KEY: d}} for f, d in enumerate(values)]

    table = (rows(module.VARIANT, 0, (0.7, 0.5, 0.7, 0.7, 0.7)) + rows("defaults", 0, (0.8, 0.6, 0.8, 0.8, 0.8))
             + rows(module.VARIANT, 1, (0.9, 0.7, 0.9, 0.9, 0.9)) + rows("defaults", 1, (0.8, 0.6, 0.8, 0.8, 0.8))
             + rows(module.VARIANT, 2, (0.9, 0.9, 0.9, 0.9)))  # four folds: left out
    report = module.seeds_report(table)
    assert list(report["per_seed"]) == ["0", "1"]
    assert report["per_seed"]["0"]["difference"] == pytest.approx(-0.1) and report["per_seed"]["1"]["difference"] == pytest.approx(0.1)
    assert report["over_seeds"]["seeds"] == [0, 1] and report["over_seeds"]["difference"] == pytest.approx(0.0)
    assert report["over_seeds"]["candidate"] == pytest.approx(0.76)
    assert "over_seeds" not in module.seeds_report(table[:10])
