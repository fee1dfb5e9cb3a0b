"""A synthetic chest-CT study generator: DICOM series + NIfTI tumour masks + a JSON manifest.

No CT data can be shipped with the project, so the default data are generated here. Each patient is a
3D axial slab in Hounsfield units with the structures that make the paper's task hard (class
imbalance, small lesions, vessels and chest wall of tumour-like density): a body of fat and muscle,
ribs, sternum and spine, a mediastinum with heart, aorta and pulmonary trunk, two lungs at about
-850 HU with texture and a dependent (posterior) density gradient, branching 3D vessel and airway
trees, a diaphragm with liver and spleen in the lowest slices, and 0-3 tumours (solid, part-solid,
ground-glass; smooth, lobulated, spiculated; isolated, juxta-pleural, juxta-vascular). Imaging
effects: Gaussian point-spread blur, in-plane correlated noise, per-scanner HU offset/scale and
optional streaks from the spine.

Honest limits: the volumes are synthetic. The slab (``n_slices`` x slice thickness, ~100 mm) covers
the lung base to above the carina, so the anatomy is compressed cranio-caudally compared to a real
chest (~250 mm of lung); every axial slice is plausible, the 3D proportions are not.

Everything is vectorised numpy/scipy and deterministic from the seed. The tumour mask the model
learns (the paper's ground truth ``Y``) is the tumour region inside the lungs.

The generator is split by job: :mod:`~lungseg.data.phantom.config` (settings, labels, format names),
:mod:`~lungseg.data.phantom.anatomy` (the body, lungs and vessel/airway trees of one patient, and the
imaging effects), :mod:`~lungseg.data.phantom.tumours` (placing and describing tumours) and
:mod:`~lungseg.data.phantom.study` (patients and studies on disk, read back) and
:mod:`~lungseg.data.phantom.randomise` (domain randomisation: a patient repainted with random tissue
intensities, textures, tumour cores, bias field, blur, resolution and noise, after SynthSeg).
"""

from lungseg.data.phantom.config import (
    GENERATOR_VERSION,
    JUXTA_MEDIASTINAL,
    MANIFEST_FORMAT,
    TISSUE_LABELS,
    TUMOUR_LOCATIONS,
    TUMOUR_SHAPES,
    TUMOUR_TYPES,
    PhantomConfig,
)
from lungseg.data.phantom.randomise import AppearanceRandomisation, randomise_appearance
from lungseg.data.phantom.study import PhantomStudy, generate_patient, generate_study, load_study

__all__ = [
    "AppearanceRandomisation",
    "GENERATOR_VERSION",
    "JUXTA_MEDIASTINAL",
    "MANIFEST_FORMAT",
    "TISSUE_LABELS",
    "TUMOUR_LOCATIONS",
    "TUMOUR_SHAPES",
    "TUMOUR_TYPES",
    "PhantomConfig",
    "PhantomStudy",
    "generate_patient",
    "generate_study",
    "load_study",
    "randomise_appearance",
]
