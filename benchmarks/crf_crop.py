#!/usr/bin/env python
"""What does running the CRF only around the candidates change on a real series, and what does it save?

The published medium run (``lungseg.bench.prediction.PUBLISHED_RUN``) segments the real 275-slice 512²
LIDC-IDRI-0314 series once, as ``lungseg predict`` does (the network on whole slices, its probabilities
set to 0 outside the lung region). The probabilities are refined by the dense CRF three ways: on whole
slices (exact), inside one box per slice around all its candidates (the previous default), and inside
one box per cluster of candidates (:func:`lungseg.crf.refine_batch`'s default, :attr:`CRFParams.crop_sigmas`).
Printed: the pixels each refines, its seconds, the voxels on which the masks differ, and each mask's
Dice with the readers' consensus.

Usage: ``python benchmarks/crf_crop.py`` (about 2 min on the 2-core machine). Results: ``benchmarks/NOTES.md``.
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
    from lungseg.crf import CRFParams, refine, refine_batch
    from lungseg.data.nifti import read_nifti
    from lungseg.inference import Predictor
    from lungseg.inference.readers import read_input
    from lungseg.inference.region import LungRegion, lung_region
    from lungseg.metrics import confusion

    if not LIDC.is_dir():
        print(f"error: {LIDC} not found: this measurement needs ../shared/realct", file=sys.stderr)
        return 2
    predictor = Predictor.load(ROOT / PUBLISHED_RUN, device="cpu")
    volume = read_input(LIDC / "ct")[1][0]
    images = volume.image.astype(np.float32)
    started = time.perf_counter()
    # the lungs widened by 5 mm, as when the numbers in benchmarks/NOTES.md were measured (10 mm since 2026-12-04)
    probs = predictor.probabilities(images) * lung_region(images, volume.spacing, LungRegion(margin_mm=5.0))
    network_s = time.perf_counter() - started
    consensus = read_nifti(LIDC / "nodule_consensus.nii.gz")[0] > 0
    margin = CRFParams().crop_margin()
    candidates = np.flatnonzero((probs >= 0.5).any(axis=(1, 2)))
    print(f"network and lung region: {network_s:.1f} s for {len(images)} slices; {len(candidates)} slices hold a"
          " pixel >= 0.5")
    variants = {
        "whole slices": lambda: refine_batch(images, probs, window=predictor.crf_window, crop_sigmas=None),
        "one box per slice": lambda: _one_box_per_slice(images, probs, candidates, margin, predictor.crf_window, refine),
        "a box per cluster": lambda: refine_batch(images, probs, window=predictor.crf_window),
    }
    masks = {}
    for name, run in variants.items():
        started = time.perf_counter()
        masks[name] = run().astype(bool)
        print(f"CRF on {name}: {time.perf_counter() - started:.1f} s, {int(masks[name].sum())} tumour voxels,"
              f" Dice with the consensus {confusion(masks[name], consensus).dice:.4f}")
    print(f"pixels refined: one box per slice {_box_pixels(probs, candidates, margin, per_cluster=False)},"
          f" a box per cluster {_box_pixels(probs, candidates, margin, per_cluster=True)}")
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            print(f"voxels that differ, {a} vs {b}: {int((masks[a] != masks[b]).sum())}")
    return 0


def _slice_box(prob: np.ndarray, margin: int) -> tuple[slice, slice]:
    rows, cols = np.nonzero(prob >= 0.5)
    return (slice(max(0, rows.min() - margin), rows.max() + margin + 1),
            slice(max(0, cols.min() - margin), cols.max() + margin + 1))


def _one_box_per_slice(images, probs, candidates, margin, window, refine) -> np.ndarray:
    """The previous default: each candidate slice refined inside one box around all its candidates."""
    masks = np.zeros(images.shape, dtype=np.uint8)
    for k in candidates:
        box = _slice_box(probs[k], margin)
        masks[k][box] = refine(images[k][box], probs[k][box], window=window)
    return masks


def _box_pixels(probs, candidates, margin, per_cluster: bool) -> int:
    from lungseg.crf import candidate_boxes

    total = 0
    for k in candidates:
        boxes = [b for b, _ in candidate_boxes(probs[k], margin)] if per_cluster else [_slice_box(probs[k], margin)]
        total += sum((b[0].stop - b[0].start) * (b[1].stop - b[1].start) for b in boxes)
    return total


if __name__ == "__main__":
    sys.exit(main())
