#!/usr/bin/env python
"""bf16 on the CPU for whole-scan prediction: may ``lungseg predict`` run the network in bf16 by default where
the CPU has native bf16?

On the 275-slice LIDC-IDRI-0314 series ``lungseg predict --crf`` with the published real-CT model takes 52 s on
this 2-core machine (a profile on 2026-12-05), 39 s of it the network on three planes with its 8 symmetries;
#22 asks for 30 s. Fewer symmetries lost Dice (``benchmarks/three_plane_tta.py``). bf16 autocast halves the
network's time on a CPU with AVX-512 BF16 (7.5 against 14.7 ms a slice here) but rounds the activations to
8 bits of mantissa, which moves the probabilities; whether that moves the masks is measured here.

The protocol, written before the first run (2026-12-05):

* **Data.** The three synthetic sets of the earlier choices (``benchmarks/three_planes.py``: seeds 777 ×10,
  778 ×20, 780 ×12 with every tumour against the mediastinum; NSCLC-like tumours, the ``solid-randomised``
  appearance). Each patient is segmented as ``lungseg predict`` does it (:func:`lungseg.inference.scan.segment_scan`:
  lungs searched, three planes with the 8 symmetries, candidates outside the lungs and unsure ones set aside),
  once in fp32 and once in bf16 autocast.
* **Rule.** ``predict``'s ``--precision auto`` becomes bf16 on a CPU with native bf16 if, on each of the three
  sets, bf16 keeps the pooled Dice at least that of fp32 minus 0.01 and the recall at least that of fp32 minus
  0.02, and loses at most one tumour that fp32 finds over the three sets (found: 10 % of its voxels covered);
  the same bounds as the choice of symmetries. Otherwise fp32 stays. The two real scans play no part; they are
  measured once afterwards. The fp32 arm must reproduce the ``"dihedral"`` rows of
  ``results/real-ct/three-plane-tta-synthetic.json`` (a check that the sets are the same).

Usage: ``python benchmarks/three_plane_bf16.py [--model ZIP] [--out results/real-ct/three-plane-bf16-synthetic.json]``
(about 15 minutes on the 2-core machine; needs a CPU with native bf16).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from three_plane_tta import score_sets_and_record  # noqa: E402  (the same scoring of the same sets)

ARMS = ("fp32", "bf16")
MAX_DICE_LOSS = 0.01
MAX_RECALL_LOSS = 0.02
MAX_TUMOURS_LOST = 1


def decide(rows: list[dict[str, Any]]) -> bool:
    """The rule of the module docstring: whether bf16 may be ``predict``'s default on such a CPU."""
    lost = sum(r["fp32"]["tumours_found"] - r["bf16"]["tumours_found"] for r in rows)
    return lost <= MAX_TUMOURS_LOST and all(
        r["bf16"]["pooled_dice"] >= r["fp32"]["pooled_dice"] - MAX_DICE_LOSS
        and r["bf16"]["recall"] >= r["fp32"]["recall"] - MAX_RECALL_LOSS for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="results/real-ct/msd-patches-attention.zip")
    ap.add_argument("--out", default="results/real-ct/three-plane-bf16-synthetic.json")
    args = ap.parse_args(argv)
    from lungseg.inference import Predictor

    runs = {arm: Predictor.load(args.model, device="cpu", precision=arm) for arm in ARMS}
    adopted = score_sets_and_record(runs, decide, "bf16_adopted",
                                    {"model": args.model, "command": "python benchmarks/three_plane_bf16.py"},
                                    __doc__, "2026-12-05", args.out)
    print(f"bf16 {'becomes' if adopted else 'does not become'} predict's default on such a CPU; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
