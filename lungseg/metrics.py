"""Segmentation metrics of the paper: Table 1, eqs. (11)-(14), Dice, IoU, small-tumour recall,
robustness to intensity variation (Table 2, "std" column) and patient-level bootstrap CIs.

Every overlap figure is computed from confusion counts (TP, FP, FN, TN; Table 1), in the style of
``segmentation_models_pytorch.metrics``: first count, then aggregate, then divide. Three aggregations
are reported, always under their own label, because they answer different questions and can differ
by tenths on tumour segmentation data:

``pooled``
    Counts summed over every pixel of the set, then one ratio (dominated by large tumours).
``per_image``
    Ratio per 2D image, then the mean over images.
``per_patient``
    Counts pooled over all images of a patient, ratio per patient, then the mean over patients
    (each patient weighs the same whatever their number of slices).

Images whose prediction and target are both empty follow one rule, :data:`EMPTY_MASK_RULE`, in every
function here. For binary masks eq. (14) F-score and Dice are the same number,
``2TP / (2TP + FP + FN)``, for every aggregation; a table quoting different Dice and F1 values cannot
have computed both from the same confusion counts.

Boundary figures, HD95 and surface Dice at a tolerance in mm (:func:`boundary_scores`,
:func:`boundary_summary`), are MONAI's, from the physical pixel/voxel spacing; their empty-mask rule
is :data:`BOUNDARY_EMPTY_RULE`, stated beside :data:`EMPTY_MASK_RULE`.

Lesion sizes are equivalent diameters: :func:`equivalent_diameter_mm` (disc of the same area, 2D) and
:func:`equivalent_sphere_diameter_mm` (sphere of the same volume, 3D).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

__all__ = [
    "AGGREGATIONS",
    "BOUNDARY_DEFINITION",
    "BOUNDARY_EMPTY_RULE",
    "BOUNDARY_METRICS",
    "BOUNDARY_TOLERANCE_MM",
    "DEFAULT_PERTURBATIONS",
    "EMPTY_MASK_RULE",
    "HD_PERCENTILE",
    "LESION_RULE",
    "METRIC_NAMES",
    "Confusion",
    "Lesion",
    "Perturbation",
    "bootstrap_all",
    "bootstrap_ci",
    "boundary_per_image",
    "boundary_scores",
    "boundary_summary",
    "confusion",
    "confusion_per_image",
    "dice",
    "equivalent_diameter_mm",
    "equivalent_sphere_diameter_mm",
    "intensity_robustness",
    "lesions",
    "ratio_or_default",
    "score",
    "small_tumor_recall",
    "summarize",
]

AGGREGATIONS: dict[str, str] = {
    "pooled": "confusion counts summed over all pixels of all images, then one ratio",
    "per_image": "ratio per 2D image, then mean over images (empty-mask rule applies)",
    "per_patient": "confusion counts pooled over each patient's images, ratio per patient, then mean "
    "over patients (empty-mask rule applies per patient)",
}

EMPTY_MASK_RULE = (
    "Images (patients) whose target and prediction are both empty are excluded from the per-image "
    "(per-patient) means and counted in n_empty_agreed (n_empty_agreed_patients) as true-negative "
    "images; an empty target with a non-empty prediction is kept with Dice = IoU = precision = "
    "recall = 0; the pooled aggregation uses all pixels of all images. Zero denominators give 1.0 "
    "when prediction and target are both empty and 0.0 otherwise."
)
"""The one empty-mask rule of every metric here (and the text :func:`summarize` reports).

"Both empty" means TP = FP = FN = 0 (:attr:`Confusion.both_empty`): nothing to find and nothing found.
Such an image's own ratios are 1.0 (:func:`ratio_or_default`: nothing was missed, nothing was wrongly
found), but it says nothing about how well tumours are outlined, so the per-image and per-patient means
leave it out rather than let true-negative slices inflate them. Every other zero denominator gives 0.0:
an empty target with a non-empty prediction, or a non-empty target with an empty prediction, scores 0.
The boundary figures (HD95, surface Dice) follow the same rule for "both empty" and state what "one
empty" means for a distance in :data:`BOUNDARY_EMPTY_RULE`."""

LESION_RULE = (
    "Lesions are 8-connected components (scipy.ndimage.label, 3x3 structure) of the 2D target mask "
    "of each image; equivalent diameter = 2*sqrt(area_mm2/pi) with area from the in-plane pixel "
    "spacing; a lesion is small when its equivalent diameter is < {max_diameter_mm:g} mm and hit when "
    "the prediction covers >= {min_overlap:.0%} of its pixels (and at least one pixel)."
)

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


# --------------------------------------------------------------------------------------------------
# Confusion counts and the ratios of eqs. (11)-(14)
# --------------------------------------------------------------------------------------------------
def _both_empty(tp: Any, fp: Any, fn: Any) -> Any:
    """Where prediction and target are both empty (TP = FP = FN = 0): the case of :data:`EMPTY_MASK_RULE`."""
    return (tp + fp + fn) == 0


def ratio_or_default(num: Any, den: Any, both_empty: Any) -> Any:
    """``num / den`` with the zero-denominator part of :data:`EMPTY_MASK_RULE`, vectorised over numpy arrays.

    Args:
        num: numerator(s).
        den: denominator(s), same shape as ``num``.
        both_empty: boolean(s), True where prediction and target are both empty (TP = FP = FN = 0).

    Returns:
        ``num / den`` where ``den > 0``; 1.0 where ``den == 0`` and ``both_empty``; else 0.0. A float
        for scalar input, a float64 array otherwise.
    """
    num_a = np.asarray(num, dtype=np.float64)
    den_a = np.asarray(den, dtype=np.float64)
    default = np.where(np.asarray(both_empty, dtype=bool), 1.0, 0.0)
    out = np.where(den_a > 0, num_a / np.where(den_a > 0, den_a, 1.0), default)
    return float(out) if out.ndim == 0 else out


#: ``name: (numerator, denominator)`` of every statistic, from float64 confusion counts (Table 1).
_RATIOS: dict[str, Callable[[Any, Any, Any, Any], tuple[Any, Any]]] = {
    "dice": lambda tp, fp, fn, tn: (2 * tp, 2 * tp + fp + fn),  # 2|P∩G| / (|P| + |G|): eqs. 4/7, hard masks
    "iou": lambda tp, fp, fn, tn: (tp, tp + fp + fn),  # Jaccard |P∩G| / |P∪G|
    "accuracy": lambda tp, fp, fn, tn: (tp + tn, tp + tn + fp + fn),  # eq. (11)
    "precision": lambda tp, fp, fn, tn: (tp, tp + fp),  # eq. (12)
    "recall": lambda tp, fp, fn, tn: (tp, tp + fn),  # eq. (13), sensitivity
    "f1": lambda tp, fp, fn, tn: (2 * tp, 2 * tp + fp + fn),  # eq. (14): the same number as Dice
}

