"""lungseg.analysis: an experiment's runs read back, example slices, attention by region, CRF effect."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math

import numpy as np
import pytest

from lungseg import analysis
from lungseg.rundir import RunDir


def _write_table(path, text: str) -> None:
    """A per-image table as the evaluations write it (gzip-compressed CSV)."""
    path.write_bytes(gzip.compress(text.encode("utf-8")))


def fake_experiment(tmp_path) -> dict:
    """A results table listing two finished runs, each with a summary, a history and the split."""
    runs = []
    for model in ("unet", "attention"):
        run = RunDir(tmp_path / "runs" / f"{model}-hybrid-seed0").create()
        run.write_metrics({"epochs_run": 2, "wall_time_s": 10.0, "device": "cpu", "best_epoch": 2,
                           "best_val_dice": 0.4})
        run.write_history([{"epoch": e, "train_loss": loss, "val_dice": d, "lr": 1e-3, "time_s": 4.0}
                           for e, loss, d in ((1, 0.9, 0.1), (2, 0.8, 0.4))])
        run.write_split({"train": ["a"], "val": ["b"], "test": ["c", "d"]}, seed=0, fractions=(0.5, 0.25, 0.25),
                        data="x")
        runs.append({"run": str(run), "model": model, "loss": "hybrid", "seed": 0, "status": "trained"})
    return {"runs": runs, "settings": {"losses": ["hybrid"], "seeds": [0], "models": ["unet", "attention"]}}


def test_runs_are_read_back_through_their_run_directories(tmp_path):
    results = fake_experiment(tmp_path)
    rows = analysis.run_summaries(results)
    assert rows[0]["s / epoch"] == pytest.approx(5.0) and rows[0]["device"] == "cpu"
    assert rows[1]["run"] == "attention-hybrid-seed0" and rows[1]["best val Dice"] == 0.4
    hist = analysis.run_histories(results)
    assert hist["unet-hybrid-seed0"]["val_dice"] == [0.1, 0.4] and hist["unet-hybrid-seed0"]["epoch"] == [1, 2]
    assert analysis.held_out_patients(results) == ["c", "d"]
    assert analysis.run_dir(results, "attention", "hybrid").name == "attention-hybrid-seed0"
    assert analysis.run_dir(results, "attention", "hybrid", seed=0).name == "attention-hybrid-seed0"
    with pytest.raises(KeyError):
        analysis.run_dir(results, "attention", "dice")


def test_a_run_without_files_is_summarised_empty(tmp_path):
    results = {"runs": [{"run": str(tmp_path / "gone"), "model": "unet", "loss": "dice", "seed": 0,
                         "status": "reused"}]}
    assert analysis.run_summaries(results)[0]["epochs"] == 0
    assert analysis.run_histories(results) == {}
    with pytest.raises(FileNotFoundError):
        analysis.held_out_patients(results)


def test_body_regions_and_attention_by_region():
    img = np.full((32, 32), -1000.0, np.float32)  # air
    img[4:28, 4:28] = 40.0  # body
    img[8:24, 8:24] = -850.0  # lung inside it
    mask = np.zeros((32, 32), np.uint8)
    mask[14:18, 14:18] = 1
    img[mask > 0] = 30.0
    r = analysis.body_regions(img, mask)
    assert r["tumour"].sum() == 16 and r["lung"].sum() == 16 * 16 - 16
    assert not (r["lung"] & r["tumour"]).any() and r["outside body"][0, 0] and r["other tissue"][5, 5]
    total = sum(v.astype(int) for v in r.values())
    assert (total == 1).all()  # disjoint and covering
    alpha = np.where(mask > 0, 0.9, 0.1)[None].astype(np.float32)
    rows = analysis.attention_by_region(img[None], mask[None], [alpha, np.full_like(alpha, 0.5)])
    assert rows[0]["tumour"] == pytest.approx(0.9) and rows[0]["lung"] == pytest.approx(0.1)
    assert rows[0]["tumour / lung"] == pytest.approx(9.0) and rows[1]["tumour / lung"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="alphas"):
        analysis.attention_by_region(img[None], mask[None], [alpha[:, :8]])
    with pytest.raises(ValueError, match="image_hu"):
        analysis.body_regions(img[None])


def test_size_bins_and_crf_change(tmp_path):
    assert analysis.size_bin(0) == "no tumour" and analysis.size_bin(5) == "< 10 mm"
    assert analysis.size_bin(25) == ">= 20 mm" and analysis.size_bin(10) == "10-20 mm"
    assert [b[0] for b in analysis.SIZE_BINS][0] == "no tumour"
    run = RunDir(tmp_path)
    header = "image_id,patient_id,slice,tumour_pixels,predicted_pixels,dice,tp,fp,fn,tn\n"
    _write_table(run.per_image_path(False), header + "p:0,p,0,0,3,,0,3,0,97\np:1,p,1,50,40,0.5,20,20,30,30\n")
    with pytest.raises(FileNotFoundError, match="crf=True"):
        analysis.crf_change(tmp_path)
    _write_table(run.per_image_path(True), header + "p:0,p,0,0,0,,0,0,0,100\np:1,p,1,50,50,0.8,40,10,10,40\n")
    rows = analysis.crf_change(tmp_path, {"p": (1.0, 1.0)})
    assert rows[0]["size"] == "no tumour" and rows[0]["dice_change"] is None and rows[0]["fp_on"] == 0
    assert rows[1]["dice_change"] == pytest.approx(0.3) and rows[1]["size"] == "< 10 mm"
    assert rows[1]["diameter_mm"] == pytest.approx(2 * math.sqrt(50 / math.pi))
    assert analysis.crf_change(tmp_path)[1]["size"] == "tumour"
    _write_table(run.per_image_path(True), header + "p:0,p,0,0,0,,0,0,0,100\n")
    with pytest.raises(ValueError, match="different images"):
        analysis.crf_change(tmp_path)


def test_example_slices_picks_by_rule():
    from lungseg.data.volume import CTVolume

    mask = np.zeros((4, 16, 16), np.uint8)
    mask[1, 2:12, 2:12] = 1  # large
    mask[2, 5:8, 5:8] = 1  # 9 px
    mask[3, 5:6, 5:6] = 1  # 1 px: too small to show
    vol = CTVolume(image=np.zeros((4, 16, 16), np.float32), mask=mask, spacing=(1.0, 1.0, 1.0), patient_id="p")
    manifest = {"patients": [{"patient_id": "p", "tumours": [
        {"location": "juxta-pleural", "centre_voxel_zyx": [2.2, 6, 6]}]}]}
    found = analysis.example_slices({"p": vol}, ["p"], manifest)
    assert found["largest tumour"] == ("p", 1, 100) and found["smallest tumour"] == ("p", 2, 9)
    assert found["juxta-pleural tumour"] == ("p", 2, 9) and found["tumour-free"] == ("p", 0, 0)
    assert "juxta-pleural tumour" not in analysis.example_slices({"p": vol}, ["p"])
    assert "juxta-pleural tumour" not in analysis.example_slices({"p": vol}, [], manifest)


def test_plateau_needs_a_flat_end_near_the_best():
    from lungseg.analysis import plateau

    flat = plateau([0.1, 0.5, 0.8, 0.82, 0.81, 0.83, 0.82])
    assert flat["plateaued"] and flat["best"] == 0.83 and flat["best_epoch"] == 6
    assert flat["last_spread"] == pytest.approx(0.02) and flat["last_best_shortfall"] == pytest.approx(0.0)
    # still climbing at the end: the last four span 0.3
    assert not plateau([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])["plateaued"]
    assert not flat["peaked_earlier"]
    # flat at the end, below an earlier peak: settled, and the kept checkpoint is the earlier spike
    spike = plateau([0.2, 0.9, 0.5, 0.5, 0.5, 0.5])
    assert spike["plateaued"] and spike["peaked_earlier"] and spike["best_epoch"] == 2
    assert spike["last_best_shortfall"] == pytest.approx(0.4)
    # too short to show a plateau; empty history
    assert not plateau([0.8, 0.8])["plateaued"]
    assert plateau([])["best"] is None
    with pytest.raises(ValueError, match="at least 2"):
        plateau([0.5] * 5, epochs=1)
    with pytest.raises(ValueError, match="tolerance"):
        plateau([0.5] * 5, tolerance=-0.1)


def test_tumour_table_lists_every_test_tumour_with_each_runs_recall(tiny, make_npz, tmp_path):
    from scipy import ndimage

    from lungseg.analysis import tumour_components, tumour_diameters_mm, tumour_table
    from lungseg.config import TrainConfig
    from lungseg.data import open_dataset
    from lungseg.training import train

    data = make_npz(tmp_path / "d.npz", n_patients=8, per_patient=3, size=32, seed=4)
    cfg = TrainConfig(data=str(data), model="unet", epochs=1, split_fractions=(0.5, 0.25, 0.25), **tiny)
    train(cfg, tmp_path / "a", progress=False)
    train(dataclasses.replace(cfg, seed=1), tmp_path / "b", progress=False)
    rows = tumour_table([tmp_path / "a", tmp_path / "b"], data, split="test")
    test_patients = json.loads((tmp_path / "a" / "split.json").read_text())["test"]
    dataset = open_dataset(data)
    expected = sum(ndimage.label(dataset[p].mask, structure=np.ones((3, 3, 3)))[1] for p in test_patients)
    assert len(rows) == expected > 0 and {r["patient"] for r in rows} <= set(test_patients)
    assert sum(r["share_of_voxels"] for r in rows) == pytest.approx(1.0)
    assert [r["voxels"] for r in rows] == sorted((r["voxels"] for r in rows), reverse=True)
    assert all(0.0 <= r[f"recall:{n}"] <= 1.0 for r in rows for n in ("a", "b"))
    # recall counts the tumour's own voxels: everything predicted finds all of it, nothing finds none
    assert {r["recall:a"] for r in tumour_table([tmp_path / "a"], data, threshold=0.0)} == {1.0}
    assert {r["recall:a"] for r in tumour_table([tmp_path / "a"], data, threshold=1.01)} == {0.0}
    with pytest.raises(ValueError, match="at least one run"):
        tumour_table([], data)
    with pytest.raises(ValueError, match="split must be one of"):
        tumour_table([tmp_path / "a"], data, split="holdout")
    other = dataclasses.replace(cfg, split_seed=5)
    train(other, tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="different patient splits"):
        tumour_table([tmp_path / "a", tmp_path / "c"], data)
    with pytest.raises(ValueError, match="3D"):
        tumour_components(np.zeros((4, 4)))
    # the diameters are the table's, for any patients
    diameters = tumour_diameters_mm(data, test_patients)
    assert diameters == pytest.approx(sorted((r["diameter_mm"] for r in rows), reverse=True))


def test_the_grid_tumour_table_is_read_back_only_for_the_runs_it_was_made_from(tiny, make_npz, tmp_path):
    from lungseg.analysis import grid_tumour_table, tumour_diameters_mm, tumour_table, write_grid_tumour_table
    from lungseg.config import TrainConfig
    from lungseg.training import train

    data = make_npz(tmp_path / "d.npz", n_patients=8, per_patient=3, size=32, seed=4)
    cfg = TrainConfig(data=str(data), model="unet", epochs=1, split_fractions=(0.5, 0.25, 0.25), **tiny)
    runs = [tmp_path / "a", tmp_path / "b"]
    for seed, run in enumerate(runs):
        train(dataclasses.replace(cfg, seed=seed), run, progress=False)
    stored = write_grid_tumour_table(tmp_path / "grid" / "test_tumours.json", runs, data)
    computed = json.loads(json.dumps(tumour_table(runs, data, split="test")))
    train_patients = json.loads((runs[0] / "split.json").read_text())["train"]

    def no_data():
        raise AssertionError("the stored table should have been read")

    found = grid_tumour_table(runs, no_data, stored)
    assert found["rows"] == computed and found["split"] == "test" and found["train_patients"] == len(train_patients)
    assert found["train_diameters_mm"] == pytest.approx(tumour_diameters_mm(data, train_patients))
    # another split, other runs, changed weights or a changed threshold: computed again, not read
    asked = []

    def data_asked():
        asked.append(True)
        return data

    assert grid_tumour_table(runs, data_asked, stored, split="val")["split"] == "val" and len(asked) == 1
    assert len(grid_tumour_table(runs[:1], data_asked, stored)["rows"]) == len(computed) and len(asked) == 2
    config = json.loads((runs[1] / "config.json").read_text())
    (runs[1] / "config.json").write_text(json.dumps({**config, "threshold": 0.01}))
    grid_tumour_table(runs, data_asked, stored)
    assert len(asked) == 3
    # a damaged file is no table (computed again), never an error
    stored.write_text("{ not json")
    assert grid_tumour_table(runs, data_asked, stored)["rows"] and len(asked) == 4


def test_crf_boundary_reads_both_evaluations_and_says_when_they_predate_it(tmp_path):
    import json

    run = RunDir(tmp_path)
    header = "image_id,patient_id,slice,tumour_pixels,predicted_pixels,dice,tp,fp,fn,tn,hd95_mm,surface_dice\n"
    _write_table(run.per_image_path(False), header + "p:0,p,0,50,40,0.5,20,20,30,30,4.5,0.4\np:1,p,1,0,3,,0,3,0,97,,0\n")
    _write_table(run.per_image_path(True), header + "p:0,p,0,50,50,0.8,40,10,10,40,2.0,0.7\np:1,p,1,0,0,,0,0,0,100,,\n")
    rows = analysis.crf_change(tmp_path)
    assert rows[0]["hd95_mm_change"] == pytest.approx(-2.5) and rows[0]["surface_dice_change"] == pytest.approx(0.3)
    assert rows[1]["hd95_mm_change"] is None and rows[1]["surface_dice_on"] is None
    # today's tables name an image by patient and slice alone; an older table beside one reads the same
    _write_table(run.per_image_path(True), header.replace("image_id,", "")
                 + "p,0,50,50,0.8,40,10,10,40,2.0,0.7\np,1,0,0,,0,0,0,100,,\n")
    assert analysis.crf_change(tmp_path) == rows and [r["image_id"] for r in rows] == ["p:0", "p:1"]

    def evaluation(hd: float, nsd: float, boundary: bool = True) -> str:
        e = {"crf": False, "pooled": {"dice": 0.5}}
        if boundary:
            e["boundary"] = {"tolerance_mm": 2.0, "per_image": {"hd95_mm": hd, "surface_dice": nsd},
                             "per_patient": {"hd95_mm": 2 * hd, "surface_dice": None}}
        return json.dumps(e)

    run.evaluation_path(False).write_text(evaluation(6.0, 0.5))
    run.evaluation_path(True).write_text(evaluation(4.0, 0.6, boundary=False))
    assert analysis.crf_boundary(tmp_path) is None  # an older evaluation: no boundary figures
    run.evaluation_path(True).write_text(evaluation(4.0, 0.6))
    b = analysis.crf_boundary(tmp_path)
    assert b["per image hd95_mm"] == {"off": 6.0, "on": 4.0, "change": -2.0}
    assert b["per patient surface_dice at 2 mm"]["change"] is None and len(b) == 4

    def stat(mean):
        return {"mean": mean, "low": None if mean is None else mean - 1, "high": None if mean is None else mean + 1}

    cell = {"model": "unet", "loss": "dice"}
    diffs = [{"factor": "crf", "a": {**cell, "crf": False}, "b": {**cell, "crf": True}, "n_pairs": 3,
              **{c: stat(-1.5) for c in analysis.BOUNDARY_COLUMNS}},
             {"factor": "model", "a": {**cell, "crf": False}, "b": {**cell, "model": "attention", "crf": False},
              "n_pairs": 3, **{c: stat(0.2) for c in analysis.BOUNDARY_COLUMNS}}]
    (row,) = analysis.crf_boundary_differences({"differences": diffs})
    assert row["model"] == "unet" and row["hd95_mm_per_image"] == -1.5 and row["hd95_mm_per_image_high"] == -0.5
    old = [{**d, **{c: stat(None) for c in analysis.BOUNDARY_COLUMNS}} for d in diffs]
    assert analysis.crf_boundary_differences({"differences": old}) == []
    assert len(analysis.BOUNDARY_COLUMNS) == 4


def test_describe_crf_boundary_reads_the_interval_the_right_way_round():
    row = {"hd95_mm_per_image": -1.0, "hd95_mm_per_image_low": -1.5, "hd95_mm_per_image_high": -0.5,
           "surface_dice_per_image": -0.1, "surface_dice_per_image_low": -0.2, "surface_dice_per_image_high": -0.05,
           "hd95_mm_per_patient": 0.5, "hd95_mm_per_patient_low": -1.0, "hd95_mm_per_patient_high": 2.0,
           "surface_dice_per_patient": 0.02, "surface_dice_per_patient_low": None, "surface_dice_per_patient_high": None}
    lines = dict(line.split(": ", 1) for line in analysis.describe_crf_boundary(row).splitlines())
    assert lines["hd95_mm_per_image"].endswith("improves")  # a lower distance is better
    assert lines["surface_dice_per_image"].endswith("worsens")
    assert "unclear" in lines["hd95_mm_per_patient"] and "one seed" in lines["surface_dice_per_patient"]
    assert "not measured" in analysis.describe_crf_boundary({})


def test_best_validation_run_is_looked_up_by_name_under_the_given_folder(tmp_path):
    for name, val in (("attention-hybrid-seed0", 0.6), ("attention-hybrid-seed1", 0.8), ("unet-hybrid-seed0", 0.9)):
        RunDir(tmp_path / name).create().write_metrics({"best_val_dice": val})
    results = {"runs": [{"run": f"/elsewhere/runs/{n}", "model": n.split("-")[0]} for n in
                        ("attention-hybrid-seed0", "attention-hybrid-seed1", "unet-hybrid-seed0", "attention-dice-seed0")]}
    assert analysis.best_validation_run(results, tmp_path) == tmp_path / "attention-hybrid-seed1"
    assert analysis.best_validation_run(results, tmp_path, "unet") == tmp_path / "unet-hybrid-seed0"
    assert analysis.best_validation_run({"runs": []}, tmp_path) is None


def test_the_training_tables_of_the_published_medium_profile():
    """Chapter 4's tables, read from the published medium profile: the tuning's candidates with one choice
    per loss, every run's convergence test, the patch-vs-whole means and the time per model."""
    import pandas as pd

    from lungseg import book
    from lungseg.experiment import profile_dir, profile_settings

    settings = profile_settings("medium")
    tuning, candidates = analysis.read_tuning(profile_dir(settings).tune)
    table = analysis.tuning_table(candidates, tuning)
    assert len(table) == len(candidates) and (table["chosen"] == "✓").sum() == len(tuning["chosen"])
    assert list(table.index.names) == ["loss", "candidate"] and "Dice, t = 0.5" in table.columns
    results = book.load_results(settings)
    convergence = analysis.convergence_table(results)
    assert len(convergence) == len(results["runs"]) and set(convergence["ended"]) <= {
        "end of schedule", "stopped early (patience)"}
    assert set(analysis.CONVERGENCE_LABELS) <= set(convergence.columns)
    comparison = pd.read_csv(profile_dir(settings).whole_slice.comparison_path)
    means = analysis.patch_vs_whole_means(comparison)
    assert means["dice_pooled"][0] == pytest.approx(comparison["dice_pooled_patch"].mean())
    runs = pd.DataFrame(analysis.run_summaries(results))
    assert set(analysis.time_by_model(runs).index) == {"unet", "attention"}


