"""Runs side by side: the process pool keeps the order of the jobs, limits threads and raises errors."""

from __future__ import annotations

import math
import operator
import os
from pathlib import Path

import pytest

from lungseg.config import TrainConfig
from lungseg.experiment import run_experiment
from lungseg.experiment.workers import check_workers, map_in_workers


def test_results_come_back_in_the_order_of_the_jobs() -> None:
    jobs = [(i, 10 * i) for i in range(7)]
    assert map_in_workers(operator.add, jobs, workers=2, progress=False) == [11 * i for i in range(7)]
    assert map_in_workers(operator.add, jobs, workers=1, progress=False) == [11 * i for i in range(7)]


def test_each_worker_gets_its_share_of_the_cores() -> None:
    # os.getenv runs in the worker: it sees the thread limit set before torch starts there.
    got = map_in_workers(os.getenv, [("OMP_NUM_THREADS",)] * 2, workers=2, progress=False)
    assert got == [str(max(1, (os.cpu_count() or 1) // 2))] * 2


def test_an_error_in_a_worker_reaches_the_caller() -> None:
    with pytest.raises(ValueError, match="math domain error"):
        map_in_workers(math.sqrt, [(4.0,), (-1.0,), (9.0,)], workers=2, progress=False)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_workers_must_be_a_positive_integer(bad) -> None:
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        check_workers(bad)


@pytest.mark.slow
def test_a_grid_trained_side_by_side_is_the_grid(make_npz, tmp_path: Path) -> None:
    data = make_npz(tmp_path / "d.npz", n_patients=8, per_patient=3, size=32, seed=8)
    base = TrainConfig(epochs=1, base_channels=4, depth=2, batch_size=8, lr=3e-3, split_fractions=(0.7, 0.15, 0.15))
    kw = dict(models=("unet", "attention"), losses=("dice",), crf=(False,), seeds=(0,), base_config=base,
              device="cpu", progress=False)
    side_by_side = run_experiment(data, tmp_path / "exp", workers=2, **kw)
    assert [r["status"] for r in side_by_side["runs"]] == ["trained", "trained"]
    assert [(r["model"], r["seed"]) for r in side_by_side["runs"]] == [("unet", 0), ("attention", 0)]
    # The same call in one process finds every run finished with the same configuration.
    again = run_experiment(data, tmp_path / "exp", workers=1, **kw)
    assert [r["status"] for r in again["runs"]] == ["reused", "reused"]
    assert again["cells"] == side_by_side["cells"]
