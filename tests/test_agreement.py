"""Tumour volumes, Bland–Altman agreement and the worst cases (lungseg.metrics.agreement), by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lungseg.metrics import bland_altman, volumes_ml, worst_cases


def test_volumes_ml_sum_each_patients_voxels() -> None:
    mask = np.zeros((3, 4, 4), np.uint8)
    mask[0, :2, :2] = 1  # 4 voxels
    mask[1, 0, 0] = 1  # 1 voxel
    mask[2, :, :] = 1  # 16 voxels of patient b
    got = volumes_ml(mask, ["a", "a", "b"], [500.0, 500.0, 250.0])
    assert got == {"a": pytest.approx(2.5), "b": pytest.approx(4.0)}


def test_bland_altman_by_hand() -> None:
    # differences 1, 2, 3: bias 2, sd 1 (ddof=1); 95 % limits 2 -+ 1.959964
    res = bland_altman([11.0, 22.0, 33.0], [10.0, 20.0, 30.0])
    assert res["bias"] == pytest.approx(2.0) and res["sd"] == pytest.approx(1.0)
    assert res["z"] == pytest.approx(1.959964, abs=1e-6)
    assert res["limits"] == pytest.approx((2.0 - 1.959964, 2.0 + 1.959964), abs=1e-6)
    assert res["mean"] == [10.5, 21.0, 31.5] and res["difference"] == [1.0, 2.0, 3.0]
    one = bland_altman([1.0], [2.0])
    assert one["bias"] == -1.0 and math.isnan(one["sd"])


@pytest.mark.parametrize("args", [([1.0], [1.0, 2.0]), ([], []), ([math.nan], [1.0])])
def test_bland_altman_refuses_unpaired_or_missing_values(args: tuple) -> None:
    with pytest.raises(ValueError, match="predicted and reference"):
        bland_altman(*args)


def test_worst_cases_by_image_and_by_patient() -> None:
    target = np.zeros((4, 4, 4), np.uint8)
    pred = np.zeros_like(target)
    target[0, :2, :2] = 1
    pred[0, :2, :1] = 1  # Dice 2*2/(4+2) = 2/3
    target[1, 0, 0] = 1  # missed: Dice 0
    pred[3, 0, 0] = 1  # false positive on an empty slice: Dice 0
    # slice 2: both empty, no Dice, never listed
    got = worst_cases(pred, target, ["a", "a", "b", "b"], n=5)
    assert [(g["index"], g["dice"]) for g in got] == [(1, 0.0), (3, 0.0), (0, pytest.approx(2 / 3))]
    tumour_only = worst_cases(pred, target, ["a", "a", "b", "b"], n=5, with_tumour=True)
    assert [g["index"] for g in tumour_only] == [1, 0]
    by_patient = worst_cases(pred, target, ["a", "a", "b", "b"], n=1, by="patient")
    assert by_patient == [{"patient_id": "b", "index": 2, "dice": 0.0, "tumour_pixels": 0, "predicted_pixels": 1}]
    with pytest.raises(ValueError, match="n must be"):
        worst_cases(pred, target, ["a"] * 4, n=0)