METRIC_NAMES: tuple[str, ...] = tuple(_RATIOS)
"""Names of the confusion-count statistics (:func:`score`, :class:`Confusion`, :func:`summarize`),
in the order :func:`summarize` reports them."""


def _stat_from_counts(name: str, tp: Any, fp: Any, fn: Any, tn: Any) -> Any:
    """One statistic of :data:`METRIC_NAMES` from (arrays of) confusion counts."""
    if name not in _RATIOS:
        raise ValueError(f"statistic must be one of {METRIC_NAMES}, got {name!r}")
    tp, fp, fn, tn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn, tn))
    return ratio_or_default(*_RATIOS[name](tp, fp, fn, tn), _both_empty(tp, fp, fn))


@dataclass(frozen=True)
class Confusion:
    """Pixel confusion counts of Table 1 for a binary segmentation.

    Attributes:
        tp: tumour pixels predicted as tumour.
        fp: non-tumour pixels predicted as tumour.
        fn: tumour pixels predicted as non-tumour.
        tn: non-tumour pixels predicted as non-tumour.

    Confusions add (``a + b`` pools the pixels of both). The ratio properties follow
    :data:`EMPTY_MASK_RULE`.
    """

    tp: int
    fp: int
    fn: int
    tn: int

    def __post_init__(self) -> None:
        for key in ("tp", "fp", "fn", "tn"):
            value = getattr(self, key)
            if int(value) != value or value < 0:
                raise ValueError(f"Confusion.{key} must be a non-negative integer, got {value!r}")
            object.__setattr__(self, key, int(value))

    def __add__(self, other: Confusion) -> Confusion:
        if not isinstance(other, Confusion):
            return NotImplemented
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    def __radd__(self, other: Any) -> Confusion:
        # lets sum(list_of_confusions) start from the integer 0
        if other == 0:
            return self
        return self.__add__(other)

    @property
    def n_pixels(self) -> int:
        """Total number of pixels counted."""
        return self.tp + self.fp + self.fn + self.tn

    @property
    def both_empty(self) -> bool:
        """True when prediction and target are both empty (TP = FP = FN = 0), see :data:`EMPTY_MASK_RULE`."""
        return bool(_both_empty(self.tp, self.fp, self.fn))

    def score(self, name: str) -> float:
        """The statistic ``name`` of :data:`METRIC_NAMES` of these counts."""
        return _stat_from_counts(name, self.tp, self.fp, self.fn, self.tn)

    @property
    def accuracy(self) -> float:
        """Eq. (11): ``(TP + TN) / (TP + TN + FP + FN)``."""
        return self.score("accuracy")

    @property
    def precision(self) -> float:
        """Eq. (12): ``TP / (TP + FP)``."""
        return self.score("precision")

    @property
    def recall(self) -> float:
        """Eq. (13), sensitivity: ``TP / (TP + FN)``."""
        return self.score("recall")

    @property
    def sensitivity(self) -> float:
        """Alias of :attr:`recall` (eq. 13)."""
        return self.recall

    @property
    def f1(self) -> float:
        """Eq. (14), F-score: ``2TP / (2TP + FP + FN)``."""
        return self.score("f1")

    @property
    def dice(self) -> float:
        """Dice coefficient ``2|P∩G| / (|P| + |G|)`` (the overlap of eqs. 4/7, hard masks)."""
        return self.score("dice")

    @property
    def iou(self) -> float:
        """Intersection over union (Jaccard) ``TP / (TP + FP + FN)``."""
        return self.score("iou")

    def as_dict(self) -> dict[str, float]:
        """All :data:`METRIC_NAMES` as a dict of floats."""
        return {name: self.score(name) for name in METRIC_NAMES}


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensors, without importing torch here
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists etc.
        raise ValueError(f"{name} must be array-like, got {type(x).__name__}: {exc}") from exc


def _as_binary(x: Any, name: str) -> np.ndarray:
    """Validate a binary mask (bool, integer or float in {0, 1}) and return it as bool."""
    arr = _to_numpy(x, name)
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(
            f"{name} must be a binary mask (bool/int/float), got dtype {arr.dtype} shape {arr.shape}"
        )
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN (shape {arr.shape}, dtype {arr.dtype})")
    binary = arr == 1
    if not np.all(binary | (arr == 0)):
        bad = np.unique(arr[~(binary | (arr == 0))])[:5]
        raise ValueError(
            f"{name} must be binary with values in {{0, 1}} (threshold probabilities first), got dtype "
            f"{arr.dtype} shape {arr.shape} with values such as {bad.tolist()}"
        )
    return binary


