#!/usr/bin/env python
"""Train and publish lungseg's real-CT model: ``lungseg train``'s defaults on all 13 real MSD patients.

The 130 real 48×48 tumour patches of ``../shared/realct/msd-task06-2mm-patches`` (13 patients of the
Medical Segmentation Decathlon Task06 Lung, 2 mm, each patch min-max scaled to [0, 1]) are written as
an ``.npz`` without patient ids, as the cross-validation of the defaults trained them
(``benchmarks/real_patches.py``), and trained with exactly ``lungseg train --data PATCHES.npz --model
attention --epochs 40 --seed SEED``. The run is exported as a model ``.zip`` whose model card carries
the training data's licence and attribution, the input the model expects, and the cross-validated
pooled Dice of the same recipe on held-out patients (read from ``results/real-patches/``).

Usage: ``python scripts/train_real_model.py [--seed 0] [--out results/real-ct/msd-patches-attention.zip]``
(``make real-model``; about 3 minutes of training on the 2-core machine). ``--refresh-card`` rewrites only
the model card's line on the whole real scans of an exported ``--out`` from ``results/real-ct/whole-scans.json``
(after a change to how ``lungseg predict`` searches a scan) and the line on the tumour sizes it was trained on
from ``results/real-ct/training-range.json``, keeping the weights and every other file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = "results/real-ct/msd-patches-attention.zip"
#: The cross-validation runs of the recipe: seeds 0 and 1 from ``benchmarks/real_patches_inference.py
#: defaults`` (the prediction the defaults make: best checkpoint, the 8 symmetries of ``tta="auto"`` at
#: 48², threshold 0.5), seed 2 through the command line (``benchmarks/real_patches.py --seeds 2``).
CV_ROWS = ROOT / "results" / "real-patches" / "inference-runs.jsonl"
CV_KEY = "best|tta8|t0.5"
CV_CLI = ROOT / "results" / "real-patches" / "comparison-tta-seed2.json"
#: The model on the two whole real scans of ``../shared/realct`` (``benchmarks/real_ct_scans.py``).
WHOLE_SCANS = ROOT / "results" / "real-ct" / "whole-scans.json"
TRAINING_RANGE = ROOT / "results" / "real-ct" / "training-range.json"
COARSE_SCANS = ROOT / "results" / "real-ct" / "whole-scans-coarse-pass.json"
#: How the card's line on the tumour sizes it was trained on begins (:func:`training_range_line`).
SIZE_LINE = "- **Tumour sizes it was trained on:**"
#: The training patches' pixel size.
PIXEL_MM = 2.0
#: The HU window whose clip-and-scale to [0, 1] matches the patches' scaling, from their histogram: its
#: two modes, aerated lung at 0.105 and soft tissue at 0.905, taken as -850 HU and +40 HU (textbook
#: values, not measured on any test scan), give [-967, 146] HU, rounded to [-970, 150].
UNIT_WINDOW = (-970.0, 150.0)
#: Tumour-free phantom lung patches added to the real ones (:mod:`lungseg.experiment.phantom_patches`), and their seed.
NEGATIVES = 0
NEGATIVES_SEED = 2000


def cross_validated_dice(negatives: int = 0) -> dict[str, object]:
    """Per-fold mean pooled Dice of the recipe (with phantom negatives or without) over its seeds, their
    mean and a 95 % Student-t interval over folds."""
    from scipy import stats

    variant = "phantom-negatives" if negatives else "defaults"
    lines = [json.loads(line) for line in CV_ROWS.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [{"fold": r["fold"], "seed": r["seed"], "dice": r["scores"][CV_KEY]} for r in lines if r["variant"] == variant]
    if not negatives:
        rows += [{"fold": r["fold"], "seed": r["seed"], "dice": r["lungseg_dice"]}
                 for r in json.loads(CV_CLI.read_text(encoding="utf-8"))["folds"]]
    folds = sorted({r["fold"] for r in rows})
    per_fold = np.array([np.mean([r["dice"] for r in rows if r["fold"] == f]) for f in folds])
    half = stats.t.ppf(0.975, len(folds) - 1) * per_fold.std(ddof=1) / np.sqrt(len(folds))
    return {"per_fold": per_fold.round(3).tolist(), "mean": float(per_fold.mean()),
            "low": float(per_fold.mean() - half), "high": float(per_fold.mean() + half),
            "seeds": sorted({r["seed"] for r in rows}), "runs": len(rows)}


def whole_scan_lines() -> str:
    """The card's line on the two whole real scans, from :data:`WHOLE_SCANS` (empty before they are measured)."""
    if not WHOLE_SCANS.is_file():
        return ""
    measured = json.loads(WHOLE_SCANS.read_text(encoding="utf-8"))
    rows = measured["scans"]
    parts = [f"{r['scan']}: Dice {r['dice']:.2f}, {r['recall']:.0%} of the tumour found, {r['components']} components"
             f" marked (the tumour's own Dice {r.get('tumour_component_dice', 0):.2f}), {r['seconds']:.0f} s" for r in rows]
    planes = {r.get("planes") for r in rows}
    how = ", the network run on axial, coronal and sagittal slices" if planes == {"three"} else ""
    numerics = {r.get("precision") for r in rows} - {None}
    how += f", in {numerics.pop()}, predict's default on the 2-core machine's CPU" if len(numerics) == 1 else ""
    return (f"- **On two whole real scans** (measured, never trained on; `{measured['command']}`{how}): "
            + "; ".join(parts) + ".\n")


