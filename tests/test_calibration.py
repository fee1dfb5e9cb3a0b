"""Reliability diagram and expected calibration error (lungseg.metrics.calibration), by hand, and against
scikit-learn's calibration_curve where it is installed."""

from __future__ import annotations

import numpy as np
import pytest

from lungseg.metrics import expected_calibration_error, reliability


def test_reliability_by_hand() -> None:
    probs = np.array([0.1, 0.1, 0.3, 0.5, 0.9, 0.9, 0.9, 0.9])
    target = np.array([0, 1, 0, 1, 1, 1, 1, 0])
    res = reliability(probs, target, n_bins=2)
    # 0.5 sits on the inner edge and goes to the lower bin (calibration_curve's rule)
    assert res["count"] == [4, 4]
    assert res["mean_probability"] == pytest.approx([0.25, 0.9])
    assert res["observed"] == pytest.approx([0.5, 0.75])
    assert res["ece"] == pytest.approx(0.5 * 0.25 + 0.5 * 0.15)
    assert res["max_gap"] == pytest.approx(0.25)


def test_a_binary_mask_has_ece_one_minus_accuracy() -> None:
    rng = np.random.default_rng(0)
    target = rng.random((3, 16, 16)) < 0.2
    mask = (target ^ (rng.random(target.shape) < 0.1)).astype(np.float64)
    accuracy = (mask == target).mean()
    assert expected_calibration_error(mask, target) == pytest.approx(1 - accuracy)


def test_perfectly_calibrated_bins_have_no_error() -> None:
    probs = np.repeat([0.05, 0.25, 0.75], 20)
    target = np.concatenate([np.arange(20) < 1, np.arange(20) < 5, np.arange(20) < 15])
    assert reliability(probs, target)["ece"] == pytest.approx(0.0, abs=1e-12)


def test_matches_sklearn_calibration_curve() -> None:
    calibration = pytest.importorskip("sklearn.calibration")
    rng = np.random.default_rng(1)
    probs = rng.random(5000)
    target = rng.random(5000) < probs ** 2
    res = reliability(probs, target, n_bins=7)
    prob_true, prob_pred = calibration.calibration_curve(target, probs, n_bins=7, strategy="uniform")
    np.testing.assert_allclose(res["observed"], prob_true)
    np.testing.assert_allclose(res["mean_probability"], prob_pred)


@pytest.mark.parametrize("probs", [np.array([0.5, 1.2]), np.array([0.5, np.nan])])
def test_refuses_values_that_are_not_probabilities(probs: np.ndarray) -> None:
    with pytest.raises(ValueError, match="probs must be finite and in"):
        reliability(probs, np.array([0, 1]))


@pytest.mark.parametrize("n_bins", [1, 2, 10])
def test_mask_reliability_from_counts_is_reliability_of_the_mask(n_bins: int) -> None:
    from lungseg.metrics import confusion, mask_reliability

    rng = np.random.default_rng(n_bins)
    target = rng.random((2, 12, 12)) < 0.3
    mask = target ^ (rng.random(target.shape) < 0.2)
    c = confusion(mask, target)
    got, want = mask_reliability(c.tp, c.fp, c.fn, c.tn, n_bins), reliability(mask.astype(float), target, n_bins)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key]), key
    with pytest.raises(ValueError, match="counts"):
        mask_reliability(0, 0, 0, 0)
