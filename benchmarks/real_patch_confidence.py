#!/usr/bin/env python
"""How sure is the real-CT recipe of real tumours in patients it has not seen? The unsure bar, on real data.

Why. ``lungseg predict`` sets aside a candidate whose averaged probability peaks below
:func:`lungseg.inference.scan.unsure_bar` (0.6 at the default threshold; seed 0 of this script chose 0.8 and
seed 1 did not confirm it, so 0.6 stays: ``benchmarks/NOTES.md``). That bar was chosen on synthetic
whole scans (``benchmarks/candidate_confidence.py``), where stricter bars lost phantom tumours: on seed 778
a peak of 0.7 or 0.8 lost 2 or 3 of 14. But the published model is trained on real tumours only, and a
phantom tumour is, to it, an unfamiliar object: the synthetic sets measure how sure it is of the *phantom's*
tumours. How sure it is of *real* tumours it has never seen can be measured on real data that is no test
set: the held-out patients of the patient-level folds of the real MSD patches. (This question was prompted
by the lesion table of one of the two whole test scans, LIDC-IDRI-0314, where the nodule's candidate peaks
at 1.0 and every false one below 0.86; that scan takes no part in the rule below, and for the same reason
it cannot confirm it either.)

**Protocol, fixed before the runs.**

* **Training.** For each of the five folds of ``benchmarks/real_patches.py`` and seed 0, ``lungseg train``'s
  defaults (the recipe of the published model: attention, hybrid, 40 epochs) on the other patients.
* **Prediction.** The held-out patients' patches with the run's own prediction (``best`` checkpoint, its
  ``tta``: the 8 symmetries) at threshold 0.5. Candidates are the 8-connected 2D components of each patch's
  mask, each with its peak probability; a tumour cross-section (an 8-connected component of the reference in
  a patch) is *found* at a bar ``b`` when the candidates peaking at ``b`` or more cover at least 10 % of it
  (the book's tumour rule, :data:`lungseg.metrics.TUMOUR_RULE`).
* **Bars.** 0.5 (nothing set aside), 0.6 (today's), 0.7, 0.8, 0.9. Only 0.7 and 0.8 are candidates for a
  new default: they are the bars that raised the pooled Dice on every one of the three synthetic sets against
  0.6 (``results/real-ct/candidate-confidence-synthetic.json``: 0.9 lowered it on seed 777), which is
  what the phantom can say about the false candidates in a lung.
* **Rule.** The bar becomes the highest candidate ``b`` whose tumour cross-sections found on the held-out
  real patches are at most 2 % fewer than at 0.6 (over all folds; at most ``floor(0.02 * found at 0.6)``
  lost) and whose pooled Dice is at least 0.6's minus 0.005. If neither passes, 0.6 stays.
* **A second seed, added after seed 0 chose 0.8 and before it ran** (``--seeds 1``): the chosen bar stands
  only if the same rule, applied to seed 1's folds alone, also lets it pass (at most 2 % of the cross-sections
  found at 0.6 lost, pooled Dice within 0.005); if not, the bar goes back to 0.6.
* *Added after seed 1 ran (2026-12-05), not part of what was stated before:* the two whole test scans had been
  measured at 0.8 before that bullet was written. Seed 1's runs were trained by ``--seeds 1``; its committed
  result was then written by ``--seeds 1 --confirm 0.8``, which re-scores the kept runs (hence no training
  times) and applies the bullet above as :func:`confirms`, recording ``confirmation`` instead of a
  ``decision`` of its own (which would have named 0.7, a second choice the bullet does not allow).
* **What it cannot show.** The patches are 2D axial patches; ``predict`` applies the bar to 3D candidates of
  the three planes' averaged map. A 3D candidate keeps its highest slice (so the 2D test is stricter than
  3D), but averaging three planes lowers peaks where the planes disagree (so it is milder). The two whole
  test scans are measured once afterwards, and the check on real scans outside ``shared/`` is the issue's.

Usage: ``python benchmarks/real_patch_confidence.py [--seeds 0] [--work DIR] [--out results/real-patches/confidence.json]``
(about 3 minutes a fold on the 2-core machine; the runs are kept under ``--work``, so scoring re-runs
without training).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_patches as rp  # noqa: E402

BARS = (0.5, 0.6, 0.7, 0.8, 0.9)
TODAY = 0.6
CANDIDATES = (0.7, 0.8)
MAX_LOST_SHARE = 0.02
MAX_DICE_DROP = 0.005
EIGHT = np.ones((3, 3), dtype=bool)


def train_fold(fold: int, seed: int, work: Path) -> tuple[Path, float | None]:
    """``lungseg train``'s defaults on the patients outside ``fold`` (skipped when the run exists)."""
    from lungseg.config import TrainConfig
    from lungseg.training.trainer import Trainer

    out = work / f"fold{fold}-seed{seed}"
    if (out / "run" / "metrics.json").is_file():
        return out / "run", None
    images, masks, patient = rp.load_patches()
    train = ~np.isin(patient, rp.FOLDS[fold])
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "train.npz", images=images[train], masks=masks[train], intensity="unit")
    config = TrainConfig(data=str(out / "train.npz"), model="attention", epochs=40, seed=seed, device="cpu")
    started = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the split-by-image warning: scored on held-out patients here
        Trainer(config, out / "run", progress=False).run()
    return out / "run", round(time.time() - started, 1)


