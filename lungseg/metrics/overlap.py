"""Confusion counts (Table 1) and the ratios of eqs. (11)-(14), Dice and IoU, with the one empty-mask rule.

Every overlap figure is computed from confusion counts (TP, FP, FN, TN), in the style of
``segmentation_models_pytorch.metrics``: first count, then aggregate (:mod:`lungseg.metrics.summary`),
then divide. For binary masks eq. (14) F-score and Dice are the same number, ``2TP / (2TP + FP + FN)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lungseg.metrics.arrays import binary_pair

__all__ = [
    "EMPTY_MASK_RULE",
    "METRIC_NAMES",
    "Confusion",
    "confusion",
    "confusion_per_image",
    "count_rows",
    "dice",
    "is_both_empty",
    "ratio_or_default",
    "score",
    "stat_from_counts",
]

EMPTY_MASK_RULE = (
    "Images (patients) whose target and prediction are both empty are excluded from the per-image "
    "(per-patient) means and counted in n_empty_agreed (n_empty_agreed_patients) as true-negative "
    "images; an empty target with a non-empty prediction is kept with Dice = IoU = precision = "
    "recall = 0; the pooled aggregation uses all pixels of all images. Zero denominators give 1.0 "
    "when prediction and target are both empty and 0.0 otherwise."
)
"""The one empty-mask rule of every metric here (and the text :func:`lungseg.metrics.summarize` reports).

"Both empty" means TP = FP = FN = 0 (:attr:`Confusion.both_empty`): nothing to find and nothing found.
Such an image's own ratios are 1.0 (:func:`ratio_or_default`: nothing was missed, nothing was wrongly
found), but it says nothing about how well tumours are outlined, so the per-image and per-patient means
leave it out rather than let true-negative slices inflate them. Every other zero denominator gives 0.0:
an empty target with a non-empty prediction, or a non-empty target with an empty prediction, scores 0.
The boundary figures (HD95, surface Dice) follow the same rule for "both empty" and state what "one
empty" means for a distance in :data:`lungseg.metrics.BOUNDARY_EMPTY_RULE`."""


def is_both_empty(tp: Any, fp: Any, fn: Any) -> Any:
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
"""Names of the confusion-count statistics (:func:`score`, :class:`Confusion`,
:func:`lungseg.metrics.summarize`), in the order :func:`lungseg.metrics.summarize` reports them."""


def stat_from_counts(name: str, tp: Any, fp: Any, fn: Any, tn: Any) -> Any:
    """One statistic of :data:`METRIC_NAMES` from (arrays of) confusion counts."""
    if name not in _RATIOS:
        raise ValueError(f"statistic must be one of {METRIC_NAMES}, got {name!r}")
    tp, fp, fn, tn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn, tn))
    return ratio_or_default(*_RATIOS[name](tp, fp, fn, tn), is_both_empty(tp, fp, fn))


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
        return bool(is_both_empty(self.tp, self.fp, self.fn))

    def score(self, name: str) -> float:
        """The statistic ``name`` of :data:`METRIC_NAMES` of these counts."""
        return stat_from_counts(name, self.tp, self.fp, self.fn, self.tn)

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


def count_rows(p: np.ndarray, t: np.ndarray) -> np.ndarray:
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
    p, t = binary_pair(pred, target)
    tp, fp, fn, tn = count_rows(p.reshape(1, -1), t.reshape(1, -1))[0]
    return Confusion(tp, fp, fn, tn)


def confusion_per_image(pred: Any, target: Any) -> list[Confusion]:
    """Confusion counts of each image of a stack.

    Args:
        pred: binary predictions ``(N, H, W)`` (or ``(N, 1, H, W)``).
        target: binary targets, same shape.

    Returns:
        ``N`` :class:`Confusion` objects, in image order.
    """
    p, t = binary_pair(pred, target, ndim=3)
    return [Confusion(*row) for row in count_rows(p, t)]


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
