"""Training: one configuration, one run directory, resumable and distributable.

The run directory (:class:`lungseg.rundir.RunDir`) receives the configuration, the fingerprint and
the split before the first epoch, the history and both checkpoints after every epoch, and the
summary and provenance at the end.

On CPU the run is bit-exact reproducible, and a run killed after epoch *k* and resumed ends with
the same weights as an uninterrupted run: the data order of each epoch is a pure function of
``(seed, epoch)`` (:mod:`lungseg.training.patches`), deterministic algorithms are
enforced, and the Python/NumPy/torch RNG states are saved in the last checkpoint at every epoch
boundary. Bit-exactness also needs a fixed number of CPU threads (``OMP_NUM_THREADS``; MKL may
otherwise use fewer threads on a loaded machine, which reorders floating-point sums).

Distributed data parallel training is started with ``torchrun`` (``WORLD_SIZE > 1`` in the
environment): every rank draws the same global batches and renders a ``1/world`` share of each, so
the global batch and the data order equal those of a single-process run. Batch norm
becomes :class:`torch.nn.SyncBatchNorm` on CUDA; on CPU (gloo) statistics stay per rank, which is the
only intended difference from single-process training.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from lungseg.config import TrainConfig, config_differences
from lungseg.device import autocast, grad_scaler, resolve_device, resolve_precision
from lungseg.errors import DataError, LungsegError
from lungseg.files import check_output
from lungseg.metrics import Confusion
from lungseg.rundir import RunDir, RunLock
from lungseg.training.averaging import WeightAverage
from lungseg.training.init_weights import read_initial_weights
from lungseg.training.patches import PatchSampler

__all__ = [
    "MAX_DEFAULT_IMAGE_SIZE", "RunResult", "SplitByImageWarning", "Trainer", "build_lr_lambda", "check_same_data", "make_split",
    "resolve_image_size",
    "seed_everything", "train",
]

MAX_DEFAULT_IMAGE_SIZE = 256


class SplitByImageWarning(UserWarning):
    """The training data have no patient ids: the patient-level split is a split by image."""


@dataclass
class RunResult:
    """What :func:`train` returns (also summarised in the run's metrics file)."""

    run_dir: Path
    best_val_dice: float
    best_epoch: int
    final_val_dice: float
    epochs_run: int
    stopped_early: bool
    wall_time_s: float
    device: str
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    """The global RNG states in plain types and tensors, so that the checkpoint loads with
    ``weights_only=True`` (no pickled NumPy objects)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)]
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _distributed_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment (``(0, 1, 0)`` otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))) if world > 1 else (0, 1, 0)


def resolve_image_size(config: TrainConfig, volumes_hw: Sequence[tuple[int, int]]) -> int:
    """The network input size: ``config.image_size`` or the data's native size (at most 256).

    Args:
        config: the training configuration.
        volumes_hw: in-plane sizes ``(H, W)`` of (some of) the training volumes.

    Returns:
        S, a multiple of ``2**config.depth``.
    """
    if config.image_size is not None:
        return int(config.image_size)
    native = max(max(hw) for hw in volumes_hw)
    size = min(native, MAX_DEFAULT_IMAGE_SIZE)
    step = 2**config.depth
    return int(math.ceil(size / step) * step)


def make_split(dataset: Any, config: TrainConfig) -> dict[str, list[str]]:
    """The patient-level split of ``dataset`` (stratified on tumour presence)."""
    from lungseg.data.slices import patient_split

    pids = list(dataset.patient_ids)
    has = [bool(dataset.has_tumour(p)) for p in pids]
    split = patient_split(pids, has, fractions=tuple(config.split_fractions), seed=config.split_seed)
    for part in ("train", "val"):
        if not split.get(part):
            raise DataError(
                f"{config.data}: the {part} split is empty ({len(pids)} patients, fractions"
                f" {tuple(config.split_fractions)}); patient-level splits need more patients"
            )
    return {k: list(v) for k, v in split.items()}


def build_lr_lambda(config: TrainConfig, steps_per_epoch: int):
    """Learning-rate multiplier per optimiser step: linear warm-up then cosine (or constant)."""
    total = max(1, config.epochs * steps_per_epoch)
    warm = min(config.warmup_epochs * steps_per_epoch, total - 1)

    def cosine(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        t = min(1.0, (step - warm) / max(1, total - warm))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return cosine


@torch.no_grad()
def validation_counts(
    model: nn.Module,
    dataset: Dataset,
    indices: list[int],
    batch_size: int,
    device: torch.device,
    threshold: float,
    precision: str,
    channels_last: bool,
) -> torch.Tensor:
    """Summed TP, FP, FN (float64 tensor of 3) over ``indices`` at the network resolution."""
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64)
    logit_thr = math.log(threshold / (1 - threshold))
    for start in range(0, len(indices), batch_size):
        items = [dataset[i] for i in indices[start : start + batch_size]]
        x = torch.stack([it[0] for it in items]).to(device)
        y = torch.stack([it[1] for it in items]).to(device) > 0.5
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(x)
        pred = logits.float() > logit_thr
        counts += torch.tensor(
            [(pred & y).sum().item(), (pred & ~y).sum().item(), (~pred & y).sum().item()],
            dtype=torch.float64,
        )
    return counts


def check_same_data(run: RunDir, dataset: Any, split: dict[str, list[str]]) -> None:
    """Refuse to resume ``run`` on data other than it was trained on.

    The training and validation patients' content hashes (:meth:`lungseg.data.CTDataset.content_hash`,
    recorded in the split file) must match ``dataset``'s: another file whose generated ids happen to be
    the same (an ``.npz`` without ids) is not the same data. A run saved before the hashes were
    recorded can only be checked by its patient ids.

    Raises:
        DataError: a patient is missing or its images differ (the message names the dataset and one patient).
    """
    stored = run.read_content_hashes()
    patients = [*split["train"], *split["val"]]
    missing = [p for p in patients if p not in dataset]
    changed = missing or ([] if stored is None else
                          [p for p in patients if stored.get(p) != dataset.content_hash(p)])
    if changed:
        trained_on = run.read_config().data if run.config_path.is_file() else "its own data"
        raise DataError(
            f"{dataset.source}: not the data {run} was trained on ({len(changed)} of its {len(patients)} training and"
            f" validation patients {'are missing' if missing else 'hold other images'}, e.g. {changed[0]!r});"
            f" resume with --data {trained_on}, or train a new run"
        )


class Trainer:
    """One training run, in steps: :meth:`prepare` (configuration and resume), :meth:`setup_data`,
    :meth:`setup_model`, then per epoch :meth:`train_epoch`, :meth:`validate` and :meth:`checkpoint`,
    and :meth:`finish`. :meth:`run` does them in order; :func:`train` is the plain-function form.

    Args:
        config: the run configuration (``config.data`` names the dataset).
        out_dir: the run directory (created; must not hold a run unless ``resume``).
        resume: continue from the run's last checkpoint when it exists (a fresh start otherwise).
        progress: show a tqdm bar per epoch with the loss and the validation Dice.
    """

    def __init__(self, config: TrainConfig, out_dir: str | os.PathLike[str], resume: bool = False,
                 progress: bool = True) -> None:
        self.config = config
        self.run_dir = RunDir(out_dir)
        self.resume = resume
        self.progress = progress
        self.rank, self.world, self.local_rank = _distributed_env()
        self.is_main = self.rank == 0
        self.checkpoint_state: dict[str, Any] | None = None  # the last checkpoint of a resumed run
        self.initial_weights: dict[str, Any] | None = None  # the weights a fresh run starts from, if given
        self.history: list[dict[str, float]] = []
        self.start_epoch, self.best_dice, self.best_epoch, self.since_best = 0, -1.0, 0, 0
        self.lock: RunLock | None = None

    # ------------------------------------------------------------------ steps
    def prepare(self) -> None:
        """Validate the configuration, adopt a resumed run's saved one, choose device and precision."""
        self.config.validate()
        run = self.run_dir
        check_output(run.path, [self.config.data, self.config.init_weights])
        if self.is_main:
            run.refuse_foreign()
            self.lock = run.lock()  # released by run(); a second training here is refused
        config = self.adopt_run()
        if config.cache_dir:  # the slice cache is written: never into the data
            check_output(config.cache_dir, [config.data], flag="--cache-dir")
        if self.checkpoint_state is None:  # inputs absolute (`evaluate` finds the data from anywhere); weights checked
            self.config = config = config.with_absolute_inputs()
            self.initial_weights = read_initial_weights(config, run.path)
        if self.is_main:
            run.create()
            run.remove_partial_files()
            if self.checkpoint_state is None:
                # A fresh start: nothing of an earlier attempt may pass for this run's results.
                run.remove_results()
                run.write_config(config)  # before anything slow, so that --resume works from any kill
        if self.world > 1 and config.batch_size % self.world:
            raise LungsegError(f"batch_size {config.batch_size} is not divisible by the {self.world} processes")

        device = resolve_device(config.device)
        if self.world > 1:
            if device.type == "cuda":
                device = torch.device("cuda", self.local_rank)
                torch.cuda.set_device(device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.device = device
        self.on_cuda = device.type == "cuda"
        self.precision = resolve_precision(config.precision, device)
        self.scaler = grad_scaler(device, self.precision)  # loss scaling for fp16 (GPUs without bf16), else a no-op
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True)
        elif self.on_cuda:
            torch.backends.cudnn.benchmark = True

    def adopt_run(self) -> TrainConfig:
        """The configuration to train with: a resumed run's saved one (its last checkpoint loaded), else
        the given one, refused where the folder holds a run it may not continue or replace."""
        config, run = self.config, self.run_dir
        if self.resume and run.config_path.is_file():
            # Resume from the saved configuration, also when the run was killed before its first checkpoint.
            saved = run.read_config()
            diffs = config_differences(saved, config)
            if diffs:
                raise LungsegError(f"{run}: cannot resume with a different configuration: " + "; ".join(diffs))
            saved.device, saved.compile, saved.cache_dir = config.device, config.compile, config.cache_dir
            saved.data = config.data or saved.data
            self.config = config = saved
            if run.has_checkpoint("last"):
                self.checkpoint_state = run.load_checkpoint("last")
        elif not self.resume and run.holds_run():
            raise LungsegError(f"{run}: already holds a run ({run.checkpoint_path('last').name}); pass --resume to continue it or choose another --out")
        elif run.config_path.is_file():  # killed before its first checkpoint: a fresh start of the same configuration only
            diffs = config_differences(run.read_config(), config)
            if diffs:
                raise LungsegError(f"{run}: holds a run of another configuration ({'; '.join(diffs)}); choose another --out")
        return config

    def setup_data(self) -> None:
        """Open the data; split it and fit the fingerprint (or read both back on resume); build the
        slice datasets and the oversampling weights; write config, fingerprint and split."""
        from lungseg.data import open_dataset
        from lungseg.data.slices import SliceDataset
        from lungseg.preprocess import HU_WINDOW, Fingerprint

        config, run = self.config, self.run_dir
        dataset = open_dataset(config.data, roi=config.roi, series_uid=config.series_uid)
        if not dataset.has_masks:
            raise DataError(
                f"{config.data}: this {dataset.kind} dataset has no tumour masks;"
                " it can be used by `lungseg evaluate` for slice-level detection, not for training"
            )
        if self.checkpoint_state is not None:
            split = run.read_split()
            check_same_data(run, dataset, split)
            fingerprint = run.read_fingerprint()
        else:
            if not dataset.patient_ids_known:
                warnings.warn(SplitByImageWarning(
                    f"{config.data}: the data name no patients, so the split is by image: slices of one patient"
                    " can fall on both sides, which inflates the validation Dice (and a test score on this split)."
                    " Add patient ids (e.g. an npz key 'patient_ids'), or score the model on a separate test set."
                ), stacklevel=2)
            split = make_split(dataset, config)
            first = dataset[split["train"][0]]
            image_size = resolve_image_size(config, [first.image.shape[1:]])
            self.config = config = dataclasses.replace(config, image_size=image_size, tta=config.resolved_tta(image_size))
            window = HU_WINDOW if first.intensity == "hu" else None
            fingerprint = Fingerprint.from_volumes(
                (dataset[p] for p in split["train"]), window=window, image_size=image_size
            )
        self.split, self.image_size = split, int(config.image_size)  # type: ignore[arg-type]

        if self.is_main and self.checkpoint_state is None:
            run.write_config(config)  # now with the resolved image size
            run.write_fingerprint(fingerprint)
            content = {p: dataset.content_hash(p) for part in split.values() for p in part}
            run.write_split(split, seed=config.split_seed, fractions=config.split_fractions, data=str(config.data),
                            content=content)

        show = self.progress and self.is_main
        self.train_ds = SliceDataset(dataset, split["train"], fingerprint, self.image_size, cache_dir=config.cache_dir,
                                     progress=show)
        self.val_ds = SliceDataset(dataset, split["val"], fingerprint, self.image_size, cache_dir=config.cache_dir,
                                   progress=show)
        if len(self.train_ds) == 0 or len(self.val_ds) == 0:
            raise DataError(f"{config.data}: no slices in the training or validation split")
        if config.tumour_fraction is not None and not self.train_ds.tumour_slices.any():
            raise DataError(f"{config.data}: tumour_fraction={config.tumour_fraction} but the training split has no tumour slices")
        self.sampler = PatchSampler(
            self.train_ds.images, self.train_ds.masks, patch_size=config.patch_size,
            foreground_fraction=config.foreground_fraction, tumour_fraction=config.tumour_fraction,
            augment=config.augment_config(), value_range=self.train_ds.normalised_range(),
            intensity_scale=(fingerprint.mean, fingerprint.std, fingerprint.intensity == "unit"), device=self.device,
        )
        self.val_indices = list(range(len(self.val_ds)))[self.rank :: self.world]

    @property
    def steps_per_epoch(self) -> int:
        """Optimisation steps per epoch: ``samples_per_epoch`` (default: the training slices, at least
        ``min_samples_per_epoch``) over the global batch, at least one (so a default epoch of a tiny
        dataset is one batch; a set ``samples_per_epoch`` below the batch is refused by the config)."""
        config = self.config
        samples = config.samples_per_epoch or max(len(self.train_ds), config.min_samples_per_epoch)
        return max(1, samples // config.batch_size)

    def setup_model(self) -> None:
        """Seed, build the network, loss, optimiser and schedule; restore them on resume; wrap for DDP/compile."""
        from lungseg.losses import build_loss
        from lungseg.models import build_model

        config = self.config
        seed_everything(config.seed)
        model = build_model(
            config.model, in_channels=1, out_channels=1, base_channels=config.base_channels,
            depth=config.depth, batch_norm=config.batch_norm,
        )
        if self.initial_weights is not None:  # read and checked by prepare; a resumed run has its own weights
            model.load_state_dict(self.initial_weights)
        self.loss_fn = build_loss(config.loss, lam=config.lam, alpha=config.alpha, gamma=config.gamma,
                                  reduction=config.dice_reduction)
        model.to(self.device)
        if self.on_cuda:
            model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        if config.schedule == "plateau":
            self.scheduler: Any = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="max", factor=0.5, patience=5
            )
        else:
            multiplier = build_lr_lambda(config, self.steps_per_epoch) if config.schedule == "cosine" else (lambda step: 1.0)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, multiplier)

        self.average = WeightAverage(model, config.ema_decay) if config.ema_decay is not None else None
        state = self.checkpoint_state
        if state is not None:
            # with an average, the checkpoint's "model" is the average and the trained weights are apart
            model.load_state_dict(state["train_model"] if self.average is not None else state["model"])
            if self.average is not None:
                self.average.restore(state["model"], state["ema_updates"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.start_epoch = int(state["epoch"])
            self.best_dice, self.best_epoch = float(state["best_val_dice"]), int(state["best_epoch"])
            self.since_best = int(state["since_best"])
            self.history = list(state["history"])
            _set_rng_state(state["rng"])
        self.model = model

        net: nn.Module = model
        if self.world > 1:
            if self.on_cuda:
                net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            net = nn.parallel.DistributedDataParallel(net, device_ids=[self.device.index] if self.on_cuda else None)
        if config.compile and self.on_cuda:
            net = torch.compile(net)  # type: ignore[assignment]
        self.net = net

    def train_epoch(self, epoch: int, bar: Any) -> torch.Tensor:
        """One epoch of batches from the sampler; returns ``[sum of loss × batch size, samples]`` (float64)."""
        config, sampler = self.config, self.sampler
        self.net.train()
        loss_sum = torch.zeros(2, dtype=torch.float64)
        plans = sampler.epoch_plans(config.seed, epoch, self.steps_per_epoch, config.batch_size)
        for plan in bar(plans, total=self.steps_per_epoch):
            images, masks = sampler.render(plan.share(self.rank, self.world))
            if self.on_cuda:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.precision):
                logits = self.net(images)
            loss = self.loss_fn(logits.float(), masks)
            if not torch.isfinite(loss):
                raise LungsegError(f"training diverged at epoch {epoch + 1} (loss {loss.item()}); lower --lr")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if config.schedule != "plateau":
                self.scheduler.step()
            if self.average is not None:
                self.average.update(self.model)
            loss_sum += torch.tensor([loss.item() * len(images), len(images)], dtype=torch.float64)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        return loss_sum

    def validate(self, loss_sum: torch.Tensor) -> tuple[float, float]:
        """Pooled validation Dice at the network resolution and the mean training loss (all ranks)."""
        counts = validation_counts(
            self.predicting_model, self.val_ds, self.val_indices, self.config.batch_size, self.device,
            self.config.threshold, precision=self.precision, channels_last=self.on_cuda,
        )
        if self.world > 1:
            reduced = torch.cat([counts, loss_sum]).to(self.device)
            dist.all_reduce(reduced)
            counts, loss_sum = reduced.cpu()[:3], reduced.cpu()[3:]
        tp, fp, fn = (int(c) for c in counts)
        return Confusion(tp=tp, fp=fp, fn=fn, tn=0).dice, float(loss_sum[0] / max(loss_sum[1], 1.0))

    @property
    def predicting_model(self) -> nn.Module:
        """The weights validated, saved as ``model`` and predicted with: the average, if one is kept."""
        return self.model if self.average is None else self.average.model

    def checkpoint(self, epoch: int, val_dice: float, improved: bool) -> None:
        """Save the best weights (when ``improved``), the resumable last state and the history."""
        if not self.is_main:
            return
        config, weights = self.config.to_dict(), self.predicting_model.state_dict()
        if improved:
            self.run_dir.save_checkpoint("best", {"model": weights, "epoch": epoch + 1, "val_dice": val_dice, "config": config})
        averaged = {} if self.average is None else {"train_model": self.model.state_dict(), **self.average.state()}
        self.run_dir.save_checkpoint("last", {
            "model": weights, **averaged, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "epoch": epoch + 1, "best_val_dice": self.best_dice,
            "best_epoch": self.best_epoch, "since_best": self.since_best, "history": self.history,
            "rng": _rng_state(), "config": config,
        })
        self.run_dir.write_history(self.history)

    def finish(self, started: float, stopped_early: bool) -> RunResult:
        """The result, and (main process) the run's summary and provenance."""
        history = self.history
        result = RunResult(
            run_dir=self.run_dir.path, best_val_dice=self.best_dice, best_epoch=self.best_epoch,
            final_val_dice=history[-1]["val_dice"] if history else float("nan"),
            epochs_run=len(history), stopped_early=stopped_early, wall_time_s=time.time() - started,
            device=str(self.device), history=history,
        )
        if self.is_main:
            from lungseg.provenance import collect

            summary = {k: v for k, v in asdict(result).items() if k not in ("history", "run_dir")}
            summary.update({
                "sampler": self.sampler.describe(), "steps_per_epoch": self.steps_per_epoch,
                "finished": True, "image_size": self.image_size, "world_size": self.world, "precision": self.precision,
                "n_train_slices": len(self.train_ds), "n_val_slices": len(self.val_ds),
                "n_patients": {k: len(v) for k, v in self.split.items()},
                "validation_dice_rule": "pooled over all validation slices at the network resolution",
            })
            self.run_dir.write_metrics(summary)
            self.run_dir.write_provenance(collect(str(self.device), started=started))
        return result

    # ------------------------------------------------------------------ the whole run
    def run(self) -> RunResult:
        """Train until the last epoch or early stopping; returns the :class:`RunResult`."""
        from tqdm.auto import tqdm

        started = time.time()
        prev_deterministic = torch.are_deterministic_algorithms_enabled()
        try:
            self.prepare()
            self.setup_data()
            self.setup_model()
            config = self.config
            # a resumed run that had already stopped on its plateau trains no further epoch
            stopped_early = config.patience is not None and self.since_best >= config.patience
            for epoch in range(self.start_epoch, config.epochs if not stopped_early else self.start_epoch):
                t0 = time.time()
                bar = _EpochBar(tqdm, f"epoch {epoch + 1}/{config.epochs}", disable=not (self.progress and self.is_main))
                loss_sum = self.train_epoch(epoch, bar)
                val_dice, train_loss = self.validate(loss_sum)
                if config.schedule == "plateau":
                    self.scheduler.step(val_dice)
                bar.set_postfix(loss=f"{train_loss:.4f}", val_dice=f"{val_dice:.4f}")
                bar.close()
                self.history.append({
                    "epoch": epoch + 1, "train_loss": train_loss, "val_dice": val_dice,
                    "lr": float(self.optimizer.param_groups[0]["lr"]), "time_s": round(time.time() - t0, 3),
                })
                improved = val_dice > self.best_dice
                if improved:
                    self.best_dice, self.best_epoch, self.since_best = val_dice, epoch + 1, 0
                else:
                    self.since_best += 1
                self.checkpoint(epoch, val_dice, improved)
                if config.patience is not None and self.since_best >= config.patience:
                    stopped_early = True
                    break
            return self.finish(started, stopped_early)
        finally:
            if self.lock is not None:
                self.lock.release()
            torch.use_deterministic_algorithms(prev_deterministic)
            if self.world > 1 and dist.is_initialized():
                dist.destroy_process_group()


class _EpochBar:
    """A tqdm bar over one epoch's batches that stays open for the validation figures."""

    def __init__(self, tqdm: Any, desc: str, disable: bool) -> None:
        self._tqdm, self._desc, self._disable, self._bar = tqdm, desc, disable, None

    def __call__(self, iterable: Any, total: int | None = None) -> Any:
        self._bar = self._tqdm(iterable, desc=self._desc, total=total, disable=self._disable, leave=True,
                               dynamic_ncols=True)
        return self._bar

    def set_postfix(self, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.set_postfix(**kwargs)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    resume: bool = False,
    progress: bool = True,
) -> RunResult:
    """Train a segmentation network with Adam (eq. 5) on the loss of eqs. (7)–(9).

    Args:
        config: the run configuration (``config.data`` names the dataset).
        out_dir: the run directory (created; must not hold a run unless ``resume``).
        resume: continue from the run's last checkpoint when it exists (a fresh start otherwise).
        progress: show a tqdm bar per epoch with the loss and the validation Dice.

    Returns:
        A :class:`RunResult` with the best and final validation Dice (pooled over the
        validation slices at the network resolution).

    Raises:
        LungsegError: invalid configuration, existing run without ``resume``, or a resumed run
            whose saved configuration differs.
        DataError: the dataset cannot be used for training (no masks, too few patients, ...).
    """
    return Trainer(config, out_dir, resume=resume, progress=progress).run()