def _pair(pred: Any, target: Any, ndim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (pred, target) pair; ``(N, 1, H, W)`` is squeezed to ``(N, H, W)`` when ndim=3."""
    p = _as_binary(pred, "pred")
    t = _as_binary(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape, got pred {p.shape} and target {t.shape}")
    if ndim is not None:
        if ndim == 3 and p.ndim == 4 and p.shape[1] == 1:
            p, t = p[:, 0], t[:, 0]
        if p.ndim != ndim:
            raise ValueError(
                f"pred and target must be {'(N, H, W)' if ndim == 3 else '(H, W)'} arrays "
                f"({ndim}D), got shape {p.shape}"
            )
    return p, t


def _count_rows(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-image counts ``(N, 4)`` int64 with columns TP, FP, FN, TN of ``(N, H, W)`` bool masks."""
    n = p.shape[0]
    pf, tf = p.reshape(n, -1), t.reshape(n, -1)
    tp = np.count_nonzero(pf & tf, axis=1)
    n_pred = np.count_nonzero(pf, axis=1)
    n_true = np.count_nonzero(tf, axis=1)
    fp, fn = n_pred - tp, n_true - tp
    tn = pf.shape[1] - tp - fp - fn
    return np.stack([tp, fp, fn, tn], axis=1).astype(np.int64)


def confusion(pred: Any, target: Any) -> Confusion:
    """Confusion counts (Table 1) of two binary masks of any (equal) shape, pooled over all pixels.

    Args:
        pred: binary prediction, any shape (bool, or int/float in {0, 1}); numpy or torch.
        target: binary ground truth, same shape.

    Returns:
        The :class:`Confusion` over all pixels.

    Raises:
        ValueError: on shape mismatch, NaN, or values other than 0/1.
    """
    p, t = _pair(pred, target)
    tp, fp, fn, tn = _count_rows(p.reshape(1, -1), t.reshape(1, -1))[0]
    return Confusion(tp, fp, fn, tn)


def confusion_per_image(pred: Any, target: Any) -> list[Confusion]:
    """Confusion counts of each image of a stack.

    Args:
        pred: binary predictions ``(N, H, W)`` (or ``(N, 1, H, W)``).
        target: binary targets, same shape.

    Returns:
        ``N`` :class:`Confusion` objects, in image order.
    """
    p, t = _pair(pred, target, ndim=3)
    return [Confusion(*row) for row in _count_rows(p, t)]


def score(name: str, c_or_pred: Confusion | Any, target: Any | None = None) -> float:
    """One statistic of eqs. (11)-(14), Dice or IoU, pooled over all pixels.

    Args:
        name: one of :data:`METRIC_NAMES` (``"dice"``, ``"iou"``, ``"accuracy"`` eq. 11,
            ``"precision"`` eq. 12, ``"recall"`` eq. 13, ``"f1"`` eq. 14).
        c_or_pred: a :class:`Confusion`, or a binary prediction of any shape.
        target: binary target of the prediction's shape (omit when passing a Confusion).

    Returns:
        The value, with :data:`EMPTY_MASK_RULE` for zero denominators.

    Raises:
        ValueError: unknown ``name``, or neither a Confusion nor a valid (pred, target) pair.
    """
    c = c_or_pred if target is None else confusion(c_or_pred, target)
    if not isinstance(c, Confusion):
        raise ValueError(f"score({name!r}) needs a Confusion, or a (pred, target) pair of binary masks")
    return c.score(name)


def dice(c_or_pred: Confusion | Any, target: Any | None = None) -> float:
    """``score("dice", c_or_pred, target)``: the Dice coefficient ``2TP / (2TP + FP + FN)``."""
    return score("dice", c_or_pred, target)


# --------------------------------------------------------------------------------------------------
# Lesions (connected components) and small-tumour recall
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lesion:
    """One 8-connected component of a 2D target mask.

    Attributes:
        pixels: ``(K, 2)`` int64 row/column indices of the component's pixels.
        area_mm2: area in mm², ``K * dy * dx``.
        diameter_mm: :func:`equivalent_diameter_mm` (disc of the same area).
    """

    pixels: np.ndarray
    area_mm2: float
    diameter_mm: float

    @property
    def n_pixels(self) -> int:
        """Number of pixels ``K``."""
        return int(self.pixels.shape[0])


def _spacing_rows(spacing: Any, n: int, name: str = "spacing") -> np.ndarray:
    """Validate in-plane spacing ``(2,)`` or ``(N, 2)`` (dy, dx) mm and broadcast it to ``(N, 2)``."""
    s = _to_numpy(spacing, name).astype(np.float64)
    if s.shape == (2,):
        s = np.broadcast_to(s, (n, 2))
    if s.shape != (n, 2):
        raise ValueError(
            f"{name} must be (2,) or (N, 2) = ({n}, 2) in-plane (dy, dx) mm, got shape {s.shape}"
        )
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        bad = s[~(np.isfinite(s) & (s > 0))][:3]
        raise ValueError(f"{name} must be finite and > 0 mm, got values such as {bad.tolist()}")
    return s


def equivalent_diameter_mm(area: Any, spacing: Any = (1.0, 1.0)) -> Any:
    """Diameter ``2 sqrt(A / pi)`` of the disc with the area ``A`` of a 2D lesion (the lesion-size rule).

    Args:
        area: pixel count(s) (with their ``spacing``) or area(s) in mm² (with the default spacing),
            a number or an array.
        spacing: in-plane pixel size ``(dy, dx)`` in mm.

    Returns:
        ``2 * sqrt(area * dy * dx / pi)`` in mm, float64 (an array for array input).
    """
    dy, dx = spacing
    return 2.0 * np.sqrt(np.asarray(area, dtype=np.float64) * dy * dx / np.pi)


def equivalent_sphere_diameter_mm(volume: Any, unit_mm3: float = 1.0) -> Any:
    """Diameter ``(6 V / pi)^(1/3)`` of the sphere with the volume ``V`` of a 3D lesion.

    Args:
        volume: the volume in units of ``unit_mm3`` mm³: voxels with ``unit_mm3`` the voxel volume, ml
            with 1000, or mm³ with the default 1 (a number or an array).
        unit_mm3: mm³ per unit of ``volume``.

    Returns:
        ``(6 * volume * unit_mm3 / pi) ** (1/3)`` in mm (a float for Python numbers).
    """
    # Left as Python arithmetic in this order: callers that wrote ``(6 * n_voxels * voxel_volume /
    # pi) ** (1 / 3)`` get the same bits (float rounding depends on the order of the products).
    return (6 * volume * unit_mm3 / math.pi) ** (1 / 3)


def lesions(mask2d: Any, spacing: Any) -> list[Lesion]:
    """Connected lesions of one 2D mask (8-connectivity), with their equivalent diameters.

    Args:
        mask2d: binary mask ``(H, W)``.
        spacing: in-plane pixel spacing ``(dy, dx)`` in mm.

    Returns:
        One :class:`Lesion` per component, in ``scipy.ndimage.label`` order (raster scan).
    """
    m = _as_binary(mask2d, "mask2d")
    if m.ndim != 2:
        raise ValueError(f"mask2d must be a 2D (H, W) mask, got shape {m.shape}")
    dy, dx = _spacing_rows(spacing, 1)[0]
    labels, _ = ndimage.label(m, structure=_EIGHT_CONNECTED)
    out = []
    for _, (rows, cols) in sorted(ndimage.value_indices(labels, ignore_value=0).items()):
        out.append(
            Lesion(
                pixels=np.stack([rows, cols], axis=1).astype(np.int64),
                area_mm2=float(rows.size * dy * dx),
                diameter_mm=float(equivalent_diameter_mm(rows.size, (dy, dx))),
            )
        )
    return out


def _lesion_table(p: np.ndarray, t: np.ndarray, spacing: np.ndarray | None, min_overlap: float) -> np.ndarray:
    """All target lesions of a stack as rows ``(image index, diameter mm, hit)`` float64 ``(L, 3)``.

    Diameter is NaN when ``spacing`` is None. Only images with a non-empty target are labelled.
    """
    rows = []
    for i in np.flatnonzero(t.reshape(t.shape[0], -1).any(axis=1)):
        labels, n = ndimage.label(t[i], structure=_EIGHT_CONNECTED)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        covered = np.bincount(labels.ravel(), weights=p[i].ravel(), minlength=n + 1)[1:]
        hit = (covered >= min_overlap * sizes) & (covered > 0)
        if spacing is None:
            diam = np.full(n, np.nan)
        else:
            diam = equivalent_diameter_mm(sizes, spacing[i])
        rows.append(np.stack([np.full(n, i, dtype=np.float64), diam, hit.astype(np.float64)], axis=1))
    return np.concatenate(rows) if rows else np.zeros((0, 3))


def _check_lesion_args(max_diameter_mm: float, min_overlap: float) -> None:
    if not max_diameter_mm > 0:
        raise ValueError(f"max_diameter_mm must be > 0, got {max_diameter_mm!r}")
    if not 0.0 < min_overlap <= 1.0:
        raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap!r}")