def training_range_line() -> str:
    """The card's line on the tumour sizes of the training patches and of the two whole real scans, from
    :data:`TRAINING_RANGE` (``benchmarks/training_range.py``; empty before it is measured)."""
    if not TRAINING_RANGE.is_file():
        return ""
    measured = json.loads(TRAINING_RANGE.read_text(encoding="utf-8"))
    patches = next(iter(measured["scans"].values()))["summary"]["patches"]
    scans = "; ".join(f"{name}: {scan['summary']['wider_than_every_patch']} of its {scan['summary']['slices']} axial"
                      " tumour slices wider than every training cross-section" for name, scan in measured["scans"].items())
    return (f"{SIZE_LINE} nine in ten of the {patches['count']} distinct tumour cross-sections of its training patches"
            f" are {patches['diameter_p90_mm']:.0f} mm across or less (median {patches['diameter_median_mm']:.0f} mm; the"
            f" widest as its patch shows it {patches['widest_mm']:.1f} mm, and {patches['touching_border']} are cut off"
            f" by their patch's border, so the widest may have been wider). {scans}"
            f" (`{measured['command']}`). Do not expect it to outline a tumour much wider than those with the defaults.{coarse_pass_sentence()}\n")


def coarse_pass_sentence() -> str:
    """What ``--coarse-pass on`` did on the two whole real scans, from :data:`COARSE_SCANS` (empty before it was measured)."""
    if not COARSE_SCANS.is_file() or not WHOLE_SCANS.is_file():
        return ""
    default = {r["scan"]: r["dice"] for r in json.loads(WHOLE_SCANS.read_text(encoding="utf-8"))["scans"]}
    coarse = json.loads(COARSE_SCANS.read_text(encoding="utf-8"))
    scans = ", ".join(f"{r['scan']} {default.get(r['scan'], float('nan')):.2f} -> {r['dice']:.2f}" for r in coarse["scans"])
    return (" `lungseg predict --coarse-pass on` also runs it at twice its pixel size, for larger masses: Dice"
            f" {scans} (`{coarse['command']}`); it also marks large regions that are no tumour, and on synthetic scans it lost Dice on"
            " tumours of 3-50 mm, so it is not the default (`benchmarks/coarse_pass.py`).")


