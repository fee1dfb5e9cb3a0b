"""Aggregation of the confusion counts and lesions of a prediction set, with patient-bootstrap intervals.

Three aggregations are reported, always under their own label, because they answer different
questions and can differ by tenths on tumour segmentation data:

``pooled``
    Counts summed over every pixel of the set, then one ratio (dominated by large tumours).
``per_image``
    Ratio per 2D image, then the mean over images.
``per_patient``
    Counts pooled over all images of a patient, ratio per patient, then the mean over patients
    (each patient weighs the same whatever their number of slices).

Confidence intervals resample patients (not images: slices of one patient are correlated) with
replacement and are computed from the same precomputed counts, so :func:`summarize` gives every
figure and its interval in one pass.

A cell of the comparison grid varies with its training seed as well as its test patients:
:func:`crossed_interval` resamples both together (a two-level bootstrap: each replicate draws the seeds
with replacement and, once for all of them since every seed saw the same patients, the patients), and
:func:`paired_crossed_interval` applies the same draws to two cells, pairing seed with seed and patient
with patient.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lungseg.metrics.arrays import binary_pair, spacing_rows, to_numpy
from lungseg.metrics.lesion import LESION_RULE, check_lesion_args, lesion_table
from lungseg.metrics.overlap import EMPTY_MASK_RULE, METRIC_NAMES, count_rows, is_both_empty, stat_from_counts

__all__ = ["AGGREGATIONS", "CROSSED_INTERVAL", "crossed_interval", "interval_sources", "paired_crossed_interval",
           "resampled_coverage", "sample_needed", "summarize"]

AGGREGATIONS: dict[str, str] = {
    "pooled": "confusion counts summed over all pixels of all images, then one ratio",
    "per_image": "ratio per 2D image, then mean over images (empty-mask rule applies)",
    "per_patient": "confusion counts pooled over each patient's images, ratio per patient, then mean "
    "over patients (empty-mask rule applies per patient)",
}


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
        check_lesion_args(max_diameter_mm, min_overlap)
        p, t = binary_pair(pred, target, ndim=3)
        n = p.shape[0]
        if n == 0:
            raise ValueError(f"pred and target must contain at least one image, got shape {p.shape}")
        ids = to_numpy(patient_ids, "patient_ids")
        if ids.shape != (n,):
            raise ValueError(
                f"patient_ids must have one entry per image: got shape {ids.shape} for {n} images "
                f"(pred {p.shape})"
            )
        self.spacing = None if spacing is None else spacing_rows(spacing, n)
        self.max_diameter_mm, self.min_overlap = float(max_diameter_mm), float(min_overlap)
        self.image_counts = count_rows(p, t)  # (N, 4)
        self.patients, self.image_patient = np.unique(ids.astype(str), return_inverse=True)
        n_p = len(self.patients)
        self.patient_counts = np.zeros((n_p, 4), dtype=np.int64)
        np.add.at(self.patient_counts, self.image_patient, self.image_counts)
        lesion_rows = lesion_table(p, t, self.spacing, self.min_overlap)
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
        return {name: stat_from_counts(name, *counts.T) for name in METRIC_NAMES}

    def aggregate(self, aggregation: str, weights: np.ndarray | None = None) -> dict[str, Any]:
        """Statistics of one aggregation; ``weights`` ``(B, n_patients)`` = bootstrap multiplicities."""
        w = np.ones((1, len(self.patients))) if weights is None else weights
        if aggregation == "pooled":
            counts = w @ self.patient_counts  # (B, 4)
            out = self.stats(counts)
        elif aggregation in ("per_image", "per_patient"):
            counts = self.image_counts if aggregation == "per_image" else self.patient_counts
            keep = (~is_both_empty(*counts[:, :3].T)).astype(np.float64)  # EMPTY_MASK_RULE
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
        n_boot: when > 0, add ``"ci"``: percentile-bootstrap intervals of every figure from this many
            patient resamples (one shared set for all figures).
        seed: bootstrap seed.
        level: bootstrap confidence level.

    Returns:
        A dict with ``pooled``, ``per_image``, ``per_patient`` (each ``{dice, iou, accuracy,
        precision, recall, f1}``; eqs. 11-14), ``aggregations`` (what each label means),
        ``n_images``, ``n_patients``, ``n_empty_agreed`` (images with empty target and empty
        prediction), ``n_empty_agreed_patients``, ``n_false_positive_images`` (empty target,
        non-empty prediction), ``empty_mask_rule``, ``small_tumor_recall``, ``n_small_lesions``,
        ``n_small_hit``, ``lesion_recall``, ``n_lesions``, ``n_lesions_hit``, ``lesion_rule``,
        and ``ci`` when ``n_boot > 0`` (``{"pooled": {stat: (low, high)}, "per_image": {...},
        "per_patient": {...}, "small_tumor_recall": (low, high), "lesion_recall": (low, high),
        "n_boot", "level", "seed", "method"}``; NaN bounds where a figure is undefined in every
        resample). Per-image/per-patient values are NaN when every image/patient
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
        n_empty_agreed=int(is_both_empty(*ic[:, :3].T).sum()),
        n_empty_agreed_patients=int(is_both_empty(*pc[:, :3].T).sum()),
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



def _bootstrap_from_table(table: _Table, *, n_boot: int, seed: int, level: float) -> dict[str, Any]:
    """Percentile-bootstrap intervals of every figure of :func:`summarize`, resampling patients.

    Per-patient counts are computed once (``table``); each resample is a multinomial vector of patient
    multiplicities, so 1000 resamples cost a few matrix products. The intensity-robustness std is not
    bootstrapped (it needs the predictor).
    """
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


#: How :func:`crossed_interval` reaches its interval, in one sentence for a results table.
CROSSED_INTERVAL = ("95 % percentile interval of a two-level bootstrap that resamples training seeds and "
                    "test patients together (2000 replicates); differences resample both cells alike")


def _check(num: Any, den: Any) -> tuple[np.ndarray, np.ndarray]:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if num.ndim != 2 or num.shape != den.shape or 0 in num.shape:
        raise ValueError(f"num and den must be equal, non-empty (n_seeds, n_patients) arrays, "
                         f"got {num.shape} and {den.shape}")
    return num, den


@functools.lru_cache(maxsize=16)
def _draws(n_seeds: int, n_patients: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicity weights ``(n_boot + 1, n_seeds)`` and ``(n_boot + 1, n_patients)``; row 0 is the data.

    The same arguments give the same draws (cached: every figure and cell of a grid is resampled alike,
    which also keeps the paired differences consistent with the cells). Read-only arrays."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    weights = []
    for n in (n_seeds, n_patients):
        drawn = rng.integers(0, n, (n_boot, n))
        w = np.ones((n_boot + 1, n))
        w[1:] = 0
        np.add.at(w, (np.arange(1, n_boot + 1)[:, None], drawn), 1)
        w.setflags(write=False)
        weights.append(w)
    return weights[0], weights[1]


def _figure(num: np.ndarray, den: np.ndarray, w_seed: np.ndarray, w_patient: np.ndarray) -> np.ndarray:
    """Per replicate: the ``w_seed``-weighted mean over seeds of ``sum(w_patient * num) / sum(w_patient *
    den)``; seeds whose ratio is undefined (0/0 on the drawn patients) are left out; NaN when all are."""
    top, bottom = w_patient @ num.T, w_patient @ den.T  # (replicates, seeds)
    defined = bottom > 0
    ratio = np.divide(top, bottom, out=np.zeros_like(top), where=defined)
    weight = w_seed * defined
    total = weight.sum(axis=1)
    return np.divide((ratio * weight).sum(axis=1), total, out=np.full(len(total), np.nan), where=total > 0)


def _summary(values: np.ndarray, level: float, n_seeds: int, n_patients: int) -> dict[str, Any]:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    point, replicates = values[0], values[1:]
    replicates = replicates[np.isfinite(replicates)]
    if not np.isfinite(point) or replicates.size == 0:
        return {"mean": None, "low": None, "high": None, "n_seeds": n_seeds, "n_patients": n_patients}
    tail = (1 - level) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return {"mean": float(point), "low": float(low), "high": float(high), "n_seeds": n_seeds,
            "n_patients": n_patients}


def crossed_interval(num: Any, den: Any, *, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, Any]:
    """A figure of several training seeds on one test sample, with a seed-and-patient interval.

    Args:
        num, den: ``(n_seeds, n_patients)`` numerator and denominator of the figure per seed and patient;
            the figure of one seed is ``sum(num) / sum(den)`` over patients (pooled Dice: ``2TP`` and
            ``2TP + FP + FN``; a mean over patients: the patient's value and 1, or 0 and 0 where it is
            undefined).
        n_boot: bootstrap replicates.
        seed: seed of the resampling (the same seed gives the same interval).
        level: coverage of the interval.

    Returns:
        ``{"mean", "low", "high", "n_seeds", "n_patients"}``: the figure (mean over seeds) and its
        percentile interval; ``None`` values when the figure is undefined.
    """
    num, den = _check(num, den)
    w_seed, w_patient = _draws(*num.shape, n_boot, seed)
    return _summary(_figure(num, den, w_seed, w_patient), level, *num.shape)


def paired_crossed_interval(num_a: Any, den_a: Any, num_b: Any, den_b: Any, *, n_boot: int = 2000,
                            seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """The difference ``b - a`` of two cells trained with the same seeds and tested on the same patients,
    with both resampled by the same draws (seed ``s`` of ``a`` paired with seed ``s`` of ``b``)."""
    num_a, den_a = _check(num_a, den_a)
    num_b, den_b = _check(num_b, den_b)
    if num_a.shape != num_b.shape:
        raise ValueError(f"paired cells need the same (n_seeds, n_patients), got {num_a.shape} and {num_b.shape}")
    w_seed, w_patient = _draws(*num_a.shape, n_boot, seed)
    diff = _figure(num_b, den_b, w_seed, w_patient) - _figure(num_a, den_a, w_seed, w_patient)
    return _summary(diff, level, *num_a.shape)


def interval_sources(num: Any, den: Any, *, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, Any]:
    """How much of :func:`crossed_interval`'s width each source of variation makes: the half-width with seeds
    and patients resampled (the table's interval), with the seeds alone (patients held at the test study's)
    and with the patients alone (seeds held at those trained).

    The model behind reading them: a cell's figure varies by a seed term, a patient term and their
    interaction, new patients and seeds come from the same populations, and a half-width is proportional
    to a standard deviation. The variances of the two terms then add, so the whole half-width is close to
    ``sqrt(seeds**2 + patients**2)``; the patients' part shrinks as ``1 / sqrt(patients)`` and the seeds'
    as ``1 / sqrt(seeds)``, which is what :func:`sample_needed` projects from. Two approximations, in
    opposite directions: each one-source half-width also holds part of the interaction (counted twice in
    the sum), and a percentile bootstrap over a handful of seeds reads narrow and varies a lot from one
    set of seeds to another (over five seeds it averages about 0.7 standard deviations where a Student-t
    interval spans 1.2). Read the parts and projections as orders of magnitude.

    Args:
        num, den: ``(n_seeds, n_patients)``, as :func:`crossed_interval`.
        n_boot, seed, level: as :func:`crossed_interval` (the same draws, so ``both`` is the table's interval).

    Returns:
        ``{"mean", "both", "seeds", "patients", "n_seeds", "n_patients"}``: the figure and the three
        half-widths (``None`` where the figure is undefined).
    """
    num, den = _check(num, den)
    w_seed, w_patient = _draws(*num.shape, n_boot, seed)
    held_seeds, held_patients = np.ones_like(w_seed), np.ones_like(w_patient)
    out: dict[str, Any] = {"mean": None}
    for source, (ws, wp) in {"both": (w_seed, w_patient), "seeds": (w_seed, held_patients),
                             "patients": (held_seeds, w_patient)}.items():
        interval = _summary(_figure(num, den, ws, wp), level, *num.shape)
        out["mean"] = interval["mean"]
        out[source] = None if interval["low"] is None else (interval["high"] - interval["low"]) / 2
    return {**out, "n_seeds": num.shape[0], "n_patients": num.shape[1]}


def sample_needed(fixed_half_width: float, scaled_half_width: float, n_now: int, target: float) -> int | None:
    """How many units of one source (patients or seeds) bring the half-width to ``target``, the other held.

    The variances of the two sources add (:func:`interval_sources`, with the model and approximations it
    states), and the scaled source's shrinks as ``n_now / n``: ``fixed**2 + scaled**2 * n_now / n <=
    target**2``. The answer is an order of magnitude: near the edge (``fixed`` close to ``target``) a
    small change of ``fixed`` changes it a lot.

    Args:
        fixed_half_width: the half-width the other source makes alone (it does not shrink).
        scaled_half_width: the half-width this source makes alone with ``n_now`` units.
        n_now: units of this source today.
        target: the half-width wanted.

    Returns:
        The smallest such ``n`` (``n_now`` or fewer where today's already reach the target), or ``None``
        where the other source alone is ``target`` or wider, so that no number of these units suffices.
    """
    if not target > 0 or n_now < 1 or fixed_half_width < 0 or scaled_half_width < 0:
        raise ValueError(f"need target > 0, n_now >= 1 and half-widths >= 0; got target={target}, n_now={n_now}, "
                         f"half-widths {fixed_half_width}, {scaled_half_width}")
    room = target ** 2 - fixed_half_width ** 2
    if room <= 0:
        return None
    return max(1, math.ceil(scaled_half_width ** 2 * n_now / room - 1e-9))


def resampled_coverage(num: Any, den: Any, study_patients: int, *, n_studies: int = 400, n_boot: int = 2000,
                       seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """How often :func:`crossed_interval` holds a population's figure, by drawing studies from a large one.

    The patients given are taken as the population: its figure is ``sum(num) / sum(den)``. Each of
    ``n_studies`` simulated test studies draws ``study_patients`` of them with replacement, and gets the
    interval the results tables use (one model, so only patients are resampled); the coverage is the
    share of those intervals that hold the population's figure. This is the plug-in (double
    bootstrap) estimate of coverage: cheap, since it re-uses scored patients, and with hundreds of
    studies far tighter than a check on a few dozen fresh ones; but a population of a few hundred
    patients holds fewer extreme patients than the generator can make, so it errs towards optimism.

    Args:
        num, den: ``(n_patients,)`` numerator and denominator of the figure per patient (pooled Dice:
            ``2TP`` and ``2TP + FP + FN``).
        study_patients: patients per simulated study.
        n_studies: simulated studies.
        n_boot: bootstrap replicates of each study's interval (2000, as the results tables).
        seed: seed of the draws (the same seed gives the same result).
        level: coverage the interval claims.

    Returns:
        ``{"population_patients", "population_value", "study_patients", "n_studies", "n_undefined", "level",
        "coverage", "coverage_low", "coverage_high", "mean_half_width"}``; ``coverage_low`` /
        ``coverage_high`` are the Wilson 95 % interval of the coverage over the simulated studies. A study
        whose figure is undefined (no tumour and no prediction drawn) has no interval: it counts as a
        miss and in ``n_undefined``; ``mean_half_width`` is over the others.

    Raises:
        ValueError: ``num`` and ``den`` are not equal 1-D arrays, the population's figure is undefined,
            ``study_patients`` / ``n_studies`` is not a positive integer, or ``level`` is not in (0, 1).
    """
    if np.ndim(num) != 1 or np.ndim(den) != 1:
        raise ValueError(f"num and den must be 1-D per-patient arrays, got {np.shape(num)} and {np.shape(den)}")
    if np.shape(num) != np.shape(den) or np.size(num) == 0:
        raise ValueError(f"num and den must be equal, non-empty per-patient arrays, got {np.shape(num)} and "
                         f"{np.shape(den)}")
    num, den = _check(np.asarray(num)[None], np.asarray(den)[None])
    for name, value in (("study_patients", study_patients), ("n_studies", n_studies)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    total = float(den.sum())
    if total <= 0:
        raise ValueError("the population's figure is undefined: its denominators sum to 0")
    truth = float(num.sum()) / total
    rng = np.random.default_rng(seed)
    covered, undefined, half_widths = 0, 0, []
    for _ in range(int(n_studies)):
        drawn = rng.integers(0, num.shape[1], int(study_patients))
        # One set of bootstrap draws serves every study (the patients drawn are what differs; the studies
        # stay independent), and it is cached once instead of evicting the results tables' draws.
        ci = crossed_interval(num[:, drawn], den[:, drawn], n_boot=n_boot, seed=seed, level=level)
        if ci["low"] is None:
            undefined += 1
            continue
        covered += ci["low"] <= truth <= ci["high"]
        half_widths.append((ci["high"] - ci["low"]) / 2)
    low, high = _wilson(covered, int(n_studies))
    return {"population_patients": int(num.shape[1]), "population_value": truth,
            "study_patients": int(study_patients), "n_studies": int(n_studies), "n_undefined": undefined,
            "level": level,
            "coverage": covered / int(n_studies), "coverage_low": low, "coverage_high": high,
            "mean_half_width": float(np.mean(half_widths)) if half_widths else None}


def _wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95 % interval of a proportion (Wilson 1927): sound near 0 and 1, unlike p ± z·SE."""
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)