def test_run_timing_and_grid_span_read_the_runs_files(tmp_path):
    from lungseg.experimentdir import ExperimentDir

    results = fake_experiment(tmp_path)  # its runs lie in tmp_path's runs folder
    grid = ExperimentDir(tmp_path)
    assert analysis.grid_span(results, grid) is None  # no configuration or evaluation written yet
    for row in results["runs"]:
        for crf in (False, True):
            RunDir(row["run"]).evaluation_path(crf).write_text("{}")
    timing = analysis.run_timing(RunDir(results["runs"][0]["run"]))
    # two epochs of 4 s in a 10 s training: 2 s of setup; the evaluations follow the summary
    assert (timing["epochs_run"], timing["train_and_validate_s"], timing["setup_s"]) == (2, 8.0, 2.0)
    assert timing["evaluate_crf_off_s"] is not None and timing["time_per_epoch_s"] == 4.0
    assert analysis.grid_span(results, grid) >= 0


def test_resampled_coverage_table_resamples_a_runs_scored_patients(tmp_path):
    from lungseg.experimentdir import ExperimentDir

    study = ExperimentDir(tmp_path / "study")
    run = study.run("attention-hybrid-seed0")
    run.path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["image_id,patient_id,slice,tumour_pixels,predicted_pixels,dice,tp,fp,fn,tn"]
    for p in range(40):
        tp, fp, fn = (int(v) for v in rng.integers(10, 200, 3))
        lines.append(f"p{p}:0,p{p},0,{tp + fn},{tp + fp},,{tp},{fp},{fn},1000")
    _write_table(run.per_image_path(False), "\n".join(lines) + "\n")
    table = analysis.resampled_coverage_table(study, ["attention-hybrid-seed0"], [10, 40], n_studies=30, n_boot=200)
    assert [(r["run"], r["study_patients"], r["population_patients"]) for r in table] == \
        [("attention-hybrid-seed0", 10, 40), ("attention-hybrid-seed0", 40, 40)]
    assert table[0]["mean_half_width"] > table[1]["mean_half_width"]  # more patients, narrower intervals
    with pytest.raises(FileNotFoundError, match="no per-image table"):
        analysis.resampled_coverage_table(study, ["attention-hybrid-seed0"], [10], crf=True)


