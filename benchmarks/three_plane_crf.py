#!/usr/bin/env python
"""The CRF on three planes: should ``lungseg predict`` refine the real-CT model's three-plane map with the dense CRF
by default?

``--crf`` is off by default everywhere: on the phantom grid the CRF of eq. (10) traded boundary precision for
recall (chapter 8), and on axial slices of the real LIDC-IDRI-0314 series it shrank the nodule. Three planes
changed the map it refines (an average of 24 views, whose false candidates are fainter), and a single run of
``lungseg predict --crf`` on the LIDC series, made while timing it on 2026-12-05, kept one candidate, the nodule.
That run is on a test scan and decides nothing; this protocol decides on synthetic scans only.

The protocol, written before the first run (2026-12-05):

* **Data.** The three synthetic sets of the earlier choices (``benchmarks/three_planes.py``: seeds 777 ×10,
  778 ×20, 780 ×12 with every tumour against the mediastinum; NSCLC-like tumours, the ``solid-randomised``
  appearance). Each patient is segmented as ``lungseg predict`` does it (:func:`lungseg.inference.scan.segment_scan`:
  lungs searched, three planes with the 8 symmetries, candidates outside the lungs and unsure ones set aside,
  the network in ``predict``'s default precision), once thresholded (today's default) and once with the CRF.
* **Rule.** The CRF becomes ``predict``'s default on three planes if, on each of the three sets, it raises the
  pooled Dice, and over the three sets it loses at most one tumour that the thresholded mask finds (found: 10 %
  of its voxels covered). Otherwise the default stays as it is. The two real scans play no part; they are
  measured once afterwards.

Usage: ``python benchmarks/three_plane_crf.py [--model ZIP] [--out results/real-ct/three-plane-crf-synthetic.json]``
(about 15 minutes on the 2-core machine).
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

ARMS = ("threshold", "crf")
MAX_TUMOURS_LOST = 1


def decide(rows: list[dict[str, Any]]) -> bool:
    """The rule of the module docstring: whether the CRF may be ``predict``'s default on three planes."""
    lost = sum(r["threshold"]["tumours_found"] - r["crf"]["tumours_found"] for r in rows)
    return lost <= MAX_TUMOURS_LOST and all(r["crf"]["pooled_dice"] > r["threshold"]["pooled_dice"] for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="results/real-ct/msd-patches-attention.zip")
    ap.add_argument("--out", default="results/real-ct/three-plane-crf-synthetic.json")
    args = ap.parse_args(argv)
    from lungseg.device import resolve_device, resolve_prediction_precision
    from lungseg.inference import Predictor

    precision = resolve_prediction_precision("auto", resolve_device("cpu"))
    run = Predictor.load(args.model, device="cpu", precision=precision)
    record = {"model": args.model, "command": "python benchmarks/three_plane_crf.py", "precision": precision}
    adopted = score_sets_and_record(dict.fromkeys(ARMS, run), decide, "crf_adopted", record, __doc__, "2026-12-05",
                                    args.out, options={"crf": {"crf": True}})
    print(f"the CRF {'becomes' if adopted else 'does not become'} predict's default on three planes; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
