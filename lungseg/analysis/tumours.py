"""Tumour by tumour: which tumours a run finds, and how much of the pooled Dice each one decides.

Pooled Dice counts voxels, so on a handful of test patients it is decided by their largest tumours:
one solid mass of a few thousand voxels outweighs every small nodule together. :func:`tumour_table`
lists each 3D tumour of the chosen patients with its size, its share of all tumour voxels and the
fraction of it a run segments (its voxel recall), so that a low pooled Dice can be traced to the
tumours that caused it (chapter 5). :func:`grid_tumour_table` keeps such a table beside a published grid,
so that the book shows it without predicting every run again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from lungseg.metrics import equivalent_sphere_diameter_mm

__all__ = ["TUMOUR_TABLE_LOSSES", "grid_tumour_table", "tumour_components", "tumour_diameters_mm", "tumour_table", "write_grid_tumour_table"]

#: The losses whose grid runs the book's tumour table shows (chapter 5): the two the paper's claims turn on.
TUMOUR_TABLE_LOSSES: tuple[str, ...] = ("dice", "hybrid")
#: 26-connectivity: voxels touching at an edge or a corner belong to one tumour.
_FULLY_CONNECTED = np.ones((3, 3, 3), dtype=bool)


def tumour_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """3D connected tumours of a ``(Z, H, W)`` mask (26-connectivity): ``(labels, count)``.

    Raises:
        ValueError: ``mask`` is not 3D.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be a 3D (Z, H, W) array, got shape {mask.shape}")
    labels, count = ndimage.label(mask > 0, structure=_FULLY_CONNECTED)
    return labels, int(count)


def tumour_diameters_mm(data: Any, patients: Sequence[str]) -> list[float]:
    """Equivalent-sphere diameters (mm) of every 3D tumour of ``patients``, largest first (e.g. to ask
    how many tumours like a missed test tumour the training patients held).

    Raises:
        ValueError: a patient has no tumour mask.
    """
    from lungseg.data import open_dataset

    dataset = data if hasattr(data, "patient_ids") else open_dataset(data)
    diameters = []
    for pid in patients:
        volume = dataset[pid]
        if volume.mask is None:
            raise ValueError(f"patient {pid!r} has no tumour mask")
        labels, count = tumour_components(volume.mask)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        voxel_mm3 = float(np.prod(volume.spacing))
        diameters += [float(equivalent_sphere_diameter_mm(float(n), voxel_mm3)) for n in sizes]
    return sorted(diameters, reverse=True)


def tumour_table(runs: Sequence[str | os.PathLike[str]], data: Any, *, split: str = "test",
                 patients: Sequence[str] | None = None, threshold: float | None = None, device: str = "cpu",
                 batch_size: int = 16) -> list[dict[str, Any]]:
    """Every tumour of a split's patients, with each run's voxel recall of it.

    Args:
        runs: run directories trained on the same patient split.
        data: the dataset (path or open dataset) the runs were trained on.
        split: which patients of the first run's split (``"test"``, ``"val"``, ``"train"``), unless
            ``patients`` is given.
        patients: an explicit list of patient ids.
        threshold: probability threshold; ``None``: each run's own (``config.threshold``).
        device: inference device.
        batch_size: slices per forward pass.

    Returns:
        One row per tumour: ``patient``, ``tumour`` (1-based within the patient), ``voxels``,
        ``volume_ml``, ``diameter_mm`` (equivalent sphere), ``mean_intensity`` (HU for CT),
        ``share_of_voxels`` (of all tumours listed), and ``recall:<run name>`` per run.

    Raises:
        ValueError: no runs, or runs trained on different splits.
    """
    from lungseg.data import open_dataset
    from lungseg.inference import Predictor

    if not runs:
        raise ValueError("runs must name at least one run directory")
    loaded = [Predictor.load(r, device=device) for r in runs]
    if any(r.split != loaded[0].split for r in loaded[1:]):
        raise ValueError("the runs were trained on different patient splits; compare runs of one experiment")
    if patients is None:
        if split not in loaded[0].split:
            raise ValueError(f"split must be one of {sorted(loaded[0].split)}, got {split!r}")
        patients = loaded[0].split[split]
    dataset = data if hasattr(data, "patient_ids") else open_dataset(data)
    rows: list[dict[str, Any]] = []
    for pid in patients:
        volume = dataset[pid]
        if volume.mask is None:
            raise ValueError(f"patient {pid!r} has no tumour mask: tumour recall needs masks")
        labels, count = tumour_components(volume.mask)
        if not count:
            continue
        predicted = {r.run_dir.name: r.probabilities(volume.image, batch_size=batch_size)
                     >= (r.config.threshold if threshold is None else threshold) for r in loaded}
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        means = ndimage.mean(volume.image, labels, index=np.arange(1, count + 1))
        voxel_ml = float(np.prod(volume.spacing)) / 1000.0
        for k in range(count):
            row: dict[str, Any] = {
                "patient": pid, "tumour": k + 1, "voxels": int(sizes[k]), "volume_ml": float(sizes[k] * voxel_ml),
                "diameter_mm": float(equivalent_sphere_diameter_mm(float(sizes[k]), voxel_ml * 1000.0)),
                "mean_intensity": float(means[k]),
            }
            inside = labels == k + 1
            for name, pred in predicted.items():
                row[f"recall:{name}"] = float(pred[inside].mean())
            rows.append(row)
    total = sum(r["voxels"] for r in rows)
    for r in rows:
        r["share_of_voxels"] = r["voxels"] / total if total else float("nan")
    return sorted(rows, key=lambda r: -r["voxels"])


