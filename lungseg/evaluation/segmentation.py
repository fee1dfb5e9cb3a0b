"""Evaluation of a trained run: every metric of Tables 2–4, with and without CRF, with 95 % CIs.

:func:`evaluate_run` segments every slice of the chosen patients at the network resolution,
restores the probabilities to the native grid (bilinear), thresholds them (or refines them with the
fully connected CRF of eq. 10) and computes the metrics of eqs. (11)–(14), Dice and IoU under the
three labelled aggregations of :func:`lungseg.metrics.summarize`, small-tumour recall, the
robustness to intensity variation, and patient-bootstrap confidence intervals.

Datasets without pixel masks (the paper's Kaggle layout) get slice-level *detection* metrics
instead: a slice is called cancerous when its predicted tumour area exceeds a threshold chosen on
the validation images (Youden's J), and accuracy/sensitivity/specificity are reported on the test
images at that threshold.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.data import open_dataset
from lungseg.errors import DataError, DataWarning, LungsegError
from lungseg.evaluation.detection import evaluate_detection
from lungseg.evaluation.robustness import intensity_robustness
from lungseg.files import check_output, json_safe, write_csv, write_json
from lungseg.inference import Predictor, check_positive_int, require_finite
from lungseg.limits import MAX_BATCH_SIZE, MAX_BOOTSTRAP
from lungseg.metrics import (
    BOUNDARY_METRICS,
    BOUNDARY_TOLERANCE_MM,
    boundary_per_image,
    boundary_summary,
    confusion_per_image,
    summarize,
    tumour_recall,
    tumour_table,
)
from lungseg.paths import portable
from lungseg.rundir import RunDir, per_image_csv_path

SPLITS: tuple[str, ...] = ("auto", "test", "val", "train", "all")
# Robustness re-segments the images once per perturbation; tumour slices carry the signal, so it is
# measured on at most this many of them (evenly spaced, deterministic).
MAX_ROBUSTNESS_SLICES = 128
# Training patients whose content hashes decide whether evaluation data is the training data: a
# different file differs in the first, the same data agrees in all.
SAME_DATA_PROBES = 3
# Training patients named in the warning about evaluating on them.
MAX_NAMED = 5


def _run_hashes(run: Predictor) -> dict[str, str] | None:
    """The content hashes of the run's patients (its split file), ``None`` for a model ``.zip`` or an older run."""
    return RunDir(run.run_dir).read_content_hashes() if run.run_dir.is_dir() else None


def _is_training_data(run: Predictor, dataset: Any, hashes: dict[str, str] | None) -> bool:
    """Whether ``dataset`` is the data the run was trained on, by content.

    With the run's content hashes, a few training patients (:data:`SAME_DATA_PROBES`) must hold the
    same images under the same ids: another file whose generated ids collide (an ``.npz`` without ids)
    is not the training data, and a copy elsewhere is. An older run without hashes falls back on the
    path, or on the ids when the data name real patients.
    """
    trained_on = list(run.split.get("train", []))
    if hashes is not None and trained_on:
        probes = [p for p in trained_on if p in hashes][:SAME_DATA_PROBES]
        return bool(probes) and all(p in dataset and dataset.content_hash(p) == hashes[p] for p in probes)
    try:
        if run.config.data and Path(run.config.data).resolve() == Path(dataset.source).resolve():
            return True
    except OSError:
        pass
    # the same data under another path (a copy, a clone elsewhere): it holds every training patient
    return bool(trained_on) and dataset.patient_ids_known and set(trained_on) <= set(dataset.patient_ids)


def _choose_patients(run: Predictor, dataset: Any, split: str, hashes: dict[str, str] | None) -> tuple[str, list[str]]:
    ids = list(dataset.patient_ids)
    same_source = _is_training_data(run, dataset, hashes)
    if split == "auto":
        if same_source and not run.split.get("test"):
            raise LungsegError(
                f"{dataset.source} is the data {run.run_dir} was trained on, and the run has no test patients"
                " (test fraction 0): evaluate on a separate test set, or pass --split val or --split all knowingly"
            )
        split = "test" if same_source else "all"
    if split == "all":
        return "all", ids
    wanted = run.split.get(split, [])
    if not wanted:
        raise LungsegError(f"{RunDir(run.run_dir).split_path} has no patients in the {split!r} split")
    missing = [p for p in wanted if p not in dataset]
    if missing:
        raise DataError(
            f"{dataset.source}: {len(missing)} patient(s) of the run's {split!r} split are not in this dataset"
            f" (e.g. {missing[0]!r}); pass the training data or --split all"
        )
    return split, list(wanted)


