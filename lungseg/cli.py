"""The ``lungseg`` command line: thin wrappers over the library functions the notebooks call.

Verbs: ``phantom``, ``fetch``, ``train``, ``evaluate``, ``experiment``, ``predict``, ``bench``.
Every verb's ``--help`` lists all flags with their defaults. User errors (bad arguments, missing
files, bad data) print one line ``error: ...`` and exit with status 2; set ``LUNGSEG_DEBUG=1`` to
see the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lungseg.cli_options import (
    Formatter,
    Parser,
    add_precision,
    add_train_options,
    bounded_int,
    config_from_args,
    probability,
    train_defaults,
)
from lungseg.errors import LungsegError
from lungseg.experimentdir import ExperimentDir
from lungseg.limits import MAX_BATCH_SIZE, MAX_BOOTSTRAP, describe_limits


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lungseg`` command (all verbs)."""
    from lungseg import __version__

    parser = Parser(
        prog="lungseg", formatter_class=Formatter,
        description="Attention-Enhanced Residual U-Net with Hybrid Loss for lung tumour segmentation:"
                    " data, training, evaluation and prediction.",
    )
    parser.add_argument("--version", action="version", version=f"lungseg {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for add_verb in (_phantom_parser, _fetch_parser, _train_parser, _evaluate_parser, _experiment_parser, _tune_parser,
                      _predict_parser, _export_parser, _bench_parser):
        add_verb(sub)
    return parser


def _phantom_parser(sub: Any) -> None:
    """The ``phantom`` verb's flags."""
    p = sub.add_parser("phantom", formatter_class=Formatter, help="generate a synthetic chest-CT study (DICOM + NIfTI masks)",
                       description="Generate a synthetic chest-CT study: one DICOM series and one NIfTI tumour mask per patient.")
    p.add_argument("--out", required=True, help="output folder (required)")
    p.add_argument("--patients", type=int, default=20, help="number of patients (default: 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--size", type=int, default=None, help="in-plane size in pixels (default: the generator's, 256)")
    p.add_argument("--slices", type=int, default=None, help="slices per patient (default: the generator's)")
    p.add_argument("--randomise", action="store_true",
                   help="repaint every patient with random tissue intensities, textures, tumour cores, bias field,"
                        " blur, resolution and noise (domain randomisation, lungseg.data.phantom.randomise; default: off)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: off)")


def _fetch_parser(sub: Any) -> None:
    """The ``fetch`` verb's flags."""

    def hex_digest(algorithm: str) -> Any:
        def parse(value: str) -> str:
            from lungseg.data.fetch import check_hex

            try:
                return check_hex(value, algorithm)
            except LungsegError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        return parse

    p = sub.add_parser("fetch", formatter_class=Formatter, help="download and verify a public dataset",
                       description="Download a public dataset, verify its checksum and unpack it.\n"
                                   "The manifest's checksum (or --sha256/--md5) is checked before anything is unpacked;\n"
                                   "the SHA-256 of the first verified download is recorded in TO/.lungseg-fetch.json and\n"
                                   "checked on every later download or extraction there. A mismatch deletes the archive.")
    p.add_argument("name", nargs="?", default="msd-lung", help="dataset name (default: msd-lung)")
    p.add_argument("--to", required=True, help="destination folder (required)")
    p.add_argument("--url", default=None, help="alternative download URL, checked like the manifest's (default: the manifest's)")
    p.add_argument("--sha256", type=hex_digest("sha256"), default=None, metavar="HEX",
                   help="expected SHA-256 of the archive (64 hex digits); replaces the manifest's checksum (default: the manifest's)")
    p.add_argument("--md5", type=hex_digest("md5"), default=None, metavar="HEX",
                   help="expected MD5 of the archive (32 hex digits); replaces the manifest's checksum (default: the manifest's)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the manifest's checksum, or unpack when none is known, with a warning; the SHA-256"
                        " recorded in --to is still checked (default: off)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: off)")


