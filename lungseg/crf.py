"""Fully-connected CRF post-processing of the paper, eq. (10) (Krähenbühl & Koltun, NeurIPS 2011).

The energy of a binary labelling ``x`` of a slice is

    E(x) = sum_i psi_u(x_i) + sum_{i<j} psi_p(x_i, x_j)                                       (10)

with the unary ``psi_u(x_i) = -log P(x_i)`` from the network's foreground probability and the
pairwise term a Potts penalty weighted by two Gaussian kernels,

    psi_p = [x_i != x_j] * ( w_g * exp(-|p_i - p_j|² / 2 s_g²)
                            + w_b * exp(-|p_i - p_j|² / 2 s_b² - |I_i - I_j|² / 2 s_I²) ),

a *smoothness* kernel on pixel positions ``p`` (removes isolated pixels) and an *appearance*
(bilateral) kernel that also compares the windowed CT intensity ``I`` (snaps boundaries to intensity
edges). Mean-field inference runs on pydensecrf2 (``import pydensecrf.densecrf``).

The intensity image is the CT slice clipped to the HU window (-1000, 400) and mapped linearly to
0..255 as one uint8 channel (one grey level ≈ 5.5 HU). pydensecrf's ``addPairwiseBilateral`` only
accepts RGB, so the bilateral features (y/s_b, x/s_b, I/s_I) are built with
``pydensecrf.utils.create_pairwise_bilateral`` and added with ``addPairwiseEnergy``; this is the
same kernel on a 3D instead of a 5D permutohedral lattice (faster, and a replicated grey channel
would silently shrink ``s_I`` by sqrt(3)).

Parallelism: the pydensecrf C++ code holds the GIL (measured: 2 threads were no faster than one on
the 2-core CI machine), so :func:`refine_batch` uses a process pool. On POSIX it forks, because a
spawned worker would import torch (via ``lungseg.preprocess``) before doing any work; the workers
only run NumPy and pydensecrf.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

try:  # the `crf` extra: a compiled extension, installed only where the CRF is used
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import create_pairwise_bilateral
except ImportError:  # pragma: no cover - exercised only without the extra
    dcrf = None
    create_pairwise_bilateral = None

from lungseg.preprocess import HU_WINDOW

__all__ = [
    "CRFParams", "MISSING_CRF", "candidate_boxes", "crf_available", "refine", "refine_batch", "require_pydensecrf", "window_to_uint8",
]

#: Why the CRF cannot run where pydensecrf2 is missing, and what to do: the message of
#: :func:`require_pydensecrf`, and what the book's runner prints for a chapter it skips.
MISSING_CRF = ("the dense CRF of eq. (10) (lungseg.crf, --crf) needs pydensecrf2, which is not installed: it is "
               "published as source only and builds with a C++ compiler and the Python headers "
               "(e.g. apt-get install g++ python3-dev), then pip install 'lungseg[crf]' (or pip install pydensecrf2)")


@dataclass(frozen=True)
class CRFParams:
    """Parameters of the dense CRF of eq. (10), in pixels and uint8 grey levels.

    The defaults are set a priori for CT slices with ~1-1.4 mm pixels (native 512² scans, or 256²
    after resizing of ~350 mm fields of view); they were not tuned on any evaluation split.

    Attributes:
        iterations: mean-field iterations (5 converges for two labels in practice and keeps a
            256×256 slice in the tens of milliseconds).
        gaussian_sxy: smoothness kernel width ``s_g`` in pixels. 3 px (~3-4 mm) is the
            Krähenbühl & Koltun default: it removes isolated false-positive pixels but is smaller
            than a 5 mm nodule (~4 px across), so small lesions are not smoothed away.
        gaussian_compat: smoothness weight ``w_g``; 3, the reference value.
        bilateral_sxy: appearance kernel width ``s_b`` in pixels. 15 px (~15-20 mm) spans a typical
            tumour, so the label can propagate to similar-intensity pixels across the lesion.
        bilateral_srgb: appearance intensity width ``s_I`` in grey levels. 10 levels ≈ 55 HU: soft
            tissue (~40 HU) and aerated lung (~-850 HU) are ~160 levels apart and effectively never
            linked, while CT noise (σ ≈ 10-25 HU ≈ 2-5 levels) stays inside the kernel.
        bilateral_compat: appearance weight ``w_b``; 5, within the 3-10 range used for medical
            dense CRFs (above the smoothness weight, so edges dominate over pure smoothing).
        window: HU window mapped to 0..255, or None when images are already unit intensities in
            [0, 1] (e.g. PNG slices), which are scaled by 255.
        clip: probabilities are clipped to ``[clip, 1 - clip]`` before ``-log`` (finite unaries).
        crop_sigmas: :func:`refine_batch` refines a slice only around its pixels of probability
            >= 0.5: in the bounding box of each cluster of them, widened on every side by
            ``crop_sigmas`` times the wider kernel's width (45 px by default) and clipped to the slice
            (clusters more than twice that apart get a box each); pixels outside are background. At
            that distance a kernel weighs ``exp(-crop_sigmas² / 2)`` (1.1 % at 3) of a neighbour's, so
            this is an approximation of the whole-slice CRF that spares it the air and bone of a
            512² slice; its effect on the masks is measured in ``benchmarks/NOTES.md``. ``None``:
            whole slices (exact).
    """

    iterations: int = 5
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 15.0
    bilateral_srgb: float = 10.0
    bilateral_compat: float = 5.0
    window: tuple[float, float] | None = HU_WINDOW
    clip: float = 1e-5
    crop_sigmas: float | None = 3.0

    def __post_init__(self) -> None:
        if int(self.iterations) != self.iterations or self.iterations < 1:
            raise ValueError(f"CRFParams.iterations must be a positive integer, got {self.iterations!r}")
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"CRFParams.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("gaussian_compat", "bilateral_compat"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"CRFParams.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.window is not None and not (len(self.window) == 2 and self.window[0] < self.window[1]):
            raise ValueError(
                f"CRFParams.window must be (low, high) with low < high, or None; got {self.window!r}"
            )
        if not 0.0 < self.clip < 0.5:
            raise ValueError(f"CRFParams.clip must be in (0, 0.5), got {self.clip!r}")
        if self.crop_sigmas is not None and not float(self.crop_sigmas) > 0:
            raise ValueError(f"CRFParams.crop_sigmas must be > 0 or None, got {self.crop_sigmas!r}")

    def crop_margin(self) -> int | None:
        """Pixels added on every side of a slice's candidate box (:attr:`crop_sigmas`), ``None`` for whole slices."""
        if self.crop_sigmas is None:
            return None
        widest = max(self.gaussian_sxy, self.bilateral_sxy if self.bilateral_compat > 0 else 0.0)
        return int(math.ceil(self.crop_sigmas * widest))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable) of the parameters."""
        return asdict(self)


def _params(params: CRFParams | None, overrides: dict[str, Any]) -> CRFParams:
    base = CRFParams() if params is None else params
    if not isinstance(base, CRFParams):
        raise ValueError(f"params must be a CRFParams or None, got {type(base).__name__}")
    known = {f.name for f in fields(CRFParams)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown CRF parameter(s) {unknown}; expected some of {sorted(known)}")
    return replace(base, **overrides) if overrides else base


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensors, without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype} shape {arr.shape}")
    return arr


def _check_pair(image: Any, prob: Any, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    img = _to_numpy(image, "image")
    p = _to_numpy(prob, "prob")
    expected = "(H, W)" if ndim == 2 else "(N, H, W)"
    if img.ndim != ndim:
        raise ValueError(f"image must be {expected}, got shape {img.shape} dtype {img.dtype}")
    if p.shape != img.shape:
        raise ValueError(f"prob must have the image's shape {img.shape}, got {p.shape}")
    if not np.all(np.isfinite(img)):
        raise ValueError(f"image contains NaN/inf (shape {img.shape}, dtype {img.dtype})")
    if np.isnan(p).any():
        raise ValueError(f"prob contains NaN (shape {p.shape}, dtype {p.dtype})")
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError(
            f"prob must be a foreground probability in [0, 1] (apply sigmoid to logits), got range "
            f"[{p.min():.4g}, {p.max():.4g}] dtype {p.dtype}"
        )
    if min(img.shape[-2:]) < 1:
        raise ValueError(f"image must have non-empty (H, W), got shape {img.shape}")
    return img, p


def window_to_uint8(image: np.ndarray, window: tuple[float, float] | None = HU_WINDOW) -> np.ndarray:
    """Map a CT slice to the uint8 intensity image of the appearance kernel.

    Args:
        image: slice ``(H, W)`` in HU (or unit intensities in [0, 1] when ``window`` is None).
        window: HU window ``(low, high)`` mapped linearly to 0..255, or None for unit images.

    Returns:
        C-contiguous uint8 array ``(H, W)``.
    """
    low, high = (0.0, 1.0) if window is None else (float(window[0]), float(window[1]))
    scaled = (np.clip(image.astype(np.float32), low, high) - low) * (255.0 / (high - low))
    return np.ascontiguousarray(np.rint(scaled), dtype=np.uint8)


def crf_available() -> bool:
    """Whether pydensecrf2 (the ``crf`` extra) is installed, so that the CRF can run."""
    return dcrf is not None


def require_pydensecrf() -> None:
    """Raise a clear error (:data:`MISSING_CRF`) when pydensecrf2 (the ``crf`` extra) is not installed."""
    if dcrf is None:
        raise ImportError(MISSING_CRF)


def _refine_one(image: np.ndarray, prob: np.ndarray, params: CRFParams) -> np.ndarray:
    """Refined foreground probability ``(H, W)`` float32 of one validated slice."""
    require_pydensecrf()
    h, w = prob.shape
    fg = np.clip(prob.astype(np.float32), params.clip, 1.0 - params.clip).reshape(-1)
    unary = np.ascontiguousarray(-np.log(np.stack([1.0 - fg, fg])), dtype=np.float32)  # (2, H*W)
    crf = dcrf.DenseCRF2D(w, h, 2)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    if params.bilateral_compat > 0:
        feats = create_pairwise_bilateral(
            sdims=(params.bilateral_sxy, params.bilateral_sxy),
            schan=(params.bilateral_srgb,),
            img=window_to_uint8(image, params.window),
            chdim=-1,
        )
        crf.addPairwiseEnergy(np.ascontiguousarray(feats, dtype=np.float32), compat=params.bilateral_compat)
    q = np.asarray(crf.inference(int(params.iterations)), dtype=np.float32)  # (2, H*W), sums to 1
    return q[1].reshape(h, w)


def refine(
    image_hu: Any,
    prob: Any,
    params: CRFParams | None = None,
    *,
    return_prob: bool = False,
    **overrides: Any,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Refine one slice's segmentation with the dense CRF of eq. (10).

    Args:
        image_hu: CT slice ``(H, W)`` in HU (unit intensities if ``window=None``); numpy or torch.
        prob: foreground probability ``(H, W)`` in [0, 1] (sigmoid of the logits), same shape.
        params: :class:`CRFParams`; None uses the defaults.
        return_prob: also return the refined foreground probability.
        **overrides: any :class:`CRFParams` field, e.g. ``iterations=10, bilateral_sxy=20``.

    Returns:
        uint8 mask ``(H, W)`` in {0, 1} (refined probability > 0.5, i.e. the MAP label), or
        ``(mask, refined_prob float32 (H, W))`` when ``return_prob``.

    Raises:
        ValueError: wrong dims, shape mismatch, NaN, ``prob`` outside [0, 1], unknown parameter.
    """
    cfg = _params(params, overrides)
    img, p = _check_pair(image_hu, prob, ndim=2)
    q = _refine_one(img, p, cfg)
    mask = (q > 0.5).astype(np.uint8)
    return (mask, q) if return_prob else mask


