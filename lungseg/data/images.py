"""Reading 2D PNG/JPEG slices (e.g. the Kaggle dataset) as grey-level arrays in [0, 1].

Such images are already windowed and quantised by whoever exported them, so their original
Hounsfield units cannot be recovered; they are returned with ``intensity == "unit"`` semantics:
8-bit images are divided by 255, 16-bit ones by 65535, colour images are converted to luminance
(ITU-R 601, as ``PIL.Image.convert("L")``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lungseg.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "is_image_file", "read_image"]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has a PNG/JPEG suffix (case-insensitive) and is not a hidden file."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a PNG/JPEG file as a float32 array ``(H, W)`` in [0, 1].

    Raises:
        DataError: the file is missing, truncated, not an image, or of an unsupported pixel mode.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                if arr.min() < 0 or arr.max() > 65535:
                    raise DataError(f"{path}: 32-bit integer pixels outside [0, 65535] are not supported")
                scaled = arr / 65535.0
            elif mode == "F":
                scaled = np.asarray(img, dtype=np.float64)
                if scaled.min() < 0 or scaled.max() > 1:
                    raise DataError(f"{path}: floating-point image values must lie in [0, 1]")
            else:
                scaled = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable PNG/JPEG image") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: corrupt or truncated image ({err})") from None
    if scaled.ndim != 2:
        raise DataError(f"{path}: expected a single-channel image, got array shape {scaled.shape}")
    return scaled.astype(np.float32)