def _warn_training_patients(run: Predictor, dataset: Any, content: dict[str, str], hashes: dict[str, str] | None) -> None:
    """Warn, naming them, when evaluated patients are training patients of the run (their images, by
    content hash; by id for an older run whose data name real patients)."""
    trained_on = run.split.get("train", [])
    if hashes is not None:
        seen = {hashes[p]: p for p in trained_on if p in hashes}
        found = [(p, seen[h]) for p, h in content.items() if h in seen]
    elif dataset.patient_ids_known:
        found = [(p, p) for p in content if p in set(trained_on)]
    else:
        return  # generated ids say nothing about who is who
    if found:
        named = ", ".join(p if p == q else f"{p} (trained on as {q})" for p, q in found[:MAX_NAMED])
        more = f" and {len(found) - MAX_NAMED} more" if len(found) > MAX_NAMED else ""
        warnings.warn(DataWarning(
            f"{dataset.source}: {len(found)} of the {len(content)} evaluated patients are training patients of"
            f" {run.run_dir}: {named}{more}; their scores do not test the model on unseen data"
        ), stacklevel=4)


class _SliceStack:
    """Patients' slices appended one patient at a time into one array, so a large study is never held
    twice, as a list of arrays and their concatenation side by side (measured: 26 → 22 MB a patient at
    the peak of a phantom study's evaluation). Room is made for the patients still to come at the mean
    slice count so far; a buffer left much larger than what came is trimmed by :meth:`array`."""

    def __init__(self, n_patients: int, dtype: Any) -> None:
        self.n_patients = n_patients
        self.dtype = dtype
        self.buffer: np.ndarray | None = None
        self.count = 0
        self.patients = 0

    def append(self, slices: np.ndarray) -> None:
        """Add one patient's ``(Z, H, W)`` slices (cast to the stack's dtype, as ``astype`` would)."""
        end = self.count + len(slices)
        self.patients += 1
        if self.buffer is None or end > len(self.buffer):
            capacity = max(end, -(-end * self.n_patients // self.patients))
            grown = np.empty((capacity,) + slices.shape[1:], self.dtype)
            if self.buffer is not None:
                grown[:self.count] = self.buffer[:self.count]
            self.buffer = grown
        self.buffer[self.count:end] = slices
        self.count = end

    def array(self) -> np.ndarray:
        """The slices appended so far, in order."""
        assert self.buffer is not None
        if self.count < 0.9 * len(self.buffer):  # do not hold the unused part through the whole scoring
            return self.buffer[:self.count].copy()
        return self.buffer[:self.count]


def _collect(run: Predictor, dataset: Any, pids: Sequence[str], batch_size: int, progress: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    stacks: dict[str, _SliceStack] = {}
    slice_pid, slice_idx, spacing = [], [], []
    slice_spacing: dict[str, float | None] = {}
    content: dict[str, str] = {}
    shapes = set()
    for pid in tqdm(pids, desc="evaluating", unit="patient", disable=not progress):
        vol = dataset[pid]
        content[pid] = dataset.content_hash(pid)  # while the volume is in the dataset's cache
        shapes.add(vol.image.shape[1:])
        if len(shapes) > 1:
            raise DataError(
                f"{dataset.source}: slices of different sizes {sorted(shapes)}; pixel metrics need one"
                " native size per evaluation (evaluate subsets separately)"
            )
        require_finite(vol.image, f"{dataset.source}, patient {pid!r}")
        if not stacks:
            stacks = {k: _SliceStack(len(pids), dtype) for k, dtype in
                      (("images", np.float32), ("masks", np.uint8), ("probs", np.float32))}
        stacks["images"].append(vol.image)
        stacks["masks"].append(vol.mask if vol.mask is not None else np.zeros(vol.image.shape, np.uint8))
        stacks["probs"].append(run.probabilities(vol.image, batch_size=batch_size))
        slice_pid += [pid] * vol.n_slices
        slice_idx += list(range(vol.n_slices))
        spacing += [(float(vol.spacing[1]), float(vol.spacing[2]))] * vol.n_slices
        # a stack of unrelated 2D slices (npz) has no slice spacing: no 3D boundary figures for it
        slice_spacing[pid] = float(vol.spacing[0]) if vol.meta.get("z_spacing_known", True) else None
    if not stacks:
        raise DataError(f"{dataset.source}: no patients to evaluate")
    return {
        **{k: stack.array() for k, stack in stacks.items()}, "patient_ids": slice_pid, "slice_index": slice_idx,
        "spacing": np.asarray(spacing, dtype=np.float64), "slice_spacing": slice_spacing, "content": content,
    }


def evaluate_run(
    run_dir: str | os.PathLike[str],
    data: Any,
    crf: bool = False,
    out: str | os.PathLike[str] | None = None,
    *,
    split: str = "auto",
    checkpoint: str = "best",
    n_boot: int = 1000,
    robustness: bool = True,
    batch_size: int = 16,
    device: str = "auto",
    precision: str = "auto",
    seed: int = 0,
    progress: bool = True,
    tolerance_mm: float = BOUNDARY_TOLERANCE_MM,
) -> dict[str, Any]:
    """Evaluate a trained run on a dataset.

    Args:
        run_dir: run directory of :func:`lungseg.training.train`.
        data: dataset path or an open :class:`lungseg.data.CTDataset`.
        crf: refine the probabilities with the CRF of eq. (10) instead of thresholding.
        out: where to write the metrics JSON (the per-image CSV goes next to it,
            ``<stem>_per_image.csv.gz``, gzip-compressed); ``None`` writes nothing.
        split: ``"auto"`` (the run's test split when ``data`` is its training dataset, recognised by
            the content hashes of its images, else every patient), ``"test"``, ``"val"``, ``"train"``
            or ``"all"``. Whatever the split, evaluated patients whose images the run trained on are
            named in a :class:`lungseg.errors.DataWarning`.
        checkpoint: ``"best"`` or ``"last"``.
        n_boot: patient-bootstrap resamples of the 95 % CIs (0: no CIs).
        robustness: measure the robustness to intensity variation (HU data only).
        batch_size: slices per forward pass.
        device: inference device.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"``, see :class:`lungseg.inference.Predictor`.
        seed: bootstrap and perturbation-noise seed.
        progress: show progress bars.
        tolerance_mm: tolerance of the surface Dice in mm (:func:`lungseg.metrics.boundary_summary`).

    Returns:
        The metrics dict written to ``out``: ``pooled``, ``per_image``, ``per_patient`` (each with
        ``dice, iou, accuracy, precision, recall, f1``), ``ci`` (same structure, ``[low, high]``),
        ``small_tumor_recall``, ``lesion_recall``, the tumour-level recall of
        :func:`lungseg.metrics.tumour_recall` (``tumour_recall``, ``small_tumour_recall_3d``, their
        counts and ``tumour_rule``; ``None`` without slice spacing), ``intensity_robustness_std``,
        ``n_images``, ``n_patients``,
        ``empty_mask_rule``, ``boundary`` (HD95 and surface Dice per image and per patient,
        :func:`lungseg.metrics.boundary_summary`, with ``seconds``) and the evaluation settings. For a dataset without masks:
        ``{"task": "slice-level detection", ...}`` (see :func:`evaluate_detection`).
    """
    _check_arguments(split, batch_size, tolerance_mm, n_boot)
    if out is not None:
        _check_outputs(run_dir, data, out)
    loaded = Predictor.load(run_dir, checkpoint=checkpoint, device=device, precision=precision)
    dataset = data if hasattr(data, "patient_ids") else open_dataset(data)
    if not dataset.has_masks:
        result = evaluate_detection(loaded, dataset, crf=crf, batch_size=batch_size, progress=progress)
        if out is not None:
            write_json(result, out)
        return result
    split_name, arrays = _segment_patients(loaded, dataset, split, batch_size, progress)
    scoring = dict(n_boot=n_boot, robustness=robustness, batch_size=batch_size, seed=seed, progress=progress,
                   tolerance_mm=tolerance_mm, checkpoint=checkpoint, split=split_name)
    return _score(loaded, dataset, arrays, crf, out, **scoring)


def evaluate_run_crf_settings(run_dir: str | os.PathLike[str], data: Any, outs: dict[bool, str | os.PathLike[str]], *,
                              split: str = "auto", checkpoint: str = "best", n_boot: int = 0,
                              robustness: bool = False, batch_size: int = 16, device: str = "auto",
                              precision: str = "auto", seed: int = 0, progress: bool = True,
                              tolerance_mm: float = BOUNDARY_TOLERANCE_MM) -> dict[bool, dict[str, Any]]:
    """:func:`evaluate_run` once per CRF setting (the keys of ``outs``, each written to its value), from one
    pass of the network: what evaluating many runs on a large study needs. The arguments are
    :func:`evaluate_run`'s; intervals and robustness are off by default.

    Raises:
        DataError: the dataset has no masks (slice-level detection has no CRF pair to share).
    """
    _check_arguments(split, batch_size, tolerance_mm, n_boot)
    if len({Path(out).resolve() for out in outs.values()}) < len(outs):
        raise LungsegError(f"outs: each CRF setting needs its own file, got {[str(o) for o in outs.values()]}")
    for out in outs.values():
        _check_outputs(run_dir, data, out)
    loaded = Predictor.load(run_dir, checkpoint=checkpoint, device=device, precision=precision)
    dataset = data if hasattr(data, "patient_ids") else open_dataset(data)
    if not dataset.has_masks:
        raise DataError(f"{dataset.source}: no masks to evaluate the CRF settings against")
    split_name, arrays = _segment_patients(loaded, dataset, split, batch_size, progress)
    scoring = dict(n_boot=n_boot, robustness=robustness, batch_size=batch_size, seed=seed, progress=progress,
                   tolerance_mm=tolerance_mm, checkpoint=checkpoint, split=split_name)
    return {bool(c): _score(loaded, dataset, dict(arrays), bool(c), out, **scoring) for c, out in outs.items()}


def _segment_patients(loaded: Predictor, dataset: Any, split: str, batch_size: int,
                      progress: bool) -> tuple[str, dict[str, Any]]:
    """The chosen split's name and its slices, masks and probabilities (:func:`_collect`), with the warning
    about training patients among them."""
    hashes = _run_hashes(loaded)
    split_name, pids = _choose_patients(loaded, dataset, split, hashes)
    arrays = _collect(loaded, dataset, pids, batch_size, progress)
    _warn_training_patients(loaded, dataset, arrays["content"], hashes)
    return split_name, arrays


def _score(loaded: Predictor, dataset: Any, arrays: dict[str, Any], crf: bool, out: str | os.PathLike[str] | None, *,
           n_boot: int, robustness: bool, batch_size: int, seed: int, progress: bool, tolerance_mm: float,
           checkpoint: str, split: str) -> dict[str, Any]:
    """The metrics of :func:`evaluate_run` from segmented ``arrays``, thresholded or refined by the CRF."""
    pred = loaded.binarize(arrays["images"], arrays["probs"], crf)
    result: dict[str, Any] = summarize(
        pred, arrays["masks"], arrays["patient_ids"], arrays["spacing"], n_boot=n_boot, seed=seed
    )
    result["boundary"] = _boundary(pred, arrays, tolerance_mm)
    result.update(_tumour_fields(pred, arrays))
    if robustness:
        result.update(_robustness_fields(loaded, arrays, crf, batch_size, seed, progress))
    else:
        result["intensity_robustness_std"] = None
    result.update(_settings(loaded, dataset, crf=crf, checkpoint=checkpoint, split=split))
    return write_evaluation(result, pred, arrays, out)


def write_evaluation(result: dict[str, Any], pred: np.ndarray, arrays: dict[str, Any],
                     out: str | os.PathLike[str] | None) -> dict[str, Any]:
    """``result`` as plain JSON types, written to ``out`` (when given) with its per-image table beside it
    (:func:`lungseg.rundir.per_image_csv_path`, :func:`per_image_rows`), whose path it records."""
    if out is not None:
        csv_path = per_image_csv_path(out)
        result["per_image_csv"] = portable(csv_path)
        write_json(result, out)
        write_csv(csv_path, per_image_rows(pred, arrays))
    return json_safe(result)


def tumour_recall_undefined(why: str) -> dict[str, Any]:
    """The fields of :func:`lungseg.metrics.tumour_recall` where tumours have no 3D extent (``why``):
    the recalls ``None``, the counts 0, and the rule saying why."""
    return {"tumour_recall": None, "n_tumours": 0, "n_tumours_hit": 0, "small_tumour_recall_3d": None,
            "n_small_tumours": 0, "n_small_tumours_hit": 0, "tumour_rule": f"not measured: {why}"}


def _tumour_fields(pred: np.ndarray, arrays: dict[str, Any]) -> dict[str, Any]:
    """Tumour-level recall (:func:`lungseg.metrics.tumour_recall`) on each patient's slices stacked in order;
    undefined (:func:`tumour_recall_undefined`) when any patient's slices have no spacing between them (a
    stack of unrelated 2D slices): a recall over some of the patients would not be the evaluation's."""
    pids = np.asarray(arrays["patient_ids"], dtype=object)
    order = np.asarray(arrays["slice_index"])
    tables = []
    for pid, dz in arrays["slice_spacing"].items():
        if dz is None:
            return tumour_recall_undefined("the slices have no spacing between them (unrelated 2D slices)")
        rows = np.flatnonzero(pids == pid)
        rows = rows[np.argsort(order[rows], kind="stable")]
        dy, dx = arrays["spacing"][rows[0]]
        tables.append(tumour_table(pred[rows], arrays["masks"][rows], (dz, dy, dx)))
    return tumour_recall(tables)


def _check_arguments(split: str, batch_size: int, tolerance_mm: float, n_boot: int) -> None:
    if split not in SPLITS:
        raise LungsegError(f"split must be one of {SPLITS}, got {split!r}")
    check_positive_int(batch_size, "batch_size")
    if isinstance(tolerance_mm, bool) or not isinstance(tolerance_mm, (int, float)) or not tolerance_mm > 0:
        raise LungsegError(f"tolerance_mm must be a number > 0 (mm), got {tolerance_mm!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or not 0 <= n_boot <= MAX_BOOTSTRAP:
        raise LungsegError(f"n_boot must be an int in [0, {MAX_BOOTSTRAP}] (lungseg.limits), got {n_boot!r}")
    if batch_size > MAX_BATCH_SIZE:
        raise LungsegError(f"batch_size must be at most {MAX_BATCH_SIZE} (lungseg.limits), got {batch_size!r}")


def _check_outputs(run_dir: str | os.PathLike[str], data: Any, out: str | os.PathLike[str]) -> None:
    """Refuse an output (or its per-image table) that would overwrite the data or a file of the run."""
    run = RunDir(run_dir)
    run_files = run.published_files() + [run.checkpoint_path(w) for w in ("best", "last")] + [run.model_card_path]
    # the grid's own evaluations are the run's files by design; anything else there is protected
    own = [run.evaluation_path(c) for c in (False, True)] + [run.per_image_path(c) for c in (False, True)]
    out_csv = per_image_csv_path(out)
    protected = [f for f in run_files if f not in own]
    source = [data.source] if hasattr(data, "patient_ids") else [data]
    check_output(out, source, protected=protected)
    check_output(out_csv, source, flag="the per-image table", protected=protected)


def _boundary(pred: np.ndarray, arrays: dict[str, Any], tolerance_mm: float) -> dict[str, Any]:
    """HD95 and surface Dice per image and per patient (:func:`lungseg.metrics.boundary_summary`) with the
    seconds they took; the per-image array is kept in ``arrays["boundary"]`` for the per-image table."""
    started = time.perf_counter()
    per_image = boundary_per_image(pred, arrays["masks"], arrays["spacing"], tolerance_mm)
    boundary = boundary_summary(pred, arrays["masks"], arrays["patient_ids"], arrays["spacing"],
                                arrays["slice_spacing"], tolerance_mm=tolerance_mm, per_image=per_image)
    boundary["seconds"] = round(time.perf_counter() - started, 3)
    arrays["boundary"] = per_image
    return boundary


def _settings(loaded: Predictor, dataset: Any, *, crf: bool, checkpoint: str, split: str) -> dict[str, Any]:
    """What was evaluated, how: the run, checkpoint, data, split and the model's settings."""
    return {
        "task": "segmentation",
        "crf": bool(crf),
        "threshold": None if crf else loaded.config.threshold,
        "run": portable(loaded.run_dir),
        "checkpoint": checkpoint,
        "checkpoint_epoch": loaded.epoch,
        "precision": loaded.precision,
        "data": portable(dataset.source),
        "split": split,
        "model": loaded.config.model,
        "loss": loaded.config.loss,
        "seed": loaded.config.seed,
        "image_size": loaded.fingerprint.image_size,
        "resolution": "native (probabilities restored bilinearly to each slice's own grid)",
    }


def _robustness_fields(loaded: Predictor, arrays: dict[str, Any], crf: bool, batch_size: int, seed: int,
                       progress: bool) -> dict[str, Any]:
    """The evaluation's robustness fields: ``intensity_robustness_std`` (``None`` where not measured) and
    either the whole :func:`_robustness` record or a note saying why it was not measured."""
    if loaded.fingerprint.intensity != "hu":
        return {"intensity_robustness_std": None,
                "intensity_robustness_note": "not measured: the data are not in HU (intensity 'unit')"}
    rob = _robustness(loaded, arrays, crf, batch_size, seed, progress)
    if rob is None:
        return {"intensity_robustness_std": None}
    return {"intensity_robustness_std": rob["std"], "intensity_robustness": rob}


def _robustness(loaded: Predictor, arrays: dict[str, Any], crf: bool, batch_size: int, seed: int,
                progress: bool) -> dict[str, Any] | None:
    """Intensity robustness (Table 2) on at most :data:`MAX_ROBUSTNESS_SLICES` tumour slices, evenly
    spaced; ``None`` when no slice holds tumour."""
    masks = arrays["masks"]
    tumour = np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1))
    if not len(tumour):
        return None
    pick = np.unique(tumour[np.linspace(0, len(tumour) - 1, min(len(tumour), MAX_ROBUSTNESS_SLICES)).round().astype(int)])

    def predict_fn(images_hu: np.ndarray) -> np.ndarray:
        probs = loaded.probabilities(images_hu, batch_size=batch_size)
        return loaded.binarize(images_hu, probs, crf)

    rob = intensity_robustness(predict_fn, arrays["images"][pick], masks[pick], seed=seed, progress=progress)
    rob["n_images"] = int(len(pick))
    rob["images"] = f"tumour-bearing slices only (at most {MAX_ROBUSTNESS_SLICES}, evenly spaced)"
    return rob


def per_image_rows(pred: np.ndarray, arrays: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per evaluated slice: patient id and slice index (together the image's id; tables written
    before 2026-12 also carry it joined, as ``image_id``), tumour and predicted pixels, Dice, counts, and the boundary
    figures ``hd95_mm`` and ``surface_dice`` when ``arrays`` holds them (key ``"boundary"``, the
    :func:`lungseg.metrics.boundary_per_image` array).

    The Dice of a slice where target and prediction are both empty is left blank: the per-image
    table reports it as undefined rather than applying :data:`lungseg.metrics.EMPTY_MASK_RULE`, so
    a reader can tell "nothing to find, nothing found" from a perfect segmentation. Undefined
    boundary figures (:data:`lungseg.metrics.BOUNDARY_EMPTY_RULE`) are blank too."""
    boundary = arrays.get("boundary")
    rows = []
    for i, c in enumerate(confusion_per_image(pred, arrays["masks"])):
        rows.append({
            "patient_id": arrays["patient_ids"][i], "slice": arrays["slice_index"][i],
            "tumour_pixels": c.tp + c.fn, "predicted_pixels": c.tp + c.fp,
            "dice": "" if c.both_empty else f"{c.dice:.6f}",
            "tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn,
        })
        if boundary is not None:
            rows[-1].update({name: "" if np.isnan(v) else f"{v:.6f}"
                             for name, v in zip(BOUNDARY_METRICS, boundary[i])})
    return rows
