"""The coarse pass: the network also looks at the scan with pixels twice as large, for tumours larger than it learnt.

A network trained on patches at a fixed pixel size (the published real-CT model: 48² patches of 2 mm) has learnt
tumours of the sizes its patches hold: nine in ten of its training cross-sections are 44 mm across or less
(``results/real-ct/training-range.json``). A mass of 60-100 mm takes up most of a 96 mm patch or more; on whole
slices at 2 mm the model marks little of it. Seen at 4 mm per pixel the same mass is 15-25 pixels across, the size
of a tumour it was trained on. The coarse pass runs the network (on the same planes) on the volume resampled to
:data:`COARSE_FACTOR` times the model's pixel size and takes, voxel by voxel, the higher of the two probability
maps: in the map, a mass found only at the coarse scale is added and nothing found at the model's own scale is
lost. The mask can still lose: a candidate the coarse map grows may then be set aside as lying outside the lungs
(:mod:`lungseg.inference.scan`). The unsure bar and the shortest extent for three planes
(:data:`~lungseg.inference.planes.MIN_EXTENT_MM`, in mm: a 64 mm slab is 16 pixels at 4 mm) were chosen without
the pass. This is the image-pyramid idea of multi-scale detection (Adelson et al., *RCA Engineer* 29:33-41, 1984),
here with no retraining. It is not the default: by the rule of ``benchmarks/coarse_pass.py``, written before the
run, it lost Dice on synthetic tumours of 3-50 mm (``benchmarks/NOTES.md``).
"""

from __future__ import annotations

from typing import Any

from lungseg.errors import LungsegError

__all__ = ["COARSE_BY_DEFAULT", "COARSE_FACTOR", "COARSE_PASSES", "check_coarse_pass", "coarse_spacing",
           "resolve_coarse_pass"]

#: How many times the model's own pixel size the coarse pass sees (2: 4 mm for a 2 mm model). Not tuned.
COARSE_FACTOR = 2.0

#: ``coarse`` values of :func:`lungseg.inference.scan.segment_scan` and ``lungseg predict --coarse-pass``.
COARSE_PASSES = ("auto", "on", "off")

#: Whether ``"auto"`` runs the coarse pass for a model that states its pixel size (set by the rule of
#: ``benchmarks/coarse_pass.py``, written before its run).
COARSE_BY_DEFAULT = False


def check_coarse_pass(coarse: str) -> None:
    """Refuse a ``coarse`` value not in :data:`COARSE_PASSES`, naming them."""
    if coarse not in COARSE_PASSES:
        raise LungsegError(f"coarse pass must be one of {', '.join(COARSE_PASSES)}; got {coarse!r}")


def resolve_coarse_pass(coarse: str, run: Any, where: str = "--coarse-pass") -> bool:
    """Whether the coarse pass runs: ``"auto"`` runs it for a model that states its pixel size when
    :data:`COARSE_BY_DEFAULT`; ``"on"`` and ``"off"`` say so.

    Raises:
        LungsegError: ``coarse`` not in :data:`COARSE_PASSES`, or ``"on"`` for a model that states no pixel size (it
            resizes every slice to its input, so it has no scale to coarsen).
    """
    check_coarse_pass(coarse)
    stated = run.fingerprint.pixel_mm is not None
    if coarse == "on" and not stated:
        raise LungsegError(
            f"{where}: the coarse pass needs a model trained at a stated pixel size (millimetres per pixel); the model"
            f" in {run.run_dir} resizes every slice to its input, so it has no pixel size to coarsen")
    return coarse == "on" or (coarse == "auto" and stated and COARSE_BY_DEFAULT)


def coarse_spacing(spacing: tuple[float, ...]) -> tuple[float, ...]:
    """The voxel size to tell the network so that it sees the volume at :data:`COARSE_FACTOR` times its pixel
    size: the true spacing divided by the factor (the network resamples to its pixel size from the spacing it is
    told, so a smaller stated voxel gives fewer, larger pixels)."""
    return tuple(float(s) / COARSE_FACTOR for s in spacing)
