"""The crossed (seeds x patients) bootstrap of lungseg.metrics.summary."""

from __future__ import annotations

import numpy as np
import pytest

from lungseg.metrics import (
    crossed_interval,
    interval_sources,
    paired_crossed_interval,
    resampled_coverage,
    sample_needed,
)


def _pooled_dice_tables(rng, n_seeds, n_patients, seed_sd=0.0):
    tp = rng.integers(50, 500, (1, n_patients)) * np.ones((n_seeds, 1))
    skill = np.clip(0.8 + rng.normal(0, seed_sd, (n_seeds, 1)), 0.05, 1.0)
    fn = np.round(tp * (1 - skill) / skill)
    fp = rng.integers(0, 100, (n_seeds, n_patients))
    return 2 * tp, 2 * tp + fp + fn


def test_the_figure_is_the_mean_over_seeds_of_the_pooled_ratio():
    num = np.array([[2.0, 4.0], [1.0, 1.0]])
    den = np.array([[4.0, 4.0], [2.0, 8.0]])
    out = crossed_interval(num, den, n_boot=50)
    assert out["mean"] == pytest.approx(np.mean([6 / 8, 2 / 10]))
    assert out["low"] <= out["mean"] <= out["high"]
    assert (out["n_seeds"], out["n_patients"]) == (2, 2)


def test_the_interval_widens_with_seed_spread_and_narrows_with_patients():
    rng = np.random.default_rng(0)
    calm = crossed_interval(*_pooled_dice_tables(rng, 3, 40), n_boot=400)
    shaky = crossed_interval(*_pooled_dice_tables(rng, 3, 40, seed_sd=0.1), n_boot=400)
    many = crossed_interval(*_pooled_dice_tables(rng, 3, 400), n_boot=400)
    width = {k: v["high"] - v["low"] for k, v in {"calm": calm, "shaky": shaky, "many": many}.items()}
    assert width["shaky"] > 2 * width["calm"]
    assert width["many"] < width["calm"]


def test_undefined_patients_and_figures():
    num = np.array([[0.0, 1.0]])
    den = np.array([[0.0, 1.0]])  # patient 0 undefined (0/0): left out of a mean over patients
    assert crossed_interval(num, den, n_boot=20)["mean"] == pytest.approx(1.0)
    empty = crossed_interval(np.zeros((2, 3)), np.zeros((2, 3)), n_boot=20)
    assert empty["mean"] is None and empty["low"] is None


def test_a_paired_difference_cancels_what_both_cells_share():
    rng = np.random.default_rng(1)
    num, den = _pooled_dice_tables(rng, 3, 30, seed_sd=0.1)
    same = paired_crossed_interval(num, den, num, den, n_boot=200)
    assert same["mean"] == 0 and same["low"] == 0 and same["high"] == 0
    better = paired_crossed_interval(num, den, num + 0.05 * den, den, n_boot=200)
    assert better["mean"] == pytest.approx(0.05) and better["low"] > 0


def test_patient_level_coverage_is_near_nominal():
    # one seed, known population: pooled Dice over 60 of a large population of patients
    rng = np.random.default_rng(2)
    pop_tp = rng.integers(10, 800, 20000).astype(float)
    pop_err = rng.gamma(2.0, 0.3, 20000) * pop_tp
    truth = (2 * pop_tp).sum() / (2 * pop_tp + pop_err).sum()
    hits = 0
    for k in range(100):
        idx = rng.integers(0, 20000, 60)
        out = crossed_interval((2 * pop_tp[idx])[None], (2 * pop_tp[idx] + pop_err[idx])[None], n_boot=300, seed=k)
        hits += out["low"] <= truth <= out["high"]
    assert 85 <= hits <= 100


@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((2, 0))])
def test_bad_shapes_are_refused_with_the_shapes(bad):
    with pytest.raises(ValueError, match="n_seeds, n_patients"):
        crossed_interval(bad, bad)
    with pytest.raises(ValueError, match="same"):
        paired_crossed_interval(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 4)), np.ones((2, 4)))


