#!/usr/bin/env python
"""Does the phantom transfer to real CT? Phantom-only networks scored on the 130 real MSD patches.

Issue 22 asks for a phantom that transfers (domain randomisation, after SynthSeg) and for a real-CT
model trained with and without phantom pretraining. This script measures the first half:

1. ``--patches`` phantom patches in the real patches' format (48² at 2 mm, [-970, 150] HU scaled
   per patch to [0, 1], 85 % tumour patches; :func:`lungseg.experiment.phantom_patches.phantom_patches`)
   are generated for a variant: ``plain`` (the phantom as generated) or ``randomised`` (each patient
   repainted by :func:`lungseg.data.phantom.randomise.randomise_appearance`). Both use tumours of 6-70
   mm across (the real patches' tumours are larger than the phantom study's 3-50 mm).
2. ``lungseg train``'s defaults (attention Res-U-Net, hybrid loss, 40 epochs) train on them with 512
   samples an epoch, the compute of one real-CT training run.
3. The network is scored on all 130 real patches, which it has never seen (pooled Dice, threshold
   0.5, with and without the 8 symmetries), and per inferred patient.

The trained runs are kept under ``--work``; ``benchmarks/real_patches_inference.py pretrained-VARIANT``
fine-tunes them on the real folds (the second half). The real patches are a measurement here, not a
choice: nothing below was tuned on them except what the NOTES say.

Usage: ``python benchmarks/phantom_transfer.py VARIANT [--patches 2000] [--work DIR] [--out JSONL]``.
Results: ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_patches as rp  # noqa: E402

VARIANTS = ("plain", "randomised")
DIAMETER_RANGE_MM = (6.0, 70.0)
DEFAULT_WORK = "/tmp/lungseg-phantom-transfer"


def patches(variant: str, count: int, work: Path, seed: int = 4242) -> Path:
    """The variant's phantom patches as an ``.npz`` of ``lungseg train`` (made once, then reused)."""
    from lungseg.data.phantom import PhantomConfig
    from lungseg.data.phantom.randomise import AppearanceRandomisation
    from lungseg.experiment.phantom_patches import phantom_patches

    path = work / f"{variant}-{count}-patches.npz"
    if not path.is_file():
        started = time.time()
        randomisation = AppearanceRandomisation() if variant == "randomised" else None
        images, masks = phantom_patches(count, seed=seed, config=PhantomConfig(diameter_range_mm=DIAMETER_RANGE_MM),
                                        randomisation=randomisation)
        work.mkdir(parents=True, exist_ok=True)
        np.savez(path, images=images, masks=masks, intensity="unit")
        print(f"{variant}: {count} patches in {time.time() - started:.0f} s", flush=True)
    return path


def pretrained_run(variant: str, count: int = 2000, work: str | Path = DEFAULT_WORK, seed: int = 0) -> Path:
    """Train (once) the defaults on the variant's phantom patches; the run folder."""
    from lungseg.config import TrainConfig
    from lungseg.training.trainer import Trainer

    work = Path(work)
    run = work / f"{variant}-{count}-seed{seed}"
    if not (run / "metrics.json").is_file():
        config = TrainConfig(data=str(patches(variant, count, work)), model="attention", epochs=40,
                             samples_per_epoch=512, seed=seed, device="cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the split-by-image warning: phantom patches, scored on real ones
            Trainer(config, run, progress=False).run()
    return run


def score_on_real(run: Path) -> dict[str, Any]:
    """Pooled Dice on all 130 real patches (threshold 0.5), with and without the 8 symmetries, and the
    mean over the 13 inferred patients of each patient's pooled Dice."""
    from lungseg.inference import Predictor

    images, masks, patient = rp.load_patches()
    out: dict[str, Any] = {}
    for tta in ("none", "dihedral"):
        probs = Predictor.from_run_dir(run, device="cpu", tta=tta).probabilities(images)
        pred = probs >= 0.5
        out[f"pooled_dice_{tta}"] = rp.pooled_dice(pred, masks)
        per_patient = [rp.pooled_dice(pred[patient == k], masks[patient == k]) for k in np.unique(patient)]
        out[f"patient_mean_dice_{tta}"] = float(np.mean(per_patient))
        out[f"recall_{tta}"] = float((pred & (masks > 0)).sum() / max(int(masks.sum()), 1))
        out[f"precision_{tta}"] = float((pred & (masks > 0)).sum() / max(int(pred.sum()), 1))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variant", choices=VARIANTS)
    ap.add_argument("--patches", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--work", default=DEFAULT_WORK, help="where the patches and runs are kept")
    ap.add_argument("--out", default=None, help="append the row to this JSON-lines file")
    args = ap.parse_args(argv)
    started = time.time()
    run = pretrained_run(args.variant, args.patches, args.work, args.seed)
    row = {"variant": args.variant, "patches": args.patches, "seed": args.seed,
           "train_s": json.loads((run / "metrics.json").read_text()).get("wall_time_s"),
           "wall_s": round(time.time() - started, 1), **score_on_real(run)}
    print(json.dumps(row, indent=1))
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
