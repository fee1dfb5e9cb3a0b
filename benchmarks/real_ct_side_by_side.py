#!/usr/bin/env python
"""Phantom-only, real-only and pretrained + fine-tuned models side by side on the two whole real scans.

Issue 22 asks chapter 10 to put the three kinds of model side by side: on LIDC-IDRI-0314 against each
reader-agreement level, with the readers' own spread, and on LUNG1-001 (numbers only: its licence forbids
shipping it). The models, each trained with ``lungseg train``'s defaults (attention Res-U-Net, hybrid loss,
40 epochs of at least 512 samples, seed 0):

* **phantom-only**: on 2000 phantom patches of the ``solid-randomised`` phantom in the real patches' format
  (``benchmarks/phantom_transfer.py solid-randomised``, the phantom that transferred best to the real
  patches), exported at 2 mm with the real-CT model's HU window;
* **real-only**: the published real-CT model, ``results/real-ct/msd-patches-attention.zip`` (all 13 real
  MSD patients, random initial weights; ``scripts/train_real_model.py``);
* **pretrained + fine-tuned**: the real-only recipe on the same 13 patients, started from the phantom-only
  network's weights (``lungseg train --init-weights RUN``).

Each runs as a user would run it (``lungseg predict SCAN --model ZIP`` with the model's defaults, through
``benchmarks/real_ct_scans.py``). Nothing is chosen here: the three are measured, once, on test scans. The
real patches' numbers beside them are the published ones (``results/real-patches/phantom-transfer.json``:
the phantom-only networks on all 130 real patches; the two real recipes cross-validated by patient, seed 0).
The phantom-only and fine-tuned networks are retrained here: CPU training is reproducible only at a fixed
thread count, so they are not bit for bit the networks of those tables.

**A central phantom (``--phantom solid-randomised-central``), stated before its run (2026-12-05).** Every
phantom-only and real-CT network so far has missed LUNG1-001's central mass, and no phantom held a tumour against
the mediastinum. One more phantom is measured, once, with seed 0: ``solid-randomised`` with half of the tumours
placed against the mediastinum (``benchmarks/phantom_transfer.py``), its phantom-only network and the real-CT recipe
fine-tuned from it, side by side with the published model as above (``results/real-ct/side-by-side-central.json``).
It answers one question, whether tumours against the mediastinum in the phantom let a network find LUNG1-001's
mass, and is reported whatever it gives. Nothing is chosen by it: the published model and the defaults stay, and
a single network on two test scans could not choose them.

**A phantom with wide tumours (``--phantom solid-randomised-central-large``)**, 2026-12-05, later: the central
phantom with tumours of 6-100 mm, judged by the rule of ``benchmarks/large_pretraining.py`` (written before
either run); here it is measured once on the test scans, choosing nothing (``results/real-ct/side-by-side-large.json``).

Usage: ``python benchmarks/real_ct_side_by_side.py [--phantom VARIANT] [--work DIR] [--out JSON]``
(about 20 minutes on the 2-core machine: the phantom patches and two trainings, then six predictions; the
runs are kept under ``--work`` and reused). The default ``--out`` is ``results/real-ct/side-by-side.json`` for
the ``solid-randomised`` phantom, ``side-by-side-central.json`` for the central one and ``side-by-side-large.json``
for the wide-tumour one.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "scripts"))

import phantom_transfer  # noqa: E402
import real_ct_scans  # noqa: E402
import train_real_model  # noqa: E402

PHANTOM = "solid-randomised"
CENTRAL = "solid-randomised-central"
LARGE = "solid-randomised-central-large"
PUBLISHED = "results/real-ct/msd-patches-attention.zip"
TRANSFER = ROOT / "results" / "real-patches" / "phantom-transfer.json"
OUT = {PHANTOM: "results/real-ct/side-by-side.json", CENTRAL: "results/real-ct/side-by-side-central.json",
       LARGE: "results/real-ct/side-by-side-large.json"}
RANDOM_START = "random (today's defaults)"


def models(phantom: str = PHANTOM) -> dict[str, str]:
    """The three models, each with what it was trained on."""
    return {"phantom-only": f"2000 phantom patches ({phantom})",
            "real-only": "130 real patches of 13 MSD patients, random initial weights",
            "pretrained + fine-tuned": "the real patches, started from the phantom-only network"}


def build_models(work: Path, phantom: str = PHANTOM) -> tuple[dict[str, Path], Path]:
    """The three model ``.zip`` files (training the phantom-only and fine-tuned networks where they are missing)
    and the phantom-only run. The phantom-only run is kept in ``benchmarks/phantom_transfer.py``'s work folder,
    where ``benchmarks/real_patches_inference.py pretrained-VARIANT`` starts its cross-validation from it; the
    fine-tuned run and the exports under ``work``."""
    from lungseg.inference.bundle import export_model

    work.mkdir(parents=True, exist_ok=True)
    phantom_run = phantom_transfer.pretrained_run(phantom)
    data = train_real_model.write_training_data(work / "real")
    tuned_run = work / "real" / f"attention-seed0-from-{phantom}"
    train_real_model.train_recipe(data, tuned_run, seed=0, init_weights=phantom_run)
    zips = {"phantom-only": work / f"phantom-only-{phantom}.zip", "real-only": ROOT / PUBLISHED,
            "pretrained + fine-tuned": work / f"fine-tuned-from-{phantom}.zip"}
    for name, run in (("phantom-only", phantom_run), ("pretrained + fine-tuned", tuned_run)):
        export_model(run, zips[name], force=True, pixel_mm=train_real_model.PIXEL_MM,
                     unit_window=train_real_model.UNIT_WINDOW,
                     notes=f"Measured by `python benchmarks/real_ct_side_by_side.py`; not published. Trained on "
                           f"{models(phantom)[name]}.")
    return zips, phantom_run


def patch_numbers(transfer: dict[str, Any], phantom: str = PHANTOM,
                  phantom_only_dice: float | None = None) -> dict[str, dict[str, Any]]:
    """Per model, its number on real patches, from the published transfer tables where they hold it: the
    phantom-only networks of ``phantom`` on all 130 (three seeds pooled, the 8 symmetries) and the real recipes'
    patient-level cross-validation (seed 0, mean over 5 folds). A phantom without published phantom-only rows gets
    ``phantom_only_dice`` (its seed-0 network on all 130); a fine-tuned recipe never cross-validated gets ``None``
    ("not measured")."""
    tuned = {r["initial weights"]: r for r in transfer["fine_tuned"]}
    cv = "held-out patients, 5 patient-level folds (seed 0)"
    phantom_row = next((r for r in transfer["phantom_only"] if r["phantom"] == phantom), None)
    fine_tuned = tuned.get(f"phantom-only run, {phantom}")
    return {
        "phantom-only": {"real patches Dice": round(phantom_row["pooled Dice"], 3),
                         "real patches: what": "all 130 real patches, never trained on (3 seeds pooled)"}
        if phantom_row else {"real patches Dice": None if phantom_only_dice is None else round(phantom_only_dice, 3),
                             "real patches: what": "all 130 real patches, never trained on (seed 0)"},
        "real-only": {"real patches Dice": round(tuned[RANDOM_START]["mean"], 3), "real patches: what": cv},
        "pretrained + fine-tuned": {"real patches Dice": round(fine_tuned["mean"], 3), "real patches: what": cv}
        if fine_tuned else {"real patches Dice": None, "real patches: what": "not measured"},
    }


def side_by_side(scans: dict[str, list[dict[str, Any]]], patches: dict[str, dict[str, Any]],
                 phantom: str = PHANTOM) -> list[dict[str, Any]]:
    """One row per model: its training, its real-patch number, on LIDC-IDRI-0314 the Dice against each
    reader-agreement level and the readers' own pooled pairwise Dice, on LUNG1-001 the Dice and the share of the
    tumour found, and the components each mask holds."""
    rows = []
    for name, model_rows in scans.items():
        by_scan = {r["scan"]: r for r in model_rows}
        lidc, lung1 = by_scan["LIDC-IDRI-0314"], by_scan["LUNG1-001"]
        row: dict[str, Any] = {"model": name, "trained_on": models(phantom)[name], **patches[name]}
        row.update({f"LIDC Dice vs {level['reference']}": level["dice"] for level in lidc["reader_levels"]})
        row.update({"LIDC readers with each other": lidc["readers_pairwise_dice"],
                    "LIDC nodule's own component Dice": lidc.get("tumour_component_dice"),
                    "LIDC components": lidc["components"], "LUNG1-001 Dice": lung1["dice"],
                    "LUNG1-001 tumour found": lung1["recall"], "LUNG1-001 components": lung1["components"]})
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phantom", default=PHANTOM, choices=sorted(OUT), help=f"the phantom (default {PHANTOM})")
    ap.add_argument("--work", default="/tmp/lungseg-side-by-side", help="where the runs and model files are kept")
    ap.add_argument("--out", default=None, help="the JSON to write (default: by phantom, see the docstring)")
    args = ap.parse_args(argv)
    from lungseg.files import write_json

    if not real_ct_scans.REALCT.is_dir():
        print(f"error: {real_ct_scans.REALCT} not found: the whole real scans live in ../shared/realct", file=sys.stderr)
        return 2
    zips, phantom_run = build_models(Path(args.work), args.phantom)
    transfer = json.loads(TRANSFER.read_text(encoding="utf-8"))
    published = any(r["phantom"] == args.phantom for r in transfer["phantom_only"])
    own = None if published else phantom_transfer.score_on_real(phantom_run)["pooled_dice_dihedral"]
    scans = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in zips.items():
            out = Path(tmp) / f"{name.replace(' ', '-')}.json"
            if real_ct_scans.main(["--model", str(model), "--out", str(out)]) != 0:
                raise SystemExit(f"benchmarks/real_ct_scans.py failed on the {name} model")
            # every scan row but its candidate table (hundreds of rows for a phantom-only mask)
            scans[name] = [{k: v for k, v in row.items() if k != "candidates"}
                           for row in json.loads(out.read_text(encoding="utf-8"))["scans"]]
    rows = side_by_side(scans, patch_numbers(transfer, args.phantom, own), args.phantom)
    command = "python benchmarks/real_ct_side_by_side.py" + ("" if args.phantom == PHANTOM else f" --phantom {args.phantom}")
    out_path = Path(args.out or OUT[args.phantom])
    write_json({"command": command, "phantom": args.phantom, "seed": 0, "models": rows, "scans": scans}, out_path)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
