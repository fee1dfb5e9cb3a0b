#!/usr/bin/env python
"""What can one training run of ``lungseg train`` give at no extra training time, on real patches?

For each patient-level fold of ``benchmarks/real_patches.py`` and each seed, one ``lungseg train``
run (the defaults, plus the variant's overrides) is trained once while exponential moving averages
(EMA) of its weights are kept at a few decays (an average of weights does not change the training
itself). The held-out patients' patches are then scored by pooled Dice for every combination of

* the weights: the ``best`` checkpoint (highest validation Dice), the ``last`` one, or an EMA;
* test-time augmentation (:mod:`lungseg.inference.tta`): none, the 4 flips, or the 8 symmetries of the square;
* the probability threshold.

The run directories are kept under ``--work`` so that scoring can be re-run without training.

Usage: ``python benchmarks/real_patches_inference.py VARIANT [--seeds 0 1] [--work /tmp/rp]``.
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

EMA_DECAYS = (0.99, 0.995, 0.998)
THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "rotation-180": {"max_rotation_deg": 180.0},
    "smoke": {"epochs": 1, "min_samples_per_epoch": 16},
    "phantom-negatives": {},
    "pretrained-plain": {},
    "pretrained-randomised": {},
    "pretrained-solid-randomised": {},
    "pretrained-solid-randomised-central": {},
    "pretrained-solid-randomised-central-large": {},
}
#: Variants whose training patches get as many tumour-free phantom lung patches
#: (:func:`lungseg.experiment.phantom_patches.phantom_negative_patches`, seeded by the fold) as real ones.
WITH_NEGATIVES = ("phantom-negatives",)
#: Variants that start from the weights of a phantom-only run of ``benchmarks/phantom_transfer.py``
#: (trained on 2000 phantom patches, seed 0; run that script first).
PRETRAINED = {"pretrained-plain": "plain", "pretrained-randomised": "randomised",
              "pretrained-solid-randomised": "solid-randomised",
              "pretrained-solid-randomised-central": "solid-randomised-central",
              "pretrained-solid-randomised-central-large": "solid-randomised-central-large"}


def _overrides(variant: str) -> dict[str, Any]:
    overrides = dict(VARIANTS[variant])
    if variant in PRETRAINED:
        import phantom_transfer

        run = Path(phantom_transfer.DEFAULT_WORK) / f"{PRETRAINED[variant]}-2000-seed0"
        if not (run / "metrics.json").is_file():
            raise SystemExit(f"{run}: no phantom-only run; first `python benchmarks/phantom_transfer.py "
                             f"{PRETRAINED[variant]}`")
        overrides["init_weights"] = str(run)
    return overrides


def train_with_ema(config: Any, out: Path) -> float:
    """Train ``config`` into ``out``; save a moving average of the weights per decay as ``ema-<decay>.pt``
    (:class:`lungseg.training.averaging.WeightAverage`, what ``--ema-decay`` keeps, one per decay)."""
    import torch

    from lungseg.training.averaging import WeightAverage
    from lungseg.training.trainer import Trainer

    class EmaTrainer(Trainer):
        def setup_model(self) -> None:
            super().setup_model()
            self.averages = {d: WeightAverage(self.model, d) for d in EMA_DECAYS}
            self.optimizer.register_step_post_hook(
                lambda *_: [average.update(self.model) for average in self.averages.values()])

        def finish(self, started: float, stopped_early: bool) -> Any:
            for decay, average in self.averages.items():
                torch.save({"model": average.model.state_dict()}, out / f"ema-{decay}.pt")
            return super().finish(started, stopped_early)

    started = time.time()
    EmaTrainer(config, out, progress=False).run()
    return time.time() - started


def score_run(run: Path, images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Pooled Dice of every (weights, TTA, threshold) combination on ``images``."""
    import torch

    from lungseg.config import TTA_MODES
    from lungseg.inference import Predictor

    scores: dict[str, float] = {}
    for weights in ("best", "last", *(f"ema-{d}" for d in EMA_DECAYS)):
        for tta in ("none", "flips", "dihedral"):
            predictor = Predictor.from_run_dir(run, checkpoint="best" if weights.startswith("ema") else weights,
                                               device="cpu", tta=tta)
            if weights.startswith("ema"):
                predictor.model.load_state_dict(torch.load(run / f"{weights}.pt", weights_only=True)["model"])
            probs = predictor.probabilities(images)
            for thr in THRESHOLDS:
                scores[f"{weights}|tta{TTA_MODES[tta]}|t{thr}"] = rp.pooled_dice(probs >= thr, masks)
    return scores


def run_one(variant: str, fold: int, seed: int, work: str) -> dict[str, Any]:
    from lungseg.config import TrainConfig

    images, masks, patient = rp.load_patches()
    test = np.isin(patient, rp.FOLDS[fold])
    out = Path(work) / f"{variant}-fold{fold}-seed{seed}"
    seconds = None
    if not (out / "metrics.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        train_x, train_y = images[~test], masks[~test]
        if variant in WITH_NEGATIVES:
            from lungseg.experiment.phantom_patches import phantom_negative_patches

            negatives = phantom_negative_patches(len(train_x), seed=1000 + fold)
            train_x = np.concatenate([train_x, negatives])
            train_y = np.concatenate([train_y, np.zeros(negatives.shape, dtype=train_y.dtype)])
        np.savez(out / "train.npz", images=train_x, masks=train_y, intensity="unit")
        config = TrainConfig(**{**dict(data=str(out / "train.npz"), model="attention", epochs=40, seed=seed,
                                       device="cpu"), **_overrides(variant)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the split-by-image warning: scored on held-out patients here
            seconds = round(train_with_ema(config, out / "run"), 1)
    start = {"init_from": f"benchmarks/phantom_transfer.py {PRETRAINED[variant]} (2000 patches, seed 0)"} \
        if variant in PRETRAINED else {}
    return {"variant": variant, "fold": fold, "seed": seed, "train_s": seconds, **start,
            "scores": score_run(out / "run", images[test], masks[test])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variant", choices=list(VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", default="/tmp/lungseg-real-inference", help="where the runs are kept")
    ap.add_argument("--out", default=None, help="append the rows to this JSON-lines file")
    args = ap.parse_args(argv)
    from lungseg.experiment.workers import map_in_workers

    jobs = [(args.variant, fold, seed, args.work) for seed in args.seeds for fold in range(len(rp.FOLDS))]
    rows = map_in_workers(run_one, jobs, args.workers, progress=False)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in rows)
    keys = list(rows[0]["scores"])
    table = {k: np.array([r["scores"][k] for r in rows]) for k in keys}
    for k in sorted(keys, key=lambda k: -table[k].mean())[:15]:
        print(f"{k:28s} mean {table[k].mean():.3f}  per run {np.round(table[k], 3).tolist()}")
    base = table["best|tta1|t0.5"]
    print(f"{'best|tta1|t0.5':28s} mean {base.mean():.3f} (today's prediction)")
    print("training seconds:", [r["train_s"] for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
