"""Train published medium-grid cells again on a CUDA GPU and compare them with the published CPU runs.

The medium grid was trained on the 2-core CPU in bf16 (``results/medium``). This retrains chosen cells
with each run's saved configuration, changed only in ``device`` (and the cache folder), on the profile's
own 150-patient study, and reports per cell: wall time, seconds per epoch, best validation Dice and its
epoch, beside the published run's. The validation Dice is the checkpoint-choice number of the trainer
(pooled over the 22 validation patients' slices), so the two columns are comparable; bf16 arithmetic on
a GPU and a CPU differs, so equality is not expected, only the same range.

    python benchmarks/cuda_check.py --out OUT [--cells attention-hybrid-seed0 unet-hybrid-seed0]
    python benchmarks/cuda_check.py --out /tmp/x --device cpu --epochs 1 --patients 12   # a rehearsal

Writes ``OUT/cuda-check.json`` and prints a Markdown table. ``benchmarks/NOTES.md`` records what a lent
H200 gave.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_stability import PUBLISHED, medium_study, published_config  # noqa: E402

from lungseg.training import train  # noqa: E402


def _history(run: Path) -> list[dict[str, float]]:
    with open(run / "history.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _summary(run: Path) -> dict[str, float]:
    """Best validation Dice, its epoch and the mean seconds per epoch of a finished run folder."""
    history = _history(run)
    best = max(history, key=lambda row: row["val_dice"])
    metrics = json.loads((run / "metrics.json").read_text())
    return {"best_val_dice": round(best["val_dice"], 4), "best_epoch": int(best["epoch"]),
            "epochs": len(history), "s_per_epoch": round(sum(r["time_s"] for r in history) / len(history), 2),
            "wall_s": round(metrics["wall_time_s"], 1), "device": metrics.get("device")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cells", nargs="+", default=["attention-hybrid-seed0", "unet-hybrid-seed0"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=None, help="default: the published run's")
    parser.add_argument("--patients", type=int, default=None, help="default: the profile's (150)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "cuda-check")
    args = parser.parse_args(argv)

    import torch

    started = time.perf_counter()
    data = medium_study(args.patients)
    generated_s = time.perf_counter() - started
    machine = {"torch": torch.__version__, "device": args.device, "cpu_count": os.cpu_count(),
               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "study_patients": len(json.loads((data / "manifest.json").read_text())["patients"]),
               "study_generated_s": round(generated_s, 1)}
    print(json.dumps(machine), flush=True)

    rows = []
    for cell in args.cells:
        published = PUBLISHED / cell
        config = published_config(cell, device=args.device, data=str(data), cache_dir=str(args.runs / "cache"),
                                  **({"epochs": args.epochs} if args.epochs else {}))
        out = args.runs / cell
        t0 = time.perf_counter()
        train(config, out, resume=False, progress=False)
        row = {"cell": cell, "wall_incl_setup_s": round(time.perf_counter() - t0, 1),
               "here": _summary(out), "published": _summary(published)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cuda-check.json").write_text(json.dumps({"machine": machine, "cells": rows}, indent=2) + "\n")
    print("\n| cell | device | s / epoch | wall s | best val Dice (epoch) | published CPU: s / epoch | wall s | best val Dice (epoch) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        h, p = r["here"], r["published"]
        print(f"| {r['cell']} | {h['device']} | {h['s_per_epoch']} | {h['wall_s']} | {h['best_val_dice']} ({h['best_epoch']}) "
              f"| {p['s_per_epoch']} | {p['wall_s']} | {p['best_val_dice']} ({p['best_epoch']}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
