"""Does a 95 % interval of lungseg's cover what it claims to? A coverage check on fresh phantom studies.

One fixed published model (the medium profile's attention + hybrid run of seed 0) is evaluated on
``--studies`` freshly generated test studies of ``--patients`` patients each (their own data seeds,
never used for training, tuning or checkpoint choice) and on one large reference study of
``--reference`` patients. For every study the pooled Dice gets the interval the results table uses
(:func:`lungseg.metrics.crossed_interval`; with one model only the patients are resampled); the check
counts how often that interval holds the large study's pooled Dice. A 95 % interval should hold it in
about 95 % of the studies (the reference has its own, smaller, sampling error, stated in the output).

Patients are generated and segmented in memory (no DICOM written), at the medium profile's geometry.

Usage::

    python benchmarks/interval_coverage.py --studies 20 --patients 50 --reference 500

(the published run: 63 min on the 2-core machine, shared with other work), written to the medium
profile's :attr:`lungseg.experimentdir.ProfileDir.coverage_path`, which chapter 5 reads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lungseg.data.phantom import generate_patient  # noqa: E402
from lungseg.experiment import phantom_config, profile_settings  # noqa: E402
from lungseg.experimentdir import ProfileDir  # noqa: E402
from lungseg.files import write_json  # noqa: E402
from lungseg.inference import Predictor  # noqa: E402
from lungseg.metrics import crossed_interval  # noqa: E402
from lungseg.paths import portable  # noqa: E402

#: Data seeds of the fresh studies start here: far from the published study's seed.
FIRST_STUDY_SEED = 10_000


def patient_counts(predictor: Predictor, study_seed: int, n_patients: int, config) -> np.ndarray:
    """``(n_patients, 2)``: 2TP and 2TP + FP + FN of each generated patient's slices, pooled over the patient."""
    from tqdm.auto import tqdm

    counts = np.zeros((n_patients, 2))
    for i in tqdm(range(n_patients), desc=f"study {study_seed}", leave=False):
        volume, _ = generate_patient((study_seed, i), config)
        probs = predictor.probabilities(volume.image)
        pred = predictor.binarize(volume.image, probs, crf=False).astype(bool)
        truth = volume.mask.astype(bool)
        tp = np.count_nonzero(pred & truth)
        counts[i] = (2 * tp, 2 * tp + np.count_nonzero(pred ^ truth))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="results/medium/experiment/runs/attention-hybrid-seed0")
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--reference", type=int, default=600)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--out", default=None, help="JSON written here (default: the medium profile's coverage file)")
    args = parser.parse_args(argv)
    started = time.time()
    settings = profile_settings("medium")
    config = phantom_config(settings)
    predictor = Predictor.from_run_dir(ROOT / args.run, device="cpu", precision="fp32")
    reference = patient_counts(predictor, FIRST_STUDY_SEED - 1, args.reference, config)
    truth = float(reference[:, 0].sum() / reference[:, 1].sum())
    ref_interval = crossed_interval(reference[:, 0][None], reference[:, 1][None], n_boot=args.n_boot)
    studies = []
    for k in range(args.studies):
        counts = patient_counts(predictor, FIRST_STUDY_SEED + k, args.patients, config)
        ci = crossed_interval(counts[:, 0][None], counts[:, 1][None], n_boot=args.n_boot, seed=k)
        studies.append({"data_seed": FIRST_STUDY_SEED + k, **ci, "covers": ci["low"] <= truth <= ci["high"]})
        print(f"study {k}: pooled Dice {ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}] "
              f"{'covers' if studies[-1]['covers'] else 'MISSES'} {truth:.3f}", flush=True)
    coverage = sum(s["covers"] for s in studies) / len(studies)
    result = {
        "run": portable(ROOT / args.run), "figure": "pooled Dice, CRF off", "interval": "95 % crossed bootstrap "
        "(patients resampled; one model)", "n_boot": args.n_boot, "patients_per_study": args.patients,
        "reference": {"patients": args.reference, "data_seed": FIRST_STUDY_SEED - 1, "pooled_dice": truth,
                      "its_own_interval": [ref_interval["low"], ref_interval["high"]]},
        "studies": studies, "coverage": coverage,
        "mean_half_width": float(np.mean([(s["high"] - s["low"]) / 2 for s in studies])),
        "seconds": round(time.time() - started, 1),
    }
    print(f"coverage {coverage:.0%} of {len(studies)} studies (target >= 90 %); mean half-width "
          f"{result['mean_half_width']:.3f}; {result['seconds']:.0f} s")
    write_json(result, ROOT / args.out if args.out else ProfileDir(ROOT / "results" / "medium").coverage_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
