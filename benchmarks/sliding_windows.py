#!/usr/bin/env python
"""A diagnosis, not a choice: the real-CT model run in 48² sliding windows instead of on whole slices.

The published real-CT model learnt on 48² patches (96 mm at 2 mm a pixel) and ``lungseg predict`` runs it,
fully convolutionally, on whole slices of the lungs' box (about 200² pixels). nnU-Net and MONAI instead
predict in windows of the training size (``sliding_window_inference``), so that the network never sees
more context than it learnt from. This script replaces the network call of :class:`lungseg.inference.Predictor`
by windows of 48² with a stride of ``--stride`` pixels, blended with a Gaussian of σ = 48/8 (nnU-Net's
weighting), and runs ``lungseg predict``'s pipeline (:func:`lungseg.inference.scan.segment_scan`: the lungs'
region, the model's 8 symmetries, candidates outside the lungs and unsure ones set aside, ``predict``'s
precision) on the two whole real scans, with both ways of running the network.

The two scans are test scans: this was a diagnosis after the fact (why LUNG1-001's central mass is
missed), and nothing was chosen on it. The result is in ``benchmarks/NOTES.md``.

Usage: ``python benchmarks/sliding_windows.py [--stride 24] [--planes axial three]`` (about 6 minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from real_ct_scans import REALCT, SCANS, score  # noqa: E402

WINDOW = 48
MODEL = ROOT / "results" / "real-ct" / "msd-patches-attention.zip"


def _starts(n: int, stride: int) -> list[int]:
    starts = list(range(0, max(n - WINDOW, 0) + 1, stride))
    if starts[-1] != n - WINDOW:
        starts.append(n - WINDOW)
    return starts


def windowed_forward(whole_forward: Any, stride: int) -> Any:
    """A ``Predictor._forward`` that runs ``whole_forward`` on 48² windows and blends them with Gaussian weights."""
    import torch

    g = torch.exp(-0.5 * ((torch.arange(WINDOW) - (WINDOW - 1) / 2) / (WINDOW / 8)) ** 2)
    weight = torch.clamp(torch.outer(g, g), min=1e-3)

    def forward(self: Any, x: Any, attention: bool) -> Any:
        b, _, h, w = x.shape
        if h <= WINDOW and w <= WINDOW:
            return whole_forward(self, x, attention)
        ph, pw = max(WINDOW - h, 0), max(WINDOW - w, 0)
        xp = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x
        hp, wp = xp.shape[-2:]
        places = [(y, z) for y in _starts(hp, stride) for z in _starts(wp, stride)]
        tiles = torch.cat([xp[:, :, y:y + WINDOW, z:z + WINDOW] for y, z in places])
        out = torch.cat([whole_forward(self, tiles[i:i + 256], False)[0] for i in range(0, len(tiles), 256)])
        total, weights = torch.zeros(b, 1, hp, wp), torch.zeros(1, 1, hp, wp)
        for t, (y, z) in enumerate(places):
            total[:, :, y:y + WINDOW, z:z + WINDOW] += out[t * b:(t + 1) * b] * weight
            weights[:, :, y:y + WINDOW, z:z + WINDOW] += weight
        return (total / weights)[:, :, :h, :w], []

    return forward


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stride", type=int, default=24)
    ap.add_argument("--planes", nargs="+", default=["axial", "three"])
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    import torch

    from lungseg.device import resolve_prediction_precision
    from lungseg.inference import Predictor
    from lungseg.inference.readers import read_input
    from lungseg.inference.scan import segment_scan

    whole_forward = Predictor._forward
    rows = []
    for name, (series, reference_file) in SCANS.items():
        vol = read_input(REALCT / series)[1][0]
        reference = read_input(REALCT / reference_file)[1][0].image > 0.5
        for planes in args.planes:
            for how in ("whole slices", f"48² windows, stride {args.stride}"):
                Predictor._forward = whole_forward if how == "whole slices" else windowed_forward(whole_forward, args.stride)
                run = Predictor.from_bundle(MODEL, device="cpu",
                                            precision=resolve_prediction_precision("auto", torch.device("cpu")))
                started = time.time()
                seg, info = segment_scan(run, vol, planes=planes)
                row = {"scan": name, "planes": planes, "network_on": how, "precision": run.precision,
                       "seconds": round(time.time() - started, 1), "set_aside": (info["set_aside"] or {}).get("count", 0),
                       "mean_probability_on_reference": round(float(seg.probs[reference].mean()), 3),
                       **score(seg.mask > 0, reference)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    Predictor._forward = whole_forward
    if args.out:
        Path(args.out).write_text(json.dumps({"command": "python benchmarks/sliding_windows.py", "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
