"""Does a larger synthetic training study help the medium grid? Single cells, at the same compute.

    python benchmarks/training_study_size.py --patients 125 --seed 0 [--model attention --loss hybrid]
    python benchmarks/training_study_size.py --collect-only

Trains one cell of the medium profile (its tuned α, λ, learning rate and threshold for the loss, its 16
epochs of 1344 patches: the same arithmetic as a published grid run) on a larger synthetic study of the
same generator and data seed (patient ``i`` is the same patient in every study size, so the published
study's 32 patients are its first 32), split 80 / 20 % into training and validation patients (no test
split: the independent test study is the test). The run (``runs/study-size``, git-ignored) is scored,
CRF off, on the profile's independent test study (200 patients when the published numbers were
measured; 400 since). Every scored run found there is then
collected, beside the published run of the same cell and seed on the same patients
(``results/medium/test-study``), into the profile's
:attr:`lungseg.experimentdir.ProfileDir.study_size_path`, which chapter 5 reads.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RUNS = ROOT / "runs" / "study-size"
SCORED = "test-study-crf-off.json"
FIGURES = ("checkpoint_epoch", "lesion_recall", "small_tumor_recall")


def _summary(evaluation: dict[str, Any]) -> dict[str, Any]:
    return {"pooled_dice": evaluation["pooled"]["dice"], "pooled_precision": evaluation["pooled"]["precision"],
            "pooled_recall": evaluation["pooled"]["recall"], **{k: evaluation[k] for k in FIGURES}}


def collect() -> dict[str, Any]:
    """Every scored run under :data:`RUNS`, with its published counterpart, written to the profile's file."""
    import json

    from lungseg.data.phantom import load_study
    from lungseg.errors import LungsegError
    from lungseg.experiment.teststudy import study_composition
    from lungseg.experimentdir import ProfileDir
    from lungseg.files import write_json

    published = ProfileDir(ROOT / "results" / "medium")
    rows = []
    found = sorted(RUNS.glob(f"*-patients/*/{SCORED}"))
    if not found:  # a fresh clone has no runs: the published table would be overwritten by an empty one
        raise SystemExit(f"no scored run under {RUNS.relative_to(ROOT)}; {published.study_size_path.relative_to(ROOT)}"
                         " is left as it is (train and score one first: see the usage above)")
    for scored in found:
        run = scored.parent
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
        split = json.loads((run / "split.json").read_text(encoding="utf-8"))
        with open(run / "history.csv", newline="", encoding="utf-8") as f:
            train_s = sum(float(r["time_s"]) for r in csv.DictReader(f))
        published_run = published.test_study.run(run.name)
        if not published_run.evaluation_path(False).is_file():
            raise SystemExit(f"{scored}: the published {run.name} has no test-study evaluation to compare with"
                             f" ({published_run.evaluation_path(False).relative_to(ROOT)}); run `make test-study` first")
        reference = published_run.read_evaluation(False)
        evaluation = json.loads(scored.read_text(encoding="utf-8"))
        if evaluation.get("n_patients") != reference.get("n_patients"):  # the test study grew since it was scored
            raise SystemExit(f"{scored}: scored on {evaluation.get('n_patients')} test patients, the published"
                             f" {run.name} on {reference.get('n_patients')}; score it again on today's test study"
                             " (without --collect-only) before comparing the two")
        published_split = json.loads((published.grid.run(run.name).path / "split.json").read_text(encoding="utf-8"))
        rows.append({"run": run.name, "model": config["model"], "loss": config["loss"], "seed": config["seed"],
                     "study_patients": int(run.parent.name.split("-")[0]),
                     "train_patients": len(split["train"]), "val_patients": len(split["val"]),
                     "epochs": config["epochs"], "samples_per_epoch": config["samples_per_epoch"],
                     "train_s": round(train_s, 1), **_summary(evaluation),
                     "published": {"train_patients": len(published_split["train"]),
                                   "val_patients": len(published_split["val"]), **_summary(reference)}})
    try:
        test = load_study(ROOT / "data" / "phantom-medium-test").manifest
    except LungsegError as exc:
        raise SystemExit(f"{exc}; `python scripts/run_test_study.py` generates it") from None
    result = {"test_study": study_composition(test), "figure": "CRF off, scored on every test-study patient",
              "runs": rows}
    write_json(result, published.study_size_path)
    return result


def main(argv: list[str] | None = None) -> int:
    from lungseg.evaluation import evaluate_run_crf_settings
    from lungseg.experiment import prepare_data, profile_settings, run_name, train_config, tuned_settings
    from lungseg.experiment.teststudy import prepare_test_study
    from lungseg.rundir import RunDir
    from lungseg.training import train

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=125, help="training + validation patients (default %(default)s)")
    ap.add_argument("--val-fraction", type=float, default=0.2, help="validation share (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="training seed (default %(default)s)")
    ap.add_argument("--model", default="attention")
    ap.add_argument("--loss", default="hybrid")
    ap.add_argument("--collect-only", action="store_true", help="only collect the scored runs")
    args = ap.parse_args(argv)
    if not args.collect_only:
        published = profile_settings("medium")
        settings = profile_settings("medium", n_patients=args.patients, data_dir=f"data/phantom-medium-{args.patients}")
        data = prepare_data(settings, progress=False)
        config = train_config(settings, data, split_fractions=(1 - args.val_fraction, args.val_fraction, 0.0))
        config = dataclasses.replace(config, model=args.model, loss=args.loss, seed=args.seed,
                                     **tuned_settings(published).get(args.loss, {}))
        run = RunDir(RUNS / f"{args.patients}-patients" / run_name(args.model, args.loss, args.seed))
        started = time.perf_counter()
        if not run.is_finished():
            train(config, run.path, resume=run.config_path.is_file(), progress=False)
        print(f"{run.path.name}: trained in {time.perf_counter() - started:.0f} s", flush=True)
        evaluate_run_crf_settings(run.path, prepare_test_study(published, progress=False), {False: run.path / SCORED},
                                  split="all", precision="bf16", progress=False)
    for row in collect()["runs"]:
        print(f"{row['study_patients']} patients, {row['run']}: pooled Dice {row['pooled_dice']:.3f} "
              f"(published {row['published']['pooled_dice']:.3f}), lesion recall {row['lesion_recall']:.3f} "
              f"(published {row['published']['lesion_recall']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
