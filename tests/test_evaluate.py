"""Evaluation: metrics.json structure, numbers checked against an independent computation, CRF, detection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lungseg.config import TrainConfig
from lungseg.errors import DataError, LungsegError
from lungseg.evaluation import choose_area_threshold, detection_scores, evaluate_run
from lungseg.files import read_csv
from lungseg.inference import Predictor
from lungseg.metrics import BOUNDARY_EMPTY_RULE, boundary_scores
from lungseg.training import train

STATS = ("dice", "iou", "accuracy", "precision", "recall", "f1")


@pytest.fixture(scope="module")
def trained(tiny, make_npz, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval")
    data = make_npz(root / "toy.npz", n_patients=10, per_patient=4, size=32, seed=2)
    train(TrainConfig(data=str(data), epochs=2, lr=3e-3, split_fractions=(0.7, 0.15, 0.15), **tiny), root / "run", progress=False)
    return data, root / "run"


def test_metrics_json_matches_independent_computation(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    out = tmp_path / "metrics.json"
    m = evaluate_run(run, data, out=out, n_boot=200, progress=False)
    saved = json.loads(out.read_text())
    assert saved["pooled"]["dice"] == pytest.approx(m["pooled"]["dice"])
    for agg in ("pooled", "per_image", "per_patient"):
        assert set(STATS) <= set(saved[agg])
        for s in STATS:
            low, high = saved["ci"][agg][s]
            if saved[agg][s] is not None and low is not None:
                assert low - 1e-9 <= high
    for key in ("small_tumor_recall", "intensity_robustness_std", "n_images", "n_patients", "empty_mask_rule"):
        assert key in saved
    assert saved["split"] == "test" and saved["crf"] is False
    assert saved["intensity_robustness_std"] is not None and saved["intensity_robustness_std"] >= 0

    # Independent recomputation: rerun the model on the test patients, threshold, count in numpy.
    split = json.loads((run / "split.json").read_text())["test"]
    z = np.load(data)
    sel = np.isin(z["patient_ids"], split)
    images, masks, pids = z["images"][sel], z["masks"][sel].astype(bool), z["patient_ids"][sel]
    loaded = Predictor.from_run_dir(run, device="cpu")
    pred = loaded.probabilities(images) >= 0.5
    tp, fp, fn = (pred & masks).sum(), (pred & ~masks).sum(), (~pred & masks).sum()
    assert saved["pooled"]["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert saved["pooled"]["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert saved["n_images"] == len(images) and saved["n_patients"] == len(set(pids))
    per_patient = []
    for p in sorted(set(pids)):
        q, t = pred[pids == p], masks[pids == p]
        a, b, c = (q & t).sum(), (q & ~t).sum(), (~q & t).sum()
        per_patient.append(2 * a / (2 * a + b + c))
    assert saved["per_patient"]["dice"] == pytest.approx(np.mean(per_patient))

    rows = read_csv(tmp_path / "metrics_per_image.csv.gz")
    assert len(rows) == len(images)
    assert sum(int(r["tp"]) for r in rows) == tp and sum(int(r["fn"]) for r in rows) == fn
    assert {"patient_id", "slice", "tumour_pixels", "dice", "tp", "fp", "fn"} <= set(rows[0]) and "image_id" not in rows[0]
    assert len({(r["patient_id"], r["slice"]) for r in rows}) == len(rows)  # together they name the image

    # Boundary figures: per image from the same masks at the data's in-plane spacing,
    # blank where undefined, the mean over the defined ones; no slice spacing in an npz, so no 3D figures.
    b = saved["boundary"]
    assert b["tolerance_mm"] == 2.0 and b["empty_mask_rule"] == BOUNDARY_EMPTY_RULE
    spacing = z["spacing"][sel]
    expected = np.array([boundary_scores(pred[i], masks[i], spacing[i], 2.0) for i in range(len(pred))])
    got = np.array([[float(r[k]) if r[k] != "" else np.nan for k in ("hd95_mm", "surface_dice")] for r in rows])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    for col, name in enumerate(("hd95_mm", "surface_dice")):
        defined = expected[:, col][np.isfinite(expected[:, col])]
        assert b["per_image"][name] == (pytest.approx(defined.mean()) if defined.size else None)
    assert b["n_images_surface_dice"] == int((pred.any(axis=(1, 2)) | masks.any(axis=(1, 2))).sum())
    assert b["per_patient"]["hd95_mm"] is None and b["n_patients_no_slice_spacing"] == saved["n_patients"]
    assert saved["tumour_recall"] is None and "no spacing" in saved["tumour_rule"]


def test_crf_and_other_splits(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    m = evaluate_run(run, data, crf=True, out=tmp_path / "crf.json", n_boot=0, robustness=False, progress=False)
    assert m["crf"] is True and 0.0 <= m["pooled"]["dice"] <= 1.0 and "ci" not in m
    assert "boundary" in m
    with pytest.raises(LungsegError, match="tolerance_mm"):
        evaluate_run(run, data, n_boot=0, robustness=False, progress=False, tolerance_mm=0)
    everything = evaluate_run(run, data, split="all", n_boot=0, robustness=False, progress=False)
    assert everything["n_images"] == 40 and everything["split"] == "all"


def test_one_pass_for_both_crf_settings_equals_two_evaluations(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from lungseg.crf import crf_available
    from lungseg.evaluation import evaluate_run_crf_settings

    data, run = trained
    settings = (False, True) if crf_available() else (False,)
    outs = {c: tmp_path / f"crf_{c}.json" for c in settings}
    both = evaluate_run_crf_settings(run, data, outs, progress=False)
    for c in settings:
        single = evaluate_run(run, data, crf=c, n_boot=0, robustness=False, progress=False)
        assert both[c]["pooled"] == single["pooled"] and both[c]["n_images"] == single["n_images"]
        assert both[c]["crf"] == c and outs[c].is_file()
        assert outs[c].with_name(f"crf_{c}_per_image.csv.gz").is_file()


def test_other_dataset_without_run_patients_needs_split_all(make_npz, trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = trained
    z = np.load(make_npz(tmp_path / "o.npz", n_patients=3, per_patient=2, size=32, seed=9))
    other = tmp_path / "other.npz"
    np.savez(other, **{k: z[k] for k in z.files if k != "patient_ids"}, patient_ids=np.array(["new"] * 6))
    m = evaluate_run(run, other, n_boot=0, robustness=False, progress=False)
    assert m["split"] == "all" and m["n_images"] == 6 and m["n_patients"] == 1
    with pytest.raises(DataError, match="split"):
        evaluate_run(run, other, split="test", n_boot=0, progress=False)


def test_area_threshold_chosen_on_validation() -> None:
    area = np.array([0.0, 0.001, 0.002, 0.05, 0.08, 0.1])
    labels = np.array([0, 0, 0, 1, 1, 1])
    thr = choose_area_threshold(area, labels)
    assert 0.002 < thr < 0.05
    s = detection_scores(area, labels, thr)
    assert s["accuracy"] == 1.0 and s["sensitivity"] == 1.0 and s["specificity"] == 1.0


def test_kaggle_layout_gives_detection_metrics(tiny, tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    n, size = 24, 32
    yy, xx = np.mgrid[:size, :size]
    images = (0.1 + 0.03 * rng.standard_normal((n, size, size))).clip(0, 1).astype(np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        m = (yy - 16) ** 2 + (xx - 16) ** 2 < rng.uniform(4, 7) ** 2
        masks[i], images[i][m] = m, 0.7
    np.savez(tmp_path / "unit.npz", images=images, masks=masks, intensity="unit",
             patient_ids=np.array([f"p{i // 2}" for i in range(n)]))
    train(TrainConfig(data=str(tmp_path / "unit.npz"), epochs=3, lr=3e-3, **tiny), tmp_path / "run", progress=False)
    root = tmp_path / "kaggle"
    for part in ("train", "valid", "test"):
        for cls, cancer in (("normal", False), ("adenocarcinoma", True)):
            folder = root / part / cls
            folder.mkdir(parents=True)
            for k in range(3):
                img = 0.1 + 0.03 * rng.standard_normal((size, size))
                if cancer:
                    img[(yy - 16) ** 2 + (xx - 16) ** 2 < 36] = 0.7
                Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8)).save(folder / f"{k}.png")
    m = evaluate_run(tmp_path / "run", root, out=tmp_path / "det.json", progress=False)
    assert m["task"] == "slice-level detection"
    assert m["n_validation_images"] == 6 and m["n_test_images"] == 6
    assert set(m["test"]) >= {"accuracy", "sensitivity", "specificity"}
    assert json.loads((tmp_path / "det.json").read_text())["area_threshold"] == pytest.approx(m["area_threshold"])


def _disc_npz(path: Path, n: int, seed: int, ids: bool = False) -> Path:
    """``n`` slices of discs on lung, without patient ids unless ``ids`` (then one patient a slice pair)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    images = (-850 + rng.normal(0, 40, (n, 32, 32))).astype(np.float32)
    masks = np.zeros((n, 32, 32), np.uint8)
    for i in range(n):
        m = (yy - rng.uniform(12, 20)) ** 2 + (xx - rng.uniform(12, 20)) ** 2 < rng.uniform(9, 25)
        masks[i], images[i][m] = m, 20.0
    extra = {"patient_ids": np.array([f"p{i // 2}" for i in range(n)])} if ids else {}
    np.savez(path, images=images, masks=masks, **extra)
    return path


