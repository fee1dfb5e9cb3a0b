"""The two segmentation networks compared in the paper, and their size/cost.

* :class:`UNet` — the baseline of eqs. (2)-(3);
* :class:`AttentionResUNet` — residual blocks plus attention gates on the skips (eq. 6), the paper's model.

Both are configurations of one encoder -> decoder -> segmentation-head scaffold,
:class:`SegmentationModel` (``segmentation_models_pytorch`` style: ``check_input_shape``, ``predict``).
Both map ``(B, C, H, W)`` to logits ``(B, 1, H, W)``; the same ``base_channels``/``depth`` give a fair
comparison. :func:`build_model` picks one by name.
"""

from __future__ import annotations

from typing import Any

from lungseg.models.attention_resunet import AttentionResUNet
from lungseg.models.base import SegmentationModel
from lungseg.models.complexity import count_parameters, forward_flops
from lungseg.models.unet import UNet

__all__ = [
    "MODELS", "AttentionResUNet", "SegmentationModel", "UNet", "build_model", "count_parameters", "forward_flops",
]

MODELS: dict[str, type[SegmentationModel]] = {"unet": UNet, "attention": AttentionResUNet}


def build_model(name: str, **kwargs: Any) -> SegmentationModel:
    """Instantiate a network by name.

    Args:
        name: ``"unet"`` (baseline) or ``"attention"`` (:class:`AttentionResUNet`).
        **kwargs: constructor arguments (``in_channels``, ``out_channels``, ``base_channels``, ``depth``,
            ``batch_norm``).

    Raises:
        ValueError: unknown name.
    """
    if name not in MODELS:
        raise ValueError(f"build_model: unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)