def test_lesion_recall_splits_into_small_and_larger_cross_sections():
    # 2190 lesions, 839 under 10 mm: 149 small and 1080 larger ones found (a published test-study run)
    ev = {"n_lesions": 2190, "n_lesions_hit": 1229, "n_small_lesions": 839, "n_small_hit": 149}
    (row,) = analysis.lesion_recall_by_size([("attention-hybrid-seed1", ev)], target=0.85)
    assert row["lesion_recall"] == pytest.approx(1229 / 2190)
    assert row["recall_small"] == pytest.approx(149 / 839) and row["recall_10mm_plus"] == pytest.approx(1080 / 1351)
    assert row["small_share"] == pytest.approx(839 / 2190)
    assert row["recall_if_all_10mm_plus_found"] == pytest.approx((1351 + 149) / 2190)
    # 0.85 x 2190 = 1861.5 lesions found: 781.5 of the 839 small ones on top of the 1080 larger ones
    assert row["small_recall_needed"] == pytest.approx((0.85 * 2190 - 1080) / 839)
    # the counts recombine: the larger ones found plus the needed small ones give the target
    assert (1080 + row["small_recall_needed"] * 839) / 2190 == pytest.approx(0.85)
    # 9 of 9 larger lesions found already make 0.9 of 10: no small one is needed
    easy = {"n_lesions": 10, "n_lesions_hit": 9, "n_small_lesions": 1, "n_small_hit": 0}
    assert analysis.lesion_recall_by_size([("larger ones suffice", easy)])[0]["small_recall_needed"] == 0.0


