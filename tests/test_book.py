"""The book's shared settings and the paper-consistency arithmetic of chapter 9."""

from __future__ import annotations

import json
import math

import pytest

from lungseg import book


def test_profiles_quick_is_small_and_overrides_apply():
    quick = book.profile_settings("quick")
    paper = book.profile_settings("paper")
    assert quick.image_size < paper.image_size and quick.n_patients < paper.n_patients
    assert quick.output_dir == "results/quick" and paper.output_dir == "results/paper"
    s = book.profile_settings("quick", epochs=7, seeds=[3, 4], device=None)
    assert s.epochs == 7 and s.seeds == (3, 4) and s.device == "auto"
    with pytest.raises(ValueError, match="profile must be one of"):
        book.profile_settings("huge")
    with pytest.raises(ValueError, match="unknown profile setting 'epoch'"):
        book.profile_settings("quick", epoch=3)


def test_resolve_is_relative_to_the_repository_root(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "lungseg").mkdir()
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert book.repo_root() == tmp_path
    assert book.resolve("results/quick") == tmp_path / "results" / "quick"
    assert book.load_json("results/none.json") is None


def test_f_score_and_table3_rows():
    assert book.f_score(0.86, 0.81) == pytest.approx(2 * 0.86 * 0.81 / 1.67)
    assert book.f_score(0.0, 0.0) == 0.0
    rows = book.table3_consistency()
    assert all(r["consistent"] for r in rows)
    bad = book.table3_consistency({"x": {"accuracy": 0.9, "precision": 0.9, "recall": 0.5, "f1": 0.9}})
    assert not bad[0]["consistent"]


def test_dice_f1_and_iou_checks():
    assert not book.dice_f1_consistency()["can both be pooled"]
    assert book.dice_f1_consistency(0.8, 0.8)["can both be pooled"]
    assert book.iou_from_dice(2 / 3) == pytest.approx(0.5)
    rows = {r["model"]: r for r in book.dice_iou_consistency()}
    # printed IoU 0.83 with Dice 0.89 cannot be one pooled confusion matrix (D/(2-D) = 0.80)
    assert not rows["attention"]["pooled-consistent"]
    with pytest.raises(ValueError, match="dice"):
        book.iou_from_dice(1.2)


def test_implied_prevalence_roundtrips_a_confusion_matrix():
    tp, fp, fn, tn = 30.0, 10.0, 20.0, 940.0
    n = tp + fp + fn + tn
    acc, p, r = (tp + tn) / n, tp / (tp + fp), tp / (tp + fn)
    assert book.implied_prevalence(acc, p, r) == pytest.approx((tp + fn) / n)
    assert book.accuracy_of_empty_prediction(0.01) == pytest.approx(0.99)
    assert math.isnan(book.implied_prevalence(0.9, 1.0, 1.0))
    with pytest.raises(ValueError):
        book.implied_prevalence(0.9, 0.0, 0.5)


def test_precision_from_f1_recall_inverts_f_score():
    assert book.precision_from_f1_recall(book.f_score(0.7, 0.4), 0.4) == pytest.approx(0.7)
    # an F-score above twice the recall needs a precision above 1: impossible
    assert math.isnan(book.precision_from_f1_recall(0.9, 0.4))


def test_prepare_data_reuses_a_matching_study_and_rebuilds_a_stale_one(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "lungseg").mkdir()
    monkeypatch.chdir(tmp_path)
    calls = []

    def fake_generate(out, n_patients, seed, config, progress, overwrite):
        calls.append(overwrite)
        out.mkdir(parents=True, exist_ok=True)
        manifest = {"generator_version": phantom.GENERATOR_VERSION, "seed": seed, "n_patients": n_patients,
                    "config": config.to_dict()}
        (out / "manifest.json").write_text(json.dumps(manifest))
        return out

    phantom = pytest.importorskip("lungseg.data.phantom")
    monkeypatch.setattr(phantom, "generate_study", fake_generate)
    settings = book.profile_settings("quick")
    path = book.prepare_data(settings)
    assert path == tmp_path / "data" / "phantom-quick" and calls == [False]
    assert book.prepare_data(settings) == path and calls == [False]  # reused
    book.prepare_data(book.profile_settings("quick", n_patients=3))
    assert calls == [False, True]  # different study in the same folder: regenerated
    with pytest.raises(FileNotFoundError, match="data_dir 'missing'"):
        book.prepare_data(settings, "missing")


# ---------------------------------------------------------------------------------------------
# Chapters 4-8 helpers

def _stat(mean, low=None, high=None, n=1):
    return {"mean": mean, "low": low, "high": high, "n": n, "sd": None}


