"""``benchmarks/large_pretraining.py``: the rule adopts only when the cross-validation, the ordinary sets and the
large-tumour sets all hold, and it reads its own variant's folds."""

from __future__ import annotations

from typing import Any

import pytest


def test_each_part_of_the_rule_can_fail(load_benchmark: Any) -> None:
    module = load_benchmark("large_pretraining")
    central = load_benchmark("central_pretraining")
    rows = [{"variant": module.VARIANT, "seed": 0, "fold": f, "scores": {central.CV_KEY: d}}
            for f, d in enumerate((0.8, 0.6, 0.7, 0.72, 0.75))]
    other = [{**r, "variant": central.VARIANT, "scores": {central.CV_KEY: 0.0}} for r in rows]
    assert central.cross_validation(rows + other, module.VARIANT)["mean"] == pytest.approx(0.714)
    assert central.cross_validation(rows + other)["mean"] == 0.0  # the central phantom's rows stay its own
    ordinary = [{"seed": seed, "candidate": {"pooled_dice": dice + 0.01, "recall": recall - 0.03}}
                for seed, (dice, recall) in module.PUBLISHED_SETS.items()]
    assert module.ordinary_sets_hold(ordinary)
    assert not module.ordinary_sets_hold([{**ordinary[0], "candidate": {"pooled_dice": 0.0, "recall": 1.0}}, *ordinary[1:]])
    large = [{"seed": 911, "candidate": {"pooled_dice": 0.30}, "published": {"pooled_dice": 0.25}},
             {"seed": 912, "candidate": {"pooled_dice": 0.40}, "published": {"pooled_dice": 0.30}}]
    assert module.large_sets_hold(large)
    assert not module.large_sets_hold([large[0], {**large[1], "candidate": {"pooled_dice": 0.34}}])
    assert {seed for seed, _, _ in module.LARGE_SETS} == {911, 912}
