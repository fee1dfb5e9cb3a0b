#!/usr/bin/env python
"""Setting aside the candidates the real-CT model is unsure of, chosen on synthetic whole scans.

After three planes, the published real-CT model's whole-scan masks still hold false candidates inside the
lungs (on LIDC-IDRI-0314 about two thirds of the mask's volume). Each candidate (a 26-connected component of
the mask) carries the network's peak and mean probability. This script measures, on synthetic patients only,
whether a rule on that confidence separates tumours from false candidates well enough to become
``lungseg predict``'s default. The rule set aside candidates would be listed, like those outside the lungs,
never deleted unseen.

The protocol, written before the first run (2026-12-04):

* **Data.** The three synthetic sets of the three-plane and set-aside choices (NSCLC-like tumours, the
  ``solid-randomised`` appearance): seed 777 (10 patients), seed 778 (20), seed 780 (12, every tumour against
  the mediastinum). The model runs as ``lungseg predict`` runs it (:func:`lungseg.inference.scan.segment_scan`,
  three planes, candidates outside the lungs set aside); every candidate left is recorded with its voxels,
  peak and mean probability, and how many voxels of each tumour it covers.
* **Rules.** Set aside a candidate whose peak probability is below ``t``, t in 0.6, 0.7, 0.8, 0.9, 0.95; or
  whose mean probability is below ``m``, m in 0.6, 0.65, 0.7, 0.75, 0.8; or a threshold on the averaged map of
  0.6 or 0.7 instead of 0.5 (the candidates outside the lungs set aside again at that threshold). (No rule on
  size: a small nodule is what a reader most wants found.)
* **Choice, on seed 778 alone:** the rule with the highest pooled Dice among those whose recall falls by at
  most 0.03 against no rule and which lose no tumour that no rule finds (a tumour is found when the mask
  covers at least 10 % of its voxels, :func:`lungseg.metrics.tumour_table`).
* **Confirmation, on seeds 777 and 780:** the chosen rule is adopted if, in each, the pooled Dice rises, the
  recall falls by at most 0.03, and at most one found tumour is lost. If it fails, nothing is adopted (no
  second choice). The two real scans play no part; they are measured once afterwards.

Usage: ``python benchmarks/candidate_confidence.py [--model ZIP] [--out results/real-ct/candidate-confidence-synthetic.json]``
(about 12 minutes on the 2-core machine); ``--from JSON`` re-decides from a saved candidate table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from three_planes import SETS, synthetic_patient  # noqa: E402  (the same synthetic sets)

CHOOSE_ON = 778
PEAKS = (0.6, 0.7, 0.8, 0.9, 0.95)
THRESHOLDS = (0.6, 0.7)
MEANS = (0.6, 0.65, 0.7, 0.75, 0.8)
MAX_RECALL_LOSS = 0.03
TUMOUR_MIN_OVERLAP = 0.1


def candidates_of(mask: np.ndarray, probs: np.ndarray, reference: np.ndarray) -> tuple[list[dict[str, Any]], list[int]]:
    """Each 26-connected candidate of ``mask``: voxels, peak and mean probability, and the voxels it covers of
    each tumour (26-connected components of ``reference``); with the tumours' sizes."""
    from scipy import ndimage

    full = np.ones((3, 3, 3), dtype=bool)
    labels, n = ndimage.label(mask, structure=full)
    tumours, n_t = ndimage.label(reference, structure=full)
    tumour_sizes = np.bincount(tumours.ravel(), minlength=n_t + 1)[1:].tolist()
    rows = []
    for k, box in enumerate(ndimage.find_objects(labels), 1):
        inside = labels[box] == k
        p = probs[box][inside]
        covered = np.bincount(tumours[box][inside], minlength=n_t + 1)[1:]
        rows.append({"voxels": int(inside.sum()), "peak": round(float(p.max()), 4), "mean": round(float(p.mean()), 4),
                     "covers": {str(t + 1): int(c) for t, c in enumerate(covered) if c}})
    return rows, [int(s) for s in tumour_sizes]


