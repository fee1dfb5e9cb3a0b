"""Start a training run from another run's weights (pretraining, then fine-tuning).

:attr:`lungseg.config.TrainConfig.init_weights` names a run folder (its ``best`` checkpoint) or a
checkpoint file; its network weights
replace the random initialisation before the first epoch, and everything else (optimiser, schedule,
data order) starts afresh. The network settings must match: a checkpoint of another architecture,
width or depth is refused with the mismatch named, never loaded partially.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from lungseg.config import TrainConfig
from lungseg.errors import LungsegError

__all__ = ["load_initial_weights", "read_initial_weights"]


def _read_weights(source: Path) -> dict[str, torch.Tensor]:
    from lungseg.rundir import RunDir, read_checkpoint

    if source.is_dir():
        run = RunDir(source)
        if not run.checkpoint_path("best").is_file():
            raise LungsegError(f"init_weights: {source} is a folder without a best checkpoint "
                               f"({run.checkpoint_path('best').name}); expected a run folder of lungseg train")
        return run.load_checkpoint("best")["model"]
    if not source.is_file():
        raise LungsegError(f"init_weights: {source} does not exist; expected a run folder or a checkpoint (.pt)")
    if _is_export(source):  # training comes before inference: it does not unpack exports
        raise LungsegError(f"init_weights: {source} is an exported model archive; start from the run folder it was "
                           "exported from (or its best checkpoint)")
    return read_checkpoint(source, source)["model"]


def _is_export(path: Path) -> bool:
    """A model archive of ``lungseg export`` (a ``.pt`` checkpoint is a zip file too, without the metadata)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name == "configs/metadata.json" or name.endswith("/configs/metadata.json") for name in zf.namelist())


def read_initial_weights(config: TrainConfig, out_dir: str | Path) -> dict[str, torch.Tensor] | None:
    """The weights a fresh run of ``config`` starts from, checked against its network (``None`` without
    :attr:`~lungseg.config.TrainConfig.init_weights`). Called before the run folder is written, so that a
    wrong path or network is refused while the folder is still free for the corrected command.

    Raises:
        LungsegError: the source lies inside ``out_dir`` (a fresh run clears its folder of earlier
            results), cannot be read, is an export, or its weights do not fit the network of ``config``
            (the message names the first missing, unexpected or differently shaped tensors).
    """
    if not config.init_weights:
        return None
    from lungseg.models import build_model

    source, out = Path(config.init_weights).resolve(), Path(out_dir).resolve()
    if source == out or out in source.parents:
        raise LungsegError(f"init_weights: {config.init_weights} lies inside the output folder {out_dir}, which a new "
                           "run clears; start from a copy elsewhere or choose another output folder")
    model = build_model(config.model, in_channels=1, out_channels=1, base_channels=config.base_channels,
                        depth=config.depth, batch_norm=config.batch_norm)
    load_initial_weights(model, source)
    return model.state_dict()


def load_initial_weights(model: nn.Module, source: str | Path) -> None:
    """Copy the network weights of ``source`` (a run folder or checkpoint file) into ``model``.

    Raises:
        LungsegError: ``source`` cannot be read, or its weights do not fit ``model`` (the message names
            the first missing, unexpected or differently shaped tensors).
    """
    source = Path(source)
    weights = _read_weights(source)
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = [f"{k} {tuple(weights[k].shape)} != {tuple(own[k].shape)}" for k in own
              if k in weights and weights[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
                 f"shapes {shapes[:3]}" if shapes else ""]
        raise LungsegError(f"init_weights: the weights of {source} do not fit this network (model, base_channels, "
                           f"depth and batch_norm must match the run they come from): "
                           f"{'; '.join(p for p in parts if p)}")
    model.load_state_dict(weights)