def _population(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-patient 2TP and 2TP + FP + FN of a model with Dice about 0.7 on tumours of varied size."""
    size = rng.lognormal(6, 1, n)
    tp = rng.binomial(size.astype(int), 0.7)
    errors = rng.poisson(0.6 * size)
    return 2.0 * tp, 2.0 * tp + errors


def test_resampled_coverage_of_a_95_interval_is_near_95_percent() -> None:
    num, den = _population(np.random.default_rng(0), 400)
    out = resampled_coverage(num, den, 100, n_studies=400, n_boot=1000)
    assert out["population_value"] == pytest.approx(num.sum() / den.sum())
    assert 0.90 <= out["coverage"] <= 0.98  # neither too narrow nor too wide (the next two tests)
    assert out["coverage_low"] < out["coverage"] < out["coverage_high"]
    assert out["n_undefined"] == 0
    assert 0 < out["mean_half_width"] < 0.2


def test_resampled_coverage_exposes_an_interval_too_narrow() -> None:
    """A 50 % interval sold as 95 % would be caught: its coverage lands far below 90 %."""
    num, den = _population(np.random.default_rng(1), 400)
    out = resampled_coverage(num, den, 100, n_studies=200, n_boot=400, level=0.5)
    assert out["coverage"] < 0.7
    assert out["coverage_high"] < 0.9


def test_resampled_coverage_exposes_an_interval_too_wide() -> None:
    """A 99.9 % interval sold as 95 % would be caught too: its coverage lands above the 0.98 accepted above."""
    num, den = _population(np.random.default_rng(1), 400)
    assert resampled_coverage(num, den, 100, n_studies=200, n_boot=4000, level=0.999)["coverage"] > 0.98


def test_the_wilson_interval_of_a_proportion() -> None:
    from lungseg.metrics.summary import _wilson

    assert _wilson(17, 20) == pytest.approx((0.6396, 0.9476), abs=1e-4)  # statsmodels proportion_confint
    assert _wilson(20, 20)[1] == 1.0 and _wilson(0, 20)[0] == 0.0
    assert _wilson(20, 20)[0] == pytest.approx(0.8389, abs=1e-4)


def test_resampled_coverage_is_reproducible_and_checks_its_arguments() -> None:
    num, den = _population(np.random.default_rng(2), 60)
    assert resampled_coverage(num, den, 30, n_studies=20, n_boot=100, seed=3) == \
        resampled_coverage(num, den, 30, n_studies=20, n_boot=100, seed=3)
    with pytest.raises(ValueError, match="1-D"):
        resampled_coverage(num[None], den[None], 30)
    with pytest.raises(ValueError, match="positive integer"):
        resampled_coverage(num, den, 0)
    with pytest.raises(ValueError, match="positive integer"):
        resampled_coverage(num, den, 2.5)
    with pytest.raises(ValueError, match="level"):
        resampled_coverage(num, den, 3, level=1.5)
    with pytest.raises(ValueError, match="equal"):
        resampled_coverage(num, den[:-1], 3)
    with pytest.raises(ValueError, match="undefined"):
        resampled_coverage(np.zeros(5), np.zeros(5), 3)


def test_interval_sources_split_the_width_between_seeds_and_patients():
    rng = np.random.default_rng(4)
    # identical seeds: the seeds make no width, the patients all of it
    num, den = (np.repeat(a[:1], 5, axis=0) for a in _pooled_dice_tables(rng, 5, 60))
    calm = interval_sources(num, den, n_boot=400)
    assert calm["seeds"] == pytest.approx(0.0, abs=1e-12) and calm["patients"] > 0
    assert calm["both"] == pytest.approx(calm["patients"], rel=0.25)
    # the same patients with shaky seeds: the seeds' part grows, the whole stays the table's interval
    shaky_num, shaky_den = _pooled_dice_tables(np.random.default_rng(4), 5, 60, seed_sd=0.1)
    shaky = interval_sources(shaky_num, shaky_den, n_boot=400)
    table = crossed_interval(shaky_num, shaky_den, n_boot=400)
    assert shaky["both"] == pytest.approx((table["high"] - table["low"]) / 2)
    assert shaky["seeds"] > 0.01
    # independent sources: the variances add
    assert shaky["both"] == pytest.approx(np.hypot(shaky["seeds"], shaky["patients"]), rel=0.25)
    assert (shaky["n_seeds"], shaky["n_patients"]) == (5, 60)
    undefined = interval_sources(np.zeros((2, 3)), np.zeros((2, 3)), n_boot=20)
    assert undefined["mean"] is None and undefined["both"] is None


def test_sample_needed_projects_the_shrinking_source():
    # patients alone 0.04 at 200, seeds alone 0.02: 0.02**2 + 0.04**2 * 200 / n <= 0.03**2 -> n = 640
    assert sample_needed(0.02, 0.04, 200, 0.03) == 640
    assert sample_needed(0.0, 0.01, 200, 0.03) <= 200  # already narrow enough: fewer would do
    assert sample_needed(0.03, 0.01, 5, 0.03) is None  # the other source alone fills the target
    assert sample_needed(0.05, 0.01, 5, 0.03) is None
    with pytest.raises(ValueError, match="target"):
        sample_needed(0.01, 0.01, 5, 0.0)


def test_more_patients_shrink_the_patients_part_as_projected():
    rng = np.random.default_rng(5)
    few = interval_sources(*_pooled_dice_tables(rng, 3, 50), n_boot=1000)
    many = interval_sources(*_pooled_dice_tables(rng, 3, 800), n_boot=1000)
    # sixteen times the patients: a quarter of the width (sampling noise allowed)
    assert many["patients"] == pytest.approx(few["patients"] / 4, rel=0.35)
