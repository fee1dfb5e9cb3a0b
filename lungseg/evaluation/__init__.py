"""Evaluation stage: every metric of Tables 2–4 for a trained run, with and without the CRF.

* :mod:`lungseg.evaluation.segmentation` — :func:`evaluate_run` (pixel metrics, CIs, robustness,
  the per-image table);
* :mod:`lungseg.evaluation.robustness` — robustness to intensity variation (Table 2, "std"):
  :func:`intensity_robustness` over the HU perturbations :data:`DEFAULT_PERTURBATIONS`;
* :mod:`lungseg.evaluation.detection` — slice-level detection for data without masks;
* :mod:`lungseg.evaluation.folder` — :func:`evaluate_folder`: any tool's masks against reference masks
  (``evaluate --pred DIR --ref DIR``), read and paired by :mod:`lungseg.evaluation.masks`.
"""

from lungseg.evaluation.detection import choose_area_threshold, detection_scores, evaluate_detection
from lungseg.evaluation.folder import evaluate_folder, load_mask_folders
from lungseg.evaluation.masks import MASK_SUFFIXES, MaskPair, pair_mask_files, read_mask_pair
from lungseg.evaluation.robustness import DEFAULT_PERTURBATIONS, Perturbation, intensity_robustness
from lungseg.evaluation.segmentation import (
    MAX_ROBUSTNESS_SLICES,
    SPLITS,
    evaluate_run,
    evaluate_run_crf_settings,
    per_image_rows,
)

__all__ = [
    "DEFAULT_PERTURBATIONS", "MASK_SUFFIXES", "MAX_ROBUSTNESS_SLICES", "SPLITS", "MaskPair", "Perturbation",
    "choose_area_threshold", "detection_scores", "evaluate_detection", "evaluate_folder", "evaluate_run",
    "evaluate_run_crf_settings",
    "intensity_robustness", "load_mask_folders", "pair_mask_files", "per_image_rows", "read_mask_pair",
]
