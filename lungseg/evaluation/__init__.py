"""Evaluation stage: every metric of Tables 2–4 for a trained run, with and without the CRF.

* :mod:`lungseg.evaluation.segmentation` — :func:`evaluate_run` (pixel metrics, CIs, robustness,
  the per-image table);
* :mod:`lungseg.evaluation.robustness` — robustness to intensity variation (Table 2, "std"):
  :func:`intensity_robustness` over the HU perturbations :data:`DEFAULT_PERTURBATIONS`;
* :mod:`lungseg.evaluation.detection` — slice-level detection for data without masks.
"""

from lungseg.evaluation.detection import choose_area_threshold, detection_scores, evaluate_detection
from lungseg.evaluation.robustness import DEFAULT_PERTURBATIONS, Perturbation, intensity_robustness
from lungseg.evaluation.segmentation import MAX_ROBUSTNESS_SLICES, SPLITS, evaluate_run, per_image_rows

__all__ = [
    "DEFAULT_PERTURBATIONS", "MAX_ROBUSTNESS_SLICES", "SPLITS", "Perturbation", "choose_area_threshold",
    "detection_scores", "evaluate_detection", "evaluate_run", "intensity_robustness", "per_image_rows",
]