def test_lesion_recall_by_size_says_what_is_missing():
    with pytest.raises(ValueError, match="run-a: the evaluation has no n_small_lesions"):
        analysis.lesion_recall_by_size([("run-a", {"n_lesions": 3, "n_lesions_hit": 1, "n_small_hit": 0})])
    with pytest.raises(ValueError, match=r"target must be in \(0, 1\]"):
        analysis.lesion_recall_by_size([], target=1.5)


def _width_study(folder, patient_spread: float, n_patients: int = 30):
    """A scored grid of two cells with three seeds each: the U-Net's seeds differ by 0.15 in skill, the
    attention network's agree; the patients' skills spread over ``patient_spread``. Returns the folder and
    the U-Net's (2TP, 2TP + FP + FN) per seed and patient."""
    from lungseg.experimentdir import ExperimentDir
    from lungseg.files import write_json

    study = ExperimentDir(folder)
    write_json({"settings": {"models": ["unet", "attention"], "losses": ["hybrid"], "crf": [False],
                             "seeds": [0, 1, 2]}}, study.results_path)
    rng = np.random.default_rng(0)
    tumour = rng.integers(50, 2000, n_patients)
    patient_skill = rng.uniform(-patient_spread, patient_spread / 3, n_patients)  # some tumours mostly missed
    counts = {}
    for model, seed_sd in (("unet", 0.15), ("attention", 0.0)):
        for seed in range(3):
            run = study.run(f"{model}-hybrid-seed{seed}")
            run.path.mkdir(parents=True)
            tp = np.round(tumour * (0.8 + seed_sd * (seed - 1) + patient_skill)).astype(int)
            fn, fp = tumour - tp, rng.integers(0, 40, n_patients)
            counts[(model, seed)] = (2 * tp, 2 * tp + fp + fn)
            lines = ["image_id,patient_id,slice,tumour_pixels,predicted_pixels,dice,tp,fp,fn,tn"]
            lines += [f"p{p:03d}:0,p{p:03d},0,{tumour[p]},{tp[p] + fp[p]},,{tp[p]},{fp[p]},{fn[p]},1000"
                      for p in range(n_patients)]
            _write_table(run.per_image_path(False), "\n".join(lines) + "\n")
    unet = tuple(np.stack([counts[("unet", s)][i] for s in range(3)]) for i in (0, 1))
    return study, unet


