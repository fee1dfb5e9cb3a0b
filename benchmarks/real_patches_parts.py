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
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_patches as rp  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n\n")[-2], file=sys.stderr)
        return 2
    fold, part = int(argv[0]), argv[1]
    from monai.losses import DiceFocalLoss
    from monai.networks.nets import AttentionUnet

    from lungseg.losses import HybridLoss
    from lungseg.metrics import confusion
    from lungseg.models import AttentionResUNet

    images, masks, patient = rp.load_patches()
    test = np.isin(patient, rp.FOLDS[fold])
    train_x, train_y, test_x, test_y = images[~test], masks[~test], images[test], masks[test]
    torch.manual_seed(fold)
    rng = np.random.default_rng(fold)
    if part == "net":
        net = AttentionResUNet(base_channels=16, depth=4)
    else:
        net = AttentionUnet(spatial_dims=2, in_channels=1, out_channels=1, channels=(16, 32, 64, 128), strides=(2, 2, 2))
    if part.startswith("hybrid:"):
        _, lam, alpha, reduction = part.split(":")
        loss_fn = HybridLoss(lam=float(lam), alpha=None if alpha == "none" else float(alpha), reduction=reduction)
    elif part in ("monai", "net"):
        loss_fn = DiceFocalLoss(sigmoid=True)
    else:
        print(f"error: unknown part {part!r}", file=sys.stderr)
        return 2
    optimiser = torch.optim.Adam(net.parameters(), 1e-3)
    x_all, y_all = torch.from_numpy(train_x[:, None]), torch.from_numpy(train_y[:, None].astype(np.float32))
    for _ in range(40):
        net.train()
        order = rng.permutation(len(x_all))
        for i in range(0, len(order), 16):
            x, y = x_all[order[i:i + 16]], y_all[order[i:i + 16]]
            if rng.random() < 0.5:
                x, y = x.flip(-1), y.flip(-1)
            if rng.random() < 0.5:
                x, y = x.flip(-2), y.flip(-2)
            optimiser.zero_grad()
            loss_fn(net(x), y).backward()
            optimiser.step()
    net.eval()
    with torch.no_grad():
        pred = (torch.sigmoid(net(torch.from_numpy(test_x[:, None]))) > 0.5).numpy()[:, 0]
    c = confusion(pred, test_y.astype(bool))
    print(f"{part} fold {fold}: pooled Dice {c.dice:.3f} (FP {c.fp}, FN {c.fn}, predicted {int(pred.sum())} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
