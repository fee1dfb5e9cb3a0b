#!/usr/bin/env python
"""Why the real-CT model finds the LIDC nodule and misses LUNG1-001's mass: the test tumours against the training range.

The published real-CT model learned from 130 real 2D patches (48² at 2 mm, 96 mm across) of 13 MSD patients.
For each tumour cross-section of the two whole real scans (every axial slice of the LIDC-IDRI-0314 consensus
and of the LUNG1-001 GTV, resampled to 2 mm) this measures, with :mod:`lungseg.analysis.training_range`, its
size (equivalent diameter) and how much of its rim lies against tissue as bright as the tumour (the
attached share), the same two numbers for every distinct training cross-section, the widest coronal and
sagittal cross-sections its voxels lie on, and the share of the cross-section the published model marks when
run as ``lungseg predict`` runs it (its defaults: three planes averaged) and on axial slices alone
(``--planes axial``). The result says whether the tumours the model misses lie outside what it was trained on.
It is a diagnosis: it chooses nothing, and the two scans are measurements only (for LUNG1-001, numbers only:
its licence keeps its images out of the book).

Usage: ``python benchmarks/training_range.py [--model ZIP] [--out results/real-ct/training-range.json]``
(about 3 minutes on the 2-core machine, most of it the four predictions).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import real_ct_scans  # noqa: E402  (the two scans and where they live)


def _rounded(row: dict[str, object]) -> dict[str, object]:
    """A row as published: floats to 3 decimals (the summaries are computed from the published rows)."""
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="results/real-ct/msd-patches-attention.zip")
    ap.add_argument("--out", default="results/real-ct/training-range.json")
    args = ap.parse_args(argv)
    from lungseg.analysis import training_range
    from lungseg.experiment.realct import load_real_patches
    from lungseg.files import write_json
    from lungseg.inference import predict
    from lungseg.inference.readers import read_input

    if not real_ct_scans.REALCT.is_dir():
        print(f"error: {real_ct_scans.REALCT} not found: the whole real scans live in ../shared/realct", file=sys.stderr)
        return 2
    patches = load_real_patches()
    patch_rows = [_rounded({**r, "patient": str(patches.patient_ids[r["patch"]])})
                  for r in training_range.patch_cross_sections(patches.images, patches.masks)]
    scans = {}
    for name, (ct, reference_file, _) in real_ct_scans.SCANS.items():
        (scan,) = read_input(real_ct_scans.REALCT / ct)[1]
        reference = read_input(real_ct_scans.REALCT / reference_file)[1][0].image > 0.5
        masks = {}
        for planes in ("auto", "axial"):
            with tempfile.TemporaryDirectory() as tmp:
                predict(args.model, real_ct_scans.REALCT / ct, Path(tmp) / "mask.nii.gz", device="cpu", progress=False,
                        planes=planes)
                masks[planes] = read_input(Path(tmp) / "mask.nii.gz")[1][0].image > 0.5
        rows = [_rounded(r) for r in training_range.scan_cross_sections(
            scan.image, reference, scan.spacing, predictions={"found": masks["auto"], "found_axial_only": masks["axial"]})]
        scans[name] = {"summary": training_range.range_summary(rows, patch_rows), "cross_sections": rows}
        print(name, scans[name]["summary"])
    write_json({"command": "python benchmarks/training_range.py", "model": args.model,
                "pixel_mm": training_range.PIXEL_MM, "patch_source": patches.source,
                "patches": patch_rows,
                "scans": scans}, Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
