"""The ``lungseg`` command line's shared pieces: its parser and help formatter, the argument types, and the
training flags that ``train``, ``experiment`` and ``tune`` share (built from :class:`lungseg.config.TrainConfig`'s
fields, so a flag and its field cannot drift apart).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

_D = None  # TrainConfig defaults, filled lazily (keeps `lungseg --help` free of torch imports)


def train_defaults() -> Any:
    global _D
    if _D is None:
        from lungseg.config import TrainConfig

        _D = TrainConfig()
    return _D


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line: ``error: ...`` and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Wider help columns; defaults are written into each help string."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=36, width=100)


def bool_flag(value: str) -> bool:
    v = value.lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected on/off, got {value!r}")


def optional_int(value: str) -> int | None:
    if value.lower() in ("none", "native", "auto"):
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {value!r}") from None


def bounded_int(low: int, high: int) -> Any:
    """An argparse type: an integer in ``[low, high]`` (the bounds of :mod:`lungseg.limits`)."""

    def parse(value: str) -> int:
        number = int(value) if value.strip().removeprefix("-").isdigit() else None
        if number is None or not low <= number <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {value!r}")
        return number

    return parse


def probability(value: str) -> float:
    """An argparse type: a finite number strictly between 0 and 1 (a probability threshold)."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0 < number < 1:  # False for NaN too
        raise argparse.ArgumentTypeError(f"expected a probability strictly between 0 and 1, got {value!r}")
    return number


def optional_float(value: str) -> float | None:
    if value.lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {value!r}") from None


# (flag, TrainConfig field, type, help) of every training option.
def train_options() -> list[tuple[str, str, Any, str, Sequence[str] | None]]:
    from lungseg.config import DICE_REDUCTIONS, LOSSES, MODEL_NAMES, SCHEDULES, TTA_MAX_AUTO_SIZE, TTA_MODES
    from lungseg.device import PRECISIONS

    return [
        ("--model", "model", str, "network: attention (AttentionResUNet) or unet", MODEL_NAMES),
        ("--loss", "loss", str, "loss: hybrid (eq. 9), dice (eq. 7), focal (eq. 8) or bce", LOSSES),
        ("--epochs", "epochs", int, "maximum number of epochs", None),
        ("--image-size", "image_size", optional_int,
         "network input size S (multiple of 2**depth); 'none' = the data's native size, at most 256", None),
        ("--batch-size", "batch_size", int, "global batch size", None),
        ("--lr", "lr", float, "Adam learning rate η (eq. 5)", None),
        ("--weight-decay", "weight_decay", float, "Adam weight decay", None),
        ("--schedule", "schedule", str, "learning-rate schedule", SCHEDULES),
        ("--warmup-epochs", "warmup_epochs", int, "linear warm-up epochs (cosine schedule)", None),
        ("--patience", "patience", optional_int, "early stopping after N epochs without a better validation Dice ('none' = off)", None),
        ("--base-channels", "base_channels", int, "feature maps of the first level", None),
        ("--depth", "depth", int, "number of down-sampling levels", None),
        ("--batch-norm", "batch_norm", bool_flag, "batch normalisation (on/off)", None),
        ("--lam", "lam", float, "λ of the hybrid loss (eq. 9)", None),
        ("--alpha", "alpha", float, "α of the focal loss (eq. 8)", None),
        ("--gamma", "gamma", float, "γ of the focal loss (eq. 8)", None),
        ("--dice-reduction", "dice_reduction", str,
         "how the Dice term pools a batch: the mean of per-image Dice, or one ratio over the batch", DICE_REDUCTIONS),
        ("--patch-size", "patch_size", optional_int,
         "side of the random training crops; validation and prediction use whole slices ('none' = whole-slice"
         " training, the paper's recipe; a size >= the slice size also trains on whole slices)", None),
        ("--foreground-fraction", "foreground_fraction", float, "share of crops centred on a tumour pixel", None),
        ("--tumour-fraction", "tumour_fraction", optional_float,
         "share of samples drawn from tumour slices ('none' = slices drawn uniformly)", None),
        ("--samples-per-epoch", "samples_per_epoch", optional_int,
         "crops or slices per epoch ('none' = the training slices, at least --min-samples-per-epoch)", None),
        ("--min-samples-per-epoch", "min_samples_per_epoch", int, "the least samples of an epoch when --samples-per-epoch is none", None),
        ("--augment", "augment", bool_flag, "flips, small rotations, zoom, HU jitter (on/off)", None),
        ("--flip-lr", "flip_lr", float, "augmentation: probability of a left-right flip", None),
        ("--flip-ud", "flip_ud", float, "augmentation: probability of an up-down flip", None),
        ("--max-rotation-deg", "max_rotation_deg", float, "augmentation: largest rotation, degrees", None),
        ("--zoom", "zoom", float, "augmentation: zoom drawn in [1/zoom, zoom] (1 = none)", None),
        ("--hu-scale", "hu_scale", float, "augmentation: intensity gain drawn in [1 - s, 1 + s]", None),
        ("--hu-offset", "hu_offset", float, "augmentation: intensity offset drawn in [-o, o] HU", None),
        ("--split-seed", "split_seed", int, "seed of the patient split", None),
        ("--ema-decay", "ema_decay", optional_float,
         "validate, save and predict with a moving average of the weights of this decay per step ('none' = the"
         " weights as trained)", None),
        ("--threshold", "threshold", probability, "probability threshold of the binary mask", None),
        ("--tta", "tta", str, "test-time augmentation of the run's predictions: the mean over the 4 flips or the 8"
         f" symmetries of the square (one forward pass each); auto = dihedral for inputs up to {TTA_MAX_AUTO_SIZE}²,"
         " else none", ("auto", *TTA_MODES)),
        ("--init-weights", "init_weights", str,
         "start from the weights of this run folder or checkpoint (fine-tuning; the network settings"
         " must match; 'none' = random weights)", None),
        ("--cache-dir", "cache_dir", str, "cache of preprocessed slices, never inside --data ('none' = no cache)", None),
        ("--compile", "compile", bool_flag, "torch.compile the model (CUDA only; on/off)", None),
        ("--precision", "precision", str,
         "forward-pass numerics: auto = bf16 autocast on CUDA >= 8.0, fp16 + loss scaling on older GPUs, fp32"
         " elsewhere; bf16 (CPU: AVX-512 BF16/AMX only); fp16 (CUDA only)",
         PRECISIONS),
    ]


