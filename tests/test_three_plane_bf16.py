"""``benchmarks/three_plane_bf16.py``: bf16 becomes ``predict``'s default on a CPU with native bf16 only when, on
every synthetic set, it keeps fp32's pooled Dice and recall within the stated bounds and loses at most one tumour
over all the sets."""

from __future__ import annotations

from typing import Any


def _row(fp32: tuple[float, float, int], bf16: tuple[float, float, int]) -> dict:
    return {arm: {"pooled_dice": d, "recall": r, "tumours_found": t} for arm, (d, r, t) in (("fp32", fp32), ("bf16", bf16))}


def test_bf16_is_adopted_only_within_the_bounds_on_every_set(load_benchmark: Any) -> None:
    bf16 = load_benchmark("three_plane_bf16")
    rows = [_row((0.50, 0.70, 10), (0.491, 0.681, 10)), _row((0.40, 0.50, 6), (0.41, 0.52, 6))]
    assert bf16.decide(rows)
    rows[0]["bf16"]["pooled_dice"] = 0.489  # 0.011 below fp32 on one set
    assert not bf16.decide(rows)
    rows[0]["bf16"]["pooled_dice"] = 0.50
    rows[1]["bf16"]["recall"] = 0.479  # 0.021 of recall lost on another
    assert not bf16.decide(rows)


def test_two_tumours_lost_over_the_sets_rule_bf16_out(load_benchmark: Any) -> None:
    bf16 = load_benchmark("three_plane_bf16")
    rows = [_row((0.50, 0.70, 10), (0.50, 0.70, 9)), _row((0.40, 0.50, 6), (0.40, 0.50, 6))]
    assert bf16.decide(rows)
    rows[1]["bf16"]["tumours_found"] = 5
    assert not bf16.decide(rows)