def _add_dicom_options(p: argparse.ArgumentParser) -> None:
    """``--roi`` and ``--series-uid``: which mask and which series of a DICOM --data folder."""
    p.add_argument("--roi", default=None, metavar="NAME",
                   help="DICOM --data: the RTSTRUCT ROI or SEG segment that is the tumour, by name, case-insensitive"
                        " (default: the first name matching GTV, tumour, tumor, nodule or lesion)")
    p.add_argument("--series-uid", dest="series_uid", default=None, metavar="UID",
                   help="DICOM --data: read only the CT series with this SeriesInstanceUID (default: per study, the"
                        " series the RTSTRUCT/SEG references, else the axial CT series with the most slices)")


def _train_parser(sub: Any) -> None:
    """The ``train`` verb's flags."""
    p = sub.add_parser("train", formatter_class=Formatter, epilog=describe_limits(), help="train a model into a run directory",
                       description="Train a segmentation model. With --resume, continue the run in --out from its last checkpoint"
                                   " (flags not given are taken from the run's saved configuration).")
    p.add_argument("--data", default=None, help="dataset: phantom study, DICOM folder, MSD folder or .npz (required unless --resume)")
    _add_dicom_options(p)
    p.add_argument("--out", required=True,
                   help="run directory: a new or empty folder, or a run of the same configuration; locked while it"
                        " trains, so a second train there is refused (required)")
    p.add_argument("--seed", type=int, default=None, help=f"training seed (default: {train_defaults().seed})")
    p.add_argument("--device", default=None, help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps (default: auto)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint (default: off)")
    p.add_argument("--config", default=None, help="JSON file of TrainConfig fields; flags override it (default: none)")
    add_train_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: off)")


def _evaluate_parser(sub: Any) -> None:
    """The ``evaluate`` verb's flags."""
    p = sub.add_parser("evaluate", formatter_class=Formatter, epilog=describe_limits(),
                       help="evaluate a run: all metrics with bootstrap CIs",
                       description="Evaluate a trained run on --data, or any tool's masks (--pred) against reference"
                                   " masks (--ref), <case>.nii.gz/.nii/.dcm (DICOM SEG) paired by name; writes"
                                   " METRICS.json and METRICS_per_image.csv.gz (gzip-compressed CSV) next to it.")
    p.add_argument("--run", help="run directory (required with --data, default: none)")
    p.add_argument("--data", help="dataset to evaluate the run on (required with --run, default: none)")
    p.add_argument("--pred", help="folder of predicted masks to score instead of a run (required with --ref, default: none)")
    p.add_argument("--ref", help="folder of reference masks, one per case of --pred (required with --pred, default: none)")
    _add_dicom_options(p)
    p.add_argument("--out", required=True, help="metrics JSON file to write (required)")
    p.add_argument("--crf", action="store_true", help="refine with the CRF of eq. (10) (default: off)")
    p.add_argument("--split", default="auto", choices=("auto", "test", "val", "train", "all"),
                   help="patients: auto = the run's test split if --data is its training data, else all (default: auto)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"), help="weights to use (default: best)")
    p.add_argument("--n-boot", type=bounded_int(0, MAX_BOOTSTRAP), default=1000,
                   help="bootstrap resamples of patients for the 95%% CIs, 0 = none (default: 1000)")
    p.add_argument("--no-robustness", action="store_true", help="skip the intensity-robustness measurement (default: off)")
    p.add_argument("--tolerance-mm", type=float, default=2.0,
                   help="surface-Dice tolerance in mm of the boundary figures (default: 2.0)")
    p.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH_SIZE), default=16,
                   help="slices per forward pass (default: 16)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    add_precision(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: off)")


def _experiment_parser(sub: Any) -> None:
    """The ``experiment`` verb's flags."""
    p = sub.add_parser("experiment", formatter_class=Formatter, epilog=describe_limits(), help="the paper's model × loss × CRF × seed grid",
                       description="Train and evaluate {unet, attention} × {dice, focal, hybrid} × CRF {off, on} × seeds,"
                                   f" reusing finished runs; writes {ExperimentDir.CELLS}, {ExperimentDir.RESULTS} and"
                                   f" {ExperimentDir.DIFFERENCES}.")
    p.add_argument("--data", required=True, help="dataset with masks (required)")
    p.add_argument("--out", required=True, help="experiment folder (required)")
    p.add_argument("--models", default="unet,attention", help="comma-separated models (default: unet,attention)")
    p.add_argument("--losses", default="dice,focal,hybrid", help="comma-separated losses (default: dice,focal,hybrid)")
    p.add_argument("--crf", default="both", choices=("both", "off", "on"), help="CRF settings to evaluate (default: both)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default: 0,1,2)")
    p.add_argument("--n-boot", type=bounded_int(0, MAX_BOOTSTRAP), default=0, help="per-run bootstrap resamples"
                   " (default: 0; the table's CIs are over seeds)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    add_train_options(p, skip=("model", "loss"))
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: off)")