def add_train_options(p: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    d = train_defaults()
    for flag, field, typ, text, choices in train_options():
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


def config_from_args(args: argparse.Namespace, base: Any | None = None) -> Any:
    """A TrainConfig from the defaults (or ``base``) and the flags given on the command line."""
    from lungseg.config import TrainConfig

    values = (base or TrainConfig()).to_dict()
    given, options = set(vars(args)), {option[1] for option in train_options()}
    for f in dataclasses.fields(TrainConfig):
        # a training option is in args only when given (its 'none' is None); the verbs' own flags
        # (--data, --seed, --device, --roi, ...) default to None, which means "not given"
        if f.name not in given or (f.name not in options and getattr(args, f.name) is None):
            continue
        v = getattr(args, f.name)
        values[f.name] = None if (f.name in ("cache_dir", "init_weights") and v.lower() == "none") else v
    val, test = getattr(args, "val_fraction", None), getattr(args, "test_fraction", None)
    if val is not None or test is not None:
        _, base_val, base_test = values["split_fractions"]
        val, test = base_val if val is None else val, base_test if test is None else test
        values["split_fractions"] = [round(1.0 - val - test, 10), val, test]
    return TrainConfig.from_dict(values)


def add_precision(p: argparse.ArgumentParser, prediction: bool = False) -> None:
    """``--precision``; for ``predict`` its ``auto`` is also bf16 on a CPU with native bf16
    (:func:`lungseg.device.resolve_prediction_precision`)."""
    from lungseg.device import PRECISIONS

    cpu = ("bf16 on a CPU with AVX-512 BF16/AMX (about 2x faster there), fp32 elsewhere" if prediction
           else "fp32 elsewhere; bf16 on a CPU with AVX-512 BF16/AMX is about 2x faster")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help=f"inference numerics: auto = bf16 autocast on CUDA >= 8.0, fp16 on older GPUs, {cpu};"
                        " fp32 does not depend on the CPU's bf16 support; fp16 on CUDA only (default: auto)")
