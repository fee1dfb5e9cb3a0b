"""Analyses of a finished experiment's runs and images, above the experiment stage.

* :mod:`lungseg.analysis.runs` — an experiment's runs read back through
  :class:`lungseg.rundir.RunDir`: which run is which, the held-out patients, per-run summaries
  and learning curves (chapters 4, 6–8);
* :mod:`lungseg.analysis.examples` — which test slices a figure shows, chosen by rule (chapter 6);
* :mod:`lungseg.analysis.regions` — where the attention gates look, by body region (chapter 7);
* :mod:`lungseg.analysis.sizes` — the tumour-size bins (chapters 7 and 8) and lesion recall by
  cross-section size (chapter 5);
* :mod:`lungseg.analysis.crf_effect` — what the CRF changes, image by image, and to the boundary
  figures (chapter 8);
* :mod:`lungseg.analysis.tumours` — tumour by tumour, what a run finds and what decides its pooled
  Dice (chapter 5);
* :mod:`lungseg.analysis.real_ct` — a phantom-trained run on a real nodule against its readers,
  and the phantom's intensities beside the real scan's (chapter 10);
* :mod:`lungseg.analysis.training_range` — a whole scan's tumour cross-sections (size, attachment) against the
  real training patches', slice by slice (chapter 10);
* :mod:`lungseg.analysis.coverage` — how often an interval holds the value of a large study, by
  resampling its scored patients, and how much of its width the seeds and the patients make (chapter 5);
* :mod:`lungseg.analysis.distributions` — per-patient Dice and the paired differences, for the
  seaborn figures of :mod:`lungseg.plots` (chapter 6);
* :mod:`lungseg.analysis.training` — how the runs trained: the tuning's candidates and choice,
  convergence, patches against whole slices, where the time went (chapter 4, ``scripts/run_profile.py``).

They read run directories, datasets and arrays; none trains, evaluates or knows the book.
"""

from lungseg.analysis.coverage import interval_width_table, resampled_coverage_table
from lungseg.analysis.crf_effect import (
    BOUNDARY_COLUMNS,
    crf_boundary,
    crf_boundary_differences,
    crf_change,
    describe_crf_boundary,
)
from lungseg.analysis.distributions import paired_difference_rows, per_patient_dice
from lungseg.analysis.examples import example_slices
from lungseg.analysis.regions import BODY_HU, LUNG_HU, attention_by_region, body_regions
from lungseg.analysis.runs import (
    PLATEAU_EPOCHS,
    PLATEAU_TOLERANCE,
    best_validation_run,
    held_out_patients,
    plateau,
    run_dir,
    run_histories,
    run_summaries,
)
from lungseg.analysis.sizes import SIZE_BINS, lesion_recall_by_size, size_bin
from lungseg.analysis.training import (
    CONVERGENCE_LABELS,
    SEARCHED,
    chosen_candidates,
    convergence_table,
    grid_span,
    patch_vs_whole_means,
    read_tuning,
    run_timing,
    time_by_model,
    tuning_table,
)
from lungseg.analysis.tumours import (
    TUMOUR_TABLE_LOSSES,
    grid_tumour_table,
    tumour_components,
    tumour_diameters_mm,
    tumour_table,
    write_grid_tumour_table,
)

__all__ = [
    "BODY_HU",
    "BOUNDARY_COLUMNS",
    "CONVERGENCE_LABELS",
    "LUNG_HU",
    "PLATEAU_EPOCHS",
    "PLATEAU_TOLERANCE",
    "SEARCHED",
    "SIZE_BINS",
    "TUMOUR_TABLE_LOSSES",
    "attention_by_region",
    "best_validation_run",
    "body_regions",
    "chosen_candidates",
    "convergence_table",
    "crf_boundary",
    "crf_boundary_differences",
    "crf_change",
    "describe_crf_boundary",
    "example_slices",
    "grid_span",
    "grid_tumour_table",
    "held_out_patients",
    "lesion_recall_by_size",
    "paired_difference_rows",
    "patch_vs_whole_means",
    "per_patient_dice",
    "plateau",
    "read_tuning",
    "interval_width_table",
    "resampled_coverage_table",
    "run_dir",
    "run_histories",
    "run_summaries",
    "run_timing",
    "size_bin",
    "time_by_model",
    "tumour_components",
    "tumour_diameters_mm",
    "tumour_table",
    "tuning_table",
    "write_grid_tumour_table",
]
