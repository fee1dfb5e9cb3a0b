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

from lungseg.errors import DataError, describe

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "is_image_file", "read_image"]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has a PNG/JPEG suffix (case-insensitive) and is not a hidden file."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


# Largest image read (8192 x 8192 pixels): CT slices are at most a few thousand pixels across, and a
# damaged or hostile header that declares more is refused before any pixel memory is allocated.
MAX_PIXELS = 8192 * 8192


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a PNG/JPEG file as a float32 array ``(H, W)`` in [0, 1].

    Only the PNG and JPEG decoders of Pillow are used, whatever the file's suffix; images larger
    than :data:`MAX_PIXELS` are refused before decoding.

    Raises:
        DataError: the file is missing, truncated, not a PNG/JPEG image, too large, or of an
            unsupported pixel mode; the message names the file.
    """
    path = Path(path)
    try:
        with Image.open(path, formats=["PNG", "JPEG"]) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise DataError(
                    f"{path}: image of {width}x{height} pixels; expected at most {MAX_PIXELS} pixels (a CT slice)"
                )
            img.load()
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                if arr.min() < 0 or arr.max() > 65535:
                    raise DataError(f"{path}: 32-bit integer pixels outside [0, 65535] are not supported")
                scaled = arr / 65535.0
            elif mode == "F":
                scaled = np.asarray(img, dtype=np.float64)
                if not (np.isfinite(scaled).all() and scaled.min() >= 0 and scaled.max() <= 1):
                    raise DataError(f"{path}: floating-point image values must be finite and lie in [0, 1]")
            else:
                scaled = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable PNG/JPEG image") from None
    except Image.DecompressionBombError:
        raise DataError(
            f"{path}: the image declares more pixels than {MAX_PIXELS}; corrupt or not a CT slice"
        ) from None
    except MemoryError:
        raise DataError(f"{path}: the image declares more pixels than can be loaded; corrupt file") from None
    except Exception as err:  # Pillow's decoders raise many types for damaged files (OSError, SyntaxError, ...)
        raise DataError(f"{path}: corrupt or truncated image ({describe(err)})") from None
    if scaled.ndim != 2 or scaled.size == 0:
        raise DataError(f"{path}: expected a single-channel image, got array shape {scaled.shape}")
    return scaled.astype(np.float32)
