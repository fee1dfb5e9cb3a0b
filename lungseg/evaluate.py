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

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from lungseg.device import autocast, resolve_device, resolve_precision
from lungseg.errors import DataError, LungsegError
from lungseg.train import TrainConfig, _atomic_write_text, open_data

SPLITS: tuple[str, ...] = ("auto", "test", "val", "train", "all")
# Robustness re-segments the images once per perturbation; tumour slices carry the signal, so it is
# measured on at most this many of them (evenly spaced, deterministic).
MAX_ROBUSTNESS_SLICES = 128


@dataclass
class LoadedRun:
    """A trained run ready for inference (see :func:`load_run`)."""

    run_dir: Path
    config: TrainConfig
    fingerprint: Any
    split: dict[str, list[str]]
    model: nn.Module
    device: torch.device
    epoch: int
    precision: str = "fp32"  # "fp32" or "bf16" (autocast), see lungseg.device.resolve_precision


def load_run(run_dir: str | os.PathLike[str], checkpoint: str = "best", device: str = "auto",
             precision: str = "auto") -> LoadedRun:
    """Load a run directory written by :func:`lungseg.train.train`.

    Args:
        run_dir: the run directory.
        checkpoint: ``"best"`` (highest validation Dice) or ``"last"``.
        device: inference device (``"auto"``: CUDA, then MPS, then CPU).
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 elsewhere), ``"fp32"`` or ``"bf16"``
            (autocast; on a CPU only with native bf16, about 2x faster there, see
            ``benchmarks/NOTES.md`` for its agreement with fp32).

    Returns:
        The model in eval mode on ``device`` with its config, fingerprint and split.

    Raises:
        FileNotFoundError: the directory or one of its files is missing.
        LungsegError: the checkpoint name is unknown or the files are inconsistent.
    """
    from lungseg.models import build_model
    from lungseg.preprocess import Fingerprint

    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: run directory not found")
    if checkpoint not in ("best", "last"):
        raise LungsegError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    ckpt_path = run / f"{checkpoint}.pt"
    for needed in (run / "config.json", run / "fingerprint.json", ckpt_path):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed}: missing from the run directory (is {run} a finished `lungseg train` run?)")
    config = TrainConfig.from_json(run / "config.json")
    fingerprint = Fingerprint.from_json(run / "fingerprint.json")
    split_path = run / "split.json"
    split = json.loads(split_path.read_text()) if split_path.is_file() else {}
    split = {k: list(split.get(k, [])) for k in ("train", "val", "test")}
    dev = resolve_device(device)
    numerics = resolve_precision(precision, dev)
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a corrupt file can raise many types; report it as one line
        raise LungsegError(f"{ckpt_path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    model = build_model(
        config.model, in_channels=1, out_channels=1, base_channels=config.base_channels,
        depth=config.depth, batch_norm=config.batch_norm,
    )
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise LungsegError(f"{ckpt_path}: checkpoint does not match config.json ({exc})") from None
    model.to(dev).eval()
    return LoadedRun(run, config, fingerprint, split, model, dev, int(state.get("epoch", 0)), numerics)


@torch.no_grad()
def predict_probabilities(
    run: LoadedRun,
    images: np.ndarray,
    batch_size: int = 16,
    return_attention: bool = False,
    progress: bool = False,
) -> np.ndarray | tuple[np.ndarray, list[np.ndarray]]:
    """Tumour probabilities of native slices, restored to the native grid.

    Args:
        run: a loaded run.
        images: ``(N, H, W)`` slices in HU (or [0, 1] for a "unit" run), native resolution.
        batch_size: slices per forward pass.
        return_attention: also return the attention coefficients (AttentionResUNet only).
        progress: show a tqdm bar over batches.

    Returns:
        float32 probabilities ``(N, H, W)``; with ``return_attention`` also a list of ``depth``
        arrays ``(N, H, W)`` (gate coefficients resized bilinearly to the native grid, deepest
        gate first).
    """
    from tqdm.auto import tqdm

    from lungseg.preprocess import preprocess_slices, restore_prediction

    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W), got shape {images.shape}")
    if return_attention and run.config.model != "attention":
        raise LungsegError(f"attention maps need an 'attention' model; run {run.run_dir} is {run.config.model!r}")
    n, h, w = images.shape
    probs = np.empty((n, h, w), dtype=np.float32)
    alphas: list[np.ndarray] = []
    for start in tqdm(range(0, n, batch_size), desc="segmenting", unit="batch", disable=not progress):
        batch = np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)
        x = torch.from_numpy(preprocess_slices(batch, run.fingerprint)).unsqueeze(1).to(run.device)
        with autocast(run.device, run.precision):
            out = run.model(x, return_attention=True) if return_attention else run.model(x)
        logits, gates = (out if return_attention else (out, []))
        p = torch.sigmoid(logits.float()).cpu()
        probs[start : start + len(batch)] = restore_prediction(p, (h, w))[:, 0].numpy()
        if return_attention:
            if not alphas:
                alphas = [np.empty((n, h, w), dtype=np.float32) for _ in gates]
            for level, a in enumerate(gates):
                alphas[level][start : start + len(batch)] = restore_prediction(a.float().cpu(), (h, w))[:, 0].numpy()
    return (probs, alphas) if return_attention else probs


