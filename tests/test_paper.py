"""lungseg.paper: the published numbers, their consistency checks, and claims against an experiment."""

from __future__ import annotations

import math

import pytest

from lungseg import paper
from lungseg.experiment import TABLE_METRICS


def test_f_score_and_table3_rows():
    assert paper.f_score(0.86, 0.81) == pytest.approx(2 * 0.86 * 0.81 / 1.67)
    assert paper.f_score(0.0, 0.0) == 0.0
    rows = paper.table3_consistency()
    assert all(r["consistent"] for r in rows)
    bad = paper.table3_consistency({"x": {"accuracy": 0.9, "precision": 0.9, "recall": 0.5, "f1": 0.9}})
    assert not bad[0]["consistent"]


def test_dice_f1_and_iou_checks():
    assert not paper.dice_f1_consistency()["can both be pooled"]
    assert paper.dice_f1_consistency(0.8, 0.8)["can both be pooled"]
    assert paper.iou_from_dice(2 / 3) == pytest.approx(0.5)
    rows = {r["model"]: r for r in paper.dice_iou_consistency()}
    # printed IoU 0.83 with Dice 0.89 cannot be one pooled confusion matrix (D/(2-D) = 0.80)
    assert not rows["attention"]["pooled-consistent"]
    with pytest.raises(ValueError, match="dice"):
        paper.iou_from_dice(1.2)


def test_implied_prevalence_roundtrips_a_confusion_matrix():
    tp, fp, fn, tn = 30.0, 10.0, 20.0, 940.0
    n = tp + fp + fn + tn
    acc, p, r = (tp + tn) / n, tp / (tp + fp), tp / (tp + fn)
    assert paper.implied_prevalence(acc, p, r) == pytest.approx((tp + fn) / n)
    assert paper.accuracy_of_empty_prediction(0.01) == pytest.approx(0.99)
    assert math.isnan(paper.implied_prevalence(0.9, 1.0, 1.0))
    with pytest.raises(ValueError):
        paper.implied_prevalence(0.9, 0.0, 0.5)


def test_precision_from_f1_recall_inverts_f_score():
    assert paper.precision_from_f1_recall(paper.f_score(0.7, 0.4), 0.4) == pytest.approx(0.7)
    # an F-score above twice the recall needs a precision above 1: impossible
    assert math.isnan(paper.precision_from_f1_recall(0.9, 0.4))


def test_published_tables_agree_with_the_abstract():
    assert paper.PAPER_ABSTRACT["dice"] == paper.PAPER_TABLE2["attention"]["dice"]
    assert paper.PAPER_ABSTRACT["f1"] == paper.PAPER_TABLE3["attention"]["f1"]
    assert paper.PAPER_TABLE4[-1][2] == pytest.approx(100 * paper.PAPER_TABLE3["attention"]["accuracy"])


def _stat(mean, low=None, high=None, n=1):
    return {"mean": mean, "low": low, "high": high, "n": n, "sd": None}


def fake_results(seeds=(0,), dice=(0.5, 0.9)) -> dict:
    """A results table of a hybrid-loss grid over both models, CRF off and on: every metric of
    U-Net is ``dice[0]``, of attention ``dice[1]`` (with a +/-0.01 interval given 2+ seeds)."""
    cells = []
    for model, d in zip(("unet", "attention"), dice):
        for crf in (False, True):
            row = {"model": model, "loss": "hybrid", "crf": crf, "n_seeds": len(seeds)}
            for name, _ in TABLE_METRICS:
                ci = (None, None) if len(seeds) < 2 else (d - 0.01, d + 0.01)
                row[name] = _stat(d, *ci, n=len(seeds))
            cells.append(row)
    diffs = [{"factor": "model", "a": {"model": "unet", "loss": "hybrid", "crf": c},
              "b": {"model": "attention", "loss": "hybrid", "crf": c}, "n_pairs": len(seeds),
              **{name: _stat(dice[1] - dice[0], n=len(seeds)) for name, _ in TABLE_METRICS}} for c in (False, True)]
    return {"cells": cells, "differences": diffs, "runs": [],
            "settings": {"losses": ["hybrid"], "seeds": list(seeds), "models": ["unet", "attention"]}}