def refresh_card(model_zip: Path) -> None:
    """Replace the whole-scan line of ``model_zip``'s card by :func:`whole_scan_lines` followed by
    :func:`training_range_line` (dropping an earlier size line) and re-hash the card in its metadata; every
    other member is copied byte for byte.

    Raises:
        LungsegError: ``model_zip`` holds no card with such a line, or the whole scans were never measured.
    """
    import hashlib
    import zipfile

    from lungseg.errors import LungsegError
    from lungseg.files import atomic_file

    with zipfile.ZipFile(model_zip) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    card_name = next((n for n in members if n.endswith("/docs/README.md")), None)
    metadata_name = next((n for n in members if n.endswith("/configs/metadata.json")), None)
    lines = members[card_name].decode("utf-8").splitlines(keepends=True) if card_name else []
    size = training_range_line()
    if size:  # the earlier size line goes; without a measurement it stays
        lines = [kept for kept in lines if not kept.startswith(SIZE_LINE)]
    where = [i for i, line in enumerate(lines) if line.startswith("- **On two whole real scans**")]
    if metadata_name is None or len(where) != 1:
        raise LungsegError(f"{model_zip}: no model card with one line on the whole real scans to refresh")
    line = whole_scan_lines()
    if not line:  # the line would be deleted, and the next refresh would find none
        raise LungsegError(f"{WHOLE_SCANS} not found: measure the whole scans first (python benchmarks/real_ct_scans.py)")
    lines[where[0]] = line + size
    members[card_name] = "".join(lines).encode("utf-8")
    metadata = json.loads(members[metadata_name])
    metadata["files"]["docs/README.md"] = hashlib.sha256(members[card_name]).hexdigest()
    members[metadata_name] = (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode("utf-8")
    with atomic_file(model_zip) as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(members.items()):
            zf.writestr(name, data)


def card_notes(cv: dict[str, object], seconds: float) -> str:
    negatives = int(cv.get("negatives", 0))  # type: ignore[call-overload]
    recipe = (f"; plus {negatives} tumour-free lung patches of the synthetic phantom in the same format"
              " (`lungseg.experiment.phantom_patches`), so that it has seen lungs without a tumour") if negatives else ""
    cv_command = ("`python benchmarks/real_patches_inference.py phantom-negatives --seeds 0 1`" if negatives else
                  "`python benchmarks/real_patches_inference.py defaults --seeds 0 1`; seed 2 through `lungseg train`"
                  " and `lungseg predict`: `python benchmarks/real_patches.py --seeds 2`")
    return f"""\
- **Training data:** the 130 real 48 x 48 lung-tumour patches of 13 patients of the Medical Segmentation
  Decathlon, Task06 Lung (Antonelli et al., *Nat. Commun.* 13:4128, 2022; Simpson et al., arXiv:1902.09063),
  resampled to 2 mm and min-max scaled to [0, 1] per patch, as prepared by the `shizoda/data` repository.
  Licence of the data: CC BY-SA 4.0; this model is derived from them and is shared under the same terms{recipe}.
- **Recipe:** `lungseg train --data patches.npz --model attention --epochs 40` (the defaults, seed
  {cv.get("seed", 0)}; {seconds / 60:.1f} min on a 2-core CPU); the `.npz` names no patients, so the validation split
  that chose the checkpoint is by image.
- **Input it expects:** either 48 x 48 axial patches at 2 mm per pixel scaled to [0, 1] as the training
  patches were (`intensity` "unit" in an `.npz`), or a whole CT scan in HU (DICOM series, NIfTI): `lungseg
  predict` then clips it to [{UNIT_WINDOW[0]:.0f}, {UNIT_WINDOW[1]:.0f}] HU and scales it to [0, 1] (the window that matches the
  patches' histogram), resamples the slices to {PIXEL_MM:g} mm per pixel, looks for tumours only in the lungs
  and their walls (`--region auto`), and averages the network's maps on axial, coronal and sagittal slices
  (`--planes auto`). It was trained on patches around tumours only, so on a whole scan it
  also marks vessels and soft tissue inside the lungs: read its lesion table as candidates.
{whole_scan_lines()}{training_range_line()}- **Measured:** the same recipe, trained on the other patients of each of five patient-level folds and
  scored on the held-out patients' patches (seeds {cv["seeds"]}, {cv["runs"]} runs): pooled Dice per fold
  {cv["per_fold"]}, mean **{cv["mean"]:.3f}**, 95 % t interval over the folds [{cv["low"]:.3f}, {cv["high"]:.3f}]
  ({cv_command}). The published weights themselves
  were trained on all 13 patients, so they have no held-out score of their own.
- **Not for clinical use.** Research and teaching only.
"""


def _negatives_suffix(negatives: int) -> str:
    """What the training data's and the run's names add for phantom negatives (nothing without them)."""
    return f"-neg{negatives}" if negatives else ""


def write_training_data(work: Path, negatives: int = 0) -> Path:
    """The 130 real patches (and ``negatives`` tumour-free phantom lung patches) as the recipe's ``.npz``,
    without patient ids, under ``work``."""
    from lungseg.experiment.phantom_patches import phantom_negative_patches
    from lungseg.experiment.realct import load_real_patches
    from lungseg.files import atomic_file

    patches = load_real_patches()
    work.mkdir(parents=True, exist_ok=True)
    images, masks = patches.images, patches.masks
    if negatives:
        extra = phantom_negative_patches(negatives, seed=NEGATIVES_SEED, window=UNIT_WINDOW, pixel_mm=PIXEL_MM)
        images = np.concatenate([images, extra])
        masks = np.concatenate([masks, np.zeros(extra.shape, dtype=masks.dtype)])
    data = work / f"msd-13-patients{_negatives_suffix(negatives)}.npz"
    with atomic_file(data) as handle:  # never a half-written file where the run's data should be
        np.savez(handle, images=images, masks=masks, intensity="unit", spacing=np.full((len(images), 2), PIXEL_MM))
    return data


def train_recipe(data: Path, run_dir: Path, seed: int, init_weights: Path | None = None) -> float:
    """``lungseg train --data DATA --model attention --epochs 40 --seed SEED [--init-weights RUN]`` into
    ``run_dir``, unless a finished run is there; the training's wall time in seconds (the finished run's own)."""
    from lungseg.config import TrainConfig
    from lungseg.rundir import RunDir
    from lungseg.training import train

    run = RunDir(run_dir)
    if run.metrics_path.is_file() and run.read_metrics().get("finished"):
        return float(run.read_metrics()["wall_time_s"])  # trained before: exported again, not retrained
    started = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the split-by-image warning: the card says so
        train(TrainConfig(data=str(data), model="attention", epochs=40, seed=seed, device="cpu",
                          init_weights=None if init_weights is None else str(init_weights)), run.path)
    return time.time() - started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"the model .zip to write (default {DEFAULT_OUT})")
    ap.add_argument("--work", default="data/real-ct", help="where the .npz and the run are kept (default data/real-ct)")
    ap.add_argument("--negatives", type=int, default=NEGATIVES,
                    help=f"tumour-free phantom lung patches added to the training patches (default {NEGATIVES})")
    ap.add_argument("--refresh-card", action="store_true",
                    help="only rewrite the card's whole-scan line of --out from results/real-ct/whole-scans.json,"
                         " and its tumour-size line from results/real-ct/training-range.json")
    args = ap.parse_args(argv)
    if args.refresh_card:
        refresh_card(Path(args.out))
        print(f"refreshed the whole-scan and tumour-size lines of {args.out}'s card")
        return 0
    from lungseg.experiment.realct import real_patches_path
    from lungseg.inference.bundle import export_model

    if not real_patches_path().is_file():
        print(f"error: {real_patches_path()} not found: the real-CT model needs ../shared/realct", file=sys.stderr)
        return 2
    data = write_training_data(Path(args.work), args.negatives)
    run = Path(args.work) / f"attention-seed{args.seed}{_negatives_suffix(args.negatives)}"
    seconds = train_recipe(data, run, args.seed)
    cv = {**cross_validated_dice(args.negatives), "seed": args.seed, "negatives": args.negatives}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    export_model(run, args.out, notes=card_notes(cv, seconds), force=True, pixel_mm=PIXEL_MM,
                 unit_window=UNIT_WINDOW)
    print(f"trained in {seconds / 60:.1f} min; wrote {args.out} (cross-validated pooled Dice {cv['mean']:.3f}"
          f" [{cv['low']:.3f}, {cv['high']:.3f}])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