def crf_window(run: LoadedRun) -> tuple[float, float]:
    """Intensity window the CRF's bilateral term sees: the run's HU window, or [0, 1] for unit data."""
    from lungseg.preprocess import HU_WINDOW

    if run.fingerprint.intensity == "unit":
        return (0.0, 1.0)
    return tuple(run.fingerprint.window or HU_WINDOW)  # type: ignore[return-value]


def binarize(run: LoadedRun, images: np.ndarray, probs: np.ndarray, crf: bool, threshold: float | None = None) -> np.ndarray:
    """Binary masks ``(N, H, W)`` uint8: threshold, or CRF refinement (eq. 10) when ``crf``."""
    if crf:
        from lungseg.crf import refine_batch

        return np.asarray(refine_batch(images, probs, window=crf_window(run)), dtype=np.uint8)
    thr = run.config.threshold if threshold is None else threshold
    return (probs >= thr).astype(np.uint8)


def _choose_patients(run: LoadedRun, dataset: Any, split: str) -> tuple[str, list[str]]:
    ids = list(dataset.patient_ids)
    same_source = False
    if run.config.data:
        try:
            same_source = Path(run.config.data).resolve() == Path(dataset.source).resolve()
        except OSError:
            same_source = False
    if split == "auto":
        split = "test" if same_source and run.split.get("test") else "all"
    if split == "all":
        return "all", ids
    wanted = run.split.get(split, [])
    if not wanted:
        raise LungsegError(f"{run.run_dir}/split.json has no patients in the {split!r} split")
    missing = [p for p in wanted if p not in dataset]
    if missing:
        raise DataError(
            f"{dataset.source}: {len(missing)} patient(s) of the run's {split!r} split are not in this dataset"
            f" (e.g. {missing[0]!r}); pass the training data or --split all"
        )
    return split, list(wanted)


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as strict JSON (NaN → ``null``) atomically; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(p, json.dumps(_json_safe(obj), indent=2) + "\n")
    return p


def per_image_csv_path(out: str | os.PathLike[str]) -> Path:
    """The per-image CSV written next to ``out`` (``metrics.json`` → ``metrics_per_image.csv``)."""
    p = Path(out)
    stem = p.name[: -len(".json")] if p.name.endswith(".json") else p.name
    return p.with_name(f"{stem}_per_image.csv")