def _tune_parser(sub: Any) -> None:
    """The ``tune`` verb's flags."""
    p = sub.add_parser("tune", formatter_class=Formatter, epilog=describe_limits(), help="choose α, λ, lr and the threshold on validation data",
                       description="Train the candidate settings of each loss (lungseg.experiment.tune.SEARCH_SPACE),"
                                   " score each on the validation patients over thresholds, and choose per loss;"
                                   f" writes {ExperimentDir.TUNE_TABLE} and {ExperimentDir.TUNE_CHOICE}. Test patients are"
                                   " never used.")
    p.add_argument("--data", required=True, help="dataset with masks (required)")
    p.add_argument("--out", required=True, help="tuning folder (required)")
    p.add_argument("--losses", default="dice,focal,hybrid", help="comma-separated losses (default: dice,focal,hybrid)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    add_train_options(p, skip=("loss",))
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: off)")


def _predict_parser(sub: Any) -> None:
    """The ``predict`` verb's flags."""
    p = sub.add_parser("predict", formatter_class=Formatter, epilog=describe_limits(), help="segment a DICOM series, NIfTI, PNG/JPEG or .npz",
                       description="Segment tumours with a trained run; writes the mask in the input's geometry and a"
                                   " lesion summary (count; per lesion its size and, for a CT volume, its volume in mL,"
                                   " slices and the network's peak and mean probability). A DICOM"
                                   " series' mask can be written as a DICOM SEG or RT Structure Set that loads on top"
                                   " of the series in a viewer. A folder of studies (subfolders holding one DICOM series"
                                   " each, and/or .nii/.nii.gz files) gives one output folder per study and a"
                                   " summary.csv.")
    p.add_argument("input", help="DICOM series folder, .nii/.nii.gz, PNG/JPEG file or folder, .npz with 'images', or a"
                                 " folder of studies")
    p.add_argument("--run", "--model", dest="run", required=True,
                   help="run directory, or a model .zip of `lungseg export` (required)")
    p.add_argument("--out", required=True,
                   help="output .nii.gz / .dcm / .png / .npz file or folder; no file written (the extras' derived names"
                        " included) may be the input, a link to it, or lie in the model (required)")
    p.add_argument("--format", dest="output_format", default="nifti", choices=("nifti", "dicom-seg", "rtstruct"),
                   help="a volume's mask as NIfTI, DICOM SEG or RT Structure Set; the DICOM ones need a DICOM series"
                        " input (default: nifti)")
    p.add_argument("--prob", action="store_true", help="also write the probability map (default: off)")
    p.add_argument("--attention", action="store_true", help="also write the attention maps of every gate (default: off)")
    p.add_argument("--crf", action="store_true", help="refine with the CRF of eq. (10) (default: off)")
    p.add_argument("--threshold", type=probability, default=None, help="probability threshold (default: the run's, 0.5)")
    p.add_argument("--tta", default=None, metavar="MODE",
                   help="test-time augmentation: none, flips (the mean probability over the 4 flips) or dihedral"
                        " (over the 8 symmetries of the square), one forward pass each (default: the run's)")
    p.add_argument("--region", default="auto", choices=("auto", "lungs", "all"),  # scan.REGIONS (no torch here)
                   help="where in a CT volume to look for tumours: lungs (the lungs and their walls), all, or auto (the"
                        " lungs for a scan in HU, all for one scaled to [0, 1]; default: auto)")
    p.add_argument("--keep-outside-lungs", action="store_true",
                   help="keep in the mask the candidates that lie mostly outside the lungs (in the mediastinum or"
                        " under the diaphragm); by default they are set aside and listed in the lesion summary")
    p.add_argument("--keep-unsure", action="store_true",
                   help="keep in the mask the candidates of three planes (the lungs searched) whose probability peaks"
                        " less than 0.1 above the threshold; by default they are set aside and listed in the lesion"
                        " summary")
    p.add_argument("--planes", default="auto", choices=("auto", "axial", "three"),  # planes.PLANES (no torch here)
                   help="slices of a CT volume the network runs on: axial, three (axial, coronal and sagittal,"
                        " probabilities averaged; a model that states its pixel size only), or auto (three for such"
                        " a model, axial for one that resizes whole slices; default: auto)")
    p.add_argument("--coarse-pass", default="auto", choices=("auto", "on", "off"),  # coarse.COARSE_PASSES
                   help="also run the network at twice its pixel size and keep the higher probability, for tumours"
                        " larger than its training patches held (a model that states its pixel size only); auto is"
                        " off, as benchmarks/coarse_pass.py did not adopt it (default: auto)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"), help="weights to use (default: best)")
    p.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH_SIZE), default=16,
                   help="slices per forward pass (default: 16)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    add_precision(p, prediction=True)
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: off)")