def small_tumor_recall(
    pred: Any,
    target: Any,
    spacing: Any,
    max_diameter_mm: float = 10.0,
    min_overlap: float = 0.1,
) -> tuple[float, int, int]:
    """Fraction of small ground-truth lesions that the prediction detects (Table 2, "small tumor recall").

    Lesions are 8-connected components of each 2D target image (scipy.ndimage.label with a 3x3
    structure). A lesion is *small* when its :func:`equivalent_diameter_mm` (area in mm²
    from the pixel spacing) is ``< max_diameter_mm``, and *hit* when the predicted mask covers at
    least ``min_overlap`` of its pixels (and at least one pixel). Components are counted per slice:
    a nodule spanning three slices counts three times.

    Args:
        pred: binary predictions ``(N, H, W)`` or one ``(H, W)`` image.
        target: binary targets, same shape.
        spacing: in-plane spacing ``(dy, dx)`` mm, one ``(2,)`` for all images or ``(N, 2)``.
        max_diameter_mm: size threshold (strict ``<``); ``math.inf`` counts every lesion.
        min_overlap: fraction of a lesion's pixels the prediction must cover.

    Returns:
        ``(recall, n_hit, n_lesions)``; recall is NaN when there is no small lesion.
    """
    _check_lesion_args(max_diameter_mm, min_overlap)
    p, t = _pair(pred, target)
    if p.ndim == 2:
        p, t = p[None], t[None]
    p, t = _pair(p, t, ndim=3)
    table = _lesion_table(p, t, _spacing_rows(spacing, p.shape[0]), min_overlap)
    small = table[:, 1] < max_diameter_mm
    n_lesions, n_hit = int(small.sum()), int(table[small, 2].sum())
    return (n_hit / n_lesions if n_lesions else math.nan), n_hit, n_lesions


# --------------------------------------------------------------------------------------------------
# Aggregations and summary
# --------------------------------------------------------------------------------------------------
class _Table:
    """Counts of a prediction set, precomputed once for summaries and bootstrap resampling."""

    def __init__(
        self,
        pred: Any,
        target: Any,
        patient_ids: Sequence[Any],
        spacing: Any | None,
        max_diameter_mm: float,
        min_overlap: float,
    ) -> None:
        _check_lesion_args(max_diameter_mm, min_overlap)
        p, t = _pair(pred, target, ndim=3)
        n = p.shape[0]
        if n == 0:
            raise ValueError(f"pred and target must contain at least one image, got shape {p.shape}")
        ids = _to_numpy(patient_ids, "patient_ids")
        if ids.shape != (n,):
            raise ValueError(
                f"patient_ids must have one entry per image: got shape {ids.shape} for {n} images "
                f"(pred {p.shape})"
            )
        self.spacing = None if spacing is None else _spacing_rows(spacing, n)
        self.max_diameter_mm, self.min_overlap = float(max_diameter_mm), float(min_overlap)
        self.image_counts = _count_rows(p, t)  # (N, 4)
        self.patients, self.image_patient = np.unique(ids.astype(str), return_inverse=True)
        n_p = len(self.patients)
        self.patient_counts = np.zeros((n_p, 4), dtype=np.int64)
        np.add.at(self.patient_counts, self.image_patient, self.image_counts)
        lesion_rows = _lesion_table(p, t, self.spacing, self.min_overlap)
        lesion_patient = self.image_patient[lesion_rows[:, 0].astype(np.int64)]
        small = lesion_rows[:, 1] < self.max_diameter_mm  # NaN diameters (no spacing) are never small
        hit = lesion_rows[:, 2]
        # per patient: (all lesions, all hit, small lesions, small hit)
        self.patient_lesions = np.stack(
            [
                np.bincount(lesion_patient, weights=w, minlength=n_p)
                for w in (np.ones_like(hit), hit, small * 1.0, small * hit)
            ],
            axis=1,
        )

    @staticmethod
    def stats(counts: np.ndarray) -> dict[str, np.ndarray]:
        return {name: _stat_from_counts(name, *counts.T) for name in METRIC_NAMES}

    def aggregate(self, aggregation: str, weights: np.ndarray | None = None) -> dict[str, Any]:
        """Statistics of one aggregation; ``weights`` ``(B, n_patients)`` = bootstrap multiplicities."""
        w = np.ones((1, len(self.patients))) if weights is None else weights
        if aggregation == "pooled":
            counts = w @ self.patient_counts  # (B, 4)
            out = self.stats(counts)
        elif aggregation in ("per_image", "per_patient"):
            counts = self.image_counts if aggregation == "per_image" else self.patient_counts
            keep = (~_both_empty(*counts[:, :3].T)).astype(np.float64)  # EMPTY_MASK_RULE
            n_p = len(self.patients)
            # sums over each patient's kept items, so a resampled patient brings all its images
            owner = self.image_patient if aggregation == "per_image" else np.arange(n_p)
            n_kept = w @ np.bincount(owner, weights=keep, minlength=n_p)
            out = {}
            for name, values in self.stats(counts).items():
                total = w @ np.bincount(owner, weights=values * keep, minlength=n_p)
                mean = total / np.where(n_kept > 0, n_kept, 1)
                out[name] = np.where(n_kept > 0, mean, np.nan)
        else:
            raise ValueError(f"aggregation must be one of {tuple(AGGREGATIONS)}, got {aggregation!r}")
        return out if weights is not None else {k: float(v[0]) for k, v in out.items()}

    def lesion_recall(self, small: bool, weights: np.ndarray | None = None) -> Any:
        w = np.ones((1, len(self.patients))) if weights is None else weights
        cols = self.patient_lesions[:, 2:4] if small else self.patient_lesions[:, 0:2]
        n_les, n_hit = (w @ cols).T
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(n_les > 0, n_hit / np.where(n_les > 0, n_les, 1), np.nan)
        return r if weights is not None else float(r[0])


