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

from lungseg.errors import LungsegError
from lungseg.experimentdir import ExperimentDir
from lungseg.limits import MAX_BATCH_SIZE, MAX_BOOTSTRAP, describe_limits

_D = None  # TrainConfig defaults, filled lazily (keeps `lungseg --help` free of torch imports)


def _defaults() -> Any:
    global _D
    if _D is None:
        from lungseg.config import TrainConfig

        _D = TrainConfig()
    return _D


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line: ``error: ...`` and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Wider help columns; defaults are written into each help string."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=36, width=100)


def _bool_flag(value: str) -> bool:
    v = value.lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected on/off, got {value!r}")


def _optional_int(value: str) -> int | None:
    if value.lower() in ("none", "native", "auto"):
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {value!r}") from None


def _bounded_int(low: int, high: int) -> Any:
    """An argparse type: an integer in ``[low, high]`` (the bounds of :mod:`lungseg.limits`)."""

    def parse(value: str) -> int:
        number = int(value) if value.strip().removeprefix("-").isdigit() else None
        if number is None or not low <= number <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {value!r}")
        return number

    return parse


def _optional_float(value: str) -> float | None:
    if value.lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {value!r}") from None


# (flag, TrainConfig field, type, help) of every training option.
def _train_options() -> list[tuple[str, str, Any, str, Sequence[str] | None]]:
    from lungseg.config import DICE_REDUCTIONS, LOSSES, MODEL_NAMES, SCHEDULES
    from lungseg.device import PRECISIONS

    return [
        ("--model", "model", str, "network: attention (AttentionResUNet) or unet", MODEL_NAMES),
        ("--loss", "loss", str, "loss: hybrid (eq. 9), dice (eq. 7), focal (eq. 8) or bce", LOSSES),
        ("--epochs", "epochs", int, "maximum number of epochs", None),
        ("--image-size", "image_size", _optional_int,
         "network input size S (multiple of 2**depth); 'none' = the data's native size, at most 256", None),
        ("--batch-size", "batch_size", int, "global batch size", None),
        ("--lr", "lr", float, "Adam learning rate η (eq. 5)", None),
        ("--weight-decay", "weight_decay", float, "Adam weight decay", None),
        ("--schedule", "schedule", str, "learning-rate schedule", SCHEDULES),
        ("--warmup-epochs", "warmup_epochs", int, "linear warm-up epochs (cosine schedule)", None),
        ("--patience", "patience", _optional_int, "early stopping after N epochs without a better validation Dice ('none' = off)", None),
        ("--base-channels", "base_channels", int, "feature maps of the first level", None),
        ("--depth", "depth", int, "number of down-sampling levels", None),
        ("--batch-norm", "batch_norm", _bool_flag, "batch normalisation (on/off)", None),
        ("--lam", "lam", float, "λ of the hybrid loss (eq. 9)", None),
        ("--alpha", "alpha", float, "α of the focal loss (eq. 8)", None),
        ("--gamma", "gamma", float, "γ of the focal loss (eq. 8)", None),
        ("--dice-reduction", "dice_reduction", str,
         "how the Dice term pools a batch: the mean of per-image Dice, or one ratio over the batch", DICE_REDUCTIONS),
        ("--patch-size", "patch_size", _optional_int,
         "side of the random training crops; validation and prediction use whole slices ('none' = whole-slice"
         " training, the paper's recipe; a size >= the slice size also trains on whole slices)", None),
        ("--foreground-fraction", "foreground_fraction", float, "share of crops centred on a tumour pixel", None),
        ("--tumour-fraction", "tumour_fraction", _optional_float,
         "share of samples drawn from tumour slices ('none' = slices drawn uniformly)", None),
        ("--samples-per-epoch", "samples_per_epoch", _optional_int,
         "crops or slices per epoch ('none' = the training slices, at least --min-samples-per-epoch)", None),
        ("--min-samples-per-epoch", "min_samples_per_epoch", int, "the least samples of an epoch when --samples-per-epoch is none", None),
        ("--augment", "augment", _bool_flag, "flips, small rotations, zoom, HU jitter (on/off)", None),
        ("--flip-lr", "flip_lr", float, "augmentation: probability of a left-right flip", None),
        ("--flip-ud", "flip_ud", float, "augmentation: probability of an up-down flip", None),
        ("--max-rotation-deg", "max_rotation_deg", float, "augmentation: largest rotation, degrees", None),
        ("--zoom", "zoom", float, "augmentation: zoom drawn in [1/zoom, zoom] (1 = none)", None),
        ("--hu-scale", "hu_scale", float, "augmentation: intensity gain drawn in [1 - s, 1 + s]", None),
        ("--hu-offset", "hu_offset", float, "augmentation: intensity offset drawn in [-o, o] HU", None),
        ("--split-seed", "split_seed", int, "seed of the patient split", None),
        ("--threshold", "threshold", float, "probability threshold of the binary mask", None),
        ("--cache-dir", "cache_dir", str, "cache of preprocessed slices, never inside --data ('none' = no cache)", None),
        ("--compile", "compile", _bool_flag, "torch.compile the model (CUDA only; on/off)", None),
        ("--precision", "precision", str,
         "forward-pass numerics: auto = bf16 autocast on CUDA >= 8.0, fp16 + loss scaling on older GPUs, fp32"
         " elsewhere; bf16 (CPU: AVX-512 BF16/AMX only); fp16 (CUDA only)",
         PRECISIONS),
    ]


