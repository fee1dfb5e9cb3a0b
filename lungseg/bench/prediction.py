"""End to end: the wall time of ``lungseg predict --crf`` on a phantom DICOM series, per precision, and of
``lungseg predict`` with and without the CRF on a real 275-slice 512² CT series (LIDC-IDRI-0314), where
the shared real-CT folder is present."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lungseg.bench.harness import BenchConfig, nominal_fingerprint
from lungseg.bench.networks import PAPER_MODEL, build_bench_model
from lungseg.paths import portable, resolve

__all__ = ["REAL_SERIES", "REAL_SERIES_GOAL_S", "real_series_prediction", "realct_series", "series_prediction"]

#: The real series timed, relative to the shared real-CT folder (see its README.md).
REAL_SERIES = Path("lidc-idri-0314") / "ct"
#: The CPU goal for ``lungseg predict --crf`` on that series, in seconds.
REAL_SERIES_GOAL_S = 30.0
#: A trained published run timed on that series too (the medium profile's attention network, hybrid loss).
PUBLISHED_RUN = "results/medium/experiment/runs/attention-hybrid-seed0"
#: The published real-CT model (2 mm, three planes, the lungs searched), timed on that series as well: the model
#: *Bring your own data* gives a new user.
REAL_CT_MODEL = "results/real-ct/msd-patches-attention.zip"


def _untrained_run(cfg: BenchConfig, path: Path) -> Any:
    """A run directory (:class:`lungseg.rundir.RunDir`) holding an untrained paper network, its
    configuration and a nominal fingerprint: what :func:`lungseg.inference.predict` loads."""
    from lungseg.config import TrainConfig
    from lungseg.rundir import RunDir

    run = RunDir(path).create()
    run.write_config(TrainConfig(model=PAPER_MODEL, base_channels=cfg.base_channels, depth=cfg.depth,
                                 image_size=cfg.image_size))
    run.write_fingerprint(nominal_fingerprint(cfg.image_size))
    model = build_bench_model(PAPER_MODEL, cfg.base_channels, cfg.depth)
    run.save_checkpoint("best", {"model": model.state_dict(), "epoch": 0})
    return run


def _agreement(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """How many voxels two binary masks disagree on, and their Dice."""
    from lungseg.metrics import confusion

    return {
        "voxels_differing_fraction": float((a != b).mean()),
        "mask_dice": confusion(a, b).dice,
        "weights": "untrained weights: a numerics check",
    }


def series_prediction(cfg: BenchConfig, root: Path, device: torch.device) -> dict[str, Any]:
    """Wall time of :func:`lungseg.inference.predict` with ``crf=True`` on a phantom DICOM series.

    The run directory holds an untrained AttentionResUNet (the cost does not depend on the weights);
    the time covers DICOM reading, preprocessing, the forward passes, restoring to the native grid,
    the CRF, and writing the NIfTI mask. It runs once per precision the device does fast (fp32, and
    bf16 where :func:`lungseg.device.has_fast_bf16`); ``seconds_with_crf`` is the default
    precision's (``--precision auto``). The masks of the two precisions are compared voxel by voxel
    (with untrained weights this checks the numerics, not accuracy: see ``benchmarks/NOTES.md`` for a
    trained model).
    """
    import nibabel as nib

    from lungseg.data.dicom_write import write_dicom_series
    from lungseg.data.phantom import PhantomConfig, generate_patient
    from lungseg.device import has_fast_bf16, resolve_prediction_precision
    from lungseg.inference import predict

    vol, _ = generate_patient(1, PhantomConfig(image_size=cfg.image_size, n_slices=cfg.series_slices))
    series = root / "series"
    write_dicom_series(vol, series)
    run = _untrained_run(cfg, root / "run")
    default = resolve_prediction_precision("auto", device)
    precisions = list(dict.fromkeys(["fp32", *(["bf16"] if has_fast_bf16(device) else []), default]))  # fp16 on old GPUs
    runs: dict[str, dict[str, Any]] = {}
    masks: dict[str, np.ndarray] = {}
    for precision in precisions:
        out = root / f"prediction-{precision}.nii.gz"
        start = time.perf_counter()
        predict(run.path, series, out, crf=True, device=str(device), precision=precision, progress=False)
        seconds = time.perf_counter() - start
        runs[precision] = {"seconds_with_crf": seconds, "slices_per_s_with_crf": cfg.series_slices / seconds}
        masks[precision] = np.asarray(nib.load(str(out)).dataobj) > 0
    result: dict[str, Any] = {
        "slices": cfg.series_slices, "image_size": cfg.image_size, "default_precision": default,
        "seconds_with_crf": runs[default]["seconds_with_crf"],
        "slices_per_s_with_crf": runs[default]["slices_per_s_with_crf"], "precisions": runs,
        "what": "lungseg.inference.predict(run, dicom_series, out.nii.gz, crf=True, precision=...): read, segment,"
                " CRF, write",
    }
    if "bf16" in masks:
        result["bf16_vs_fp32"] = _agreement(masks["fp32"], masks["bf16"])
    return result


def realct_series() -> Path:
    """Where the real series is expected: ``$LUNGSEG_REALCT/lidc-idri-0314/ct``, by default under the
    ``shared/realct`` folder next to the repository (it may be absent)."""
    default = Path(__file__).resolve().parents[2].parent / "shared" / "realct"
    return Path(os.environ.get("LUNGSEG_REALCT") or default) / REAL_SERIES


def real_series_prediction(cfg: BenchConfig, root: Path, device: torch.device, quick: bool = False,
                           series: Path | None = None) -> dict[str, Any]:
    """Wall time of :func:`lungseg.inference.predict` on the real 275-slice 512² LIDC-IDRI-0314 series.

    The same untrained paper network as :func:`series_prediction` (``cfg``'s width, depth and input
    size) at the default precision; times one call without the CRF and one with it (each covers reading
    the DICOM files, preprocessing, the forward passes, restoring to 512², the CRF, and writing the
    NIfTI mask), and reading the series alone. Skipped, with the reason as ``"skipped"``, where the
    folder is absent or in a quick run.
    """
    from lungseg.data.dicom import read_dicom_series
    from lungseg.device import resolve_prediction_precision
    from lungseg.inference import predict

    series = realct_series() if series is None else series
    if quick:
        return {"skipped": "quick run: the real series is timed by the full bench only"}
    if not series.is_dir():
        return {"skipped": f"{series} not found (the shared real-CT folder; set LUNGSEG_REALCT to its location)"}
    start = time.perf_counter()
    (volume,) = read_dicom_series(series)
    read_s = time.perf_counter() - start
    run = _untrained_run(cfg, root / "real-run")
    seconds = {}
    for crf in (False, True):
        start = time.perf_counter()
        predict(run.path, series, root / f"real-{'crf' if crf else 'plain'}.nii.gz", crf=crf, device=str(device),
                progress=False)
        seconds[crf] = time.perf_counter() - start
    slices, height, width = volume.image.shape
    result = {
        "series": portable(series), "slices": slices, "shape": [slices, height, width], "image_size": cfg.image_size,
        "precision": resolve_prediction_precision("auto", device), "read_seconds": read_s, "seconds": seconds[False],
        "seconds_with_crf": seconds[True], "goal_seconds_with_crf": REAL_SERIES_GOAL_S,
        "within_goal": seconds[True] <= REAL_SERIES_GOAL_S,
        "what": "lungseg.inference.predict(run, LIDC-IDRI-0314 series, out.nii.gz, crf=False/True): read, segment"
                " (untrained paper network), CRF, write",
    }
    published = resolve(PUBLISHED_RUN)
    if published.is_dir():
        result["published_model"] = _timed_predictions(published, series, root / "published", device)
    real_ct = resolve(REAL_CT_MODEL)
    if real_ct.is_file():
        result["real_ct_model"] = _timed_predictions(real_ct, series, root / "real-ct", device)
    return result


def _timed_predictions(run: Path, series: Path, out: Path, device: torch.device) -> dict[str, Any]:
    """``predict`` of a trained run on ``series`` without and with the CRF: an untrained network finds
    "tumour" on every slice, so only a trained one shows what running the CRF on candidate slices only
    (:func:`lungseg.crf.refine_batch`) saves. Where the default precision is not fp32 (bf16 on a CPU with
    native bf16), ``predict --crf --precision fp32`` is timed too."""
    from lungseg.device import resolve_prediction_precision
    from lungseg.inference import predict

    out.mkdir(parents=True, exist_ok=True)
    default = resolve_prediction_precision("auto", device)
    seconds = {}
    for crf, precision in ((False, "auto"), (True, "auto"), *([(True, "fp32")] if default != "fp32" else [])):
        start = time.perf_counter()
        predict(run, series, out / f"{'crf' if crf else 'plain'}-{precision}.nii.gz", crf=crf, device=str(device),
                precision=precision, progress=False)
        seconds[crf, precision] = time.perf_counter() - start
    with_crf = seconds[True, "auto"]
    fp32 = {"seconds_with_crf_fp32": seconds[True, "fp32"]} if (True, "fp32") in seconds else {}
    return {"run": portable(run), "precision": default, "seconds": seconds[False, "auto"], "seconds_with_crf": with_crf,
            "crf_share": with_crf / seconds[False, "auto"] - 1.0, "within_goal": with_crf <= REAL_SERIES_GOAL_S, **fp32}
