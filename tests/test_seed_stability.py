"""``benchmarks/seed_stability.py``: its development study is no other study of the project, and its summary
is the mean and standard deviation over seeds of each variant and checkpoint."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path
from types import ModuleType

import pytest

from lungseg.experiment import profile_settings
from lungseg.experiment.teststudy import TEST_STUDY_SEED

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_development_study_is_neither_training_nor_test_nor_coverage_data() -> None:
    stability, coverage = _script("seed_stability"), _script("interval_coverage")
    studies = json.loads((ROOT / "results" / "medium" / "coverage.json").read_text())["studies"]
    used = {profile_settings("medium").data_seed, TEST_STUDY_SEED, coverage.FIRST_STUDY_SEED - 1,
            *(s["data_seed"] for s in studies)}
    assert stability.DEV_SEED not in used


def test_summary_is_mean_and_sd_over_seeds_per_variant_and_checkpoint() -> None:
    stability = _script("seed_stability")
    rows = [{"variant": v, "checkpoint": c, "seed": s, "dev_pooled_dice": d, "tumour_recall": r}
            for v, c, s, d, r in [("published", "best", 0, 0.78, 0.4), ("published", "best", 1, 0.84, 0.5),
                                  ("published", "best", 2, 0.80, 0.6), ("published", "last", 0, 0.83, 0.5),
                                  ("published", "last", 1, 0.85, 0.5), ("ema", "last", 0, 0.81, 0.4)]]
    by_key = {(s["variant"], s["checkpoint"]): s for s in stability._summary(rows)}
    best = by_key[("published", "best")]
    assert best["seeds"] == 3 and best["dev_pooled_dice_range"] == [0.78, 0.84]
    assert best["dev_pooled_dice_mean"] == pytest.approx(statistics.fmean([0.78, 0.84, 0.80]), abs=1e-12)
    assert best["dev_pooled_dice_sd"] == pytest.approx(statistics.stdev([0.78, 0.84, 0.80]), abs=1e-12)
    assert best["tumour_recall_mean"] == pytest.approx(0.5)
    assert by_key[("published", "last")]["dev_pooled_dice_sd"] == pytest.approx(statistics.stdev([0.83, 0.85]), abs=1e-4)
    single = by_key[("ema", "last")]
    assert single["seeds"] == 1 and single["dev_pooled_dice_sd"] is None  # one seed: no SD (and JSON has no NaN)
    json.dumps(stability._summary(rows), allow_nan=False)


def test_the_published_measurements_read_back() -> None:
    """Each committed run's summary agrees with its own per-run lines (one pair per machine)."""
    from lungseg.experiment import profile_dir

    folder = profile_dir(profile_settings("medium")).seed_stability_dir
    summaries = sorted(folder.glob("seed-stability-*.json"))
    assert {p.stem for p in summaries} == {"seed-stability-h200", "seed-stability-cpu"}
    for path in summaries:
        summary = json.loads(path.read_text())
        rows = [json.loads(line) for line in path.with_suffix(".jsonl").read_text().splitlines()]
        again = {(s["variant"], s["checkpoint"]): s for s in _script("seed_stability")._summary(rows)}
        for s in summary["summary"]:
            assert again[(s["variant"], s["checkpoint"])] == s