def test_verdict_needs_the_whole_interval_inside_the_margin():
    m = paper.VERDICT_MARGIN
    assert paper.verdict(0.89, 0.88, 0.86, 0.91)[0] == "consistent"
    v, why = paper.verdict(0.89, 0.5, 0.45, 0.55)
    assert v == "contradicted" and "below" in why
    assert paper.verdict(0.30, 0.5, 0.45, 0.55)[0] == "contradicted"
    # the paper's value inside the interval is not enough: the interval must fit in the band
    assert paper.verdict(0.89, 0.88, 0.80, 0.95)[0] == "undecided"
    assert paper.verdict(0.89, 0.89, 0.89 - m, 0.89 + m)[0] == "consistent"  # the band's edges count
    assert paper.verdict(0.89, 0.88)[0] == "undecided" and "without an interval" in paper.verdict(0.89, 0.88)[1]
    assert paper.verdict(0.89, None)[0] == "not comparable"
    assert paper.verdict(0.89, 0.89, not_comparable="other data") == ("not comparable", "other data")
    with pytest.raises(ValueError, match="low > high"):
        paper.verdict(0.89, 0.88, 0.9, 0.8)
    with pytest.raises(ValueError, match="margin"):
        paper.verdict(0.89, 0.88, 0.85, 0.9, margin=0)


@pytest.mark.parametrize("value", [0.06, 0.1, 0.5, 0.82, 0.89, 1.0])
def test_an_interval_that_says_nothing_is_never_consistent(value):
    # chapter 5 once called U-Net Dice 0.82 "reproduced" on the interval [0.064, 1.000]
    assert paper.verdict(value, 0.5, 0.06, 1.0)[0] == "undecided"
    assert paper.verdict(0.82, 0.53, 0.064, 1.0)[0] == "undecided"


def test_direction_verdict_reads_the_sign_of_the_whole_interval():
    assert paper.direction_verdict(0.01, 0.2)[0] == "consistent"
    assert paper.direction_verdict(-0.2, -0.01)[0] == "contradicted"
    assert paper.direction_verdict(-0.2, 0.3)[0] == "undecided"
    assert paper.direction_verdict(None, None)[0] == "undecided"
    # smaller is better (HD95): a negative difference is an improvement
    assert paper.direction_verdict(-5.0, -1.0, better="lower")[0] == "consistent"
    assert paper.direction_verdict(1.0, 5.0, better="lower")[0] == "contradicted"
    with pytest.raises(ValueError):
        paper.direction_verdict(0.1, 0.2, better="up")


def test_primary_loss_is_the_papers_when_the_grid_has_it():
    assert paper.primary_loss({"settings": {"losses": ["dice", "hybrid"]}}) == "hybrid"
    assert paper.primary_loss({"settings": {"losses": ["focal", "dice"]}}) == "focal"


def test_claims_cover_both_tables_crf_states_and_the_gain():
    rows = paper.claims(fake_results(), data_note="synthetic")
    expected_per_model = sum(len(paper.CLAIM_METRICS[m]) for m in paper.PAPER_TABLE2["unet"]) + \
        sum(len(paper.CLAIM_METRICS[m]) for m in paper.PAPER_TABLE3["unet"])
    per_model = [r for r in rows if r["model"] == "attention"]
    assert len(per_model) == 2 * expected_per_model  # CRF off and on
    for r in rows:
        assert {"claim", "paper", "measured", "ci_low", "ci_high", "aggregation", "verdict", "reason"} <= set(r)
    acc = [r for r in rows if r["metric"] in paper.PREVALENCE_DEPENDENT]
    assert acc and all(r["verdict"] == "not comparable" for r in acc)
    att_dice = [r for r in per_model if r["column"] == "dice_pooled" and r["metric"] == "dice"]
    # one seed: no interval, so nothing is decided
    assert all(r["verdict"] == "undecided" and "synthetic" in r["reason"] for r in att_dice)  # 0.90 vs 0.89
    decided = paper.claims(fake_results(seeds=(0, 1)))
    att = [r for r in decided if r["model"] == "attention" and r["metric"] == "dice"]
    assert att and all(r["verdict"] == "consistent" for r in att)  # [0.89, 0.91] in 0.89 +/- 0.05
    unet_dice = [r for r in decided if r["model"] == "unet" and r["metric"] == "dice"]
    assert unet_dice and all(r["verdict"] == "contradicted" for r in unet_dice)  # [0.49, 0.51] vs 0.82
    gain = [r for r in rows if r["metric"] == "dice gain"]
    assert len(gain) == 2 and gain[0]["measured"] == pytest.approx(0.4) and gain[0]["table"] == "relative"
    wide = paper.side_by_side(rows, table="Table 2")
    assert all("ours (CRF off)" in w and "verdict (CRF on)" in w and "reason" in w for w in wide)
    assert not any("reason" in w for w in paper.side_by_side(rows, reasons=False))
    assert sum(paper.verdict_counts(rows).values()) == len(rows)