def _fake_results(tmp_path, seeds=(0,), dice=(0.5, 0.9)):
    from lungseg.experiment import TABLE_METRICS

    cells = []
    for model, d in zip(("unet", "attention"), dice):
        for crf in (False, True):
            row = {"model": model, "loss": "hybrid", "crf": crf, "n_seeds": len(seeds)}
            for name, _ in TABLE_METRICS:
                row[name] = _stat(d, None if len(seeds) < 2 else d - 0.01, None if len(seeds) < 2 else d + 0.01, len(seeds))
            cells.append(row)
    diffs = [{"factor": "model", "a": {"model": "unet", "loss": "hybrid", "crf": c},
              "b": {"model": "attention", "loss": "hybrid", "crf": c}, "n_pairs": len(seeds),
              **{name: _stat(dice[1] - dice[0], n=len(seeds)) for name, _ in TABLE_METRICS}} for c in (False, True)]
    runs = []
    for model in ("unet", "attention"):
        run = tmp_path / "runs" / f"{model}-hybrid-seed0"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"epochs_run": 2, "wall_time_s": 10.0, "device": "cpu",
                                                      "best_epoch": 2, "best_val_dice": 0.4}))
        (run / "history.csv").write_text("epoch,train_loss,val_dice\n1,0.9,0.1\n2,0.8,0.4\n")
        (run / "split.json").write_text(json.dumps({"train": ["a"], "val": ["b"], "test": ["c", "d"]}))
        runs.append({"run": str(run), "model": model, "loss": "hybrid", "seed": 0, "status": "trained"})
    return {"cells": cells, "differences": diffs, "runs": runs,
            "settings": {"losses": ["hybrid"], "seeds": list(seeds), "models": ["unet", "attention"]}}


def test_verdict_uses_the_interval_or_a_tolerance():
    assert book.verdict(0.89, 0.88, 0.85, 0.91)[0] == "reproduced"
    v, why = book.verdict(0.89, 0.5, 0.45, 0.55)
    assert v == "not reproduced" and "above" in why
    assert book.verdict(0.89, 0.88)[0] == "reproduced" and "no CI" in book.verdict(0.89, 0.88)[1]
    assert book.verdict(0.89, 0.80)[0] == "not reproduced"
    assert book.verdict(0.89, None)[0] == "not comparable"
    assert book.verdict(0.89, 0.89, not_comparable="other data") == ("not comparable", "other data")


def test_claims_cover_both_tables_crf_states_and_the_gain(tmp_path):
    results = _fake_results(tmp_path)
    rows = book.claims(results, data_note="synthetic")
    expected_per_model = sum(len(book.CLAIM_METRICS[m]) for m in book.PAPER_TABLE2["unet"]) + \
        sum(len(book.CLAIM_METRICS[m]) for m in book.PAPER_TABLE3["unet"])
    per_model = [r for r in rows if r["model"] == "attention"]
    assert len(per_model) == 2 * expected_per_model  # CRF off and on
    for r in rows:
        assert set(book.CLAIMS_FILE and ("claim", "paper", "measured", "ci_low", "ci_high", "aggregation",
                                         "verdict", "reason")) <= set(r)
    acc = [r for r in rows if r["metric"] == "accuracy"]
    assert acc and all(r["verdict"] == "not comparable" for r in acc)
    att_dice = [r for r in per_model if r["column"] == "dice_pooled" and r["metric"] == "dice"]
    assert all(r["verdict"] == "reproduced" and "synthetic" in r["reason"] for r in att_dice)  # 0.90 vs 0.89
    unet_dice = [r for r in rows if r["model"] == "unet" and r["metric"] == "dice"]
    assert unet_dice and all(r["verdict"] == "not reproduced" for r in unet_dice)  # 0.50 vs 0.82
    gain = [r for r in rows if r["metric"] == "dice gain"]
    assert len(gain) == 2 and gain[0]["measured"] == pytest.approx(0.4)
    wide = book.side_by_side(rows, table="Table 2")
    assert all("ours (CRF off)" in w and "verdict (CRF on)" in w and "reason" in w for w in wide)
    assert not any("reason" in w for w in book.side_by_side(rows, reasons=False))
    counts = book.verdict_counts(rows)
    assert sum(counts.values()) == len(rows)
    settings = book.profile_settings("quick", output_dir=str(tmp_path / "out"))
    path = book.write_claims(rows, settings)
    assert json.loads(path.read_text()) == json.loads(json.dumps(rows))


def test_format_estimate():
    assert book.format_estimate(0.81234, 0.8, 0.83) == "0.812 [0.800, 0.830]"
    assert book.format_estimate(0.5) == "0.500"
    assert book.format_estimate(None) == "n/a"


