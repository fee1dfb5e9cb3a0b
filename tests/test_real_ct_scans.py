"""``benchmarks/real_ct_scans.py``'s score: with the probabilities, its candidate table lists every 26-connected
component of a mask, largest first, with its peak probability and whether it touches the reference."""

from __future__ import annotations

from typing import Any

import numpy as np


def test_candidates_are_listed_largest_first_with_peak_and_overlap(load_benchmark: Any) -> None:
    scans = load_benchmark("real_ct_scans")
    mask = np.zeros((5, 8, 8), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # diagonal neighbours: one candidate of 2 voxels
    mask[3:5, 4:7, 4:7] = True  # 18 voxels
    probs = np.where(mask, 0.6, 0.0).astype(np.float32)
    probs[4, 5, 5] = 0.97
    reference = np.zeros_like(mask)
    reference[4, 6, 6:8] = True
    table = scans.score(mask, reference, probs)["candidates"]
    assert table == [{"voxels": 18, "peak_probability": 0.97, "on_reference": True},
                     {"voxels": 2, "peak_probability": 0.6, "on_reference": False}]
    assert scans.score(np.zeros_like(mask), reference, probs)["candidates"] == []
