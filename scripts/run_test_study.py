"""Score a profile's published grid on its large independent test study and publish the tables.

    python scripts/run_test_study.py --profile medium        # or: make test-study

Generates the test study once into ``data/phantom-<profile>-test`` (git-ignored; seed
:data:`lungseg.experiment.teststudy.TEST_STUDY_SEED`, never used for training, tuning or checkpoint
choice), evaluates every run of ``results/<profile>/experiment`` on all of its patients, CRF off and
on, and writes ``results/<profile>/test-study`` (:func:`lungseg.experiment.teststudy.evaluate_on_test_study`).
A run scored earlier with the same weights, study and precision is reused (``--rescore`` scores it again).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from lungseg.data.phantom import load_study
    from lungseg.errors import LungsegError
    from lungseg.experiment import grid_workers, profile_settings, train_config
    from lungseg.experiment.teststudy import (
        TEST_STUDY_PATIENTS,
        TEST_STUDY_SEED,
        evaluate_on_test_study,
        prepare_test_study,
        study_composition,
    )

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="medium", help="profile whose published grid is scored (default %(default)s)")
    ap.add_argument("--patients", type=int, default=TEST_STUDY_PATIENTS, help="test-study patients (default %(default)s)")
    ap.add_argument("--data-seed", type=int, default=TEST_STUDY_SEED, help="test-study seed (default %(default)s)")
    ap.add_argument("--precision", default=None,
                    help="inference numerics: auto (fp32 on a CPU), fp32 or bf16 (default: the profile's training"
                         " numerics, bf16 for medium, as the published scores were made)")
    ap.add_argument("--workers", type=int, default=None,
                    help="runs scored side by side, one thread each on 2 cores (default: the profile's grid workers)")
    ap.add_argument("--generate-workers", type=int, default=os.cpu_count() or 1,
                    help="processes generating the study's patients (default: one per core, %(default)s here)")
    ap.add_argument("--rescore", action="store_true",
                    help="score every run again (default: runs scored earlier with the same weights, study and"
                         " precision are reused, so a grid given more seeds scores only its new runs)")
    args = ap.parse_args(argv)
    settings = profile_settings(args.profile)
    workers = grid_workers(settings) if args.workers is None else args.workers
    if workers < 1:
        ap.error(f"--workers must be a positive integer, got {workers}")
    if args.generate_workers < 1:
        ap.error(f"--generate-workers must be a positive integer, got {args.generate_workers}")
    started = time.perf_counter()
    data = prepare_test_study(settings, n_patients=args.patients, data_seed=args.data_seed,
                              workers=args.generate_workers)
    print(f"test study {data.name}: {study_composition(load_study(data).manifest)}", flush=True)
    try:
        results = evaluate_on_test_study(settings, data, precision=args.precision or train_config(settings).precision,
                                         workers=workers,
                                         reuse=not args.rescore)
    except (FileNotFoundError, LungsegError) as err:  # no published grid; numerics this machine lacks
        print(f"error: {err}", file=sys.stderr)
        return 2
    reused = sum(r["status"] == "reused" for r in results["runs"])
    print(f"{len(results['runs']) - reused} runs scored, {reused} reused from an earlier call,"
          f" in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
