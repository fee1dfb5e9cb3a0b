"""Inference stage: load a trained run, segment slices, and write predictions for a user's scans.

* :mod:`lungseg.inference.run` — :func:`load_run`, :func:`predict_probabilities`, :func:`binarize`;
* :mod:`lungseg.inference.predict` — :func:`predict` (DICOM, NIfTI, PNG/JPEG, ``.npz`` in; the mask
  in the input's geometry and a lesion summary out).
"""

from lungseg.inference.predict import format_summary, image_lesion_summary, lesion_summary, predict
from lungseg.inference.run import (
    LoadedRun,
    binarize,
    check_positive_int,
    crf_window,
    load_run,
    predict_probabilities,
    require_finite,
)

__all__ = [
    "LoadedRun", "binarize", "check_positive_int", "crf_window", "format_summary", "image_lesion_summary", "lesion_summary",
    "load_run", "predict", "predict_probabilities", "require_finite",
]
