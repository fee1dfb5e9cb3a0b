"""Evaluation: metrics.json structure, numbers checked against an independent computation, CRF, detection."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lungseg.config import TrainConfig
from lungseg.errors import DataError, LungsegError
from lungseg.evaluation import choose_area_threshold, detection_scores, evaluate_run
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

    with open(tmp_path / "metrics_per_image.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(images)
    assert sum(int(r["tp"]) for r in rows) == tp and sum(int(r["fn"]) for r in rows) == fn
    assert {"image_id", "patient_id", "tumour_pixels", "dice", "tp", "fp", "fn"} <= set(rows[0])

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


def test_crf_and_other_splits(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    m = evaluate_run(run, data, crf=True, out=tmp_path / "crf.json", n_boot=0, robustness=False, progress=False)
    assert m["crf"] is True and 0.0 <= m["pooled"]["dice"] <= 1.0 and "ci" not in m
    assert "boundary" in m
    with pytest.raises(LungsegError, match="tolerance_mm"):
        evaluate_run(run, data, n_boot=0, robustness=False, progress=False, tolerance_mm=0)
    everything = evaluate_run(run, data, split="all", n_boot=0, robustness=False, progress=False)
    assert everything["n_images"] == 40 and everything["split"] == "all"


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
