#!/usr/bin/env python
"""Models for real CT on whole synthetic scans: a validation set for whole-scan behaviour that is not a test scan.

``../shared/realct`` has two whole real scans, and they are test scans (measured, never used to choose).
To choose between recipes for the real-CT model by how they behave on a whole scan, this script runs
each model, as ``lungseg predict`` does (:func:`lungseg.inference.scan.segment_scan`: HU scaled by the
model's window, 2 mm pixels, the lungs searched), on phantom patients seeded apart from any training patch (``--seed``) and scores the
masks: pooled Dice, the share of tumour voxels found, and false-positive components per scan.

Usage: ``python benchmarks/phantom_whole_scans.py MODEL.zip [MODEL.zip ...] [--patients 10] [--seed 777]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage


def score_model(model: str, patients: int, seed: int) -> dict[str, object]:
    from lungseg.data.phantom.study import generate_patient
    from lungseg.inference import Predictor
    from lungseg.inference.scan import segment_scan
    from lungseg.metrics import confusion

    run = Predictor.load(model, device="cpu")
    counts = None
    false_components = []
    for k in range(patients):
        vol, _ = generate_patient((seed, k))
        mask = segment_scan(run, vol)[0].mask > 0
        reference = vol.mask > 0
        counts = confusion(mask, reference) if counts is None else counts + confusion(mask, reference)
        labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
        hit = set(np.unique(labels[reference]).tolist()) - {0}
        false_components.append(n - len(hit))
    return {"model": model, "patients": patients, "seed": seed,
            "pooled_dice": round(counts.dice, 3), "recall": round(counts.recall, 3),
            "false_components_per_scan": round(float(np.mean(false_components)), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--patients", type=int, default=10)
    ap.add_argument("--seed", type=int, default=777)
    args = ap.parse_args(argv)
    for model in args.models:
        print(json.dumps(score_model(model, args.patients, args.seed)))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
