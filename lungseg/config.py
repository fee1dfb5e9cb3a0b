"""The training configuration: everything that determines a run, saved as the run's config file.

:class:`TrainConfig` sits below every stage: training writes it, inference and evaluation read it,
the experiment grid varies it. The names of the models and losses it accepts come from the one
registry of each (:data:`lungseg.models.MODELS`, :data:`lungseg.losses.LOSSES`), which the CLI and
the bench use too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lungseg.device import PRECISIONS
from lungseg.errors import LungsegError
from lungseg.files import atomic_write_text
from lungseg.limits import MAX_BATCH_SIZE, MAX_DEPTH, MAX_IMAGE_SIZE
from lungseg.losses import LOSSES
from lungseg.models import MODELS

__all__ = ["AUGMENT_FIELDS", "AugmentConfig", "DICE_REDUCTIONS", "LEGACY_FIELDS", "LEGACY_VALUES", "LOSSES", "MODEL_NAMES",
           "SCHEDULES", "TTA_MAX_AUTO_SIZE", "TTA_MODES", "TrainConfig", "config_differences", "upgrade_config"]

#: Model names accepted by :class:`TrainConfig` (keys of :data:`lungseg.models.MODELS`).
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
SCHEDULES: tuple[str, ...] = ("cosine", "constant", "plateau")
#: Test-time augmentation modes -> symmetries of the square averaged (:mod:`lungseg.inference.tta`).
TTA_MODES: dict[str, int] = {"none": 1, "flips": 4, "dihedral": 8}
#: Largest network input side at which ``TrainConfig.tta = "auto"`` becomes ``"dihedral"`` (above it, ``"none"``).
TTA_MAX_AUTO_SIZE = 64
#: How the Dice term pools a batch (:class:`lungseg.losses.DiceLoss`).
DICE_REDUCTIONS: tuple[str, ...] = ("image", "batch")
# Fields that may change between a run and its resumption without changing its result.
RESUME_FREE_FIELDS = frozenset({"device", "compile", "data", "cache_dir"})
#: Fields of older configs that no longer mean anything (data loader workers: batches are now drawn
#: on the training device); :func:`upgrade_config` drops them.
LEGACY_FIELDS = frozenset({"num_workers"})
#: What a run did about a field it saved before the field existed (or before its default changed):
#: its saved config reads these values, not today's defaults (:func:`upgrade_config`).
LEGACY_VALUES: dict[str, Any] = {
    "patch_size": None,  # whole slices, before patch training
    "dice_reduction": "batch",
    "min_samples_per_epoch": 1,
    "ema_decay": None,  # the raw weights were validated and saved
    "tta": "none",
    "init_weights": None,  # random initial weights
    "flip_ud": 0.0,  # the augmentation's settings were fixed before they became fields
    "flip_lr": 0.5, "max_rotation_deg": 15.0, "zoom": 1.15, "hu_scale": 0.1, "hu_offset": 25.0,
}
#: The augmentation fields of :class:`TrainConfig`, named as in :class:`AugmentConfig`.
AUGMENT_FIELDS: tuple[str, ...] = ("flip_lr", "flip_ud", "max_rotation_deg", "zoom", "hu_scale", "hu_offset")


def upgrade_config(config: dict[str, Any], *, saved_run: bool = True) -> dict[str, Any]:
    """A config dict written by an older lungseg, in today's fields: every config migration is here.

    Args:
        config: the fields as read from JSON.
        saved_run: ``config`` is what a run saved (its config file), so a field it lacks is one the run
            predates and reads as what that run did (:data:`LEGACY_VALUES`: e.g. a missing
            ``patch_size`` as ``None``, whole slices; a missing ``flip_ud`` as 0). ``False`` for a
            config someone writes (``lungseg train --config``), whose missing fields take today's
            defaults.

    Returns:
        A new dict without the :data:`LEGACY_FIELDS`, and with the legacy values filled in for a saved run.
    """
    upgraded = {k: v for k, v in config.items() if k not in LEGACY_FIELDS}
    if saved_run:
        upgraded = {**{k: v for k, v in LEGACY_VALUES.items() if k not in upgraded}, **upgraded}
    return upgraded


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation of a training batch.

    Attributes:
        flip_lr: probability of a left-right flip.
        flip_ud: probability of an up-down (anterior-posterior) flip. Not how a whole chest slice
            looks, but a tumour's neighbourhood has no fixed up and down, and nnU-Net mirrors every
            axis: on the real MSD patches, leaving it out lowered the five-fold Dice from 0.56 to
            0.45 (:attr:`TrainConfig.flip_ud`).
        max_rotation_deg: rotation angle drawn uniformly in ``[-max, max]`` degrees.
        zoom: zoom factor drawn log-uniformly in ``[1 / zoom, zoom]`` (1: none).
        hu_scale: intensity gain drawn in ``[1 - hu_scale, 1 + hu_scale]``.
        hu_offset: intensity offset drawn in ``[-hu_offset, hu_offset]`` HU (for ``"unit"`` data
            the same fraction of the 1400 HU default window width is used).
    """

    flip_lr: float = 0.5
    flip_ud: float = 0.5
    max_rotation_deg: float = 15.0
    zoom: float = 1.15
    hu_scale: float = 0.1
    hu_offset: float = 25.0

    def __post_init__(self) -> None:
        for name in ("flip_lr", "flip_ud"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be a probability in [0, 1], got {getattr(self, name)!r}")
        for name in ("max_rotation_deg", "hu_scale", "hu_offset"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"AugmentConfig.{name} must be finite and >= 0, got {getattr(self, name)!r}")
        if not (math.isfinite(self.zoom) and self.zoom >= 1.0):
            raise ValueError(f"AugmentConfig.zoom must be finite and >= 1, got {self.zoom!r}")


@dataclass
class TrainConfig:
    """Everything that determines a training run; saved in the run directory
    (:class:`lungseg.rundir.RunDir`).

    Attributes:
        data: dataset path (phantom study, DICOM folder, MSD folder, ``.npz``), see
            :func:`lungseg.data.open_dataset`.
        roi: DICOM data only: the RTSTRUCT ROI or SEG segment used as the tumour mask (name,
            case-insensitive); ``None``: a name matching GTV/tumour/tumor/nodule/lesion.
        series_uid: DICOM data only: the SeriesInstanceUID of the CT series to read; ``None``: per
            study, the one the RTSTRUCT/SEG references, else the axial CT series with most slices.
        model: ``"attention"`` (AttentionResUNet, the paper's model) or ``"unet"`` (baseline).
        base_channels: feature maps of the first level (doubled at every level). 16 by default:
            a quarter of the FLOPs of 32, so a CPU budget of minutes gives four times the epochs,
            which matters more than width on small patch datasets.
        depth: number of down-sampling steps; ``image_size`` must be divisible by ``2**depth``.
        batch_norm: batch normalisation after every convolution.
        loss: ``"hybrid"`` (eq. 9), ``"dice"`` (eq. 7), ``"focal"`` (eq. 8) or ``"bce"``.
        lam: λ of the hybrid loss (eq. 9).
        alpha: α of the focal loss (eq. 8).
        gamma: γ of the focal loss (eq. 8).
        dice_reduction: how the Dice term (eqs. 7, 9) pools a batch: ``"image"`` (default: the
            mean of each image's soft Dice, as MONAI's ``DiceLoss``) or ``"batch"`` (one ratio over
            the batch's pixels). On the real MSD patches (5-fold, 2 seeds, a MONAI-like loop inside
            ``lungseg train``) per image scored pooled Dice 0.56 against 0.52 (``benchmarks/NOTES.md``).
            Runs saved before this field existed read ``"batch"``.
        image_size: network input size S (slices are resized to S×S). ``None``: the data's native
            size when it is at most 256 (rounded up to a multiple of ``2**depth``), else 256 as in
            the paper.
        batch_size: global batch size (split over processes under DDP).
        epochs: maximum number of epochs.
        lr: Adam learning rate η (eq. 5).
        weight_decay: Adam L2 weight decay.
        schedule: ``"cosine"`` (per step, after ``warmup_epochs`` of linear warm-up, down to
            ``min_lr_ratio * lr``), ``"constant"`` or ``"plateau"`` (halve on a validation-Dice
            plateau of 5 epochs).
        warmup_epochs: linear warm-up epochs of the cosine schedule.
        min_lr_ratio: final learning rate of the cosine schedule as a fraction of ``lr``.
        patience: early stopping after this many epochs without a better validation Dice
            (``None``: train all epochs).
        seed: seed of weight initialisation, data order and augmentation.
        split_seed: seed of the patient split (kept apart from ``seed`` so that repeated seeds of
            an experiment share one split).
        split_fractions: train/val/test fractions of patients. The test fraction may be 0 (a
            user with a separate test set trains on everything but the validation patients).
        patch_size: side of the random training crops, drawn from the preprocessed ``S × S``
            slices (:mod:`lungseg.training.patches`); validation, evaluation and prediction run
            the fully convolutional network on whole slices. ``None``, or a size of at least
            ``S``: whole-slice training, the paper's literal recipe.
        foreground_fraction: share of the crops centred on a tumour pixel (patch training).
        tumour_fraction: share of samples drawn from tumour slices (whole slices, and the crops
            that are not foreground-centred); ``None``: slices drawn uniformly.
        samples_per_epoch: samples (crops or slices) per epoch (``None``: the number of training
            slices, at least ``min_samples_per_epoch``).
        min_samples_per_epoch: the least samples of an epoch when ``samples_per_epoch`` is ``None``.
            512 by default, so that an epoch of a small dataset is still a few dozen optimiser steps
            (nnU-Net fixes 250 per epoch whatever the data): the 130 real MSD patches give about 13
            steps an epoch of 104 patches, and 40 such epochs left the network under-trained (5-fold
            pooled Dice 0.60 against 0.69 with 512, ``benchmarks/NOTES.md``). Runs saved before this
            field existed read 1 (no minimum).
        augment: flips, small rotations, zoom and HU jitter during training, as batched tensor
            operations on the training device (:class:`AugmentConfig`, applied by
            :class:`lungseg.training.patches.PatchSampler`;
            the six fields below set it).
        flip_lr: probability of a left-right flip.
        flip_ud: probability of an up-down (anterior-posterior) flip. 0.5, as nnU-Net mirrors
            every axis: on the real MSD patches, training without it scored a 5-fold pooled Dice
            of 0.45 against 0.56 with it (``benchmarks/NOTES.md``). Runs saved before this field
            existed read 0 (what they did).
        max_rotation_deg: rotation drawn uniformly in ``[-max, max]`` degrees.
        zoom: zoom drawn log-uniformly in ``[1 / zoom, zoom]`` (1: none).
        hu_scale: intensity gain drawn in ``[1 - hu_scale, 1 + hu_scale]``.
        hu_offset: intensity offset drawn in ``[-hu_offset, hu_offset]`` HU (``"unit"`` data: the
            same share of the 1400 HU window width).
        ema_decay: keep an exponential moving average of the weights with this decay per optimiser
            step (bias-corrected early on, as TensorFlow's ``ExponentialMovingAverage``); validation,
            both checkpoints and every prediction then use the averaged weights. ``None``: the
            weights as trained. An average of weights does not change the training itself.
        threshold: probability threshold of the binary prediction (validation Dice, evaluation).
        tta: test-time augmentation of the run's predictions (validation excepted): ``"none"``,
            ``"flips"`` (the mean probability over the 4 flips) or ``"dihedral"`` (over the 8
            symmetries of the square), :mod:`lungseg.inference.tta`; each symmetry is one more
            forward pass. ``"auto"`` (default): chosen when training starts from the network input
            size (:meth:`resolved_tta`): ``"dihedral"`` up to :data:`TTA_MAX_AUTO_SIZE`² (on the
            real 48² MSD patches it raised the 5-fold pooled Dice from 0.69 to 0.73,
            ``benchmarks/NOTES.md``; eight passes over a patch cost milliseconds), ``"none"`` above
            (a 275-slice 512² series would take eight times as long). Runs saved before this field
            existed read ``"none"``. ``lungseg predict --tta`` overrides it.
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.
        compile: wrap the model in :func:`torch.compile` (CUDA only).
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 elsewhere), ``"fp32"`` or ``"bf16"``
            (autocast for forward passes; the loss, gradients, weights and Adam state stay fp32).
            bf16 on a CPU needs native bf16 (AVX-512 BF16 or AMX) and is about 2x faster there;
            see ``benchmarks/NOTES.md`` for what it does to the learned Dice.
        cache_dir: on-disk cache of preprocessed slices (``None``: no cache).
        init_weights: start from the network weights of this run folder (its ``best`` checkpoint) or
            checkpoint file instead of a random initialisation (pretraining,
            then fine-tuning; :mod:`lungseg.training.init_weights`); the network settings must match
            it. ``None``: random weights seeded by :attr:`seed`.
    """

    data: str = ""
    roi: str | None = None
    series_uid: str | None = None
    model: str = "attention"
    base_channels: int = 16
    depth: int = 4
    batch_norm: bool = True
    loss: str = "hybrid"
    lam: float = 0.5
    alpha: float | None = 0.75
    gamma: float = 2.0
    dice_reduction: str = "image"
    image_size: int | None = None
    batch_size: int = 8
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: int = 0
    min_lr_ratio: float = 0.01
    patience: int | None = None
    seed: int = 0
    split_seed: int = 0
    split_fractions: tuple[float, float, float] = (0.85, 0.15, 0.0)
    patch_size: int | None = 128
    foreground_fraction: float = 0.33
    tumour_fraction: float | None = None
    samples_per_epoch: int | None = None
    min_samples_per_epoch: int = 512
    augment: bool = True
    # the augmentation's defaults are AugmentConfig's, written once there
    flip_lr: float = AugmentConfig.flip_lr
    flip_ud: float = AugmentConfig.flip_ud
    max_rotation_deg: float = AugmentConfig.max_rotation_deg
    zoom: float = AugmentConfig.zoom
    hu_scale: float = AugmentConfig.hu_scale
    hu_offset: float = AugmentConfig.hu_offset
    ema_decay: float | None = None
    threshold: float = 0.5
    tta: str = "auto"
    device: str = "auto"
    compile: bool = False
    precision: str = "auto"
    cache_dir: str | None = None
    init_weights: str | None = None

    def validate(self) -> None:
        """Check every field; raises :class:`LungsegError` naming the field and the value."""
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), str(f.type))
        if self.model not in MODEL_NAMES:
            raise LungsegError(f"model must be one of {MODEL_NAMES}, got {self.model!r}")
        if self.loss not in LOSSES:
            raise LungsegError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.dice_reduction not in DICE_REDUCTIONS:
            raise LungsegError(f"dice_reduction must be one of {DICE_REDUCTIONS}, got {self.dice_reduction!r}")
        if self.schedule not in SCHEDULES:
            raise LungsegError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.tta != "auto" and self.tta not in TTA_MODES:
            raise LungsegError(f"tta must be 'auto' or one of {tuple(TTA_MODES)}, got {self.tta!r}")
        if self.precision not in PRECISIONS:
            raise LungsegError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("base_channels", "depth", "batch_size", "epochs", "min_samples_per_epoch"):
            if getattr(self, name) < 1:
                raise LungsegError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        # checked before 2**depth or any tensor of these sizes exists (lungseg.limits)
        for name, high in (("depth", MAX_DEPTH), ("batch_size", MAX_BATCH_SIZE), ("image_size", MAX_IMAGE_SIZE),
                           ("patch_size", MAX_IMAGE_SIZE)):
            if getattr(self, name) is not None and getattr(self, name) > high:
                raise LungsegError(f"{name} must be at most {high} (lungseg.limits), got {getattr(self, name)!r}")
        for name in ("patience", "samples_per_epoch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise LungsegError(f"{name} must be >= 1 or None, got {getattr(self, name)!r}")
        if self.samples_per_epoch is not None and self.batch_size > self.samples_per_epoch:
            raise LungsegError(f"batch_size {self.batch_size} is larger than the {self.samples_per_epoch} samples of an"
                               " epoch (samples_per_epoch)")
        if self.warmup_epochs < 0:
            raise LungsegError(f"warmup_epochs must be >= 0, got {self.warmup_epochs!r}")
        step = 2**self.depth
        for name in ("image_size", "patch_size"):
            size = getattr(self, name)
            if size is not None and (size < step or size % step):
                raise LungsegError(f"{name} must be a positive multiple of 2**depth = {step} (depth {self.depth}), got {size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise LungsegError(f"lr must be a finite number > 0, got {self.lr!r}")
        for name, low, high in (("lam", 0.0, 1.0), ("foreground_fraction", 0.0, 1.0), ("min_lr_ratio", 0.0, 1.0)):
            if not low <= getattr(self, name) <= high:
                raise LungsegError(f"{name} must be in [{low}, {high}], got {getattr(self, name)!r}")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise LungsegError(f"alpha must be in [0, 1] or None, got {self.alpha!r}")
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise LungsegError(f"gamma must be a finite number >= 0, got {self.gamma!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise LungsegError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise LungsegError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay!r}")
        if not 0.0 < self.threshold < 1.0:
            raise LungsegError(f"threshold must be in (0, 1), got {self.threshold!r}")
        if self.tumour_fraction is not None and not 0.0 < self.tumour_fraction <= 1.0:
            raise LungsegError(f"tumour_fraction must be in (0, 1], got {self.tumour_fraction!r}")
        try:
            self.augment_config()
        except ValueError as exc:
            raise LungsegError(str(exc).replace("AugmentConfig.", "")) from None
        fr = self.split_fractions
        if len(fr) != 3 or any(not 0.0 <= x <= 1.0 for x in fr) or abs(sum(fr) - 1.0) > 1e-6 or fr[0] <= 0 or fr[1] <= 0:
            raise LungsegError(
                f"split_fractions must be 3 numbers in [0, 1] summing to 1 with train and validation > 0, got {fr!r}"
            )

    def with_absolute_inputs(self) -> TrainConfig:
        """A copy with :attr:`data` (where it exists) and :attr:`init_weights` as absolute paths."""
        changes = {}
        if self.data and Path(self.data).exists():
            changes["data"] = str(Path(self.data).resolve())
        if self.init_weights:
            changes["init_weights"] = str(Path(self.init_weights).resolve())
        return dataclasses.replace(self, **changes)

    def resolved_tta(self, image_size: int) -> str:
        """:attr:`tta`, or for ``"auto"`` the mode for a network input of ``image_size``² (see :attr:`tta`)."""
        if self.tta != "auto":
            return self.tta
        return "dihedral" if image_size <= TTA_MAX_AUTO_SIZE else "none"

    def augment_config(self) -> AugmentConfig | None:
        """The training augmentation (:class:`AugmentConfig`), ``None`` when off."""
        return AugmentConfig(**{name: getattr(self, name) for name in AUGMENT_FIELDS}) if self.augment else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["split_fractions"] = list(self.split_fractions)
        return d

    def to_json(self, path: str | os.PathLike[str]) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, saved_run: bool = False) -> TrainConfig:
        """A config from a dict (e.g. ``--config`` JSON), upgraded from older versions
        (:func:`upgrade_config`); every field's type is checked and named.

        Args:
            d: the fields.
            saved_run: ``d`` is a run's saved config (missing fields read as what that run did).

        Raises:
            LungsegError: an unknown field, or a value of the wrong type.
        """
        if not isinstance(d, dict):
            raise LungsegError(f"a training config must be a JSON object of TrainConfig fields, got {type(d).__name__}")
        fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        d = upgrade_config(d, saved_run=saved_run)
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise LungsegError(f"unknown TrainConfig fields {unknown}; known: {sorted(fields)}")
        for name, value in d.items():
            _check_type(name, value, fields[name])
        if "split_fractions" in d:
            d["split_fractions"] = tuple(float(x) for x in d["split_fractions"])
        return cls(**d)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str], *, saved_run: bool = False) -> TrainConfig:
        """A config from a JSON file (:meth:`from_dict`; ``saved_run`` for a run's own config file).

        Raises:
            FileNotFoundError: no such file.
            LungsegError: not valid JSON, or a field :meth:`from_dict` refuses.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: training config not found")
        try:
            return cls.from_dict(json.loads(path.read_text()), saved_run=saved_run)
        except json.JSONDecodeError as exc:
            raise LungsegError(f"{path}: not valid JSON ({exc})") from None


def _check_type(name: str, value: Any, annotation: str) -> None:
    """Raise :class:`LungsegError` naming ``name`` when ``value`` does not fit its field's ``annotation``."""
    allowed = [part.strip() for part in annotation.split("|")]
    if value is None and "None" in allowed:
        return
    kind = allowed[0]
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind == "str":
        ok = isinstance(value, str)
    else:  # tuple[float, float, float]
        ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
    if not ok:
        wanted = annotation.replace("tuple[float, float, float]", "a list of 3 numbers")
        raise LungsegError(f"TrainConfig field {name!r} must be {wanted}, got {value!r}")


def config_differences(saved: TrainConfig, given: TrainConfig) -> list[str]:
    """The fields in which ``given`` differs from ``saved`` in a way that changes the result
    (``"name: run has A, given B"``); empty when a run saved with ``saved`` may be resumed or reused."""
    diffs = []
    for f in dataclasses.fields(TrainConfig):
        a, b = getattr(saved, f.name), getattr(given, f.name)
        if f.name in RESUME_FREE_FIELDS or (f.name == "image_size" and b is None) or (f.name == "tta" and b == "auto"):
            continue
        if f.name == "min_samples_per_epoch" and saved.samples_per_epoch is not None \
                and saved.samples_per_epoch == given.samples_per_epoch:
            continue  # a minimum that a set epoch length never consults
        if f.name == "split_fractions":
            a, b = tuple(a), tuple(b)
        if f.name == "init_weights" and a and b:  # one file, however the path was spelt
            a, b = str(Path(a).resolve()), str(Path(b).resolve())
        if a != b:
            diffs.append(f"{f.name}: run has {a!r}, given {b!r}")
    return diffs
