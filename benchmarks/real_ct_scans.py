#!/usr/bin/env python
"""The published real-CT model on the two whole real scans of ``../shared/realct``, through ``lungseg predict``.

For each scan (LIDC-IDRI-0314 against the 2-of-4-reader consensus, NSCLC-Radiomics LUNG1-001 against
its GTV), ``lungseg predict SCAN --model results/real-ct/msd-patches-attention.zip`` is run as a user
would run it (the model's own defaults: 2 mm pixels, HU scaled by its window, the lungs searched), and
the mask is scored: Dice, the share of the reference found, how many separate components were marked
and whether the largest is the tumour, and the Dice of the component that overlaps the reference most
(what a reader who picks the right candidate from the lesion table gets), and how many candidates were set
aside as lying mostly outside the lungs. On LIDC-IDRI-0314 the mask is also scored against each
reader-agreement level (drawn by at least 1, 2, 3 or all 4 of the readers), beside the readers' own pooled
pairwise Dice. The two scans are
measurements only: nothing was trained or tuned on them.

Usage: ``python benchmarks/real_ct_scans.py [--model ZIP] [--out results/real-ct/whole-scans.json] [--planes P] [--keep-unsure] [--crf]
[--coarse-pass on|off]``
(about a minute per scan on the 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REALCT = ROOT.parent / "shared" / "realct"
#: scan -> (DICOM series, reference mask, per-voxel reader counts or None)
SCANS = {
    "LIDC-IDRI-0314": ("lidc-idri-0314/ct", "lidc-idri-0314/nodule_consensus.nii.gz",
                       "lidc-idri-0314/nodule_readers.nii.gz"),
    "LUNG1-001": ("nsclc-radiomics-lung1-001/ct", "nsclc-radiomics-lung1-001/gtv_reference.nii.gz", None),
}


def score(mask: np.ndarray, reference: np.ndarray, probabilities: np.ndarray | None = None) -> dict[str, object]:
    """Dice, recall and the component picture of a predicted mask against a reference (same grid); with the
    probabilities, also where the tumour's component ranks in the lesion table ordered by peak probability, and
    ``candidates``: every component, largest first, with its voxels, peak probability and whether it touches the
    reference (what the unsure bar of ``predict`` is judged by)."""
    from lungseg.metrics import confusion

    reference = np.asarray(reference, dtype=bool)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    overlap = np.bincount(labels[reference].ravel(), minlength=n + 1)[1:]
    best = int(np.argmax(overlap)) if n and overlap.max() > 0 else None
    peaks = np.asarray(ndimage.maximum(probabilities, labels, np.arange(1, n + 1))) if probabilities is not None and n else None
    counts = confusion(mask, reference)
    row: dict[str, object] = {
        "dice": round(counts.dice, 3), "recall": round(counts.recall, 3),
        "predicted_voxels": int(mask.sum()), "reference_voxels": int(reference.sum()), "components": int(n),
        "largest_is_tumour": bool(n and best == int(np.argmax(sizes))),
    }
    if best is not None:
        row["tumour_component_dice"] = round(confusion(labels == best + 1, reference).dice, 3)
        row["tumour_component_rank_by_size"] = int((sizes > sizes[best]).sum()) + 1
        if peaks is not None:
            # ties (peaks saturated at 1) counted against the tumour: the worst place it can take
            row["tumour_component_rank_by_peak_probability"] = int((peaks >= peaks[best]).sum())
    if probabilities is not None:
        table = [{"voxels": int(v), "peak_probability": round(float(p), 3), "on_reference": bool(o > 0)}
                 for v, p, o in zip(sizes, peaks if peaks is not None else [], overlap)]
        row["candidates"] = sorted(table, key=lambda r: -r["voxels"])
    return row


def reader_levels(mask: np.ndarray, series: Path, readers_file: Path) -> dict[str, object]:
    """The mask against each reader-agreement level (at least 1, 2, 3 and all 4 readers: Dice, precision,
    recall, HD95, surface Dice; :func:`lungseg.analysis.real_ct.compare_with_reader_counts`) and the readers'
    own pooled pairwise Dice, the yardstick."""
    from lungseg.analysis import real_ct
    from lungseg.data.dicom import read_dicom_series

    (volume,) = read_dicom_series(series)
    counts = real_ct.reader_counts_on_series(volume, readers_file)
    rows = real_ct.compare_with_reader_counts(mask, counts, volume.spacing)
    keep = ("reference", "dice", "precision", "recall", "hd95_mm", "surface_dice")
    return {"readers_pairwise_dice": round(real_ct.reader_pairwise_dice(counts), 3),
            "reader_levels": [{k: (round(float(r[k]), 3) if k != "reference" else r[k]) for k in keep} for r in rows]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="results/real-ct/msd-patches-attention.zip")
    ap.add_argument("--out", default="results/real-ct/whole-scans.json")
    ap.add_argument("--note", default=None, help="a sentence on the model measured, kept in the JSON")
    ap.add_argument("--planes", default="auto", choices=("auto", "axial", "three"),
                    help="lungseg predict --planes (default: auto, the model's default)")
    ap.add_argument("--keep-unsure", action="store_true", help="lungseg predict --keep-unsure (default: set aside)")
    ap.add_argument("--crf", action="store_true", help="lungseg predict --crf (default: thresholded)")
    ap.add_argument("--coarse-pass", default="auto", choices=("auto", "on", "off"),
                    help="lungseg predict --coarse-pass (default: auto, which is off)")
    args = ap.parse_args(argv)
    from lungseg.files import write_json
    from lungseg.inference import predict
    from lungseg.inference.readers import read_input

    if not REALCT.is_dir():
        print(f"error: {REALCT} not found: the whole real scans live in ../shared/realct", file=sys.stderr)
        return 2
    rows = []
    for name, (ct, reference_file, readers_file) in SCANS.items():
        with tempfile.TemporaryDirectory() as tmp:
            started = time.time()
            summary = predict(args.model, REALCT / ct, Path(tmp) / "mask.nii.gz", device="cpu", progress=False,
                              probabilities=True, planes=args.planes, keep_unsure=args.keep_unsure, crf=args.crf,
                              coarse=args.coarse_pass)
            seconds = time.time() - started
            mask = read_input(Path(tmp) / "mask.nii.gz")[1][0].image > 0.5
            probabilities = read_input(Path(tmp) / "mask_probability.nii.gz")[1][0].image
        reference = read_input(REALCT / reference_file)[1][0].image > 0.5
        aside = summary.get("set_aside") or {"count": 0, "total_volume_ml": 0.0, "lesions": []}
        unsure = [les for les in aside["lesions"] if les.get("reason") == "unsure"]
        row = {"scan": name, "seconds": round(seconds, 1), "precision": summary.get("precision"),
               "region": summary.get("region"), "planes": summary.get("planes"),
               "coarse_pass": (summary.get("algorithm") or {}).get("coarse_pass"),
               "region_ml": summary.get("region_ml"), "set_aside": aside["count"],
               "set_aside_ml": aside["total_volume_ml"], "set_aside_unsure": len(unsure),
               "set_aside_unsure_ml": round(sum(les["volume_ml"] for les in unsure), 4),
               **score(mask, reference, probabilities)}
        if readers_file is not None:
            row.update(reader_levels(mask, REALCT / ct, REALCT / readers_file))
        rows.append(row)
        print(json.dumps(row))
    command = ("python benchmarks/real_ct_scans.py" + ("" if args.planes == "auto" else f" --planes {args.planes}")
               + (" --keep-unsure" if args.keep_unsure else "") + (" --crf" if args.crf else "")
               + ("" if args.coarse_pass == "auto" else f" --coarse-pass {args.coarse_pass}"))
    write_json({"model": args.model, "command": command, **({"note": args.note} if args.note else {}), "scans": rows},
               Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