def test_interval_width_table_splits_each_cells_width_and_projects_the_patients_needed(tmp_path):
    from lungseg.metrics import crossed_interval, sample_needed

    study, unet_counts = _width_study(tmp_path / "study", patient_spread=0.4)
    rows = {r["model"]: r for r in analysis.interval_width_table(study, target=0.03, n_boot=500)}
    unet, attention = rows["unet"], rows["attention"]
    # the table's own interval, to the last digit
    crossed = crossed_interval(*unet_counts, n_boot=500)
    assert unet["half_width"] == pytest.approx((crossed["high"] - crossed["low"]) / 2)
    assert (unet["n_seeds"], unet["n_patients"]) == (3, 30)
    assert unet["seeds_alone"] > attention["seeds_alone"]
    # the U-Net's seeds alone are wider than 0.03: no number of patients brings it there
    assert unet["seeds_alone"] > 0.03 and unet["patients_needed"] is None
    assert attention["patients_needed"] is not None and attention["patients_needed"] > 30
    assert attention["added_in_quadrature"] == pytest.approx(math.hypot(attention["seeds_alone"],
                                                                        attention["patients_alone"]))
    # patients that agree: their part is narrow, and more seeds (not patients) are what the U-Net needs
    calm, _ = _width_study(tmp_path / "calm", patient_spread=0.01, n_patients=200)
    unet = {r["model"]: r for r in analysis.interval_width_table(calm, target=0.03, n_boot=500)}["unet"]
    assert unet["patients_alone"] < 0.03 < unet["seeds_alone"]
    assert unet["seeds_needed"] == sample_needed(unet["patients_alone"], unet["seeds_alone"], 3, 0.03) > 3
    (study.run("attention-hybrid-seed2").per_image_path(False)).unlink()
    with pytest.raises(FileNotFoundError, match="attention-hybrid-seed2"):
        analysis.interval_width_table(study)
