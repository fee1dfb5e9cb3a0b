"""lungseg.experiment.figures: a run's per-image table rebuilds its figures per patient."""

from __future__ import annotations

import numpy as np
import pytest

from lungseg.evaluation.segmentation import per_image_rows
from lungseg.experiment.figures import PATIENT_FIGURES, patient_figures, stack_seeds
from lungseg.metrics import summarize


def _prediction_set(seed: int = 0, n: int = 24, size: int = 16):
    rng = np.random.default_rng(seed)
    target = np.zeros((n, size, size), np.uint8)
    pred = np.zeros_like(target)
    for i in range(n):
        if rng.random() < 0.6:  # some slices without tumour
            y, x = rng.integers(2, size - 6, 2)
            target[i, y:y + rng.integers(2, 6), x:x + rng.integers(2, 6)] = 1
        if rng.random() < 0.7:
            y, x = rng.integers(2, size - 6, 2)
            pred[i, y:y + rng.integers(2, 6), x:x + rng.integers(2, 6)] = 1
    pred[0] = target[0] = 0  # one slice with nothing to find and nothing found
    pids = [f"p{i // 6}" for i in range(n)]
    pred[18:24] = target[18:24] = 0  # a patient whose truth and prediction are empty
    return pred, target, pids


def test_the_per_image_table_rebuilds_summarize_for_every_figure():
    pred, target, pids = _prediction_set()
    arrays = {"masks": target, "patient_ids": pids, "slice_index": list(range(len(pids)))}
    rows = [{k: str(v) for k, v in r.items()} for r in per_image_rows(pred, arrays)]
    patients = sorted(set(pids))
    figures = patient_figures(rows, patients)
    summary = summarize(pred, target, pids)
    expected = {f"{metric}_{agg}": summary[agg][metric] for agg in ("pooled", "per_image", "per_patient")
                for metric in ("dice", "iou", "precision", "recall", "accuracy")}
    for name in PATIENT_FIGURES:
        if name not in expected:
            continue  # boundary figures: rows without them have no defined value
        num, den = figures[name]
        assert num.shape == den.shape == (len(patients),)
        assert num.sum() / den.sum() == pytest.approx(expected[name], abs=1e-6), name
    # the empty patient holds no Dice: it counts in no mean of Dice
    assert figures["dice_per_patient"][1][patients.index("p3")] == 0


def test_stack_seeds_and_unknown_patients():
    pred, target, pids = _prediction_set()
    rows = [{k: str(v) for k, v in r.items()}
            for r in per_image_rows(pred, {"masks": target, "patient_ids": pids, "slice_index": list(range(24))})]
    one = patient_figures(rows, sorted(set(pids)))
    num, den = stack_seeds([one, one, one], "dice_pooled")
    assert num.shape == (3, 4) and np.array_equal(num[0], num[2])
    with pytest.raises(ValueError, match="outside"):
        patient_figures(rows, ["p0"])