def summarize(
    pred: Any,
    target: Any,
    patient_ids: Sequence[Any],
    spacing: Any | None = None,
    *,
    max_diameter_mm: float = 10.0,
    min_overlap: float = 0.1,
    n_boot: int = 0,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """All figures of Tables 2-3 for one prediction set, each aggregation under its own label.

    Args:
        pred: binary predictions ``(N, H, W)`` (or ``(N, 1, H, W)``), numpy or torch.
        target: binary targets, same shape.
        patient_ids: ``N`` patient identifiers (one per image).
        spacing: in-plane spacing ``(N, 2)`` or ``(2,)`` (dy, dx) mm; None leaves small-tumour recall
            NaN (sizes in mm are unknown) but still reports ``lesion_recall``.
        max_diameter_mm: small-lesion threshold of :func:`small_tumor_recall`.
        min_overlap: lesion hit rule of :func:`small_tumor_recall`.
        n_boot: when > 0, add ``"ci"`` = :func:`bootstrap_all` with this many patient resamples.
        seed: bootstrap seed.
        level: bootstrap confidence level.

    Returns:
        A dict with ``pooled``, ``per_image``, ``per_patient`` (each ``{dice, iou, accuracy,
        precision, recall, f1}``; eqs. 11-14), ``aggregations`` (what each label means),
        ``n_images``, ``n_patients``, ``n_empty_agreed`` (images with empty target and empty
        prediction), ``n_empty_agreed_patients``, ``n_false_positive_images`` (empty target,
        non-empty prediction), ``empty_mask_rule``, ``small_tumor_recall``, ``n_small_lesions``,
        ``n_small_hit``, ``lesion_recall``, ``n_lesions``, ``n_lesions_hit``, ``lesion_rule``,
        and ``ci`` when ``n_boot > 0``. Per-image/per-patient values are NaN when every image/patient
        is excluded by the empty-mask rule.
    """
    table = _Table(pred, target, patient_ids, spacing, max_diameter_mm, min_overlap)
    return _summary_from_table(table, n_boot=n_boot, seed=seed, level=level)


def _summary_from_table(table: _Table, *, n_boot: int, seed: int, level: float) -> dict[str, Any]:
    ic, pc = table.image_counts, table.patient_counts
    lesion_totals = table.patient_lesions.sum(axis=0)
    out: dict[str, Any] = {agg: table.aggregate(agg) for agg in AGGREGATIONS}
    out.update(
        aggregations=dict(AGGREGATIONS),
        confusion=dict(zip(("tp", "fp", "fn", "tn"), (int(v) for v in ic.sum(axis=0)), strict=True)),
        n_images=int(ic.shape[0]),
        n_patients=int(pc.shape[0]),
        n_empty_agreed=int(_both_empty(*ic[:, :3].T).sum()),
        n_empty_agreed_patients=int(_both_empty(*pc[:, :3].T).sum()),
        n_false_positive_images=int(((ic[:, 0] + ic[:, 2] == 0) & (ic[:, 1] > 0)).sum()),
        empty_mask_rule=EMPTY_MASK_RULE,
        small_tumor_recall=table.lesion_recall(small=True) if table.spacing is not None else math.nan,
        n_small_lesions=int(lesion_totals[2]),
        n_small_hit=int(lesion_totals[3]),
        lesion_recall=table.lesion_recall(small=False),
        n_lesions=int(lesion_totals[0]),
        n_lesions_hit=int(lesion_totals[1]),
        lesion_rule=LESION_RULE.format(max_diameter_mm=table.max_diameter_mm, min_overlap=table.min_overlap)
        + ("" if table.spacing is not None else " Spacing unknown: small-tumour recall not computed."),
    )
    if n_boot > 0:
        out["ci"] = _bootstrap_from_table(table, n_boot=n_boot, seed=seed, level=level)
    return out


# --------------------------------------------------------------------------------------------------
# Bootstrap confidence intervals (patients resampled with replacement)
# --------------------------------------------------------------------------------------------------
def _resample_weights(n_patients: int, n_boot: int, seed: int) -> np.ndarray:
    """Multiplicity of each patient in each resample, ``(n_boot, n_patients)`` float64.

    Drawing ``n_patients`` patients with replacement is a multinomial draw of their multiplicities,
    which lets every aggregation be one matrix product instead of a Python loop.
    """
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=int(n_boot))
    return draws.astype(np.float64)