def candidates_and_sections(probs: np.ndarray, reference: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """One patch: its candidates' peaks and masks, and its tumour cross-sections."""
    labels, n = ndimage.label(probs >= threshold, structure=EIGHT)
    peaks = np.asarray(ndimage.maximum(probs, labels, np.arange(1, n + 1)), dtype=float) if n else np.zeros(0)
    sections, m = ndimage.label(reference, structure=EIGHT)
    return {"labels": labels, "peaks": peaks, "sections": sections, "n_sections": m}


def score_bar(patches: list[dict[str, Any]], references: np.ndarray, bar: float) -> dict[str, Any]:
    """Pooled Dice, cross-sections found and candidates kept when candidates peaking below ``bar`` are set aside."""
    from lungseg.metrics import confusion

    masks, found, sections, kept, false_kept = [], 0, 0, 0, 0
    for patch, reference in zip(patches, references):
        keep_ids = np.nonzero(patch["peaks"] >= bar)[0] + 1
        mask = np.isin(patch["labels"], keep_ids)
        masks.append(mask)
        kept += len(keep_ids)
        false_kept += sum(not (reference & (patch["labels"] == i)).any() for i in keep_ids)
        for s in range(1, patch["n_sections"] + 1):
            section = patch["sections"] == s
            sections += 1
            found += int(mask[section].sum() >= 0.1 * section.sum() and mask[section].any())
    counts = confusion(np.stack(masks), references.astype(bool))
    return {"pooled_dice": round(counts.dice, 4), "recall": round(counts.recall, 4), "sections_found": found,
            "sections": sections, "candidates_kept": kept, "false_candidates_kept": false_kept}


def decide(scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The rule of the module docstring, applied to the scores pooled over folds (keys: ``str(bar)``)."""
    allowed = math.floor(MAX_LOST_SHARE * scores[str(TODAY)]["sections_found"])
    passes = {str(b): confirms(scores, b) for b in CANDIDATES}
    chosen = max((b for b in CANDIDATES if passes[str(b)]), default=TODAY)
    return {"allowed_lost": allowed, "passes": passes, "chosen_bar": chosen, "changes_default": chosen != TODAY}


def confirms(scores: dict[str, dict[str, Any]], bar: float) -> bool:
    """Whether ``bar`` passes the rule's two tests on ``scores`` (pooled over folds, keys ``str(bar)``): at most
    2 % of the cross-sections found at 0.6 lost, and the pooled Dice within 0.005 of 0.6's (compared at the
    4 decimals the scores are rounded to)."""
    today, row = scores[str(TODAY)], scores[str(bar)]
    return (today["sections_found"] - row["sections_found"] <= math.floor(MAX_LOST_SHARE * today["sections_found"])
            and round(row["pooled_dice"] - today["pooled_dice"], 4) >= -MAX_DICE_DROP)


def run(seeds: list[int], work: Path) -> dict[str, Any]:
    from lungseg.inference import Predictor

    images, masks, patient = rp.load_patches()
    per_fold, all_patches, all_refs, train_s = [], [], [], []
    for seed in seeds:
        for fold, held_out in enumerate(rp.FOLDS):
            run_dir, seconds = train_fold(fold, seed, work)
            train_s.append(seconds)
            test = np.isin(patient, held_out)
            probs = Predictor.from_run_dir(run_dir, device="cpu", precision="fp32").probabilities(images[test])
            patches = [candidates_and_sections(p, r) for p, r in zip(probs, masks[test].astype(bool))]
            per_fold.append({"fold": fold, "seed": seed, "held_out_patients": list(held_out),
                             "bars": {str(b): score_bar(patches, masks[test], b) for b in BARS}})
            all_patches += patches
            all_refs.append(masks[test])
            print(f"fold {fold} seed {seed}: " + ", ".join(
                f"{b}: {per_fold[-1]['bars'][str(b)]['pooled_dice']:.3f}/{per_fold[-1]['bars'][str(b)]['sections_found']}"
                for b in BARS), flush=True)
    pooled = {str(b): score_bar(all_patches, np.concatenate(all_refs), b) for b in BARS}
    return {"command": "python benchmarks/real_patch_confidence.py --seeds " + " ".join(map(str, seeds)),
            "protocol": __doc__.split("**Protocol, fixed before the runs.**")[1].split("Usage:")[0].strip(),
            "data": "shared/realct/msd-task06-2mm-patches (13 patients; patient k = patches 10k..10k+9)",
            "train_seconds": train_s, "pooled_over_folds": pooled, "folds": per_fold, "decision": decide(pooled)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--work", default="/tmp/lungseg-real-confidence", help="where the runs are kept")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    ap.add_argument("--confirm", type=float, default=None, choices=CANDIDATES,
                    help="check a bar already chosen on other seeds (confirms()) instead of choosing one")
    args = ap.parse_args(argv)
    result = run(args.seeds, Path(args.work))
    if args.confirm is not None:
        result["command"] += f" --confirm {args.confirm}"
        del result["decision"]  # a check of a bar chosen on other seeds, not a choice of its own
        result["confirmation"] = {"bar": args.confirm, "confirmed": confirms(result["pooled_over_folds"], args.confirm)}
        print("confirmation:", result["confirmation"])
    for b, row in result["pooled_over_folds"].items():
        print(f"bar {b}: {row}")
    if "decision" in result:
        print("decision:", result["decision"])
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