@pytest.fixture(scope="module")
def trained_without_ids(tiny, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import warnings

    root = tmp_path_factory.mktemp("noids")
    data = _disc_npz(root / "train.npz", 20, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(TrainConfig(data=str(data), epochs=1, split_fractions=(0.8, 0.2, 0.0), **tiny), root / "run", progress=False)
    return data, root / "run"


def test_a_separate_test_file_is_not_the_training_data(trained_without_ids: tuple[Path, Path], tmp_path: Path) -> None:
    """Two .npz files without ids and with as many images have the same generated ids: content decides."""
    data, run = trained_without_ids
    test_file = _disc_npz(tmp_path / "test.npz", 20, seed=1)
    m = evaluate_run(run, test_file, n_boot=0, robustness=False, progress=False)
    assert m["split"] == "all" and m["n_images"] == 20
    # the training data itself (here under another name) is still recognised, and has no test patients
    copy = tmp_path / "copy.npz"
    copy.write_bytes(data.read_bytes())
    with pytest.raises(LungsegError, match="is the data .* was trained on"):
        evaluate_run(run, copy, n_boot=0, robustness=False, progress=False)


def test_training_patients_in_evaluation_data_are_named(trained_without_ids: tuple[Path, Path], tmp_path: Path) -> None:
    from lungseg.errors import DataWarning

    data, run = trained_without_ids
    z = np.load(data)
    train_ids = json.loads((run / "split.json").read_text())["train"]
    leaked = int(train_ids[0].split("_")[1])
    fresh = np.load(_disc_npz(tmp_path / "fresh.npz", 6, seed=5))
    mixed = tmp_path / "mixed.npz"  # five new slices and one training slice, in a new file
    np.savez(mixed, images=np.concatenate([fresh["images"][:5], z["images"][leaked:leaked + 1]]),
             masks=np.concatenate([fresh["masks"][:5], z["masks"][leaked:leaked + 1]]))
    with pytest.warns(DataWarning, match=rf"1 of the 6 evaluated patients are training patients .*slice_00005 "
                                         rf"\(trained on as {train_ids[0]}\)"):
        evaluate_run(run, mixed, n_boot=0, robustness=False, progress=False)


def test_evaluating_only_unseen_patients_warns_nothing(trained_without_ids: tuple[Path, Path], tmp_path: Path) -> None:
    import warnings

    _, run = trained_without_ids
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_run(run, _disc_npz(tmp_path / "t.npz", 20, seed=3), n_boot=0, robustness=False, progress=False)


def test_bootstrap_resamples_are_bounded(trained: tuple[Path, Path]) -> None:
    from lungseg.limits import MAX_BOOTSTRAP

    data, run = trained
    with pytest.raises(LungsegError, match="n_boot must be an int in"):
        evaluate_run(run, data, n_boot=MAX_BOOTSTRAP + 1, progress=False)


def test_tumours_are_counted_per_patient_with_slices_in_order() -> None:
    """Two patients whose tumours sit at the same place on adjacent rows of the stacked arrays stay two
    tumours; a patient's slices are stacked by their index, not by their row order."""
    from lungseg.evaluation.segmentation import _tumour_fields

    masks = np.zeros((6, 16, 16), np.uint8)
    masks[[0, 2, 3], 4:8, 4:8] = 1  # patient a's slices 0 and 1 (rows 0, 2), patient b's slice 0 (row 3)
    pred = masks.copy()
    pred[3] = 0  # patient b's only tumour is missed
    arrays = {"patient_ids": ["a", "a", "a", "b", "b", "b"], "slice_index": [0, 2, 1, 0, 1, 2], "masks": masks,
              "spacing": np.ones((6, 2)), "slice_spacing": {"a": 2.0, "b": 2.0}}
    fields = _tumour_fields(pred, arrays)
    assert (fields["n_tumours"], fields["n_tumours_hit"]) == (2, 1)
    arrays["slice_spacing"]["b"] = None  # a stack of unrelated slices has no tumours in 3D
    assert _tumour_fields(pred, arrays)["tumour_recall"] is None


def test_slices_are_stacked_into_one_growing_array() -> None:
    """The evaluation's slice stack equals the concatenation (cast to its dtype), also when a later patient
    brings more slices than the first ones led it to expect, or fewer (the unused room is not kept)."""
    from lungseg.evaluation.segmentation import _SliceStack

    rng = np.random.default_rng(0)
    for counts in ((2, 5, 1, 7), (7, 1, 1, 1), (3, 3, 3)):
        patients = [rng.normal(size=(n, 3, 4)) * 100 for n in counts]
        stack = _SliceStack(n_patients=len(patients), dtype=np.float32)
        for slices in patients:
            stack.append(slices)
        array = stack.array()
        np.testing.assert_array_equal(array, np.concatenate(patients).astype(np.float32))
        assert array.dtype == np.float32 and array.flags.c_contiguous
        held = array.base.shape[0] if array.base is not None else len(array)
        assert held < len(array) / 0.9, (counts, held)
    masks = _SliceStack(n_patients=2, dtype=np.uint8)
    masks.append(np.array([[[True, False]]]))
    masks.append(np.ones((2, 1, 2), np.uint8))
    np.testing.assert_array_equal(masks.array(), [[[1, 0]], [[1, 1]], [[1, 1]]])
