"""The training configuration: everything that determines a run, saved as the run's config file.

:class:`TrainConfig` sits below every stage: training writes it, inference and evaluation read it,
the experiment grid varies it. The names of the models and losses it accepts come from the one
registry of each (:data:`lungseg.models.MODELS`, :data:`lungseg.losses.LOSSES`), which the CLI and
the bench use too.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lungseg.device import PRECISIONS
from lungseg.errors import LungsegError
from lungseg.files import atomic_write_text
from lungseg.losses import LOSSES
from lungseg.models import MODELS

__all__ = ["LOSSES", "MODEL_NAMES", "SCHEDULES", "TrainConfig", "config_differences"]

#: Model names accepted by :class:`TrainConfig` (keys of :data:`lungseg.models.MODELS`).
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
SCHEDULES: tuple[str, ...] = ("cosine", "constant", "plateau")
# Fields that may change between a run and its resumption without changing its result.
RESUME_FREE_FIELDS = frozenset({"device", "num_workers", "compile", "data"})


@dataclass
class TrainConfig:
    """Everything that determines a training run; saved in the run directory
    (:class:`lungseg.rundir.RunDir`).

    Attributes:
        data: dataset path (phantom study, DICOM folder, MSD folder, ``.npz``), see
            :func:`lungseg.data.open_dataset`.
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
        split_fractions: train/val/test fractions of patients.
        tumour_fraction: probability of drawing a tumour slice (oversampling with replacement);
            ``None``: every training slice once per epoch in random order, natural frequencies.
        samples_per_epoch: slices drawn per epoch (``None``: the number of training slices).
        augment: flips, small rotations and HU jitter during training.
        threshold: probability threshold of the binary prediction (validation Dice, evaluation).
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.
        compile: wrap the model in :func:`torch.compile` (CUDA only).
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 elsewhere), ``"fp32"`` or ``"bf16"``
            (autocast for forward passes; the loss, gradients, weights and Adam state stay fp32).
            bf16 on a CPU needs native bf16 (AVX-512 BF16 or AMX) and is about 2x faster there;
            see ``benchmarks/NOTES.md`` for what it does to the learned Dice.
        num_workers: data loader worker processes.
        cache_dir: on-disk cache of preprocessed slices (``None``: no cache).
    """

    data: str = ""
    model: str = "attention"
    base_channels: int = 16
    depth: int = 4
    batch_norm: bool = True
    loss: str = "hybrid"
    lam: float = 0.5
    alpha: float = 0.25
    gamma: float = 2.0
    image_size: int | None = None
    batch_size: int = 16
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: int = 0
    min_lr_ratio: float = 0.01
    patience: int | None = None
    seed: int = 0
    split_seed: int = 0
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    tumour_fraction: float | None = None
    samples_per_epoch: int | None = None
    augment: bool = False
    threshold: float = 0.5
    device: str = "auto"
    compile: bool = False
    precision: str = "auto"
    num_workers: int = 0
    cache_dir: str | None = None

    def validate(self) -> None:
        """Check every field; raises :class:`LungsegError` naming the field and the value."""
        if self.model not in MODEL_NAMES:
            raise LungsegError(f"model must be one of {MODEL_NAMES}, got {self.model!r}")
        if self.loss not in LOSSES:
            raise LungsegError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.schedule not in SCHEDULES:
            raise LungsegError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("base_channels", "depth", "batch_size", "epochs"):
            if int(getattr(self, name)) < 1:
                raise LungsegError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.image_size is not None:
            if self.image_size < 2**self.depth or self.image_size % 2**self.depth:
                raise LungsegError(
                    f"image_size must be a positive multiple of 2**depth = {2**self.depth}"
                    f" (depth {self.depth}), got {self.image_size}"
                )
        if not self.lr > 0:
            raise LungsegError(f"lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.lam <= 1.0:
            raise LungsegError(f"lam must be in [0, 1], got {self.lam!r}")
        if not 0.0 < self.threshold < 1.0:
            raise LungsegError(f"threshold must be in (0, 1), got {self.threshold!r}")
        if self.tumour_fraction is not None and not 0.0 < self.tumour_fraction <= 1.0:
            raise LungsegError(f"tumour_fraction must be in (0, 1], got {self.tumour_fraction!r}")
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1.0) > 1e-6:
            raise LungsegError(f"split_fractions must be 3 numbers summing to 1, got {self.split_fractions!r}")
        if self.patience is not None and self.patience < 1:
            raise LungsegError(f"patience must be >= 1 or None, got {self.patience!r}")
        if self.samples_per_epoch is not None and self.samples_per_epoch < 1:
            raise LungsegError(f"samples_per_epoch must be >= 1 or None, got {self.samples_per_epoch!r}")
        if self.precision not in PRECISIONS:
            raise LungsegError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.num_workers < 0:
            raise LungsegError(f"num_workers must be >= 0, got {self.num_workers!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["split_fractions"] = list(self.split_fractions)
        return d

    def to_json(self, path: str | os.PathLike[str]) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise LungsegError(f"unknown TrainConfig fields {unknown}; known: {sorted(names)}")
        d = dict(d)
        if "split_fractions" in d:
            d["split_fractions"] = tuple(float(x) for x in d["split_fractions"])
        return cls(**d)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: training config not found")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise LungsegError(f"{path}: not valid JSON ({exc})") from None


def config_differences(saved: TrainConfig, given: TrainConfig) -> list[str]:
    """The fields in which ``given`` differs from ``saved`` in a way that changes the result
    (``"name: run has A, given B"``); empty when a run saved with ``saved`` may be resumed or reused."""
    diffs = []
    for f in dataclasses.fields(TrainConfig):
        a, b = getattr(saved, f.name), getattr(given, f.name)
        if f.name in RESUME_FREE_FIELDS or (f.name == "image_size" and b is None):
            continue
        if f.name == "split_fractions":
            a, b = tuple(a), tuple(b)
        if a != b:
            diffs.append(f"{f.name}: run has {a!r}, given {b!r}")
    return diffs