def test_the_gain_is_attention_minus_unet_whichever_way_the_grid_paired_them():
    results = fake_results(seeds=(0, 1))
    for d in results["differences"]:
        d["a"], d["b"] = d["b"], d["a"]
        d["dice_pooled"] = _stat(-0.4, -0.45, -0.35, n=2)
    gain = [r for r in paper.claims(results) if r["metric"] == "dice gain"]
    assert gain[0]["measured"] == pytest.approx(0.4)
    assert (gain[0]["ci_low"], gain[0]["ci_high"]) == pytest.approx((0.35, 0.45))


def test_relative_claims_cover_loss_and_crf_with_a_direction():
    results = fake_results(seeds=(0, 1))
    base = {"model": "attention", "crf": False}
    results["differences"] += [
        {"factor": "loss", "a": {**base, "loss": "dice"}, "b": {**base, "loss": "hybrid"}, "n_pairs": 2,
         "dice_pooled": _stat(0.05, 0.02, 0.08, n=2)},
        {"factor": "loss", "a": {**base, "loss": "hybrid"}, "b": {**base, "loss": "focal"}, "n_pairs": 2,
         "dice_pooled": _stat(0.05, 0.02, 0.08, n=2)},  # focal better than hybrid: contradicts
        {"factor": "crf", "a": {"model": "unet", "loss": "hybrid", "crf": False},
         "b": {"model": "unet", "loss": "hybrid", "crf": True}, "n_pairs": 2,
         "hd95_mm_per_image": _stat(-2.0, -3.0, -1.0, n=2)},
    ]
    rows = paper.relative_claims(results)
    by_other = {r["compared_with"]: r for r in rows if r["metric"] == "hybrid beats the other loss"}
    assert by_other["dice"]["verdict"] == "consistent" and by_other["focal"]["verdict"] == "contradicted"
    assert by_other["focal"]["ci_low"] == pytest.approx(-0.08)
    crf = [r for r in rows if r["metric"] == "CRF sharpens boundaries"]
    assert len(crf) == 1 and crf[0]["verdict"] == "consistent" and crf[0]["model"] == "unet"


def test_format_estimate():
    assert paper.format_estimate(0.81234, 0.8, 0.83) == "0.812 [0.800, 0.830]"
    assert paper.format_estimate(0.5) == "0.500"
    assert paper.format_estimate(None) == "n/a"


def test_figure3_values_pair_our_bars_with_the_papers_markers():
    values, published = paper.figure3_values(fake_results(seeds=(0, 1)))
    assert values["attention"]["Dice"] == pytest.approx((0.9, 0.89, 0.91))
    assert published["attention"]["Dice"] == paper.PAPER_TABLE2["attention"]["dice"]
    assert set(values["unet"]) == {label for label, _, _ in paper.FIGURE3_METRICS}
    one_seed, _ = paper.figure3_values(fake_results())
    assert one_seed["unet"]["IoU"] == pytest.approx(0.5)  # no interval: a plain mean


def test_a_table_made_before_a_figure_existed_gives_not_comparable_rows():
    """Published tables older than a figure (here the 3D small-tumour recall) have no column for it: its
    rows say so instead of failing, and every other row is judged as before."""
    results = fake_results(seeds=(0, 1))
    for cell in results["cells"]:
        del cell["small_tumour_recall_3d"]
    rows = paper.claims(results)
    missing = [r for r in rows if r["column"] == "small_tumour_recall_3d"]
    assert len(missing) == 4 and all(r["verdict"] == "not comparable" for r in missing)
    assert all("made before the figure existed" in r["reason"] for r in missing)
    full = paper.claims(fake_results(seeds=(0, 1)))
    assert [r["verdict"] for r in rows if r["column"] != "small_tumour_recall_3d"] == \
        [r["verdict"] for r in full if r["column"] != "small_tumour_recall_3d"]
