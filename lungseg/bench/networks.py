"""The networks the bench compares, by name: lungseg's own, and MONAI's reference.

lungseg's networks are named, labelled and built through the one registry :data:`lungseg.models.MODELS`
(keys ``"unet"``, ``"attention"``); the only name the bench adds is :data:`MONAI_REFERENCE`, MONAI's
``AttentionUnet`` at matched widths. Like the harness, this module imports no other module of the bench.
"""

from __future__ import annotations

from torch import nn

from lungseg.errors import LungsegError
from lungseg.models import MODELS, build_model

__all__ = ["MONAI_REFERENCE", "NETWORKS", "PAPER_MODEL", "build_bench_model", "label", "monai_available"]

#: The paper's network (a key of :data:`lungseg.models.MODELS`), the one compared against :data:`MONAI_REFERENCE`.
PAPER_MODEL = "attention"
#: MONAI's ``AttentionUnet``, the external reference (needs the ``bench`` extra).
MONAI_REFERENCE = "monai_attention_unet"
#: Every network a run measures, in table order: the registry's, then the reference.
NETWORKS: tuple[str, ...] = (*MODELS, MONAI_REFERENCE)


def label(name: str) -> str:
    """The table and legend label of a network, e.g. ``"AttentionResUNet (lungseg, paper)"``."""
    if name == MONAI_REFERENCE:
        return "AttentionUnet (MONAI)"
    if name not in MODELS:
        raise ValueError(f"unknown bench model {name!r}; expected one of {NETWORKS}")
    return f"{MODELS[name].__name__} (lungseg{', paper' if name == PAPER_MODEL else ''})"


def monai_available() -> bool:
    """True when MONAI (the reference) can be imported."""
    try:
        import monai.networks.nets  # noqa: F401
    except ImportError:
        return False
    return True


def build_bench_model(name: str, base_channels: int = 32, depth: int = 4) -> nn.Module:
    """One of the compared networks with one input and one output channel.

    Args:
        name: a key of :data:`lungseg.models.MODELS` (built by :func:`lungseg.models.build_model`) or
            :data:`MONAI_REFERENCE`.
        base_channels: width of the first level; level ``l`` has ``base_channels * 2**l`` channels.
        depth: number of down-sampling steps (MONAI: ``depth`` stride-2 levels).

    Raises:
        ValueError: unknown name.
        LungsegError: MONAI requested but not installed.
    """
    if name in MODELS:
        return build_model(name, in_channels=1, out_channels=1, base_channels=base_channels, depth=depth)
    if name == MONAI_REFERENCE:
        if not monai_available():
            raise LungsegError("MONAI is not installed: `pip install monai` (the 'bench' extra) to compare against it")
        from monai.networks.nets import AttentionUnet

        channels = tuple(base_channels * 2**level for level in range(depth + 1))
        return AttentionUnet(spatial_dims=2, in_channels=1, out_channels=1, channels=channels, strides=(2,) * depth)
    raise ValueError(f"unknown bench model {name!r}; expected one of {NETWORKS}")