def collect_set(run: Any, seed: int, patients: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The candidate table of one synthetic set."""
    from lungseg.inference.region import LungRegion, lung_region_and_envelope, set_aside_outside_lungs
    from lungseg.inference.scan import segment_scan

    rows = []
    for k in range(patients):
        vol = synthetic_patient(seed, k, extra)
        reference = vol.mask > 0
        seg, _ = segment_scan(run, vol, keep_unsure=True)  # every candidate: the rules are what is measured
        candidates, tumours = candidates_of(seg.mask > 0, seg.probs, reference)
        envelope = lung_region_and_envelope(vol.image, vol.spacing)[1]
        at = {}
        for t in THRESHOLDS:  # seg.probs: the averaged map inside the region searched, 0 elsewhere
            kept = set_aside_outside_lungs(seg.probs >= t, envelope, LungRegion().min_share_in_lungs)[0]
            at[f"{t:g}"] = candidates_of(kept, seg.probs, reference)[0]
        rows.append({"patient": k, "tumour_voxels": tumours, "candidates": candidates, "candidates_at_threshold": at})
        print(f"seed {seed} patient {k}: {len(candidates)} candidates, {len(tumours)} tumours", flush=True)
    return {"seed": seed, "patients": rows}


def score(patients: list[dict[str, Any]], keep: Any, threshold: float | None = None) -> dict[str, Any]:
    """Pooled Dice, recall and tumours found over ``patients`` when only candidates with ``keep(c)`` stay (those
    of the mask at ``threshold`` when given, else at 0.5)."""
    tp = pred = ref = found = kept_n = total_n = 0
    for p in patients:
        ref += sum(p["tumour_voxels"])
        covered = np.zeros(len(p["tumour_voxels"]))
        for c in (p["candidates"] if threshold is None else p["candidates_at_threshold"][f"{threshold:g}"]):
            total_n += 1
            if not keep(c):
                continue
            kept_n += 1
            pred += c["voxels"]
            for t, v in c["covers"].items():
                tp += v
                covered[int(t) - 1] += v
        found += int(np.sum((covered >= TUMOUR_MIN_OVERLAP * np.asarray(p["tumour_voxels"])) & (covered > 0)))
    return {"pooled_dice": round(2 * tp / (pred + ref), 4) if pred + ref else float("nan"),
            "recall": round(tp / ref, 4) if ref else float("nan"), "tumours_found": found,
            "tumours": sum(len(p["tumour_voxels"]) for p in patients), "candidates_kept": kept_n, "candidates": total_n}


def rules() -> dict[str, tuple[Any, float | None]]:
    """The rules of the protocol, by name: ``(keep, threshold)``, a candidate kept when ``keep(c)`` is True, of
    the mask at ``threshold`` (``None``: 0.5)."""
    out: dict[str, tuple[Any, float | None]] = {"none": (lambda c: True, None)}
    out.update({f"peak>={t:g}": ((lambda c, t=t: c["peak"] >= t), None) for t in PEAKS})
    out.update({f"mean>={m:g}": ((lambda c, m=m: c["mean"] >= m), None) for m in MEANS})
    out.update({f"threshold {t:g}": ((lambda c: True), t) for t in THRESHOLDS})
    return out


def decide(tables: list[dict[str, Any]]) -> dict[str, Any]:
    """The choice on seed :data:`CHOOSE_ON` and its confirmation on the others (the module docstring)."""
    by_seed = {t["seed"]: t["patients"] for t in tables}
    scores = {seed: {name: score(pats, keep, t) for name, (keep, t) in rules().items()} for seed, pats in by_seed.items()}
    base = scores[CHOOSE_ON]["none"]
    eligible = [name for name, s in scores[CHOOSE_ON].items() if name != "none"
                and base["recall"] - s["recall"] <= MAX_RECALL_LOSS and s["tumours_found"] == base["tumours_found"]]
    chosen = max(eligible, key=lambda n: scores[CHOOSE_ON][n]["pooled_dice"], default=None)
    confirmations = {}
    if chosen is not None:
        for seed, s in scores.items():
            if seed == CHOOSE_ON:
                continue
            before, after = s["none"], s[chosen]
            confirmations[seed] = (after["pooled_dice"] > before["pooled_dice"]
                                   and before["recall"] - after["recall"] <= MAX_RECALL_LOSS
                                   and before["tumours_found"] - after["tumours_found"] <= 1)
    adopted = chosen is not None and all(confirmations.values())
    return {"scores": {str(k): v for k, v in scores.items()}, "eligible_on_choice_set": eligible, "chosen": chosen,
            "confirmed": {str(k): v for k, v in confirmations.items()}, "adopted": adopted}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="results/real-ct/msd-patches-attention.zip")
    ap.add_argument("--out", default="results/real-ct/candidate-confidence-synthetic.json")
    ap.add_argument("--from", dest="source", help="re-decide from the candidate tables of a saved result")
    args = ap.parse_args(argv)
    from lungseg.files import write_json

    if args.source:
        tables = json.loads(Path(args.source).read_text())["tables"]
    else:
        from lungseg.inference import Predictor

        run = Predictor.load(args.model, device="cpu")
        tables = [collect_set(run, seed, patients, extra) for seed, patients, extra in SETS]
    decision = decide(tables)
    for seed, s in decision["scores"].items():
        for name, row in s.items():
            print(f"seed {seed} {name:10s} {row}")
    print(f"chosen on seed {CHOOSE_ON}: {decision['chosen']}; confirmed {decision['confirmed']}; adopted {decision['adopted']}")
    write_json({"model": args.model, "command": "python benchmarks/candidate_confidence.py",
                "protocol": __doc__.split("The protocol, written before the first run (2026-12-04):")[1].split("Usage:")[0].strip(),
                **decision, "sets": [{"seed": s, "patients": n, "phantom": {"tumour_type_probs": [0.8, 0.15, 0.05], **e}}
                                     for s, n, e in SETS], "tables": tables}, Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
