"""Training stage: :func:`train` a configuration into a run directory (resumable, DDP-ready).

* :mod:`lungseg.training.trainer` — :class:`Trainer` (setup, epoch, validation, checkpoint steps)
  and :func:`train`;
* :mod:`lungseg.training.sampling` — the per-epoch batch order and tumour oversampling.
"""

from lungseg.config import TrainConfig
from lungseg.training.sampling import epoch_batches, tumour_weights
from lungseg.training.trainer import (
    RunResult,
    Trainer,
    build_lr_lambda,
    make_split,
    resolve_image_size,
    seed_everything,
    train,
)

__all__ = [
    "RunResult", "TrainConfig", "Trainer", "build_lr_lambda", "epoch_batches", "make_split",
    "resolve_image_size", "seed_everything", "train", "tumour_weights",
]