def _refine_chunk(args: tuple[list[tuple[np.ndarray, np.ndarray]], CRFParams]) -> list[np.ndarray]:
    pairs, params = args
    return [_refine_one(image, prob, params) for image, prob in pairs]


def refine_batch(
    images: Any,
    probs: Any,
    workers: int | None = None,
    params: CRFParams | None = None,
    *,
    return_prob: bool = False,
    progress: bool = False,
    **overrides: Any,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """:func:`refine` for a stack of slices, in parallel over slices.

    Args:
        images: CT slices ``(N, H, W)`` in HU.
        probs: foreground probabilities ``(N, H, W)`` in [0, 1].
        workers: worker processes; None uses ``min(os.cpu_count(), N // 4)`` (small stacks are not
            worth a pool), 0 or 1 runs in this process.
        params: :class:`CRFParams`; None uses the defaults.
        return_prob: also return the refined probabilities.
        progress: show a tqdm bar over chunks of slices.
        **overrides: any :class:`CRFParams` field.

    Returns:
        uint8 masks ``(N, H, W)`` (and float32 refined probabilities ``(N, H, W)`` if ``return_prob``).
        The masks alone are refined only where the CRF can find tumour (slices with a pixel >= 0.5, inside
        the boxes of :attr:`CRFParams.crop_sigmas` around their clusters); with ``return_prob`` every whole slice is refined.
    """
    require_pydensecrf()
    cfg = _params(params, overrides)
    imgs, ps = _check_pair(images, probs, ndim=3)
    if workers is not None and (int(workers) != workers or workers < 0):
        raise ValueError(f"workers must be a non-negative integer or None, got {workers!r}")
    if not return_prob:
        return _refine_candidates(imgs, ps, workers, cfg, progress)
    return _refine_all(imgs, ps, workers, cfg, progress, return_prob=True)


def _refine_candidates(imgs: np.ndarray, ps: np.ndarray, workers: int | None, cfg: CRFParams,
                       progress: bool) -> np.ndarray:
    """The CRF masks, run only where it can find tumour: on the slices that hold a pixel of probability
    >= 0.5, around each cluster of those pixels (:func:`candidate_boxes`).

    Skipping the other slices is exact: a slice without such a pixel refines to an empty mask, since every
    unary then prefers background, and the Potts messages of neighbours that all prefer background too
    can only push a pixel further towards it, so no mean-field iteration makes any pixel foreground
    (``tests/test_crf.py``). The boxes are the approximation described at :attr:`CRFParams.crop_sigmas`.
    """
    candidates = np.flatnonzero(ps.reshape(len(ps), -1).max(axis=1) >= 0.5) if len(ps) else np.zeros(0, int)
    masks = np.zeros(imgs.shape, dtype=np.uint8)
    regions = [(k, box, own) for k in candidates for box, own in candidate_boxes(ps[k], cfg.crop_margin())]
    refined = _refine_pairs([(imgs[k][box], ps[k][box]) for k, box, _ in regions], workers, cfg, progress)
    for (k, box, own), q in zip(regions, refined, strict=True):
        masks[k][box][own] = q[own] > 0.5
    return masks


def candidate_boxes(prob: np.ndarray, margin: int | None) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """The boxes of a slice the CRF refines, each with the pixels it decides (``True`` in its own region).

    With ``margin`` ``None``: the whole slice. Otherwise the pixels >= 0.5 are grown by ``margin`` on every
    side (a square); each connected region of the grown pixels is one box, its bounding box, and decides
    its own pixels only. So clusters of candidates whose grown squares do not touch (more than
    ``2 * margin + 1`` pixels apart along rows or columns) get boxes of their own instead of one box
    spanning both, which on a real scan with scattered false candidates covers a third less of the slice
    (``benchmarks/NOTES.md``). Every decided pixel is within ``margin`` (in rows and columns) of its own
    cluster and further than that from any other; a pixel's context ends at its cluster's box, so
    candidates of another cluster just beyond the margin are no longer in it. Where the boxes would
    cover more than the one box around all candidates of the slice (a ring of candidates around a
    cluster, or many tiny clusters), that one box is used.
    """
    everything = np.ones(prob.shape, dtype=bool)
    if margin is None:
        return [((slice(None), slice(None)), everything)]
    candidate = prob >= 0.5
    grown = ndimage.maximum_filter(candidate.astype(np.uint8), size=2 * margin + 1, mode="constant")
    labels, _ = ndimage.label(grown, structure=np.ones((3, 3), dtype=bool))
    boxes = ndimage.find_objects(labels)  # label i's box at index i - 1; label() leaves no gaps
    (whole,) = ndimage.find_objects(grown)
    if len(boxes) == 1 or sum(_area(b) for b in boxes) >= _area(whole):
        return [(whole, everything[whole])]
    return [(box, labels[box] == i) for i, box in enumerate(boxes, start=1)]


def _area(box: tuple[slice, slice]) -> int:
    return (box[0].stop - box[0].start) * (box[1].stop - box[1].start)


def _refine_all(imgs: np.ndarray, ps: np.ndarray, workers: int | None, cfg: CRFParams,
                progress: bool, return_prob: bool = False) -> Any:
    """Every whole slice refined: masks, and the refined probabilities when ``return_prob``."""
    out = _refine_pairs(list(zip(imgs, ps, strict=True)), workers, cfg, progress)
    q = np.stack(out) if out else np.zeros(imgs.shape, dtype=np.float32)
    masks = (q > 0.5).astype(np.uint8)
    return (masks, q) if return_prob else masks


def _refine_pairs(pairs: list[tuple[np.ndarray, np.ndarray]], workers: int | None, cfg: CRFParams,
                  progress: bool) -> list[np.ndarray]:
    """The refined foreground probability of each ``(image, prob)`` pair, in a process pool of ``workers``."""
    n = len(pairs)
    workers = min(os.cpu_count() or 1, n // 4) if workers is None else int(workers)
    # ~4 chunks per worker: balanced load, few pickling round trips
    n_chunks = max(1, min(n, 4 * max(workers, 1)))
    bounds = np.linspace(0, n, n_chunks + 1).astype(int)
    jobs = [(pairs[a:b], cfg) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    bar = tqdm(total=n, desc="dense CRF", unit="slice", disable=not progress)
    out: list[np.ndarray] = []
    if workers <= 1 or n <= 1:
        for job in jobs:
            out.extend(_refine_chunk(job))
            bar.update(len(job[0]))
    else:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method)) as pool:
            for job, res in zip(jobs, pool.map(_refine_chunk, jobs), strict=True):
                out.extend(res)
                bar.update(len(job[0]))
    bar.close()
    return out
