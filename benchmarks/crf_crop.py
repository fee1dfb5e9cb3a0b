#!/usr/bin/env python
"""What does running the CRF only around the candidates change on a real series, and what does it save?

The published medium run (``lungseg.bench.prediction.PUBLISHED_RUN``) segments the real 275-slice 512²
LIDC-IDRI-0314 series once; its probabilities are refined by :func:`lungseg.crf.refine_batch` twice, on
whole slices (``crop_sigmas=None``, exact) and inside each slice's candidate box (the default,
:attr:`lungseg.crf.CRFParams.crop_sigmas`). Printed: the seconds of each, the voxels on which the two
masks differ, and the Dice of each against the readers' consensus.

Usage: ``python benchmarks/crf_crop.py`` (about 1.5 min on the 2-core machine). Results: ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LIDC = ROOT.parent / "shared" / "realct" / "lidc-idri-0314"


def main() -> int:
    from lungseg.bench.prediction import PUBLISHED_RUN
    from lungseg.crf import refine_batch
    from lungseg.data.nifti import read_nifti
    from lungseg.inference import Predictor
    from lungseg.inference.readers import read_input
    from lungseg.metrics import confusion

    if not LIDC.is_dir():
        print(f"error: {LIDC} not found: this measurement needs ../shared/realct", file=sys.stderr)
        return 2
    predictor = Predictor.load(ROOT / PUBLISHED_RUN, device="cpu")
    volume = read_input(LIDC / "ct")[1][0]
    images = volume.image.astype(np.float32)
    started = time.perf_counter()
    probs = predictor.probabilities(images)
    network_s = time.perf_counter() - started
    consensus = read_nifti(LIDC / "nodule_consensus.nii.gz")[0] > 0
    masks, seconds = {}, {}
    for name, crop in (("whole slices", None), ("candidate boxes", predictor_crop_default())):
        started = time.perf_counter()
        masks[name] = refine_batch(images, probs, window=predictor.crf_window, crop_sigmas=crop).astype(bool)
        seconds[name] = time.perf_counter() - started
    differ = int((masks["whole slices"] != masks["candidate boxes"]).sum())
    print(f"network: {network_s:.1f} s for {len(images)} slices; {int((probs >= 0.5).any(axis=(1, 2)).sum())} slices"
          " hold a pixel >= 0.5")
    for name, mask in masks.items():
        print(f"CRF on {name}: {seconds[name]:.1f} s, {int(mask.sum())} tumour voxels,"
              f" Dice with the consensus {confusion(mask, consensus).dice:.4f}")
    print(f"voxels that differ: {differ} of {masks['whole slices'].size} ({differ / masks['whole slices'].size:.2e})")
    return 0


def predictor_crop_default() -> float | None:
    from lungseg.crf import CRFParams

    return CRFParams().crop_sigmas


if __name__ == "__main__":
    sys.exit(main())
