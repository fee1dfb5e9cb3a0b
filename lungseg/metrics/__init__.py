"""Segmentation metrics of the paper: Table 1, eqs. (11)-(14), Dice, IoU, small-tumour recall,
patient-bootstrap CIs and boundary figures, split by job:

* :mod:`lungseg.metrics.overlap` — confusion counts (Table 1), the ratios of eqs. (11)-(14), Dice,
  IoU, and the one empty-mask rule (:data:`EMPTY_MASK_RULE`);
* :mod:`lungseg.metrics.lesion` — lesions (8-connected components), equivalent diameters and
  small-tumour recall; tumours (3D components of a patient's mask) and their recall;
* :mod:`lungseg.metrics.summary` — the three labelled aggregations (pooled, per image, per patient)
  and their patient-bootstrap intervals, together in :func:`summarize`; a grid cell's interval over
  training seeds and test patients together (:func:`crossed_interval`), and how often it covers a
  population's value (:func:`resampled_coverage`), how much of its width the seeds and the patients
  each make and how many of either a narrower interval needs (:func:`interval_sources`, :func:`sample_needed`);
* :mod:`lungseg.metrics.boundary` — HD95 and surface Dice in mm (MONAI's), with their empty-mask rule
  :data:`BOUNDARY_EMPTY_RULE`;
* :mod:`lungseg.metrics.froc` — lesion-level FROC (sensitivity against false positives per scan over
  probability thresholds) and its LUNA16 score;
* :mod:`lungseg.metrics.agreement` — tumour volumes per patient, their Bland–Altman agreement, the
  worst cases by Dice;
* :mod:`lungseg.metrics.calibration` — the reliability diagram and expected calibration error of
  probability maps;
* :mod:`lungseg.metrics.arrays` — the checked numpy views of masks and spacings they all take.

(The modules are not named after the functions they hold, ``confusion`` and ``lesions``, so that
``lungseg.metrics.confusion`` always means the function.)

Images whose prediction and target are both empty follow one rule, :data:`EMPTY_MASK_RULE`, in every
function here. For binary masks eq. (14) F-score and Dice are the same number,
``2TP / (2TP + FP + FN)``, for every aggregation; a table quoting different Dice and F1 values cannot
have computed both from the same confusion counts.

The robustness to intensity variation (Table 2, "std" column) runs a model, so it lives in the
evaluation stage: :mod:`lungseg.evaluation.robustness`.
"""

from lungseg.metrics.agreement import MM3_PER_ML, bland_altman, volumes_ml, worst_cases
from lungseg.metrics.boundary import (
    BOUNDARY_DEFINITION,
    BOUNDARY_EMPTY_RULE,
    BOUNDARY_METRICS,
    BOUNDARY_TOLERANCE_MM,
    HD_PERCENTILE,
    boundary_per_image,
    boundary_scores,
    boundary_summary,
)
from lungseg.metrics.calibration import CALIBRATION_BINS, expected_calibration_error, mask_reliability, reliability
from lungseg.metrics.froc import FROC_FP_RATES, false_positive_components, froc, froc_score, lesion_detection_scores
from lungseg.metrics.lesion import (
    LESION_RULE,
    TUMOUR_RULE,
    Lesion,
    equivalent_diameter_mm,
    equivalent_sphere_diameter_mm,
    lesions,
    small_tumor_recall,
    tumour_recall,
    tumour_table,
)
from lungseg.metrics.overlap import (
    EMPTY_MASK_RULE,
    METRIC_NAMES,
    Confusion,
    confusion,
    confusion_per_image,
    dice,
    ratio_or_default,
    score,
)
from lungseg.metrics.summary import (
    AGGREGATIONS,
    CROSSED_INTERVAL,
    crossed_interval,
    interval_sources,
    paired_crossed_interval,
    resampled_coverage,
    sample_needed,
    summarize,
)

__all__ = [
    "AGGREGATIONS",
    "BOUNDARY_DEFINITION",
    "BOUNDARY_EMPTY_RULE",
    "BOUNDARY_METRICS",
    "BOUNDARY_TOLERANCE_MM",
    "CALIBRATION_BINS",
    "CROSSED_INTERVAL",
    "EMPTY_MASK_RULE",
    "FROC_FP_RATES",
    "HD_PERCENTILE",
    "LESION_RULE",
    "METRIC_NAMES",
    "MM3_PER_ML",
    "TUMOUR_RULE",
    "Confusion",
    "Lesion",
    "bland_altman",
    "boundary_per_image",
    "boundary_scores",
    "boundary_summary",
    "confusion",
    "confusion_per_image",
    "crossed_interval",
    "interval_sources",
    "dice",
    "equivalent_diameter_mm",
    "equivalent_sphere_diameter_mm",
    "expected_calibration_error",
    "false_positive_components",
    "froc",
    "froc_score",
    "lesion_detection_scores",
    "mask_reliability",
    "lesions",
    "paired_crossed_interval",
    "ratio_or_default",
    "reliability",
    "resampled_coverage",
    "sample_needed",
    "score",
    "small_tumor_recall",
    "summarize",
    "tumour_recall",
    "tumour_table",
    "volumes_ml",
    "worst_cases",
]
