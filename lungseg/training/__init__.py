"""Training stage: :func:`train` a configuration into a run directory (resumable, DDP-ready).

* :mod:`lungseg.training.trainer` — :class:`Trainer` (setup, epoch, validation, checkpoint steps)
  and :func:`train`;
* :mod:`lungseg.training.patches` — :class:`PatchSampler`: training batches (patches with
  foreground oversampling, or whole slices) drawn and augmented as batched tensor operations.
"""

from lungseg.training.patches import BatchPlan, PatchSampler, epoch_generator
from lungseg.training.trainer import (
    RunResult,
    SplitByImageWarning,
    Trainer,
    build_lr_lambda,
    make_split,
    resolve_image_size,
    seed_everything,
    train,
)

__all__ = [
    "BatchPlan", "PatchSampler", "RunResult", "SplitByImageWarning", "Trainer", "build_lr_lambda", "epoch_generator",
    "make_split", "resolve_image_size", "seed_everything", "train",
]
