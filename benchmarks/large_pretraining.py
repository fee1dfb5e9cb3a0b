#!/usr/bin/env python
"""Does pretraining on a phantom with wide tumours give the real-CT model the masses its real patches lack?

**Why this question.** The published real-CT model marks at most 10 % of LUNG1-001's mass on every slice wider
than 60 mm, and its 13 training patients' patches hold almost no tumour wider than 40 mm (9 distinct
cross-sections, all from one patient; ``results/real-ct/training-range.json``). No real CT with wider tumours
is here to train on; the phantom can make them. Every phantom so far drew tumours of at most 70 mm (log-uniformly,
so few wide ones). The ``solid-randomised-central-large`` phantom (``benchmarks/phantom_transfer.py``) is the
central phantom (half the tumours against the mediastinum) with tumours of 6-100 mm across; the question is
whether the real-CT recipe fine-tuned from a network trained on it keeps what it does on real patients and gains
wide tumours. The phantom's tumour range was set from the training data's range and #22's "a large tumour", not
from either test scan.

The protocol, written before the first run (2026-12-05):

* **The candidate.** ``lungseg train``'s defaults on all 13 real MSD patients, seed 0, started from the seed-0
  phantom-only network of ``solid-randomised-central-large`` (2000 patches; ``benchmarks/real_ct_side_by_side.py
  --phantom solid-randomised-central-large`` trains and exports both).
* **(a) Real patients it has not seen.** The recipe's patient-level cross-validation on the real patches
  (``python benchmarks/real_patches_inference.py pretrained-solid-randomised-central-large --seeds 0``, as every
  other row of ``inference-runs.jsonl``). It passes if its mean pooled Dice over the folds is at least the
  published recipe's on the same folds and seed (0.732) minus 0.02: the bar the central phantom was held to.
* **(b) Ordinary whole scans.** On each of the three synthetic sets of the earlier choices (seeds 777, 778, 780;
  tumours 3-50 mm), run as ``lungseg predict`` runs it (bf16, three planes, set-asides, no coarse pass), a higher
  pooled Dice than the published model's (0.378 / 0.504 / 0.499) with a recall at most 0.03 below its (0.420 /
  0.736 / 0.541). As before, these sets come from a phantom like the one it was pretrained on, so (b) can veto and
  hardly recommend.
* **(c) Wide tumours.** On each of the two large-tumour sets of ``benchmarks/coarse_pass.py`` (seeds 911 and 912,
  12 patients each, one tumour of 50-100 mm, half against the mediastinum), both models run as in (b) in this
  script, the candidate's pooled Dice at least 0.05 above the published model's. This is what the candidate is
  for; the sets are drawn from the phantom family it was pretrained on, so (c) shows at most that the pretraining
  reached the network, not that it transfers to real masses.
* **Rule.** The candidate becomes the published model if (a), (b) and (c) all hold; otherwise the published model
  stays and no further phantom is tried for this. The two real test scans take no part in the choice. They are
  measured once (``real_ct_side_by_side.py``, ``results/real-ct/side-by-side-large.json``), whatever the rule
  says; that run may come before this script's, and its numbers cannot change the answer.

Usage: ``python benchmarks/large_pretraining.py --model ZIP [--out results/real-ct/large-pretraining.json]`` after
the cross-validation above has appended its rows to ``results/real-patches/inference-runs.jsonl`` (about 15
minutes on the 2-core machine: the candidate on five sets, the published model on two).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from central_pretraining import CV_ROWS, MAX_RECALL_DROP, PUBLISHED_SETS, cross_validation  # noqa: E402
from coarse_pass import LARGE_SETS  # noqa: E402
from three_plane_tta import score_set  # noqa: E402
from three_planes import SETS  # noqa: E402

VARIANT = "pretrained-solid-randomised-central-large"
PUBLISHED = "results/real-ct/msd-patches-attention.zip"
MIN_LARGE_GAIN = 0.05


def ordinary_sets_hold(rows: list[dict[str, Any]]) -> bool:
    """(b): on every ordinary set a higher pooled Dice than the published model's, and a recall at most 0.03 below."""
    return all(r["candidate"]["pooled_dice"] > PUBLISHED_SETS[r["seed"]][0]
               and r["candidate"]["recall"] >= PUBLISHED_SETS[r["seed"]][1] - MAX_RECALL_DROP for r in rows)


def large_sets_hold(rows: list[dict[str, Any]]) -> bool:
    """(c): on every large set the candidate's pooled Dice at least 0.05 above the published model's."""
    # rounded as the scores are (4 places), so that a gain of exactly 0.05 is not lost to float subtraction
    return all(round(r["candidate"]["pooled_dice"] - r["published"]["pooled_dice"], 4) >= MIN_LARGE_GAIN for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="the candidate's model .zip (real_ct_side_by_side.py's work folder)")
    ap.add_argument("--out", default="results/real-ct/large-pretraining.json")
    args = ap.parse_args(argv)
    from lungseg.device import resolve_device, resolve_prediction_precision
    from lungseg.files import write_json
    from lungseg.inference import Predictor

    cv_rows = [json.loads(line) for line in CV_ROWS.read_text(encoding="utf-8").splitlines() if line.strip()]
    cv = cross_validation(cv_rows, VARIANT)
    print(f"(a) cross-validation: {cv}", flush=True)
    precision = resolve_prediction_precision("auto", resolve_device("cpu"))
    candidate = Predictor.load(args.model, device="cpu", precision=precision)
    published = Predictor.load(str(ROOT / PUBLISHED), device="cpu", precision=precision)
    ordinary = [score_set({"candidate": candidate}, seed, n, extra) for seed, n, extra in SETS]
    large = [score_set({"candidate": candidate, "published": published}, seed, n, extra) for seed, n, extra in LARGE_SETS]
    decision = {"cross_validation_holds": cv["holds"], "ordinary_sets_hold": ordinary_sets_hold(ordinary),
                "large_sets_hold": large_sets_hold(large)}
    decision["adopted"] = all(decision.values())
    protocol = __doc__.split("The protocol, written before the first run (2026-12-05):")[1].split("Usage:")[0].strip()
    write_json({"command": "python benchmarks/large_pretraining.py --model ZIP", "candidate": VARIANT + " (seed 0, all 13 patients)",
                "precision": precision, "protocol": protocol, "cross_validation": cv,
                "published_sets": {str(k): {"pooled_dice": d, "recall": r} for k, (d, r) in PUBLISHED_SETS.items()},
                "decision": decision, "ordinary_sets": ordinary, "large_sets": large}, Path(args.out))
    print(f"decision: {decision}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