def _percentile_ci(samples: np.ndarray, level: float) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return (math.nan, math.nan)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def bootstrap_ci(
    pred: Any,
    target: Any,
    patient_ids: Sequence[Any],
    statistic: str = "dice",
    aggregation: str = "pooled",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    *,
    spacing: Any | None = None,
    max_diameter_mm: float = 10.0,
    min_overlap: float = 0.1,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of one figure, resampling patients with replacement.

    Patients (not images) are the resampling unit because slices of one patient are correlated.
    Per-patient counts are computed once; each resample is a multinomial vector of patient
    multiplicities, so 1000 resamples cost a few matrix products.

    Args:
        pred: binary predictions ``(N, H, W)``.
        target: binary targets, same shape.
        patient_ids: ``N`` patient identifiers.
        statistic: one of :data:`METRIC_NAMES`, or ``"small_tumor_recall"`` / ``"lesion_recall"``
            (then ``aggregation`` is ignored: lesions are pooled over the resampled patients).
        aggregation: ``"pooled"``, ``"per_image"`` or ``"per_patient"`` (see :data:`AGGREGATIONS`).
        n_boot: number of resamples.
        seed: random seed.
        level: confidence level, e.g. 0.95.
        spacing: in-plane spacing ``(N, 2)``/``(2,)`` mm, needed for ``"small_tumor_recall"``.
        max_diameter_mm: small-lesion threshold.
        min_overlap: lesion hit rule.

    Returns:
        ``(low, high)``; NaN when the statistic is undefined in every resample.
    """
    if statistic == "small_tumor_recall" and spacing is None:
        raise ValueError("statistic='small_tumor_recall' needs spacing (N, 2) or (2,) in mm")
    _check_level(level)
    table = _Table(pred, target, patient_ids, spacing, max_diameter_mm, min_overlap)
    weights = _resample_weights(len(table.patients), n_boot, seed)
    if statistic in ("small_tumor_recall", "lesion_recall"):
        return _percentile_ci(table.lesion_recall(statistic == "small_tumor_recall", weights), level)
    if statistic not in METRIC_NAMES:
        allowed = METRIC_NAMES + ("small_tumor_recall", "lesion_recall")
        raise ValueError(f"statistic must be one of {allowed}, got {statistic!r}")
    return _percentile_ci(table.aggregate(aggregation, weights)[statistic], level)


def _bootstrap_from_table(table: _Table, *, n_boot: int, seed: int, level: float) -> dict[str, Any]:
    _check_level(level)
    weights = _resample_weights(len(table.patients), n_boot, seed)
    out: dict[str, Any] = {}
    for agg in AGGREGATIONS:
        samples = table.aggregate(agg, weights)
        out[agg] = {name: _percentile_ci(samples[name], level) for name in METRIC_NAMES}
    out["small_tumor_recall"] = (
        _percentile_ci(table.lesion_recall(True, weights), level)
        if table.spacing is not None
        else (math.nan, math.nan)
    )
    out["lesion_recall"] = _percentile_ci(table.lesion_recall(False, weights), level)
    out.update(
        n_boot=int(n_boot),
        level=float(level),
        seed=int(seed),
        method="percentile bootstrap, patients resampled with replacement",
    )
    return out


def bootstrap_all(
    pred: Any,
    target: Any,
    patient_ids: Sequence[Any],
    spacing: Any | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    max_diameter_mm: float = 10.0,
    min_overlap: float = 0.1,
) -> dict[str, Any]:
    """Bootstrap CIs of every figure of :func:`summarize` from one shared set of patient resamples.

    Args:
        pred: binary predictions ``(N, H, W)``.
        target: binary targets, same shape.
        patient_ids: ``N`` patient identifiers.
        spacing: in-plane spacing in mm (None: small-tumour recall CI is ``(nan, nan)``).
        n_boot: number of resamples.
        seed: random seed.
        level: confidence level.
        max_diameter_mm: small-lesion threshold.
        min_overlap: lesion hit rule.

    Returns:
        ``{"pooled": {stat: (low, high)}, "per_image": {...}, "per_patient": {...},
        "small_tumor_recall": (low, high), "lesion_recall": (low, high), "n_boot", "level", "seed",
        "method"}``. The intensity-robustness std is not bootstrapped (it needs the predictor).
    """
    table = _Table(pred, target, patient_ids, spacing, max_diameter_mm, min_overlap)
    return _bootstrap_from_table(table, n_boot=n_boot, seed=seed, level=level)


# --------------------------------------------------------------------------------------------------
# Robustness to intensity variation (Table 2, "std" column)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Perturbation:
    """An intensity change of a CT slice in HU: ``scale * hu + offset + N(0, noise_sigma²)``.

    Attributes:
        name: label used in the result dict.
        offset: HU added (scanner calibration drift).
        scale: multiplicative gain about 0 HU (water), e.g. a reconstruction-kernel difference.
        noise_sigma: standard deviation in HU of i.i.d. Gaussian noise (dose difference).
    """

    name: str
    offset: float = 0.0
    scale: float = 1.0
    noise_sigma: float = 0.0

    def apply(self, images_hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Perturbed float32 copy of ``images_hu`` (any shape)."""
        out = images_hu.astype(np.float32) * np.float32(self.scale) + np.float32(self.offset)
        if self.noise_sigma > 0:
            out += rng.normal(0.0, self.noise_sigma, size=out.shape).astype(np.float32)
        return out


DEFAULT_PERTURBATIONS: tuple[Perturbation, ...] = (
    Perturbation("identity"),
    Perturbation("offset-100", offset=-100.0),
    Perturbation("offset-50", offset=-50.0),
    Perturbation("offset+50", offset=50.0),
    Perturbation("offset+100", offset=100.0),
    Perturbation("scale0.95", scale=0.95),
    Perturbation("scale1.05", scale=1.05),
    Perturbation("noise10", noise_sigma=10.0),
    Perturbation("noise25", noise_sigma=25.0),
)
"""The fixed HU perturbation set of :func:`intensity_robustness`: identity; offsets of ±50 and ±100 HU
(calibration drift between scanners); gains 0.95 and 1.05 about water; Gaussian noise of σ = 10 and
25 HU (typical standard-dose and low-dose noise levels)."""


def intensity_robustness(
    predict_fn: Callable[[np.ndarray], Any],
    images_hu: Any,
    targets: Any,
    perturbations: Sequence[Perturbation] = DEFAULT_PERTURBATIONS,
    seed: int = 0,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Robustness to intensity variation: std of the pooled Dice over HU perturbations (Table 2).

    Each perturbation of :data:`DEFAULT_PERTURBATIONS` (or ``perturbations``) is applied to all
    images, ``predict_fn`` segments them, and the pooled Dice against ``targets`` is computed. The
    reported ``std`` is the population standard deviation (``ddof=0``) of those Dice values, identity
    included; lower means more robust. Noise of perturbation ``k`` is drawn from a generator seeded
    with ``(seed, k)``, so results do not depend on the order of evaluation.

    Args:
        predict_fn: maps float32 HU images ``(N, H, W)`` to binary masks ``(N, H, W)``; it must do its
            own windowing/normalisation exactly as at test time.
        images_hu: float images in HU ``(N, H, W)``.
        targets: binary targets ``(N, H, W)``.
        perturbations: the perturbation set (at least one).
        seed: noise seed.
        progress: show a tqdm bar over perturbations.

    Returns:
        ``{"std": float, "mean": float, "dice": {name: pooled Dice}, "perturbations": [descriptions],
        "aggregation": "pooled", "ddof": 0}``.
    """
    images = _to_numpy(images_hu, "images_hu")
    real = np.issubdtype(images.dtype, np.number) and not np.issubdtype(images.dtype, np.complexfloating)
    if images.ndim != 3 or not real:
        raise ValueError(
            f"images_hu must be real (N, H, W) images in HU, got shape {images.shape} dtype {images.dtype}"
        )
    if not np.all(np.isfinite(images)):
        raise ValueError(f"images_hu contains NaN/inf (shape {images.shape}, dtype {images.dtype})")
    t = _as_binary(targets, "targets")
    if t.shape != images.shape:
        raise ValueError(f"targets must match images_hu: got targets {t.shape} and images_hu {images.shape}")
    if len(perturbations) == 0:
        raise ValueError("perturbations must contain at least one Perturbation")
    names = [pert.name for pert in perturbations]
    if len(set(names)) != len(names):
        raise ValueError(f"perturbation names must be unique, got {names}")
    dices: dict[str, float] = {}
    for k, pert in enumerate(tqdm(perturbations, desc="intensity robustness", disable=not progress)):
        perturbed = pert.apply(images, np.random.default_rng([int(seed), k]))
        pred = _as_binary(predict_fn(perturbed), f"predict_fn output for perturbation {pert.name!r}")
        if pred.shape != t.shape:
            raise ValueError(
                f"predict_fn returned shape {pred.shape} for images {images.shape}; expected {t.shape}"
            )
        dices[pert.name] = confusion(pred, t).dice
    values = np.array(list(dices.values()))
    return {
        "std": float(values.std(ddof=0)),
        "mean": float(values.mean()),
        "dice": dices,
        "perturbations": [
            f"{p.name}: scale={p.scale:g}, offset={p.offset:g} HU, noise_sigma={p.noise_sigma:g} HU"
            for p in perturbations
        ],
        "aggregation": "pooled",
        "ddof": 0,
    }


# --------------------------------------------------------------------------------------------------
# Boundary metrics: HD95 and surface Dice at a tolerance, in millimetres
# --------------------------------------------------------------------------------------------------
#: Default tolerance of the surface Dice in mm: about two to three in-plane pixels of a chest CT
#: (0.6–1 mm), below the slice thickness; the boundary-accuracy scale of the CRF claim (eq. 10).
BOUNDARY_TOLERANCE_MM: float = 2.0

#: The percentile of the Hausdorff distance reported (HD95).
HD_PERCENTILE: float = 95.0

BOUNDARY_METRICS: tuple[str, ...] = ("hd95_mm", "surface_dice")
"""Names of the boundary figures (:func:`boundary_scores`, :func:`boundary_summary`)."""

BOUNDARY_EMPTY_RULE = (
    "Boundary figures (HD95 in mm, surface Dice at the tolerance) of an image (patient) whose target "
    "and prediction are both empty are undefined: blank in the per-image table and left out of the "
    "means, as in EMPTY_MASK_RULE. When exactly one of them is empty, surface Dice = 0 (no boundary "
    "lies within the tolerance of a boundary that is absent) and counts in the mean, while HD95 is "
    "undefined (there is no distance to an absent boundary): it is left out of the HD95 mean and "
    "counted in n_hd95_undefined, so the HD95 mean describes only images (patients) where both masks "
    "have a boundary; missed and spurious tumours are measured by surface Dice, recall and "
    "n_false_positive_images."
)
"""The one empty-mask rule of the boundary metrics, beside :data:`EMPTY_MASK_RULE` (the overlap one).

MONAI itself returns NaN for HD95 with one mask empty and 0 for its surface Dice, NaN for both with
both masks empty; this rule states what the means do with those values."""

BOUNDARY_DEFINITION = (
    "Boundary pixels (voxels) are a mask's pixels that binary erosion removes (MONAI get_mask_edges); "
    "distances are Euclidean in mm from the pixel (voxel) spacing. HD95 = max of the two directed "
    "95th-percentile surface distances (monai.metrics.compute_hausdorff_distance, percentile=95); "
    "surface Dice = fraction of both boundaries within {tolerance_mm:g} mm of the other "
    "(monai.metrics.compute_surface_dice, Nikolov et al. 2021). Per image: 2D, in-plane spacing; per "
    "patient: 3D over the patient's slices with the slice spacing, then the mean over patients."
)


def boundary_scores(pred: Any, target: Any, spacing: Any,
                    tolerance_mm: float = BOUNDARY_TOLERANCE_MM) -> tuple[float, float]:
    """HD95 (mm) and surface Dice of one 2D image or one 3D volume, by MONAI.

    Uses ``monai.metrics.compute_hausdorff_distance(percentile=95, spacing=...)`` and
    ``monai.metrics.compute_surface_dice(class_thresholds=[tolerance_mm], spacing=...)``
    (Nikolov et al., "Clinically applicable segmentation of head and neck anatomy for radiotherapy",
    2021, for the surface Dice; the maintained implementation rather than one more of our own).

    Args:
        pred: binary prediction ``(H, W)`` or ``(Z, H, W)``.
        target: binary target, same shape.
        spacing: pixel (voxel) size in mm, one value per axis: ``(dy, dx)`` or ``(dz, dy, dx)``.
        tolerance_mm: surface-Dice tolerance in mm (> 0).

    Returns:
        ``(hd95_mm, surface_dice)`` following :data:`BOUNDARY_EMPTY_RULE`: ``(nan, nan)`` when both
        masks are empty, ``(nan, 0.0)`` when exactly one is.

    Raises:
        ValueError: masks not binary, shapes differ, not 2D/3D, or bad spacing or tolerance.
    """
    p, t = _pair(pred, target)
    if p.ndim not in (2, 3):
        raise ValueError(f"pred and target must be one 2D image (H, W) or one 3D volume (Z, H, W), got shape {p.shape}")
    s = _to_numpy(spacing, "spacing").astype(np.float64).ravel()
    if s.shape != (p.ndim,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"spacing must be {p.ndim} finite positive values in mm (one per axis of {p.shape}), "
                         f"got {np.asarray(spacing).tolist()}")
    if not (isinstance(tolerance_mm, (int, float)) and math.isfinite(tolerance_mm) and tolerance_mm > 0):
        raise ValueError(f"tolerance_mm must be a finite number > 0, got {tolerance_mm!r}")
    has_p, has_t = bool(p.any()), bool(t.any())
    if not (has_p or has_t):
        return math.nan, math.nan
    if not (has_p and has_t):
        return math.nan, 0.0
    import warnings

    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    tp, tt = torch.from_numpy(p[None, None]), torch.from_numpy(t[None, None])
    with warnings.catch_warnings():  # MONAI's own deprecation notices of get_mask_edges arguments
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(tp, tt, include_background=True, percentile=HD_PERCENTILE,
                                        spacing=s.tolist())
        nsd = compute_surface_dice(tp, tt, class_thresholds=[float(tolerance_mm)], include_background=True,
                                   spacing=s.tolist())
    return float(hd.reshape(-1)[0]), float(nsd.reshape(-1)[0])


def boundary_per_image(pred: Any, target: Any, spacing: Any,
                       tolerance_mm: float = BOUNDARY_TOLERANCE_MM) -> np.ndarray:
    """:func:`boundary_scores` of each 2D image of a stack.

    Args:
        pred: binary predictions ``(N, H, W)`` (or ``(N, 1, H, W)``).
        target: binary targets, same shape.
        spacing: in-plane spacing ``(2,)`` or ``(N, 2)`` (dy, dx) mm.
        tolerance_mm: surface-Dice tolerance in mm.

    Returns:
        float64 ``(N, 2)``: columns ``hd95_mm``, ``surface_dice`` (:data:`BOUNDARY_METRICS`), NaN per
        :data:`BOUNDARY_EMPTY_RULE`.
    """
    p, t = _pair(pred, target, ndim=3)
    s = _spacing_rows(spacing, p.shape[0])
    out = np.full((p.shape[0], 2), np.nan)
    for i in range(p.shape[0]):
        out[i] = boundary_scores(p[i], t[i], s[i], tolerance_mm)
    return out


def _mean_defined(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def boundary_summary(
    pred: Any,
    target: Any,
    patient_ids: Sequence[Any],
    spacing: Any,
    slice_spacing: Any | None = None,
    *,
    tolerance_mm: float = BOUNDARY_TOLERANCE_MM,
    per_image: np.ndarray | None = None,
) -> dict[str, Any]:
    """HD95 and surface Dice per image (2D) and per patient (3D), with :data:`BOUNDARY_EMPTY_RULE`.

    Args:
        pred: binary predictions ``(N, H, W)``; a patient's images in slice order, contiguous
            (as :func:`lungseg.evaluation.evaluate_run` collects whole volumes).
        target: binary targets, same shape.
        patient_ids: ``N`` patient identifiers.
        spacing: in-plane spacing ``(2,)`` or ``(N, 2)`` (dy, dx) mm.
        slice_spacing: slice spacing in mm, one number for all patients or ``{patient_id: mm}``;
            ``None`` (or a patient's ``None``) when unknown, e.g. a stack of unrelated 2D slices:
            that patient's 3D figures are then not computed (NaN), as the slices need not be
            neighbours.
        tolerance_mm: surface-Dice tolerance in mm.
        per_image: the :func:`boundary_per_image` array when the caller already has it.

    Returns:
        ``{"tolerance_mm", "per_image": {"hd95_mm", "hd95_mm_median", "surface_dice"},
        "per_patient": {"hd95_mm", "hd95_mm_median", "surface_dice"}, "n_images_hd95",
        "n_images_surface_dice", "n_images_hd95_undefined", "n_patients_hd95",
        "n_patients_surface_dice", "n_patients_hd95_undefined", "n_patients_no_slice_spacing",
        "patients": {id: {"hd95_mm", "surface_dice"}}, "empty_mask_rule", "definition"}``; means are
        NaN when no image (patient) has the figure defined.
    """
    p, t = _pair(pred, target, ndim=3)
    n = p.shape[0]
    ids = _to_numpy(patient_ids, "patient_ids").astype(str)
    if ids.shape != (n,):
        raise ValueError(f"patient_ids must have one entry per image: got shape {ids.shape} for {n} images")
    s = _spacing_rows(spacing, n)
    img = boundary_per_image(p, t, s, tolerance_mm) if per_image is None else np.asarray(per_image, np.float64)
    if img.shape != (n, 2):
        raise ValueError(f"per_image must be (N, 2) = ({n}, 2), got shape {img.shape}")
    patients: dict[str, dict[str, float]] = {}
    no_z = 0
    for pid in dict.fromkeys(ids.tolist()):  # first-appearance order
        rows = np.flatnonzero(ids == pid)
        dz = slice_spacing.get(pid) if isinstance(slice_spacing, dict) else slice_spacing
        if not np.allclose(s[rows], s[rows[0]]):
            raise ValueError(f"patient {pid!r}: images with different in-plane spacing; a 3D surface needs one")
        if dz is None:
            no_z += 1
            patients[pid] = {"hd95_mm": math.nan, "surface_dice": math.nan}
            continue
        hd, nsd = boundary_scores(p[rows], t[rows], (float(dz), *s[rows[0]]), tolerance_mm)
        patients[pid] = {"hd95_mm": hd, "surface_dice": nsd}
    pat = np.array([[v["hd95_mm"], v["surface_dice"]] for v in patients.values()], dtype=np.float64)
    has_z = np.array([
        (slice_spacing.get(pid) if isinstance(slice_spacing, dict) else slice_spacing) is not None
        for pid in patients
    ])
    one_empty_img = np.isnan(img[:, 0]) & np.isfinite(img[:, 1])
    one_empty_pat = np.isnan(pat[:, 0]) & np.isfinite(pat[:, 1]) & has_z
    return {
        "tolerance_mm": float(tolerance_mm),
        "per_image": {"hd95_mm": _mean_defined(img[:, 0]), "hd95_mm_median": _median_defined(img[:, 0]),
                      "surface_dice": _mean_defined(img[:, 1])},
        "per_patient": {"hd95_mm": _mean_defined(pat[:, 0]), "hd95_mm_median": _median_defined(pat[:, 0]),
                        "surface_dice": _mean_defined(pat[:, 1])},
        "n_images_hd95": int(np.isfinite(img[:, 0]).sum()),
        "n_images_surface_dice": int(np.isfinite(img[:, 1]).sum()),
        "n_images_hd95_undefined": int(one_empty_img.sum()),
        "n_patients_hd95": int(np.isfinite(pat[:, 0]).sum()),
        "n_patients_surface_dice": int(np.isfinite(pat[:, 1]).sum()),
        "n_patients_hd95_undefined": int(one_empty_pat.sum()),
        "n_patients_no_slice_spacing": int(no_z),
        "patients": patients,
        "empty_mask_rule": BOUNDARY_EMPTY_RULE,
        "definition": BOUNDARY_DEFINITION.format(tolerance_mm=tolerance_mm),
    }


def _median_defined(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan
