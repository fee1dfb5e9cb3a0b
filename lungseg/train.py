"""Training: one configuration, one run directory, resumable and distributable.

A run directory holds everything needed to reproduce, resume, evaluate and deploy a model::

    config.json        the resolved :class:`TrainConfig`
    fingerprint.json   the normalisation statistics (eq. 1), computed on the training split only
    split.json         the patient-level train/val/test split
    history.csv        one row per epoch: training loss, validation Dice, learning rate, time
    last.pt            model + optimiser + scheduler + RNG states + epoch (for ``resume``)
    best.pt            the weights with the best validation Dice
    metrics.json       the training summary (best/final validation Dice, epochs, wall time)
    provenance.json    git commit, package versions, device

Checkpoints are written to a temporary file and moved into place with :func:`os.replace`, so a
crash never leaves a half-written checkpoint. On CPU the run is bit-exact reproducible and a run
killed after epoch *k* and resumed ends with the same weights as an uninterrupted run: the data order
of each epoch is a pure function of ``(seed, epoch)``, deterministic algorithms are enforced, and
the Python/NumPy/torch RNG states are saved in ``last.pt`` at every epoch boundary. Bit-exactness
also needs a fixed number of CPU threads (``OMP_NUM_THREADS``; MKL may otherwise use fewer threads
on a loaded machine, which reorders floating-point sums).

Distributed data parallel training is started with ``torchrun`` (``WORLD_SIZE > 1`` in the
environment): every rank walks the same global batch order and takes a ``1/world`` share of every
global batch, so the global batch and the data order equal those of a single-process run. Batch norm
becomes :class:`torch.nn.SyncBatchNorm` on CUDA; on CPU (gloo) statistics stay per rank, which is the
only intended difference from single-process training.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from lungseg.device import PRECISIONS, autocast, resolve_device, resolve_precision
from lungseg.errors import DataError, LungsegError
from lungseg.metrics import Confusion

MODELS: tuple[str, ...] = ("unet", "attention")
LOSSES: tuple[str, ...] = ("hybrid", "dice", "focal", "bce")
SCHEDULES: tuple[str, ...] = ("cosine", "constant", "plateau")
MAX_DEFAULT_IMAGE_SIZE = 256
# Fields that may change between a run and its resumption without changing its result.
_RESUME_FREE_FIELDS = frozenset({"device", "num_workers", "compile", "data"})


@dataclass
class TrainConfig:
    """Everything that determines a training run; saved as ``config.json`` in the run directory.

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
        if self.model not in MODELS:
            raise LungsegError(f"model must be one of {MODELS}, got {self.model!r}")
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
        _atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

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


@dataclass
class RunResult:
    """What :func:`train` returns (also summarised in ``metrics.json``)."""

    run_dir: Path
    best_val_dice: float
    best_epoch: int
    final_val_dice: float
    epochs_run: int
    stopped_early: bool
    wall_time_s: float
    device: str
    history: list[dict[str, float]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# small utilities


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and :func:`os.replace`."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """:func:`torch.save` that never leaves a partial file at ``path``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    _atomic_write_bytes(Path(path), buf.getvalue())


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_worker(worker_id: int) -> None:
    """Seed NumPy/Python in a data-loader worker from torch's per-worker seed (itself seeded)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class _FixedBatches(Sampler[list[int]]):
    """A batch sampler over a precomputed list of index batches."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def epoch_batches(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world: int = 1,
    weights: np.ndarray | None = None,
    num_samples: int | None = None,
) -> list[list[int]]:
    """The batches of one epoch for one process.

    The global order is drawn from ``(seed, epoch)`` alone, so it is identical after a resume and
    on every rank: a permutation of the ``n`` samples (the first ``num_samples`` of it, repeated if
    needed), or, with ``weights``, ``num_samples`` draws with replacement (tumour oversampling). An
    incomplete last global batch is dropped when there is at least one full batch (a batch of one
    sample breaks batch norm). Under DDP rank ``r`` takes samples ``r, r + world, ...`` of every
    global batch, so all ranks together see exactly the global batches of a single-process run.

    Returns:
        A list of index lists (the rank's share of each global batch).
    """
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    total = n if num_samples is None else int(num_samples)
    if weights is not None:
        perm = torch.multinomial(torch.as_tensor(weights, dtype=torch.double), total, replacement=True, generator=g).tolist()
    else:
        perm = []
        while len(perm) < total:
            perm += torch.randperm(n, generator=g).tolist()
        perm = perm[:total]
    n = total
    if n >= batch_size:
        n_full = n // batch_size
        global_batches = [perm[i * batch_size : (i + 1) * batch_size] for i in range(n_full)]
    else:
        global_batches = [perm]
    return [b[rank::world] for b in global_batches]


def _distributed_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment (``(0, 1, 0)`` otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def open_data(path: str | os.PathLike[str]) -> Any:
    """Open any dataset the loaders accept, with a clear error when the path does not exist."""
    from lungseg.data import open_dataset

    p = Path(path)
    if not str(path):
        raise LungsegError("no dataset given (--data PATH)")
    if not p.exists():
        raise FileNotFoundError(f"{p}: dataset path does not exist")
    return open_dataset(p)


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


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    cols = ["epoch", "train_loss", "val_dice", "lr", "time_s"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: row[k] for k in cols})
    _atomic_write_text(path, buf.getvalue())


def _config_differences(saved: TrainConfig, given: TrainConfig) -> list[str]:
    diffs = []
    for f in dataclasses.fields(TrainConfig):
        a, b = getattr(saved, f.name), getattr(given, f.name)
        if f.name in _RESUME_FREE_FIELDS or (f.name == "image_size" and b is None):
            continue
        if f.name == "split_fractions":
            a, b = tuple(a), tuple(b)
        if a != b:
            diffs.append(f"{f.name}: run has {a!r}, given {b!r}")
    return diffs


@torch.no_grad()
def _validate(
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


# --------------------------------------------------------------------------------------------


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
        resume: continue from ``out_dir/last.pt`` when it exists (a fresh start otherwise).
        progress: show a tqdm bar per epoch with the loss and the validation Dice.

    Returns:
        A :class:`RunResult` with the best and final validation Dice (pooled over the
        validation slices at the network resolution).

    Raises:
        LungsegError: invalid configuration, existing run without ``resume``, or a resumed run
            whose saved configuration differs.
        DataError: the dataset cannot be used for training (no masks, too few patients, ...).
    """
    from tqdm.auto import tqdm

    from lungseg.losses import build_loss
    from lungseg.models import build_model
    from lungseg.preprocess import HU_WINDOW, Fingerprint
    from lungseg.data.slices import SliceDataset

    started = time.time()
    config.validate()
    out = Path(out_dir)
    rank, world, local_rank = _distributed_env()
    is_main = rank == 0

    last_path, best_path = out / "last.pt", out / "best.pt"
    checkpoint: dict[str, Any] | None = None
    if resume and last_path.is_file():
        saved = TrainConfig.from_json(out / "config.json")
        diffs = _config_differences(saved, config)
        if diffs:
            raise LungsegError(f"{out}: cannot resume with a different configuration: " + "; ".join(diffs))
        saved.device, saved.num_workers, saved.compile = config.device, config.num_workers, config.compile
        saved.data = config.data or saved.data
        config = saved
        checkpoint = torch.load(last_path, map_location="cpu", weights_only=False)
    elif not resume and (last_path.exists() or best_path.exists()):
        raise LungsegError(f"{out}: already holds a run (last.pt); pass --resume to continue it or choose another --out")

    if world > 1 and config.batch_size % world:
        raise LungsegError(f"batch_size {config.batch_size} is not divisible by the {world} processes")

    device = resolve_device(config.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    on_cuda = device.type == "cuda"
    precision = resolve_precision(config.precision, device)
    prev_deterministic = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    elif on_cuda:
        torch.backends.cudnn.benchmark = True

    try:
        dataset = open_data(config.data)
        if not getattr(dataset, "has_masks", True):
            raise DataError(
                f"{config.data}: this {getattr(dataset, 'kind', '')} dataset has no tumour masks;"
                " it can be used by `lungseg evaluate` for slice-level detection, not for training"
            )
        if checkpoint is not None:
            split = json.loads((out / "split.json").read_text())
            split = {k: split[k] for k in ("train", "val", "test")}
            fingerprint = Fingerprint.from_json(out / "fingerprint.json")
        else:
            split = make_split(dataset, config)
            first = dataset[split["train"][0]]
            image_size = resolve_image_size(config, [first.image.shape[1:]])
            config = dataclasses.replace(config, image_size=image_size)
            window = HU_WINDOW if first.intensity == "hu" else None
            fingerprint = Fingerprint.from_volumes(
                (dataset[p] for p in split["train"]), window=window, image_size=image_size
            )
        image_size = int(config.image_size)  # type: ignore[arg-type]

        if is_main:
            out.mkdir(parents=True, exist_ok=True)
            if checkpoint is None:
                config.to_json(out / "config.json")
                fingerprint.to_json(out / "fingerprint.json")
                _atomic_write_text(
                    out / "split.json",
                    json.dumps(
                        {**split, "seed": config.split_seed, "fractions": list(config.split_fractions),
                         "data": str(config.data)},
                        indent=2,
                    ) + "\n",
                )

        train_ds = SliceDataset(
            dataset, split["train"], fingerprint, image_size, tumour_fraction=config.tumour_fraction,
            augment=config.augment, cache_dir=config.cache_dir, seed=config.seed, progress=progress and is_main,
        )
        val_ds = SliceDataset(
            dataset, split["val"], fingerprint, image_size, augment=False, cache_dir=config.cache_dir,
            seed=config.split_seed, progress=progress and is_main,
        )
        if len(train_ds) == 0 or len(val_ds) == 0:
            raise DataError(f"{config.data}: no slices in the training or validation split")
        weights = None
        if config.tumour_fraction is not None:
            tumour = train_ds.tumour_slices
            n_t, n_f = int(tumour.sum()), int((~tumour).sum())
            if n_t == 0:
                raise DataError(f"{config.data}: tumour_fraction={config.tumour_fraction} but the training split has no tumour slices")
            if n_f == 0 or config.tumour_fraction == 1.0:
                weights = tumour.astype(np.float64)
            else:
                weights = np.where(tumour, config.tumour_fraction / n_t, (1 - config.tumour_fraction) / n_f)

        def batches_for(epoch: int) -> list[list[int]]:
            return epoch_batches(
                len(train_ds), config.batch_size, config.seed, epoch, rank, world,
                weights=weights, num_samples=config.samples_per_epoch,
            )

        seed_everything(config.seed)
        model = build_model(
            config.model, in_channels=1, out_channels=1, base_channels=config.base_channels,
            depth=config.depth, batch_norm=config.batch_norm,
        )
        loss_fn = build_loss(config.loss, lam=config.lam, alpha=config.alpha, gamma=config.gamma)
        model.to(device)
        if on_cuda:
            model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = len(batches_for(0))
        if config.schedule == "plateau":
            scheduler: Any = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=0.5, patience=5
            )
        elif config.schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, build_lr_lambda(config, steps_per_epoch))
        else:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

        history: list[dict[str, float]] = []
        start_epoch, best_dice, best_epoch, since_best = 0, -1.0, 0, 0
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            start_epoch = int(checkpoint["epoch"])
            best_dice, best_epoch = float(checkpoint["best_val_dice"]), int(checkpoint["best_epoch"])
            since_best = int(checkpoint["since_best"])
            history = list(checkpoint["history"])
            _set_rng_state(checkpoint["rng"])

        net: nn.Module = model
        if world > 1:
            if on_cuda:
                net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if on_cuda else None
            )
        if config.compile and on_cuda:
            net = torch.compile(net)  # type: ignore[assignment]

        val_indices = list(range(len(val_ds)))[rank::world]
        stopped_early = False
        for epoch in range(start_epoch, config.epochs):
            t0 = time.time()
            net.train()
            batches = batches_for(epoch)
            train_ds.set_epoch(epoch)
            loader = DataLoader(
                train_ds, batch_sampler=_FixedBatches(batches), num_workers=config.num_workers,
                worker_init_fn=_seed_worker,
                generator=torch.Generator().manual_seed(config.seed * 7919 + epoch),
                pin_memory=on_cuda,
            )
            bar = tqdm(
                loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not (progress and is_main),
                leave=True, dynamic_ncols=True,
            )
            loss_sum = torch.zeros(2, dtype=torch.float64)
            for images, masks in bar:
                images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
                if on_cuda:
                    images = images.contiguous(memory_format=torch.channels_last)
                with autocast(device, precision):
                    logits = net(images)
                loss = loss_fn(logits.float(), masks)
                if not torch.isfinite(loss):
                    raise LungsegError(
                        f"training diverged at epoch {epoch + 1} (loss {loss.item()}); lower --lr"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if config.schedule != "plateau":
                    scheduler.step()
                loss_sum += torch.tensor([loss.item() * len(images), len(images)], dtype=torch.float64)
                bar.set_postfix(loss=f"{loss.item():.4f}")

            counts = _validate(
                model, val_ds, val_indices, config.batch_size, device, config.threshold,
                precision=precision, channels_last=on_cuda,
            )
            if world > 1:
                reduced = torch.cat([counts, loss_sum]).to(device)
                dist.all_reduce(reduced)
                counts, loss_sum = reduced.cpu()[:3], reduced.cpu()[3:]
            tp, fp, fn = (int(c) for c in counts)
            val_dice = Confusion(tp=tp, fp=fp, fn=fn, tn=0).dice
            train_loss = float(loss_sum[0] / max(loss_sum[1], 1.0))
            if config.schedule == "plateau":
                scheduler.step(val_dice)
            bar.set_postfix(loss=f"{train_loss:.4f}", val_dice=f"{val_dice:.4f}")
            bar.close()
            history.append({
                "epoch": epoch + 1, "train_loss": train_loss, "val_dice": val_dice,
                "lr": float(optimizer.param_groups[0]["lr"]), "time_s": round(time.time() - t0, 3),
            })
            improved = val_dice > best_dice
            if improved:
                best_dice, best_epoch, since_best = val_dice, epoch + 1, 0
            else:
                since_best += 1
            if is_main:
                if improved:
                    atomic_torch_save(
                        {"model": model.state_dict(), "epoch": epoch + 1, "val_dice": val_dice,
                         "config": config.to_dict()},
                        best_path,
                    )
                atomic_torch_save(
                    {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                     "best_val_dice": best_dice, "best_epoch": best_epoch, "since_best": since_best,
                     "history": history, "rng": _rng_state(), "config": config.to_dict()},
                    last_path,
                )
                _write_history(out / "history.csv", history)
            if config.patience is not None and since_best >= config.patience:
                stopped_early = True
                break

        wall = time.time() - started
        result = RunResult(
            run_dir=out, best_val_dice=best_dice, best_epoch=best_epoch,
            final_val_dice=history[-1]["val_dice"] if history else float("nan"),
            epochs_run=len(history), stopped_early=stopped_early, wall_time_s=wall,
            device=str(device), history=history,
        )
        if is_main:
            from lungseg.provenance import collect

            summary = {k: v for k, v in asdict(result).items() if k not in ("history", "run_dir")}
            summary.update({
                "finished": True, "image_size": image_size, "world_size": world, "precision": precision,
                "n_train_slices": len(train_ds), "n_val_slices": len(val_ds),
                "n_patients": {k: len(v) for k, v in split.items()},
                "validation_dice_rule": "pooled over all validation slices at the network resolution",
            })
            _atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
            _atomic_write_text(
                out / "provenance.json",
                json.dumps(collect(str(device), started=started), indent=2) + "\n",
            )
        return result
    finally:
        torch.use_deterministic_algorithms(prev_deterministic)
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
