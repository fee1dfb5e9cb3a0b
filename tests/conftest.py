"""Shared fixtures of the test suite: small datasets and tiny training settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest


def write_toy_npz(path: Path, n_patients: int = 10, per_patient: int = 4, size: int = 32, seed: int = 0) -> Path:
    """Bright discs (soft tissue, HU) on noisy lung parenchyma, grouped into patients."""
    rng = np.random.default_rng(seed)
    n = n_patients * per_patient
    images = (-850 + rng.normal(0, 40, (n, size, size))).astype(np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        r = rng.uniform(size / 10, size / 5)
        cy, cx = rng.uniform(size / 3, 2 * size / 3, 2)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        masks[i] = m
        images[i][m] = rng.uniform(-100, 60) + rng.normal(0, 30, m.sum())
    pids = np.array([f"p{i // per_patient:02d}" for i in range(n)])
    np.savez(path, images=images, masks=masks, patient_ids=pids, spacing=np.full((n, 2), 0.8))
    return path


@pytest.fixture(scope="session")
def make_npz() -> Callable[..., Path]:
    """:func:`write_toy_npz`: a toy ``.npz`` dataset of bright discs on lung, grouped into patients."""
    return write_toy_npz


@pytest.fixture(scope="session")
def tiny() -> dict[str, Any]:
    """TrainConfig fields of a network small enough to train in seconds on a CPU."""
    return dict(base_channels=4, depth=2, batch_size=8, device="cpu")
