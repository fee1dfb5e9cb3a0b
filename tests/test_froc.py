"""Lesion-level FROC (lungseg.metrics.froc) on hand-computed stacks, and its agreement with summarize."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lungseg.metrics import false_positive_components, froc, froc_score, lesion_detection_scores, summarize


def _case() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Two scans of one 8x8 slice each. Scan a: a 4-pixel lesion whose probabilities are 0.9, 0.8, 0.2,
    0.1, and a spurious blob of 0.6 away from it. Scan b: a 1-pixel lesion at 0.4, nothing else."""
    target = np.zeros((2, 8, 8), np.uint8)
    probs = np.zeros((2, 8, 8))
    target[0, 1:3, 1:3] = 1
    probs[0, 1, 1], probs[0, 1, 2], probs[0, 2, 1], probs[0, 2, 2] = 0.9, 0.8, 0.2, 0.1
    probs[0, 6, 6] = 0.6
    target[1, 5, 5] = 1
    probs[1, 5, 5] = 0.4
    return probs, target, ["a", "b"]


def test_detection_score_is_the_highest_threshold_that_still_hits() -> None:
    probs, target, _ = _case()
    # min_overlap 0.5: two of the four pixels needed -> the second-highest probability, 0.8
    assert lesion_detection_scores(probs, target, min_overlap=0.5)[:, 2].tolist() == [0.8, 0.4]
    # 0.1 of four pixels: one pixel -> 0.9; 0.75: three pixels -> 0.2
    assert lesion_detection_scores(probs, target, min_overlap=0.1)[:, 2].tolist() == [0.9, 0.4]
    assert lesion_detection_scores(probs, target, min_overlap=0.75)[:, 2].tolist() == [0.2, 0.4]


def test_froc_points_by_hand() -> None:
    probs, target, ids = _case()
    res = froc(probs, target, ids, [0.3, 0.5, 0.7, 0.95], min_overlap=0.5)
    assert res["sensitivity"] == [1.0, 0.5, 0.5, 0.0]
    # the 0.6 blob is a false positive up to 0.6; lesion pixels above the threshold touch the target
    assert res["false_positives"] == [1, 1, 0, 0]
    assert res["fp_per_scan"] == [0.5, 0.5, 0.0, 0.0]
    assert res["n_lesions"] == 2 and res["n_scans"] == 2


def test_froc_at_a_threshold_is_summarize_lesion_recall() -> None:
    rng = np.random.default_rng(3)
    target = np.zeros((6, 24, 24), np.uint8)
    for i in range(6):
        cy, cx = rng.integers(4, 20, 2)
        target[i, cy - 2:cy + 2, cx - 3:cx + 1] = 1
    probs = np.clip(target * rng.uniform(0.2, 1.0, target.shape) + rng.uniform(0, 0.4, target.shape), 0, 1)
    ids = [f"p{i // 2}" for i in range(6)]
    for t in (0.3, 0.5, 0.8):
        got = froc(probs, target, ids, [t])["sensitivity"][0]
        assert got == pytest.approx(summarize(probs >= t, target, ids)["lesion_recall"])


def test_size_bins_and_false_positive_components() -> None:
    probs, target, ids = _case()
    res = froc(probs, target, ids, [0.3], spacing=(1.0, 1.0), size_bins=[("small", 0, 2), ("large", 2, math.inf)])
    # the 1-pixel lesion has diameter 2*sqrt(1/pi) ~ 1.13 mm, the 4-pixel one ~ 2.26 mm
    assert res["by_size"] == {"small": {"n_lesions": 1, "sensitivity": [1.0]},
                              "large": {"n_lesions": 1, "sensitivity": [1.0]}}
    assert false_positive_components(probs, target, 0.05).tolist() == [1, 0]


def test_froc_score_reads_a_step_curve() -> None:
    assert froc_score([0.0, 1.0, 4.0], [0.5, 0.75, 1.0], rates=(0.5, 1.0, 8.0)) == pytest.approx((0.5 + 0.75 + 1.0) / 3)
    assert froc_score([2.0], [1.0], rates=(1.0, 2.0)) == 0.5
    assert math.isnan(froc_score([0.0], [math.nan]))


@pytest.mark.parametrize("bad", [{"thresholds": []}, {"thresholds": [1.5]}, {"probs": "logits"}, {"ids": ["a"]}])
def test_froc_refuses_bad_input_with_a_clear_message(bad: dict) -> None:
    probs, target, ids = _case()
    if bad.get("probs") == "logits":
        probs = probs * 4 - 2
    with pytest.raises(ValueError, match="thresholds|probs|patient_ids"):
        froc(probs, target, bad.get("ids", ids), bad.get("thresholds", [0.5]))
