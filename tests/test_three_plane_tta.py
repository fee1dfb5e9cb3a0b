"""``benchmarks/three_plane_tta.py``: three planes take the cheapest test-time augmentation that holds on every
synthetic set, and the published one when none does."""

from __future__ import annotations

from typing import Any


def _row(**modes: tuple[float, float, int]) -> dict:
    return {mode: {"pooled_dice": d, "recall": r, "tumours_found": t} for mode, (d, r, t) in modes.items()}


def test_the_cheapest_mode_that_holds_on_every_set_is_taken(load_benchmark: Any) -> None:
    tta = load_benchmark("three_plane_tta")
    rows = [_row(dihedral=(0.50, 0.70, 10), flips=(0.50, 0.70, 10), none=(0.495, 0.69, 9)),
            _row(dihedral=(0.40, 0.50, 6), flips=(0.41, 0.50, 6), none=(0.40, 0.49, 6))]
    assert tta.decide(rows) == "none"
    rows[1]["none"]["pooled_dice"] = 0.389  # 0.011 below the published mode on one set
    assert tta.decide(rows) == "flips"
    rows[0]["flips"]["recall"] = 0.679  # flips lose 0.021 of recall on another
    assert tta.decide(rows) == "dihedral"


def test_losing_two_tumours_on_one_set_rules_a_mode_out(load_benchmark: Any) -> None:
    tta = load_benchmark("three_plane_tta")
    rows = [_row(dihedral=(0.50, 0.70, 10), flips=(0.50, 0.70, 9), none=(0.52, 0.71, 8))]
    assert tta.decide(rows) == "flips"
