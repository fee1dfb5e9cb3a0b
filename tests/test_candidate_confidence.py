"""``benchmarks/candidate_confidence.py``: the candidate table's arithmetic and the protocol's choice (chosen on
one synthetic set, confirmed on the others, never a second choice)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest


def _candidate(voxels: int, peak: float, mean: float, covers: dict[str, int] | None = None) -> dict:
    return {"voxels": voxels, "peak": peak, "mean": mean, "covers": covers or {}}


def test_candidates_are_26_connected_with_their_probability_and_tumour_overlap(load_benchmark: Any) -> None:
    cc = load_benchmark("candidate_confidence")
    mask = np.zeros((4, 8, 8), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # diagonal neighbours: one candidate
    mask[3, 5:7, 5:7] = True
    probs = np.where(mask, 0.7, 0.0).astype(np.float32)
    probs[3, 5, 5] = 0.9
    reference = np.zeros_like(mask)
    reference[3, 6, 5:8] = True
    rows, tumours = cc.candidates_of(mask, probs, reference)
    assert tumours == [3]
    assert sorted(r["voxels"] for r in rows) == [2, 4]
    big = next(r for r in rows if r["voxels"] == 4)
    assert big["peak"] == pytest.approx(0.9) and big["mean"] == pytest.approx(0.75) and big["covers"] == {"1": 2}
    assert next(r for r in rows if r["voxels"] == 2)["covers"] == {}


def test_score_pools_voxels_over_patients_and_counts_tumours_found_at_a_tenth(load_benchmark: Any) -> None:
    cc = load_benchmark("candidate_confidence")
    patients = [{"tumour_voxels": [100, 50], "candidates": [_candidate(80, 0.95, 0.8, {"1": 60}),
                                                           _candidate(40, 0.7, 0.6, {"2": 4}),
                                                           _candidate(20, 0.6, 0.55)]},
                {"tumour_voxels": [], "candidates": [_candidate(30, 0.9, 0.7)]}]
    every = cc.score(patients, lambda c: True)
    assert every["pooled_dice"] == pytest.approx(2 * 64 / (170 + 150), abs=1e-4)
    assert every["recall"] == pytest.approx(64 / 150, abs=1e-4)
    assert every["tumours_found"] == 1  # 4 of 50 voxels is under a tenth
    assert (every["candidates_kept"], every["candidates"], every["tumours"]) == (4, 4, 2)
    sure = cc.score(patients, lambda c: c["peak"] >= 0.9)
    assert sure["pooled_dice"] == pytest.approx(2 * 60 / (110 + 150), abs=1e-4) and sure["candidates_kept"] == 2
    patients[0]["candidates_at_threshold"] = {"0.7": [_candidate(50, 0.95, 0.85, {"1": 45})]}
    patients[1]["candidates_at_threshold"] = {"0.7": []}
    higher = cc.score(patients, lambda c: True, 0.7)
    assert higher["pooled_dice"] == pytest.approx(2 * 45 / (50 + 150), abs=1e-4) and higher["tumours_found"] == 1


def _table(seed: int, false_peak: float, tumour_peak: float) -> dict:
    """One patient whose masks at the higher thresholds lose the tumour too."""
    at = {"0.6": [_candidate(20, tumour_peak, 0.9, {"1": 5})], "0.7": []}
    return {"seed": seed, "patients": [{"tumour_voxels": [100], "candidates_at_threshold": at, "candidates": [
        _candidate(90, tumour_peak, 0.9, {"1": 80}), _candidate(200, false_peak, 0.55)]}]}


def test_decide_chooses_on_one_set_and_adopts_only_if_every_other_set_confirms(load_benchmark: Any) -> None:
    cc = load_benchmark("candidate_confidence")
    good = cc.decide([_table(cc.CHOOSE_ON, 0.65, 0.99), _table(777, 0.62, 0.97), _table(780, 0.61, 0.96)])
    assert good["chosen"] == "peak>=0.7" or good["chosen"].startswith("mean>=")
    assert good["adopted"] and all(good["confirmed"].values())
    # the same choice, but on one confirmation set the tumour is less sure than the false candidate: rejected
    bad = cc.decide([_table(cc.CHOOSE_ON, 0.65, 0.99), _table(777, 0.62, 0.97),
                     {"seed": 780, "patients": [{"tumour_voxels": [100], "candidates_at_threshold": {
                        "0.6": [], "0.7": []}, "candidates": [
                         _candidate(90, 0.66, 0.58, {"1": 80}), _candidate(200, 0.99, 0.95)]}]}])
    assert bad["chosen"] == good["chosen"] and not bad["adopted"] and bad["confirmed"]["780"] is False


def test_a_higher_threshold_that_loses_the_tumour_is_never_chosen(load_benchmark: Any) -> None:
    cc = load_benchmark("candidate_confidence")
    decision = cc.decide([_table(cc.CHOOSE_ON, 0.65, 0.99), _table(777, 0.62, 0.97)])
    assert not any(name.startswith("threshold") for name in decision["eligible_on_choice_set"])
    assert decision["scores"][str(cc.CHOOSE_ON)]["threshold 0.7"]["tumours_found"] == 0


def test_decide_adopts_nothing_when_every_rule_loses_a_tumour_on_the_choice_set(load_benchmark: Any) -> None:
    cc = load_benchmark("candidate_confidence")
    unsure_tumour = {"seed": cc.CHOOSE_ON, "patients": [{"tumour_voxels": [100], "candidates_at_threshold": {
        "0.6": [], "0.7": []}, "candidates": [
        _candidate(90, 0.55, 0.52, {"1": 80}), _candidate(200, 0.99, 0.95)]}]}
    decision = cc.decide([unsure_tumour, _table(777, 0.6, 0.99)])
    assert decision["chosen"] is None and not decision["adopted"] and decision["eligible_on_choice_set"] == []