def test_run_summaries_histories_and_figure3(tmp_path):
    results = _fake_results(tmp_path, seeds=(0, 1))
    rows = book.run_summaries(results)
    assert rows[0]["s / epoch"] == pytest.approx(5.0) and rows[0]["device"] == "cpu"
    hist = book.run_histories(results)
    assert hist["unet-hybrid-seed0"]["val_dice"] == [0.1, 0.4]
    assert book.held_out_patients(results) == ["c", "d"]
    assert book.run_dir(results, "attention", "hybrid").name == "attention-hybrid-seed0"
    with pytest.raises(KeyError):
        book.run_dir(results, "attention", "dice")
    values, paper = book.figure3_values(results)
    assert values["attention"]["Dice"] == pytest.approx((0.9, 0.89, 0.91))
    assert paper["attention"]["Dice"] == book.PAPER_TABLE2["attention"]["dice"]


def test_train_config_follows_the_profile():
    s = book.profile_settings("quick", epochs=2)
    cfg = book.train_config(s)
    assert (cfg.epochs, cfg.image_size, cfg.base_channels, cfg.depth) == (2, s.image_size, s.base_channels, s.depth)
    assert cfg.tumour_fraction == book.TRAIN_SETTINGS[s.profile]["tumour_fraction"]
    assert cfg.samples_per_epoch == book.TRAIN_SETTINGS[s.profile]["samples_per_epoch"]
    cfg.validate()


def test_body_regions_and_attention_by_region():
    import numpy as np

    img = np.full((32, 32), -1000.0, np.float32)  # air
    img[4:28, 4:28] = 40.0  # body
    img[8:24, 8:24] = -850.0  # lung inside it
    mask = np.zeros((32, 32), np.uint8)
    mask[14:18, 14:18] = 1
    img[mask > 0] = 30.0
    r = book.body_regions(img, mask)
    assert r["tumour"].sum() == 16 and r["lung"].sum() == 16 * 16 - 16
    assert not (r["lung"] & r["tumour"]).any() and r["outside body"][0, 0] and r["other tissue"][5, 5]
    total = sum(v.astype(int) for v in r.values())
    assert (total == 1).all()  # disjoint and covering
    alpha = np.where(mask > 0, 0.9, 0.1)[None].astype(np.float32)
    rows = book.attention_by_region(img[None], mask[None], [alpha, np.full_like(alpha, 0.5)])
    assert rows[0]["tumour"] == pytest.approx(0.9) and rows[0]["lung"] == pytest.approx(0.1)
    assert rows[0]["tumour / lung"] == pytest.approx(9.0) and rows[1]["tumour / lung"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="alphas"):
        book.attention_by_region(img[None], mask[None], [alpha[:, :8]])
    with pytest.raises(ValueError, match="image_hu"):
        book.body_regions(img[None])


def test_size_bins_and_crf_change(tmp_path):
    assert book.size_bin(0) == "no tumour" and book.size_bin(5) == "< 10 mm" and book.size_bin(25) == ">= 20 mm"
    assert book.equivalent_diameter_mm(100, (1.0, 1.0)) == pytest.approx(2 * math.sqrt(100 / math.pi))
    header = "image_id,patient_id,slice,tumour_pixels,predicted_pixels,dice,tp,fp,fn,tn\n"
    (tmp_path / "eval_crf_off_per_image.csv").write_text(header + "p:0,p,0,0,3,,0,3,0,97\np:1,p,1,50,40,0.5,20,20,30,30\n")
    with pytest.raises(FileNotFoundError, match="crf=True"):
        book.crf_change(tmp_path)
    (tmp_path / "eval_crf_on_per_image.csv").write_text(header + "p:0,p,0,0,0,,0,0,0,100\np:1,p,1,50,50,0.8,40,10,10,40\n")
    rows = book.crf_change(tmp_path, {"p": (1.0, 1.0)})
    assert rows[0]["size"] == "no tumour" and rows[0]["dice_change"] is None and rows[0]["fp_on"] == 0
    assert rows[1]["dice_change"] == pytest.approx(0.3) and rows[1]["size"] == "< 10 mm"
    assert book.crf_change(tmp_path)[1]["size"] == "tumour"


def test_example_slices_picks_by_rule():
    import numpy as np
    from lungseg.data.volume import CTVolume

    mask = np.zeros((4, 16, 16), np.uint8)
    mask[1, 2:12, 2:12] = 1  # large
    mask[2, 5:8, 5:8] = 1  # 9 px
    mask[3, 5:6, 5:6] = 1  # 1 px: too small to show
    vol = CTVolume(image=np.zeros((4, 16, 16), np.float32), mask=mask, spacing=(1.0, 1.0, 1.0), patient_id="p")
    manifest = {"patients": [{"patient_id": "p", "tumours": [
        {"location": "juxta-pleural", "centre_voxel_zyx": [2.2, 6, 6]}]}]}
    found = book.example_slices({"p": vol}, ["p"], manifest)
    assert found["largest tumour"] == ("p", 1, 100) and found["smallest tumour"] == ("p", 2, 9)
    assert found["juxta-pleural tumour"] == ("p", 2, 9) and found["tumour-free"] == ("p", 0, 0)