def _runs_digest(runs: Sequence[str | os.PathLike[str]]) -> dict[str, str]:
    """Per run, the SHA-256 of what its tumour table depends on: its best weights, its configuration (the
    threshold) and its split (the patients, by content hash where recorded)."""
    from lungseg.rundir import RunDir

    digests = {}
    for run in runs:
        run_dir = RunDir(run)
        h = hashlib.sha256()
        for path in (run_dir.checkpoint_path("best"), run_dir.config_path, run_dir.split_path):
            h.update(path.read_bytes())
        digests[run_dir.path.name] = h.hexdigest()
    return digests


def _table_and_training_sizes(runs: Sequence[str | os.PathLike[str]], data: Any, split: str) -> dict[str, Any]:
    from lungseg.rundir import RunDir

    train = RunDir(runs[0]).read_split()["train"]
    return {"split": split, "rows": tumour_table(runs, data, split=split),
            "train_patients": len(train), "train_diameters_mm": tumour_diameters_mm(data, train)}


def write_grid_tumour_table(path: str | os.PathLike[str], runs: Sequence[str | os.PathLike[str]], data: Any, *,
                            split: str = "test") -> Path:
    """Write :func:`tumour_table` of a grid's ``runs`` on ``split``, with the diameters of the training patients'
    tumours, to ``path`` (:attr:`lungseg.experimentdir.ExperimentDir.tumours_path`), marked with a digest of each
    run's weights, configuration and split (so that :func:`grid_tumour_table` uses it only for those runs)."""
    from lungseg.files import write_json

    return write_json({"runs": _runs_digest(runs), **_table_and_training_sizes(runs, data, split)}, path)


def grid_tumour_table(runs: Sequence[str | os.PathLike[str]], data: Callable[[], Any], stored: str | os.PathLike[str],
                      *, split: str = "test") -> dict[str, Any]:
    """:func:`tumour_table` of ``runs`` on ``split`` (``rows``) and the equivalent diameters of the training
    patients' tumours (``train_diameters_mm``, ``train_patients``): read from ``stored`` where
    :func:`write_grid_tumour_table` wrote it for these very runs (the same weights, configuration and split),
    computed otherwise; ``data()`` gives the dataset and is called only then.

    Raises:
        ValueError: as :func:`tumour_table`.
    """
    path = Path(stored)
    if path.is_file():
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            table = {}
        if table.get("split") == split and table.get("runs") == _runs_digest(runs):
            return {k: v for k, v in table.items() if k != "runs"}
    return _table_and_training_sizes(runs, data(), split)