def _export_parser(sub: Any) -> None:
    """The ``export`` verb's flags."""
    p = sub.add_parser("export", formatter_class=Formatter, help="write a trained run as one shareable model .zip",
                       description="Write a run's weights (also as safetensors), configuration, fingerprint and a"
                                   " model card into one .zip, a MONAI bundle in a folder named after the file, for"
                                   " `lungseg predict --model model.zip` and `monai.bundle.load`.")
    p.add_argument("run", help="run directory")
    p.add_argument("out", help="the .zip to write")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"), help="weights to export (default: best)")
    p.add_argument("--force", action="store_true", help="overwrite an existing .zip (default: off)")
    p.add_argument("--pixel-mm", type=float, default=None, metavar="MM",
                   help="state the in-plane pixel size of the training images; a scan is then resampled to it"
                        " (default: the run's, usually unstated: slices are resized to the network's input size)")
    p.add_argument("--unit-window", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="for a model trained on images scaled to [0, 1]: the HU window they were scaled from, so"
                        " that it takes scans in HU (default: none; such a model then refuses HU input)")


def _bench_parser(sub: Any) -> None:
    """The ``bench`` verb's flags."""
    p = sub.add_parser("bench", formatter_class=Formatter, add_help=False, help="benchmarks (see `lungseg bench --help`)",
                       description="Benchmarks; the flags are those of lungseg.bench.")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments passed to lungseg.bench")


def _csv_list(value: str, name: str, cast: Any = str) -> list[Any]:
    items = [x.strip() for x in value.split(",") if x.strip()]
    if not items:
        raise LungsegError(f"{name} must be a comma-separated list, got {value!r}")
    try:
        return [cast(x) for x in items]
    except ValueError:
        raise LungsegError(f"{name}: expected comma-separated {cast.__name__} values, got {value!r}") from None


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _cmd_phantom(args: argparse.Namespace) -> None:
    from lungseg.data import phantom

    kwargs: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(phantom.PhantomConfig)}
    for flag, candidates in (("size", ("size", "image_size", "shape_xy", "n_pixels")), ("slices", ("slices", "n_slices", "num_slices"))):
        value = getattr(args, flag)
        if value is None:
            continue
        field = next((c for c in candidates if c in names), None)
        if field is None:
            raise LungsegError(f"--{flag} is not supported by this phantom generator (fields: {sorted(names)})")
        kwargs[field] = value
    if args.patients < 1:
        raise LungsegError(f"--patients must be >= 1, got {args.patients}")
    config = phantom.PhantomConfig(**kwargs) if kwargs else None
    randomisation = phantom.AppearanceRandomisation() if args.randomise else None
    out = phantom.generate_study(args.out, args.patients, args.seed, config=config, progress=not args.quiet,
                                 randomisation=randomisation)
    print(f"wrote a{' randomised' if args.randomise else ''} phantom study of {args.patients} patients to {out}")


def _cmd_fetch(args: argparse.Namespace) -> None:
    from lungseg.data.fetch import fetch

    if args.no_verify and (args.sha256 or args.md5):
        raise LungsegError("--no-verify contradicts --sha256/--md5: a checksum that is given is always checked")
    path = fetch(args.name, to=args.to, url=args.url, sha256=args.sha256, md5=args.md5, verify=not args.no_verify,
                 progress=not args.quiet)
    print(f"{args.name} ready in {path}")


