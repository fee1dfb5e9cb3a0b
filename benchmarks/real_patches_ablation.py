#!/usr/bin/env python
"""Which setting of ``lungseg train`` made it learn the real patches worse than the MONAI script?

Trains lungseg's own loop (:func:`lungseg.training.train`, then the ``best`` or ``last`` checkpoint on
the held-out patients) with one named set of settings on the five patient-level folds of
``benchmarks/real_patches.py``, for each seed, two runs side by side with one thread each, and
prints the pooled Dice per fold and its mean. The variants walk from a copy of the MONAI script's
choices inside ``lungseg train`` (``mimic``: batch 16, constant learning rate, per-image Dice,
no α, flips only, the last checkpoint) back to the old defaults one setting at a time, and on to the
new defaults. Every variant spells out all the settings it changes from ``TrainConfig()``, so that the
table stays reproducible now that the defaults have moved.

Usage: ``python benchmarks/real_patches_ablation.py VARIANT [--seeds 0 1]`` (``--list`` names them);
about 4 minutes a variant for two seeds (20 min for ``new-defaults``). Results: ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_patches as rp  # noqa: E402

#: ``lungseg train``'s defaults before this comparison (5-fold mean 0.477 in ``real_patches.py``).
OLD_DEFAULTS: dict[str, Any] = dict(dice_reduction="batch", flip_ud=0.0, min_samples_per_epoch=1)
#: The MONAI script's choices inside ``lungseg train`` (it trains on all patches; 5 % are kept back
#: here because lungseg needs a validation split, and the last checkpoint is scored, not the best).
MIMIC: dict[str, Any] = dict(OLD_DEFAULTS, batch_size=16, schedule="constant", dice_reduction="image", alpha=None,
                             split_fractions=(0.95, 0.05, 0.0), flip_ud=0.5, max_rotation_deg=0.0, zoom=1.0,
                             hu_scale=0.0, hu_offset=0.0)
#: name -> (TrainConfig overrides, checkpoint scored)
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "old-defaults": (OLD_DEFAULTS, "best"),
    "mimic": (MIMIC, "last"),
    "mimic+old-augmentation": (dict(MIMIC, flip_ud=0.0, max_rotation_deg=15.0, zoom=1.15, hu_scale=0.1, hu_offset=25.0), "last"),
    "mimic+no-up-down-flip": (dict(MIMIC, flip_ud=0.0), "last"),
    "mimic+rotation": (dict(MIMIC, max_rotation_deg=15.0), "last"),
    "mimic+zoom": (dict(MIMIC, zoom=1.15), "last"),
    "mimic+intensity": (dict(MIMIC, hu_scale=0.1, hu_offset=25.0), "last"),
    "mimic+validation-15%-best": (dict(MIMIC, split_fractions=(0.85, 0.15, 0.0)), "best"),
    "mimic+batch-dice": (dict(MIMIC, dice_reduction="batch"), "last"),
    "mimic+alpha-0.75": (dict(MIMIC, alpha=0.75), "last"),
    "mimic+batch-8-cosine": (dict(MIMIC, batch_size=8, schedule="cosine"), "last"),
    "old-defaults+up-down-flip+image-dice": (dict(OLD_DEFAULTS, flip_ud=0.5, dice_reduction="image"), "best"),
    "new-defaults": ({}, "best"),
}
#: The MONAI script itself with this many epochs: as many training samples as the new defaults draw
#: (40 epochs of 512 patches, against 40 passes over about 110), to see what the extra steps alone give.
MONAI_EQUAL_SAMPLES_EPOCHS = 185


def run_variant(name: str, fold: int, seed: int) -> dict[str, Any]:
    """Train ``name`` on the fold's training patients, score its checkpoint on the held-out ones."""
    from lungseg.config import TrainConfig
    from lungseg.inference import Predictor
    from lungseg.training import train

    images, masks, patient = rp.load_patches()
    test = np.isin(patient, rp.FOLDS[fold])
    started = time.time()
    if name == "monai-equal-samples":
        pred = rp.monai_script(images[~test], masks[~test], images[test], seed, epochs=MONAI_EQUAL_SAMPLES_EPOCHS)
        return {"variant": name, "fold": fold, "seed": seed, "dice": rp.pooled_dice(pred, masks[test]),
                "predicted_px": int(pred.sum()), "true_px": int(masks[test].sum()), "s": round(time.time() - started, 1)}
    overrides, checkpoint = VARIANTS[name]
    with tempfile.TemporaryDirectory(prefix="lungseg-ablation-") as tmp:
        np.savez(f"{tmp}/train.npz", images=images[~test], masks=masks[~test], intensity="unit")
        config = TrainConfig(**{**dict(data=f"{tmp}/train.npz", model="attention", epochs=40, seed=seed, device="cpu"),
                                **overrides})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the split-by-image warning: scored on held-out patients here
            train(config, f"{tmp}/run", progress=False)
        run = Predictor.from_run_dir(f"{tmp}/run", checkpoint=checkpoint, device="cpu")
        pred = run.probabilities(images[test]) > config.threshold
    return {"variant": name, "fold": fold, "seed": seed, "dice": rp.pooled_dice(pred, masks[test]),
            "predicted_px": int(pred.sum()), "true_px": int(masks[test].sum()), "s": round(time.time() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variant", nargs="?", choices=[*VARIANTS, "monai-equal-samples"],
                    help="the settings to train ('monai-equal-samples': the MONAI script for"
                         f" {MONAI_EQUAL_SAMPLES_EPOCHS} epochs)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds, every fold each (default: 0 1)")
    ap.add_argument("--workers", type=int, default=2, help="runs side by side (default 2)")
    ap.add_argument("--list", action="store_true", help="name the variants and what they change")
    ap.add_argument("--out", default=None, help="append the runs to this JSON-lines file (as results/real-patches/ablation-runs.jsonl)")
    args = ap.parse_args(argv)
    if args.list or args.variant is None:
        for name, (overrides, checkpoint) in VARIANTS.items():
            print(f"{name}: {overrides or 'TrainConfig() as it is'}, {checkpoint} checkpoint")
        return 0
    if not rp.PATCHES.is_file():
        print(f"error: {rp.PATCHES} not found: this comparison needs ../shared/realct", file=sys.stderr)
        return 2
    from lungseg.experiment.workers import map_in_workers

    jobs = [(args.variant, fold, seed) for seed in args.seeds for fold in range(len(rp.FOLDS))]
    rows = map_in_workers(run_variant, jobs, args.workers, progress=False)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in rows)
    dice = np.array([r["dice"] for r in rows]).reshape(len(args.seeds), len(rp.FOLDS))
    print(f"{args.variant}: per fold {np.round(dice.mean(0), 3).tolist()}, per seed {np.round(dice.mean(1), 3).tolist()},"
          f" mean {dice.mean():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
