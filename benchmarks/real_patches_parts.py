#!/usr/bin/env python
"""Which part of lungseg's training explains its gap to the MONAI script on the real patches?

The MONAI baseline loop of ``benchmarks/real_patches.py`` (Adam 1e-3, batch 16, random flips, 40
epochs, all training patches, threshold 0.5) with one part swapped for lungseg's, on one fold:

* ``monai``: nothing swapped (MONAI ``AttentionUnet`` 16–128, ``DiceFocalLoss``);
* ``net``: lungseg's ``AttentionResUNet`` (width 16, depth 4) instead of MONAI's network;
* ``hybrid:LAM:ALPHA:REDUCTION``: lungseg's ``HybridLoss`` (e.g. ``hybrid:0.5:0.75:batch``,
  ``hybrid:0.5:none:image``) instead of ``DiceFocalLoss``.

Usage: ``python benchmarks/real_patches_parts.py FOLD PART`` (about 45 s on one CPU thread); prints
the pooled Dice on the fold's held-out patients. Results: ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_patches as rp  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n\n")[-2], file=sys.stderr)
        return 2
    fold, part = int(argv[0]), argv[1]
    from lungseg.losses import HybridLoss
    from lungseg.metrics import confusion
    from lungseg.models import AttentionResUNet

    images, masks, patient = rp.load_patches()
    test = np.isin(patient, rp.FOLDS[fold])
    make_net, loss_fn = None, None  # the MONAI script's own
    if part == "net":
        def make_net():
            return AttentionResUNet(base_channels=16, depth=4)
    elif part.startswith("hybrid:"):
        _, lam, alpha, reduction = part.split(":")
        loss_fn = HybridLoss(lam=float(lam), alpha=None if alpha == "none" else float(alpha), reduction=reduction)
    elif part != "monai":
        print(f"error: unknown part {part!r}", file=sys.stderr)
        return 2
    pred = rp.monai_script(images[~test], masks[~test], images[test], fold, make_net=make_net, loss_fn=loss_fn)
    c = confusion(pred, masks[test].astype(bool))
    print(f"{part} fold {fold}: pooled Dice {c.dice:.3f} (FP {c.fp}, FN {c.fn}, predicted {int(pred.sum())} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