def _cmd_train(args: argparse.Namespace) -> None:
    from lungseg.config import TrainConfig
    from lungseg.rundir import RunDir
    from lungseg.training import train

    out = Path(args.out)
    base = None
    if args.config:
        base = TrainConfig.from_json(args.config)
    run = RunDir(out)
    if args.resume and run.config_path.is_file():
        base = run.read_config()
    config = config_from_args(args, base)
    if not config.data:
        raise LungsegError("train: --data PATH is required")
    result = train(config, out, resume=args.resume, progress=not args.quiet)
    print(
        f"best validation Dice {result.best_val_dice:.4f} at epoch {result.best_epoch}"
        f" ({result.epochs_run} epochs, {result.wall_time_s:.1f} s on {result.device}); run: {out}"
    )


def _evaluate_metrics(args: argparse.Namespace) -> dict[str, Any]:
    """``evaluate --run --data`` (a trained run) or ``evaluate --pred --ref`` (mask folders)."""
    from lungseg.evaluation import evaluate_folder, evaluate_run

    if args.n_boot < 0:
        raise LungsegError(f"--n-boot must be >= 0, got {args.n_boot}")
    folders = args.pred is not None or args.ref is not None
    given = (args.pred, args.ref) if folders else (args.run, args.data)
    if None in given or (folders and (args.run or args.data)):
        raise LungsegError("evaluate takes --run RUN --data DATA (a trained run) or --pred DIR --ref DIR (mask folders)")
    if folders:
        return evaluate_folder(args.pred, args.ref, args.out, n_boot=args.n_boot, tolerance_mm=args.tolerance_mm)
    data: Any = args.data
    if args.roi is not None or args.series_uid is not None:
        from lungseg.data import open_dataset

        data = open_dataset(args.data, roi=args.roi, series_uid=args.series_uid)
    return evaluate_run(
        args.run, data, crf=args.crf, out=args.out, split=args.split, checkpoint=args.checkpoint,
        n_boot=args.n_boot, robustness=not args.no_robustness, batch_size=args.batch_size, device=args.device,
        precision=args.precision, progress=not args.quiet, tolerance_mm=args.tolerance_mm,
    )


def _cmd_evaluate(args: argparse.Namespace) -> None:
    m = _evaluate_metrics(args)
    if m.get("task") == "slice-level detection":
        t = m["test"]
        print(f"slice-level detection (no masks): accuracy {_fmt(t['accuracy'])}, sensitivity {_fmt(t['sensitivity'])},"
              f" specificity {_fmt(t['specificity'])} at area threshold {m['area_threshold']:.5f}")
    else:
        ci = m.get("ci", {})
        for agg in ("pooled", "per_image", "per_patient"):
            low, high = (ci.get(agg, {}).get("dice") or [None, None])
            band = f" [{_fmt(low)}, {_fmt(high)}]" if low is not None else ""
            print(f"Dice ({agg}): {_fmt(m[agg]['dice'])}{band}")
        print(f"small-tumour recall {_fmt(m.get('small_tumor_recall'))}; intensity robustness std"
              f" {_fmt(m.get('intensity_robustness_std'))}; {m['n_images']} images, {m['n_patients']} patients"
              f" ({m['split']} split{', CRF' if args.crf else ''})")
        b = m.get("boundary") or {}
        for agg in ("per_image", "per_patient"):
            if agg in b:
                print(f"HD95 ({agg}): {_fmt(b[agg]['hd95_mm'])} mm; surface Dice at {b['tolerance_mm']:g} mm:"
                      f" {_fmt(b[agg]['surface_dice'])}")
        if "volumes" in m:  # mask folders: volume agreement and false positives
            v = m["volumes"]
            print(f"volume bias {_fmt(v['bias_ml'])} mL, limits of agreement [{_fmt(v['limits_ml'][0])}, {_fmt(v['limits_ml'][1])}]"
                  f" mL; false positives per scan {_fmt(m['false_positives_per_scan'])}")
    print(f"wrote {args.out}")