def _add_train_options(p: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    d = _defaults()
    for flag, field, typ, text, choices in _train_options():
        if field in skip:
            continue
        default = getattr(d, field)
        shown = "none" if default is None else (("on" if default else "off") if isinstance(default, bool) else default)
        # not given is "absent" (SUPPRESS), never None: `--patch-size none` is a value that must reach the config
        p.add_argument(flag, dest=field, type=typ, default=argparse.SUPPRESS, choices=choices,
                       metavar=None if choices else field.upper(), help=f"{text} (default: {shown})")
    _, val, test = d.split_fractions
    p.add_argument("--val-fraction", type=float, default=None, metavar="F",
                   help=f"share of patients held out for validation (default: {val})")
    p.add_argument("--test-fraction", type=float, default=None, metavar="F",
                   help=f"share of patients held out for testing; 0 = train on all but the validation patients,"
                        f" for data with a separate test set (default: {test})")


def _config_from_args(args: argparse.Namespace, base: Any | None = None) -> Any:
    """A TrainConfig from the defaults (or ``base``) and the flags given on the command line."""
    from lungseg.config import TrainConfig

    values = (base or TrainConfig()).to_dict()
    given, options = set(vars(args)), {option[1] for option in _train_options()}
    for f in dataclasses.fields(TrainConfig):
        # a training option is in args only when given (its 'none' is None); the verbs' own flags
        # (--data, --seed, --device, --roi, ...) default to None, which means "not given"
        if f.name not in given or (f.name not in options and getattr(args, f.name) is None):
            continue
        v = getattr(args, f.name)
        values[f.name] = None if (f.name == "cache_dir" and v.lower() == "none") else v
    val, test = getattr(args, "val_fraction", None), getattr(args, "test_fraction", None)
    if val is not None or test is not None:
        _, base_val, base_test = values["split_fractions"]
        val, test = base_val if val is None else val, base_test if test is None else test
        values["split_fractions"] = [round(1.0 - val - test, 10), val, test]
    return TrainConfig.from_dict(values)


def _add_precision(p: argparse.ArgumentParser) -> None:
    from lungseg.device import PRECISIONS

    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="inference numerics: auto = bf16 autocast on CUDA >= 8.0, fp16 on older GPUs, fp32"
                        " elsewhere; bf16 on a CPU with AVX-512 BF16/AMX is about 2x faster (default: auto)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lungseg`` command (all verbs)."""
    from lungseg import __version__

    parser = _Parser(
        prog="lungseg", formatter_class=_Formatter,
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
    p = sub.add_parser("phantom", formatter_class=_Formatter, help="generate a synthetic chest-CT study (DICOM + NIfTI masks)",
                       description="Generate a synthetic chest-CT study: one DICOM series and one NIfTI tumour mask per patient.")
    p.add_argument("--out", required=True, help="output folder (required)")
    p.add_argument("--patients", type=int, default=20, help="number of patients (default: 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--size", type=int, default=None, help="in-plane size in pixels (default: the generator's, 256)")
    p.add_argument("--slices", type=int, default=None, help="slices per patient (default: the generator's)")
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

    p = sub.add_parser("fetch", formatter_class=_Formatter, help="download and verify a public dataset",
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
    p = sub.add_parser("train", formatter_class=_Formatter, epilog=describe_limits(), help="train a model into a run directory",
                       description="Train a segmentation model. With --resume, continue the run in --out from its last checkpoint"
                                   " (flags not given are taken from the run's saved configuration).")
    p.add_argument("--data", default=None, help="dataset: phantom study, DICOM folder, MSD folder or .npz (required unless --resume)")
    _add_dicom_options(p)
    p.add_argument("--out", required=True,
                   help="run directory: a new or empty folder, or a run of the same configuration; locked while it"
                        " trains, so a second train there is refused (required)")
    p.add_argument("--seed", type=int, default=None, help=f"training seed (default: {_defaults().seed})")
    p.add_argument("--device", default=None, help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps (default: auto)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint (default: off)")
    p.add_argument("--config", default=None, help="JSON file of TrainConfig fields; flags override it (default: none)")
    _add_train_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: off)")


def _evaluate_parser(sub: Any) -> None:
    """The ``evaluate`` verb's flags."""
    p = sub.add_parser("evaluate", formatter_class=_Formatter, epilog=describe_limits(),
                       help="evaluate a run: all metrics with bootstrap CIs",
                       description="Evaluate a trained run on --data, or any tool's masks (--pred) against reference"
                                   " masks (--ref), <case>.nii.gz/.nii/.dcm (DICOM SEG) paired by name; writes"
                                   " METRICS.json and METRICS_per_image.csv next to it.")
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
    p.add_argument("--n-boot", type=_bounded_int(0, MAX_BOOTSTRAP), default=1000,
                   help="bootstrap resamples of patients for the 95%% CIs, 0 = none (default: 1000)")
    p.add_argument("--no-robustness", action="store_true", help="skip the intensity-robustness measurement (default: off)")
    p.add_argument("--tolerance-mm", type=float, default=2.0,
                   help="surface-Dice tolerance in mm of the boundary figures (default: 2.0)")
    p.add_argument("--batch-size", type=_bounded_int(1, MAX_BATCH_SIZE), default=16,
                   help="slices per forward pass (default: 16)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    _add_precision(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: off)")


def _experiment_parser(sub: Any) -> None:
    """The ``experiment`` verb's flags."""
    p = sub.add_parser("experiment", formatter_class=_Formatter, epilog=describe_limits(), help="the paper's model × loss × CRF × seed grid",
                       description="Train and evaluate {unet, attention} × {dice, focal, hybrid} × CRF {off, on} × seeds,"
                                   f" reusing finished runs; writes {ExperimentDir.CELLS}, {ExperimentDir.RESULTS} and"
                                   f" {ExperimentDir.DIFFERENCES}.")
    p.add_argument("--data", required=True, help="dataset with masks (required)")
    p.add_argument("--out", required=True, help="experiment folder (required)")
    p.add_argument("--models", default="unet,attention", help="comma-separated models (default: unet,attention)")
    p.add_argument("--losses", default="dice,focal,hybrid", help="comma-separated losses (default: dice,focal,hybrid)")
    p.add_argument("--crf", default="both", choices=("both", "off", "on"), help="CRF settings to evaluate (default: both)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default: 0,1,2)")
    p.add_argument("--n-boot", type=_bounded_int(0, MAX_BOOTSTRAP), default=0, help="per-run bootstrap resamples"
                   " (default: 0; the table's CIs are over seeds)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    _add_train_options(p, skip=("model", "loss"))
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: off)")


def _tune_parser(sub: Any) -> None:
    """The ``tune`` verb's flags."""
    p = sub.add_parser("tune", formatter_class=_Formatter, epilog=describe_limits(), help="choose α, λ, lr and the threshold on validation data",
                       description="Train the candidate settings of each loss (lungseg.experiment.tune.SEARCH_SPACE),"
                                   " score each on the validation patients over thresholds, and choose per loss;"
                                   f" writes {ExperimentDir.TUNE_TABLE} and {ExperimentDir.TUNE_CHOICE}. Test patients are"
                                   " never used.")
    p.add_argument("--data", required=True, help="dataset with masks (required)")
    p.add_argument("--out", required=True, help="tuning folder (required)")
    p.add_argument("--losses", default="dice,focal,hybrid", help="comma-separated losses (default: dice,focal,hybrid)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    _add_train_options(p, skip=("loss",))
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: off)")


def _predict_parser(sub: Any) -> None:
    """The ``predict`` verb's flags."""
    p = sub.add_parser("predict", formatter_class=_Formatter, epilog=describe_limits(), help="segment a DICOM series, NIfTI, PNG/JPEG or .npz",
                       description="Segment tumours with a trained run; writes the mask in the input's geometry and a"
                                   " lesion summary (count, volume in mL, equivalent diameter, slice range). A DICOM"
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
    p.add_argument("--threshold", type=float, default=None, help="probability threshold (default: the run's, 0.5)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"), help="weights to use (default: best)")
    p.add_argument("--batch-size", type=_bounded_int(1, MAX_BATCH_SIZE), default=16,
                   help="slices per forward pass (default: 16)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    _add_precision(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: off)")


def _export_parser(sub: Any) -> None:
    """The ``export`` verb's flags."""
    p = sub.add_parser("export", formatter_class=_Formatter, help="write a trained run as one shareable model .zip",
                       description="Write a run's weights (also as safetensors), configuration, fingerprint and a"
                                   " model card into one .zip, a MONAI bundle in a folder named after the file, for"
                                   " `lungseg predict --model model.zip` and `monai.bundle.load`.")
    p.add_argument("run", help="run directory")
    p.add_argument("out", help="the .zip to write")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"), help="weights to export (default: best)")
    p.add_argument("--force", action="store_true", help="overwrite an existing .zip (default: off)")


def _bench_parser(sub: Any) -> None:
    """The ``bench`` verb's flags."""
    p = sub.add_parser("bench", formatter_class=_Formatter, add_help=False, help="benchmarks (see `lungseg bench --help`)",
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
    out = phantom.generate_study(args.out, args.patients, args.seed, config=config, progress=not args.quiet)
    print(f"wrote a phantom study of {args.patients} patients to {out}")


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
    config = _config_from_args(args, base)
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
    base = _config_from_args(args)
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

    res = tune(args.data, args.out, base_config=_config_from_args(args), losses=_csv_list(args.losses, "--losses"),
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
        checkpoint=args.checkpoint, device=args.device, precision=args.precision, progress=not args.quiet,
    )
    print(format_summary(summary))
    if summary.get("failed"):  # a folder of studies: the others were segmented, the table says which failed
        print(f"error: {summary['failed']} of {len(summary['studies'])} studies failed (see {summary['files'][0]})",
              file=sys.stderr)
        return 2
    return 0


def _cmd_export(args: argparse.Namespace) -> None:
    from lungseg.inference.bundle import export_model, read_metadata

    path = export_model(args.run, args.out, checkpoint=args.checkpoint, force=args.force)
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
