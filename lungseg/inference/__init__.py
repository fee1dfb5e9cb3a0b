"""Inference stage: load a trained run, segment slices, and write predictions for a user's scans.

* :mod:`lungseg.inference.run` — :func:`load_run`, :func:`predict_probabilities`, :func:`binarize`;
* :mod:`lungseg.inference.predict` — :func:`predict` (DICOM, NIfTI, PNG/JPEG, ``.npz`` or a folder of
  studies in; the mask in the input's geometry and a lesion summary out);
* :mod:`lungseg.inference.dicom_out` — a DICOM series' mask as a DICOM SEG or RT Structure Set.
"""

from lungseg.inference.dicom_out import FORMATS, mask_contours, write_dicom_seg, write_rtstruct
from lungseg.inference.predict import (
    format_summary,
    image_lesion_summary,
    lesion_summary,
    list_studies,
    predict,
    study_output,
    volume_outputs,
)
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
    "FORMATS", "LoadedRun", "binarize", "check_positive_int", "crf_window", "format_summary", "image_lesion_summary", "lesion_summary",
    "list_studies", "load_run", "mask_contours", "predict", "predict_probabilities", "require_finite", "study_output",
    "volume_outputs", "write_dicom_seg", "write_rtstruct",
]
