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