def _cmd_experiment(args: argparse.Namespace) -> None:
    from lungseg.experiment import run_experiment
    from lungseg.experiment.grid import GRID_SPLIT

    if args.test_fraction is None:  # the grid is scored on test patients: its default split has them
        args.test_fraction = GRID_SPLIT[2]
        args.val_fraction = GRID_SPLIT[1] if args.val_fraction is None else args.val_fraction
    base = config_from_args(args)
    crf = {"both": (False, True), "off": (False,), "on": (True,)}[args.crf]
    res = run_experiment(
        args.data, args.out, models=_csv_list(args.models, "--models"), losses=_csv_list(args.losses, "--losses"),
        crf=crf, seeds=_csv_list(args.seeds, "--seeds", int), base_config=base, n_boot=args.n_boot,
        device=args.device, progress=not args.quiet,
    )
    for c in res["cells"]:
        d = c["dice_pooled"]
        band = f" [{_fmt(d['low'])}, {_fmt(d['high'])}]" if d["low"] is not None else ""
        print(f"{c['model']:>9} {c['loss']:>6} CRF {'on ' if c['crf'] else 'off'}: pooled Dice {_fmt(d['mean'])}{band}")
    print(f"wrote {ExperimentDir(args.out).cells_path} and {ExperimentDir.RESULTS}")


def _cmd_tune(args: argparse.Namespace) -> None:
    from lungseg.experiment.tune import tune

    res = tune(args.data, args.out, base_config=config_from_args(args), losses=_csv_list(args.losses, "--losses"),
               progress=not args.quiet)
    for loss, choice in res["chosen"].items():
        settings = ", ".join(f"{k} {v}" for k, v in choice.items() if k != "val_dice")
        print(f"{loss:>6}: {settings} (validation Dice {_fmt(choice['val_dice'])})")
    print(f"wrote {ExperimentDir(args.out).tune_table_path}")


def _cmd_predict(args: argparse.Namespace) -> int:
    from lungseg.inference import format_summary, predict

    summary = predict(
        args.run, args.input, args.out, output_format=args.output_format, probabilities=args.prob,
        attention=args.attention, crf=args.crf, threshold=args.threshold, batch_size=args.batch_size,
        checkpoint=args.checkpoint, device=args.device, precision=args.precision, tta=args.tta, region=args.region,
        keep_outside_lungs=args.keep_outside_lungs, keep_unsure=args.keep_unsure, planes=args.planes,
        coarse=args.coarse_pass, progress=not args.quiet,
    )
    print(format_summary(summary))
    if summary.get("failed"):  # a folder of studies: the others were segmented, the table says which failed
        print(f"error: {summary['failed']} of {len(summary['studies'])} studies failed (see {summary['files'][0]})",
              file=sys.stderr)
        return 2
    return 0


def _cmd_export(args: argparse.Namespace) -> None:
    from lungseg.inference.bundle import export_model, read_metadata

    path = export_model(args.run, args.out, checkpoint=args.checkpoint, force=args.force, pixel_mm=args.pixel_mm,
                        unit_window=tuple(args.unit_window) if args.unit_window else None)
    meta = read_metadata(path)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {meta['name']}, epoch {meta['epoch']}")


def _cmd_bench(args: argparse.Namespace) -> Any:
    import importlib

    try:
        bench = importlib.import_module("lungseg.bench")
    except ModuleNotFoundError as exc:
        if exc.name == "lungseg.bench":
            raise LungsegError("the bench verb is not available: lungseg.bench is not installed in this version") from None
        raise
    return bench.main(list(args.bench_args))


_COMMANDS = {
    "phantom": _cmd_phantom, "fetch": _cmd_fetch, "train": _cmd_train, "evaluate": _cmd_evaluate,
    "experiment": _cmd_experiment, "tune": _cmd_tune, "predict": _cmd_predict, "export": _cmd_export,
    "bench": _cmd_bench,
}


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Warnings as one ``warning: ...`` line on stderr, like the errors (set LUNGSEG_DEBUG for the source line)."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lungseg`` command; returns the exit status (0 ok, 2 user error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not os.environ.get("LUNGSEG_DEBUG"):
        warnings.showwarning = _show_warning
    parser = build_parser()
    if argv[:1] == ["bench"]:
        # lungseg.bench owns its flags (and their --help); it is imported only when asked for.
        args = argparse.Namespace(verb="bench", bench_args=argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        result = _COMMANDS[args.verb](args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (LungsegError, ValueError, OSError, KeyError, json.JSONDecodeError) as exc:
        if os.environ.get("LUNGSEG_DEBUG"):
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