def _collect(run: LoadedRun, dataset: Any, pids: Sequence[str], batch_size: int, progress: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    images, masks, probs, slice_pid, slice_idx, spacing = [], [], [], [], [], []
    shapes = set()
    for pid in tqdm(pids, desc="evaluating", unit="patient", disable=not progress):
        vol = dataset[pid]
        shapes.add(vol.image.shape[1:])
        if len(shapes) > 1:
            raise DataError(
                f"{dataset.source}: slices of different sizes {sorted(shapes)}; pixel metrics need one"
                " native size per evaluation (evaluate subsets separately)"
            )
        images.append(vol.image.astype(np.float32, copy=False))
        masks.append(vol.mask if vol.mask is not None else np.zeros(vol.image.shape, np.uint8))
        probs.append(predict_probabilities(run, vol.image, batch_size=batch_size))
        slice_pid += [pid] * vol.n_slices
        slice_idx += list(range(vol.n_slices))
        spacing += [(float(vol.spacing[1]), float(vol.spacing[2]))] * vol.n_slices
    if not images:
        raise DataError(f"{dataset.source}: no patients to evaluate")
    return {
        "images": np.concatenate(images), "masks": np.concatenate(masks).astype(np.uint8),
        "probs": np.concatenate(probs), "patient_ids": slice_pid, "slice_index": slice_idx,
        "spacing": np.asarray(spacing, dtype=np.float64),
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
) -> dict[str, Any]:
    """Evaluate a trained run on a dataset.

    Args:
        run_dir: run directory of :func:`lungseg.train.train`.
        data: dataset path or an open :class:`lungseg.data.CTDataset`.
        crf: refine the probabilities with the CRF of eq. (10) instead of thresholding.
        out: where to write ``metrics.json`` (the per-image CSV goes next to it,
            ``<stem>_per_image.csv``); ``None`` writes nothing.
        split: ``"auto"`` (the run's test split when ``data`` is its training dataset, else every
            patient), ``"test"``, ``"val"``, ``"train"`` or ``"all"``.
        checkpoint: ``"best"`` or ``"last"``.
        n_boot: patient-bootstrap resamples of the 95 % CIs (0: no CIs).
        robustness: measure the robustness to intensity variation (HU data only).
        batch_size: slices per forward pass.
        device: inference device.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"``, see :func:`load_run`.
        seed: bootstrap and perturbation-noise seed.
        progress: show progress bars.

    Returns:
        The metrics dict written to ``out``: ``pooled``, ``per_image``, ``per_patient`` (each with
        ``dice, iou, accuracy, precision, recall, f1``), ``ci`` (same structure, ``[low, high]``),
        ``small_tumor_recall``, ``intensity_robustness_std``, ``n_images``, ``n_patients``,
        ``empty_mask_rule`` and the evaluation settings. For a dataset without masks:
        ``{"task": "slice-level detection", ...}`` (see :func:`evaluate_detection`).
    """
    from lungseg.metrics import confusion_per_image, intensity_robustness, summarize

    loaded = load_run(run_dir, checkpoint=checkpoint, device=device, precision=precision)
    if split not in SPLITS:
        raise LungsegError(f"split must be one of {SPLITS}, got {split!r}")
    dataset = open_data(data) if not hasattr(data, "patient_ids") else data
    if not dataset.has_masks:
        result = evaluate_detection(loaded, dataset, crf=crf, batch_size=batch_size, progress=progress)
        if out is not None:
            write_json(result, out)
        return result
    split_name, pids = _choose_patients(loaded, dataset, split)
    arrays = _collect(loaded, dataset, pids, batch_size, progress)
    pred = binarize(loaded, arrays["images"], arrays["probs"], crf)
    result: dict[str, Any] = summarize(
        pred, arrays["masks"], arrays["patient_ids"], arrays["spacing"], n_boot=n_boot, seed=seed
    )
    result["intensity_robustness_std"] = None
    intensity = loaded.fingerprint.intensity
    if robustness and intensity == "hu":
        tumour = np.flatnonzero(arrays["masks"].reshape(len(pred), -1).any(axis=1))
        if len(tumour):
            pick = tumour[np.linspace(0, len(tumour) - 1, min(len(tumour), MAX_ROBUSTNESS_SLICES)).round().astype(int)]
            pick = np.unique(pick)

            def predict_fn(images_hu: np.ndarray) -> np.ndarray:
                probs = predict_probabilities(loaded, images_hu, batch_size=batch_size)
                return binarize(loaded, images_hu, probs, crf)

            rob = intensity_robustness(
                predict_fn, arrays["images"][pick], arrays["masks"][pick], seed=seed, progress=progress
            )
            rob["n_images"] = int(len(pick))
            rob["images"] = f"tumour-bearing slices only (at most {MAX_ROBUSTNESS_SLICES}, evenly spaced)"
            result["intensity_robustness_std"] = rob["std"]
            result["intensity_robustness"] = rob
    elif robustness:
        result["intensity_robustness_note"] = "not measured: the data are not in HU (intensity 'unit')"

    result.update({
        "task": "segmentation",
        "crf": bool(crf),
        "threshold": None if crf else loaded.config.threshold,
        "run": str(loaded.run_dir),
        "checkpoint": checkpoint,
        "checkpoint_epoch": loaded.epoch,
        "precision": loaded.precision,
        "data": str(dataset.source),
        "split": split_name,
        "model": loaded.config.model,
        "loss": loaded.config.loss,
        "seed": loaded.config.seed,
        "image_size": loaded.fingerprint.image_size,
        "resolution": "native (probabilities restored bilinearly to each slice's own grid)",
    })
    if out is not None:
        out = Path(out)
        rows = []
        for i, c in enumerate(confusion_per_image(pred, arrays["masks"])):
            denom = 2 * c.tp + c.fp + c.fn
            rows.append({
                "image_id": f"{arrays['patient_ids'][i]}:{arrays['slice_index'][i]}",
                "patient_id": arrays["patient_ids"][i], "slice": arrays["slice_index"][i],
                "tumour_pixels": c.tp + c.fn, "predicted_pixels": c.tp + c.fp,
                "dice": "" if denom == 0 else f"{2 * c.tp / denom:.6f}",
                "tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn,
            })
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        csv_path = per_image_csv_path(out)
        result["per_image_csv"] = str(csv_path)
        write_json(result, out)
        _atomic_write_text(csv_path, buf.getvalue())
    return _json_safe(result)


# --------------------------------------------------------------------------------------------
# Slice-level detection (datasets without masks)


def _label_of(volume: Any) -> int | None:
    """Image-level label (1 cancer, 0 normal) from the loader's metadata; ``None`` when unknown."""
    meta = volume.meta or {}
    for key in ("cancer", "label", "has_cancer", "malignant"):
        if key in meta:
            value = meta[key]
            if value is None:
                return None
            if isinstance(value, str):
                return int(value.lower() not in ("normal", "0", "false", "no", "benign"))
            return int(bool(value))
    raise DataError(f"{volume.source}: image-level label missing from the volume metadata")


def _part_of(volume: Any) -> str:
    meta = volume.meta or {}
    for key in ("split", "part", "subset"):
        if key in meta:
            v = str(meta[key]).lower()
            return {"valid": "val", "validation": "val"}.get(v, v)
    return "test"


def detection_scores(predicted_area: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Slice-level detection figures when slices with ``predicted_area > threshold`` are called cancerous."""
    called = predicted_area > threshold
    pos = labels.astype(bool)
    tp, fp = int((called & pos).sum()), int((called & ~pos).sum())
    fn, tn = int((~called & pos).sum()), int((~called & ~pos).sum())
    n = tp + fp + fn + tn

    def ratio(a: int, b: int) -> float:
        return float("nan") if b == 0 else a / b

    return {
        "accuracy": ratio(tp + tn, n), "sensitivity": ratio(tp, tp + fn), "specificity": ratio(tn, tn + fp),
        "precision": ratio(tp, tp + fp), "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


def choose_area_threshold(predicted_area: np.ndarray, labels: np.ndarray) -> float:
    """The predicted-area threshold maximising Youden's J (sensitivity + specificity − 1).

    Candidates are midpoints between sorted distinct areas (and below the smallest), so the
    chosen threshold never sits exactly on an observed value.
    """
    values = np.unique(np.asarray(predicted_area, dtype=np.float64))
    candidates = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2.0]) if len(values) else np.array([0.0])
    best, best_j = float(candidates[0]), -np.inf
    for thr in candidates:
        s = detection_scores(predicted_area, labels, thr)
        j = (0.0 if math.isnan(s["sensitivity"]) else s["sensitivity"]) + (
            0.0 if math.isnan(s["specificity"]) else s["specificity"]) - 1.0
        if j > best_j:
            best, best_j = float(thr), j
    return best


def evaluate_detection(
    run: LoadedRun, dataset: Any, crf: bool = False, batch_size: int = 16, progress: bool = True
) -> dict[str, Any]:
    """Slice-level cancer detection on a dataset with image-level labels only (Kaggle layout).

    The predicted tumour area of each slice (fraction of its pixels) is compared with a threshold
    chosen on the validation images (``valid/`` folder; Youden's J) and the detection figures are
    reported on the test images (``test/``; all non-validation images when there is no test part).
    """
    from tqdm.auto import tqdm

    areas, labels, parts, ids = [], [], [], []
    skipped = 0
    for pid in tqdm(dataset.patient_ids, desc="detecting", unit="image", disable=not progress):
        vol = dataset[pid]
        if _label_of(vol) is None:
            skipped += 1
            continue
        probs = predict_probabilities(run, vol.image, batch_size=batch_size)
        pred = binarize(run, vol.image, probs, crf)
        areas += list(pred.reshape(len(pred), -1).mean(axis=1))
        labels += [_label_of(vol)] * vol.n_slices
        parts += [_part_of(vol)] * vol.n_slices
        ids += [pid] * vol.n_slices
    area, lab, part = np.asarray(areas), np.asarray(labels), np.asarray(parts)
    val = part == "val"
    if not val.any():
        raise DataError(f"{dataset.source}: no validation images (valid/ folder) to choose the area threshold on")
    test = part == "test"
    if not test.any():
        test = ~val
    thr = choose_area_threshold(area[val], lab[val])
    return _json_safe({
        "task": "slice-level detection",
        "note": "the dataset has no pixel masks: segmentation metrics cannot be computed; a slice is"
                " called cancerous when its predicted tumour area fraction exceeds a threshold chosen"
                " on the validation images (Youden's J)",
        "area_threshold": thr,
        "validation": detection_scores(area[val], lab[val], thr),
        "test": detection_scores(area[test], lab[test], thr),
        "n_validation_images": int(val.sum()),
        "n_test_images": int(test.sum()),
        "n_unlabelled_skipped": skipped,
        "crf": bool(crf),
        "run": str(run.run_dir),
        "data": str(dataset.source),
    })
