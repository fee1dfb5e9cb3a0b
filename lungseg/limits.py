"""The upper bound of every size a user can ask for, in one place.

Each bound is checked before anything of that size is allocated, so that a typo (``--batch-size
1000000000``, ``--depth 100``) or a hostile file (a 2 MB ``.npz`` that inflates to gigabytes, a model
``.zip`` with a huge metadata member) ends in one error line naming the argument or the file instead
of a traceback or the kernel's out-of-memory killer. Each bound sits far above what the paper's
recipe or any real CT dataset needs; ``lungseg train --help`` and ``book/running.md`` list them.
"""

from __future__ import annotations

__all__ = [
    "MAX_ABS_HU", "MAX_ARCHIVE_METADATA_BYTES", "MAX_ARCHIVE_WEIGHTS_BYTES", "MAX_BATCH_SIZE", "MAX_BOOTSTRAP",
    "MAX_DEPTH", "MAX_IMAGE_SIZE", "MAX_NPZ_MEMBER_BYTES", "MAX_RESCALE_SLOPE", "describe_limits",
]

#: Slices of one optimiser step or one forward pass (training also caps it at a set ``samples_per_epoch``).
MAX_BATCH_SIZE = 4096
#: Bootstrap resamples of a confidence interval (``evaluate --n-boot``): 1000 is the usual choice.
MAX_BOOTSTRAP = 100_000
#: Down-sampling levels of the U-Net (``--depth``): 2**depth must stay a sensible slice size.
MAX_DEPTH = 10
#: Side in pixels of the network's input and of a training crop (``--image-size``, ``--patch-size``).
MAX_IMAGE_SIZE = 4096
#: Bytes one array of an ``.npz`` may inflate to, read from the zip directory before decompressing:
#: 1024 slices of 512 x 512 float32 (larger datasets belong in a DICOM, MSD or NIfTI folder, read lazily).
MAX_NPZ_MEMBER_BYTES = 1 << 30
#: Bytes of a model ``.zip``'s weights member (the paper-scale network is ~140 MB in fp32).
MAX_ARCHIVE_WEIGHTS_BYTES = 1 << 30
#: Bytes of every other member of a model ``.zip`` (metadata, config, fingerprint, model card).
MAX_ARCHIVE_METADATA_BYTES = 4 << 20
#: Largest magnitude of a DICOM RescaleSlope: CT stores HU with slope 1 (or 0.5, 2, ...).
MAX_RESCALE_SLOPE = 1e4
#: Largest magnitude of a rescaled CT value in HU (air is -1000, dense metal a few 10 000 at most).
MAX_ABS_HU = 1e6


def describe_limits() -> str:
    """The bounds as one line of text, for ``--help``."""
    return (f"limits: batch size <= {MAX_BATCH_SIZE} (and <= --samples-per-epoch when set), depth <= {MAX_DEPTH},"
            f" image and patch size <= {MAX_IMAGE_SIZE}, bootstrap resamples <= {MAX_BOOTSTRAP}, an .npz array"
            f" <= {MAX_NPZ_MEMBER_BYTES >> 30} GiB unpacked, a model .zip's weights <= {MAX_ARCHIVE_WEIGHTS_BYTES >> 20}"
            f" MiB and its other members <= {MAX_ARCHIVE_METADATA_BYTES >> 20} MiB (lungseg.limits)")
