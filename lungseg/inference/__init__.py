"""Inference stage: a trained network as a :class:`Predictor`, and prediction on a user's scans.

The chain of ``lungseg predict`` is a descent, each module calling only the ones below it:

* :mod:`lungseg.inference.predict` — :func:`predict`, orchestration only (DICOM, NIfTI, PNG/JPEG,
  ``.npz`` or a folder of studies in; the mask in the input's geometry and a lesion summary out);
* :mod:`lungseg.inference.readers` — reading and checking the input;
* :mod:`lungseg.inference.predictor` — :class:`Predictor` (``from_run_dir``, ``from_bundle``):
  probabilities, masks, CRF-refined masks and attention maps of native slices;
* :mod:`lungseg.inference.bundle` — a run as one model ``.zip`` (``export_model``) and its
  verified unpacking (``read_bundle``);
* :mod:`lungseg.inference.writers` — the results as NIfTI, PNG or ``.npz``, where they go, and the
  report; :mod:`lungseg.inference.dicom_out` — a DICOM series' mask as a DICOM SEG or RT Structure Set;
* :mod:`lungseg.inference.lesions` — the lesion table; :mod:`lungseg.inference.checks` — argument checks.
"""

from lungseg.inference.checks import check_positive_int, require_finite
from lungseg.inference.dicom_out import FORMATS, mask_contours, write_dicom_seg, write_rtstruct
from lungseg.inference.lesions import image_lesion_summary, lesion_summary
from lungseg.inference.predict import predict
from lungseg.inference.predictor import Predictor, Segmentation
from lungseg.inference.readers import list_studies
from lungseg.inference.writers import format_summary, study_output, volume_outputs

__all__ = [
    "FORMATS", "Predictor", "Segmentation", "check_positive_int", "format_summary", "image_lesion_summary",
    "lesion_summary", "list_studies", "mask_contours", "predict", "require_finite", "study_output", "volume_outputs",
    "write_dicom_seg", "write_rtstruct",
]
