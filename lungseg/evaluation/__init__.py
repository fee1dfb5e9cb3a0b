"""Evaluation stage: every metric of Tables 2–4 for a trained run, with and without the CRF.

* :mod:`lungseg.evaluation.segmentation` — :func:`evaluate_run` (pixel metrics, CIs, robustness,
  the per-image table);
* :mod:`lungseg.evaluation.detection` — slice-level detection for data without masks.
"""

from lungseg.evaluation.detection import choose_area_threshold, detection_scores, evaluate_detection
from lungseg.evaluation.segmentation import MAX_ROBUSTNESS_SLICES, SPLITS, evaluate_run, per_image_rows

__all__ = [
    "MAX_ROBUSTNESS_SLICES", "SPLITS", "choose_area_threshold", "detection_scores", "evaluate_detection",
    "evaluate_run", "per_image_rows",
]
