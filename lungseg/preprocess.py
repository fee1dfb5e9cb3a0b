"""Intensity normalisation and spatial resizing of CT slices (paper, "Data Preprocessing", eq. 1).

The pipeline the paper describes, in the order it describes it:

1. stored pixel values -> Hounsfield units with the DICOM ``RescaleSlope`` / ``RescaleIntercept``
   (done where the files are read: :func:`lungseg.data.dicom_header.pixels_hu`; NIfTI's scaling by nibabel);
2. clipping to a HU window, by default ``[-1000, 400]`` (:func:`clip_window`);
3. z-score normalisation ``x' = (x - mu) / sigma`` (eq. 1) with ``mu``/``sigma`` either per scan
   (:func:`zscore`) or from dataset statistics stored in a :class:`Fingerprint` that travels with a
   trained model as JSON;
4. bilinear resizing of every axial slice to a fixed ``S x S`` grid (default 256), nearest neighbour for
   masks (:func:`resize_image`, :func:`resize_mask`), and the inverse resize of a prediction back to the
   native grid (:func:`restore_prediction`).

:func:`preprocess_slices` chains 2-4 and is the one entry point that training, evaluation and prediction
share, so the three can never drift apart. Every array function accepts numpy arrays or torch tensors and
returns the same type; torch tensors stay on their device.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lungseg.errors import DataError
from lungseg.files import atomic_write_text

if TYPE_CHECKING:
    from lungseg.data.volume import CTVolume

__all__ = [
    "HU_WINDOW",
    "Fingerprint",
    "clip_window",
    "normalize",
    "preprocess_slices",
    "resize_image",
    "resize_mask",
    "restore_prediction",
    "zscore",
]

HU_WINDOW: tuple[float, float] = (-1000.0, 400.0)
"""Default HU window: lung parenchyma (about -900 HU) up to soft tissue / tumour (up to ~400 HU)."""

_FINGERPRINT_FORMAT = "lungseg-fingerprint"
# A scan whose standard deviation is below this (e.g. an all-air padding slice) is only centred:
# dividing by ~0 would turn numerical noise into huge values.
_MIN_STD = 1e-6

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def _check_window(window: tuple[float, float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(f"window must be a pair (low, high), got {window!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"window must be finite with low < high, got {window!r}")
    return low, high


def clip_window(x: Array, window: tuple[float, float] = HU_WINDOW) -> Array:
    """Clip intensities to a HU window (the step before eq. 1 in the paper).

    Args:
        x: numpy array or torch tensor of any shape, in HU.
        window: ``(low, high)`` in HU, ``low < high``.

    Returns:
        Same type and shape, float32 (numpy) or the input's floating dtype (torch).
    """
    low, high = _check_window(window)
    if isinstance(x, torch.Tensor):
        x = x if x.is_floating_point() else x.float()
        return x.clamp(low, high)
    return np.clip(np.asarray(x, dtype=np.float32), low, high)


def zscore(x: Array, mean: float | None = None, std: float | None = None) -> Array:
    """Z-score normalisation, eq. (1): ``x' = (x - mu) / sigma``.

    With ``mean`` and ``std`` both ``None`` the statistics are those of ``x`` itself (per-scan
    normalisation: pass one scan or one slice). Otherwise both must be given (dataset statistics, e.g. from a
    :class:`Fingerprint`). A per-scan standard deviation below 1e-6 (a constant image) only centres the
    image instead of dividing by ~0.

    Args:
        x: numpy array or torch tensor, any shape.
        mean: dataset mean ``mu``, or ``None`` for per-scan statistics.
        std: dataset standard deviation ``sigma > 0``, or ``None`` for per-scan statistics.

    Returns:
        Same type and shape as ``x``, float32 for numpy.

    Raises:
        ValueError: if exactly one of ``mean``/``std`` is given, or ``std <= 0``.
    """
    if (mean is None) != (std is None):
        raise ValueError(f"zscore: give both mean and std or neither, got mean={mean!r}, std={std!r}")
    if std is not None and not (math.isfinite(std) and std > 0):
        raise ValueError(f"zscore: std must be finite and > 0, got {std!r}")
    if isinstance(x, torch.Tensor):
        x = x if x.is_floating_point() else x.float()
        if mean is None:
            # Per-scan statistics in float64: float32 accumulation over ~1e8 voxels drifts.
            m, s = x.double().mean(), x.double().std(unbiased=False)
            s = torch.where(s < _MIN_STD, torch.ones_like(s), s)
            return ((x - m.to(x.dtype)) / s.to(x.dtype)).to(x.dtype)
        return (x - mean) / std
    x = np.asarray(x, dtype=np.float32)
    if mean is None:
        m = float(x.mean(dtype=np.float64))
        s = float(x.std(dtype=np.float64))
        return ((x - m) / (s if s >= _MIN_STD else 1.0)).astype(np.float32)
    return ((x - mean) / std).astype(np.float32)


@dataclass
class Fingerprint:
    """Dataset intensity statistics used by eq. (1) with global normalisation; saved next to a model.

    Computed on the training split only (never on validation/test patients) and reused unchanged at
    evaluation and prediction time.

    Attributes:
        mean: mean ``mu`` of the (windowed) training intensities.
        std: standard deviation ``sigma`` of the (windowed) training intensities, ``> 0``.
        window: HU window applied before normalisation, or ``None`` (always ``None`` for ``"unit"``
            intensities, which are not in HU).
        image_size: side ``S`` of the square network input ``(S, S)``.
        intensity: ``"hu"`` or ``"unit"`` (see :class:`lungseg.data.volume.CTVolume`).
        n_voxels: number of voxels the statistics were computed from (provenance).
        pixel_mm: in-plane pixel size (mm) of the network's training input, where the model states it:
            a scan is then resampled to it and the fully convolutional network run on whole slices,
            whatever the field of view (``None``: every slice is resized to ``(S, S)``, as in training).
        unit_window: for a ``"unit"`` model, the HU window whose clip-and-scale to [0, 1] matches how
            its training images were scaled; it lets the model take a scan in HU (``None``: it cannot).
    """

    mean: float
    std: float
    window: tuple[float, float] | None = HU_WINDOW
    image_size: int = 256
    intensity: str = "hu"
    n_voxels: int = 0
    pixel_mm: float | None = None
    unit_window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        self.mean, self.std = float(self.mean), float(self.std)
        if not math.isfinite(self.mean):
            raise ValueError(f"Fingerprint.mean must be finite, got {self.mean!r}")
        if not (math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"Fingerprint.std must be finite and > 0, got {self.std!r}")
        if self.window is not None:
            self.window = _check_window(self.window)
        if isinstance(self.image_size, bool) or int(self.image_size) != self.image_size or self.image_size < 1:
            raise ValueError(f"Fingerprint.image_size must be a positive integer, got {self.image_size!r}")
        self.image_size = int(self.image_size)
        if self.intensity not in ("hu", "unit"):
            raise ValueError(f"Fingerprint.intensity must be 'hu' or 'unit', got {self.intensity!r}")
        if self.intensity == "unit" and self.window is not None:
            raise ValueError(f"Fingerprint: a HU window {self.window} makes no sense for 'unit' intensities; "
                             "use window=None")
        self.n_voxels = int(self.n_voxels)
        if self.pixel_mm is not None:
            if isinstance(self.pixel_mm, bool) or not (math.isfinite(float(self.pixel_mm)) and self.pixel_mm > 0):
                raise ValueError(f"Fingerprint.pixel_mm must be a positive number of millimetres, got {self.pixel_mm!r}")
            self.pixel_mm = float(self.pixel_mm)
        if self.unit_window is not None:
            if self.intensity != "unit":
                raise ValueError(f"Fingerprint.unit_window {self.unit_window} is for 'unit' models; this one is 'hu'")
            self.unit_window = _check_window(self.unit_window)

    def to_json(self, path: str | Path) -> Path:
        """Write the fingerprint to ``path`` as JSON and return the path."""
        path = Path(path)
        atomic_write_text(path, self.to_json_text())
        return path

    def to_json_text(self) -> str:
        """The JSON text :meth:`to_json` writes."""
        data: dict[str, Any] = {"format": _FINGERPRINT_FORMAT, **asdict(self)}
        data["window"] = list(self.window) if self.window is not None else None
        data["unit_window"] = list(self.unit_window) if self.unit_window is not None else None
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, path: str | Path) -> Fingerprint:
        """Read a fingerprint written by :meth:`to_json`.

        Raises:
            DataError: the file is missing, not JSON, or lacks/has invalid fields (the message names it).
        """
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise DataError(f"{path}: fingerprint file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not a readable JSON fingerprint ({exc})") from None
        return cls.from_json_text(text, path)

    @classmethod
    def from_json_text(cls, text: str | bytes, source: str | Path) -> Fingerprint:
        """A fingerprint from the text of a file written by :meth:`to_json` (e.g. a member of a
        model ``.zip``); ``source`` names it in errors.

        Raises:
            DataError: not JSON, or lacking/holding invalid fields.
        """
        try:
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{source}: not a readable JSON fingerprint ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != _FINGERPRINT_FORMAT:
            raise DataError(f"{source}: expected a JSON object with \"format\": \"{_FINGERPRINT_FORMAT}\"")
        missing = [k for k in ("mean", "std") if k not in data]
        if missing:
            raise DataError(f"{source}: fingerprint lacks required field(s) {missing}")
        names = ("mean", "std", "window", "image_size", "intensity", "n_voxels", "pixel_mm", "unit_window")
        fields = {k: data[k] for k in names if k in data}
        for key in ("window", "unit_window"):
            if isinstance(fields.get(key), list):
                fields[key] = tuple(fields[key])
        try:
            return cls(**fields)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{source}: invalid fingerprint: {exc}") from None

    @classmethod
    def from_volumes(
        cls,
        volumes: Iterable[CTVolume],
        window: tuple[float, float] | None = HU_WINDOW,
        image_size: int = 256,
        max_voxels: int | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> Fingerprint:
        """Dataset statistics of the windowed intensities of ``volumes`` (pass the TRAINING split only).

        Statistics are merged volume by volume in float64 (Chan et al.'s parallel variance), so the
        whole dataset never has to be in memory. For ``"unit"`` volumes no window is applied and the
        fingerprint's window is ``None``, whatever ``window`` says.

        Args:
            volumes: iterable of :class:`~lungseg.data.volume.CTVolume`, all with the same ``intensity``.
            window: HU window applied before the statistics (``None``: no clipping); ignored for "unit".
            image_size: network input side ``S`` recorded in the fingerprint.
            max_voxels: if given, volumes with more voxels contribute this many, drawn uniformly at random
                (with replacement) with ``seed`` (faster on large studies; ``None`` uses every voxel).
            seed: seed of the subsampling.
            progress: show a tqdm progress bar.

        Returns:
            The :class:`Fingerprint`.

        Raises:
            ValueError: no volumes, mixed intensities, non-finite intensities, or constant intensities.
        """
        if max_voxels is not None and max_voxels < 2:
            raise ValueError(f"Fingerprint.from_volumes: max_voxels must be >= 2 or None, got {max_voxels!r}")
        clip = _check_window(window) if window is not None else None
        rng = np.random.default_rng(seed)
        n_total, mean_total, m2_total = 0, 0.0, 0.0
        intensity: str | None = None
        for vol in tqdm(volumes, desc="fingerprint", unit="volume", disable=not progress):
            if intensity is None:
                intensity = vol.intensity
            elif vol.intensity != intensity:
                raise ValueError(f"Fingerprint.from_volumes: mixed intensities: patient {vol.patient_id!r} is "
                                 f"{vol.intensity!r} but earlier volumes are {intensity!r}")
            # float32 throughout with float64 accumulation: a float64 copy of a 512x512x300 study is 630 MB.
            values = np.asarray(vol.image, dtype=np.float32).reshape(-1)
            if max_voxels is not None and values.size > max_voxels:
                values = values[rng.integers(0, values.size, size=max_voxels)]
            if intensity == "hu" and clip is not None:
                values = np.clip(values, *clip)
            n = values.size
            if n == 0:
                continue
            mean = float(values.mean(dtype=np.float64))
            m2 = float(np.square(values - np.float32(mean)).sum(dtype=np.float64))
            if not (math.isfinite(mean) and math.isfinite(m2)):
                raise ValueError(f"Fingerprint.from_volumes: non-finite intensities in patient {vol.patient_id!r} "
                                 f"(source {vol.source!r})")
            delta = mean - mean_total
            n_new = n_total + n
            mean_total += delta * n / n_new
            m2_total += m2 + delta * delta * n_total * n / n_new
            n_total = n_new
        if intensity is None or n_total == 0:
            raise ValueError("Fingerprint.from_volumes: no volumes (or only empty ones) were given")
        std = math.sqrt(m2_total / n_total)
        if std <= _MIN_STD:
            raise ValueError(f"Fingerprint.from_volumes: intensities are constant (mean {mean_total:g}, "
                             f"{n_total} voxels); cannot normalise")
        return cls(
            mean=mean_total,
            std=std,
            window=clip if intensity == "hu" else None,
            image_size=image_size,
            intensity=intensity,
            n_voxels=n_total,
        )


def normalize(x: Array, fingerprint: Fingerprint | None = None,
              window: tuple[float, float] | None = HU_WINDOW) -> Array:
    """Window clipping then z-score (eq. 1).

    Args:
        x: numpy array or torch tensor, any shape (one scan or slices of one scan for per-scan stats).
        fingerprint: dataset statistics; its ``window`` and ``mean``/``std`` are used and ``window``
            below is ignored. ``None``: clip to ``window`` and use per-scan statistics of ``x``.
        window: HU window when no fingerprint is given (``None``: no clipping, e.g. "unit" data).

    Returns:
        Same type and shape, float32 (numpy).
    """
    if fingerprint is not None:
        if fingerprint.window is not None:
            x = clip_window(x, fingerprint.window)
        return zscore(x, fingerprint.mean, fingerprint.std)
    if window is not None:
        x = clip_window(x, window)
    return zscore(x)


def _as_size(size: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(pair) != 2 or any(isinstance(v, bool) or int(v) != v or v < 1 for v in pair):
        raise ValueError(f"{name}: size must be a positive int or a pair (H, W) of positive ints, got {size!r}")
    return int(pair[0]), int(pair[1])


def _interpolate(x: Array, size: tuple[int, int], mode: str, name: str) -> Array:
    """Resize the last two axes of a ``(H, W)``, ``(N, H, W)`` or ``(B, C, H, W)`` array.

    Returns float32 numpy for numpy input; for torch input the input's floating dtype (float32 for
    integer/bool tensors). Callers cast back when they need to.
    """
    is_numpy = not isinstance(x, torch.Tensor)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if is_numpy else x
    if t.ndim not in (2, 3, 4):
        raise ValueError(f"{name}: expected shape (H, W), (N, H, W) or (B, C, H, W), got {tuple(t.shape)}")
    if t.shape[-2] == 0 or t.shape[-1] == 0:
        raise ValueError(f"{name}: empty spatial size in shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.float()
    if tuple(t.shape[-2:]) != size:
        lead = t.shape[:-2]
        flat = t.reshape(-1, 1, *t.shape[-2:])
        kwargs = {"align_corners": False} if mode == "bilinear" else {}
        t = F.interpolate(flat, size=size, mode=mode, **kwargs).reshape(*lead, *size)
    else:
        t = t.clone()  # never hand back a view of the caller's array
    return t.numpy() if is_numpy else t


def resize_image(x: Array, size: int | tuple[int, int] = 256) -> Array:
    """Bilinear resize of images to ``size`` (paper: every axial slice to 256 x 256).

    Uses ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``.

    Args:
        x: numpy array or torch tensor ``(H, W)``, ``(N, H, W)`` or ``(B, C, H, W)``.
        size: output side ``S`` or ``(H_out, W_out)``.

    Returns:
        Same type and number of dimensions with the last two axes ``size``; float32 for numpy.
    """
    return _interpolate(x, _as_size(size, "resize_image"), "bilinear", "resize_image")


def resize_mask(m: Array, size: int | tuple[int, int] = 256) -> Array:
    """Nearest-neighbour resize of label masks, keeping their dtype and label values.

    Uses ``mode="nearest-exact"`` (pixel-centre aligned, like PIL/scikit-image), so an integer
    up-scaling followed by the matching down-scaling returns the original mask exactly.

    Args:
        m: numpy array or torch tensor ``(H, W)``, ``(N, H, W)`` or ``(B, C, H, W)`` of labels.
        size: output side ``S`` or ``(H_out, W_out)``.

    Returns:
        Same type, dtype and number of dimensions with the last two axes ``size``.
    """
    out = _interpolate(m, _as_size(size, "resize_mask"), "nearest-exact", "resize_mask")
    if isinstance(m, torch.Tensor):
        return out.to(m.dtype)
    return out.astype(np.asarray(m).dtype, copy=False)


def restore_prediction(pred: Array, shape: tuple[int, int]) -> Array:
    """Inverse of the input resize: bring a network output back to the native ``(H, W)`` grid.

    Floating-point inputs are probabilities (or logits) and are resized bilinearly, so the caller
    thresholds *after* restoring (thresholding first would make the boundary blocky). Integer/bool
    inputs are label masks and are resized with nearest neighbour, keeping their dtype.

    Args:
        pred: numpy array or torch tensor ``(S, S)``, ``(N, S, S)`` or ``(B, 1, S, S)``.
        shape: native ``(H, W)`` (the last two axes of the original image).

    Returns:
        Same type and number of dimensions with the last two axes ``shape``.
    """
    size = _as_size(tuple(shape)[-2:], "restore_prediction")
    floating = pred.is_floating_point() if isinstance(pred, torch.Tensor) else np.issubdtype(
        np.asarray(pred).dtype, np.floating)
    if floating:
        return _interpolate(pred, size, "bilinear", "restore_prediction")
    return resize_mask(pred, size)


def preprocess_slices(images: Array, fingerprint: Fingerprint) -> Array:
    """Window, z-score with dataset statistics (eq. 1) and bilinear resize a stack of slices.

    The single preprocessing call shared by training, evaluation and prediction.

    Args:
        images: numpy array or torch tensor ``(N, H, W)`` in HU (or in [0, 1] for a "unit" fingerprint).
        fingerprint: dataset statistics and target size ``S``.

    Returns:
        float32 ``(N, S, S)`` of the same type as ``images``.

    Raises:
        ValueError: wrong number of dimensions, or intensities far outside [0, 1] for a "unit" fingerprint
            (HU data fed to a model trained on unit-scaled images).
    """
    if images.ndim != 3:
        raise ValueError(f"preprocess_slices: images must be (N, H, W), got shape {tuple(images.shape)}")
    n_values = images.numel() if isinstance(images, torch.Tensor) else images.size
    if fingerprint.intensity == "unit" and n_values:
        lo, hi = float(images.min()), float(images.max())
        if lo < -0.5 or hi > 1.5:
            raise ValueError(f"preprocess_slices: the fingerprint expects 'unit' intensities in [0, 1] but the "
                             f"images range over [{lo:g}, {hi:g}] (HU data given to a model trained on unit images?)")
    out = resize_image(normalize(images, fingerprint), fingerprint.image_size)
    return out.float() if isinstance(out, torch.Tensor) else out.astype(np.float32, copy=False)
