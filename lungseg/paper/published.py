"""The paper's published numbers (Shrivastav & Pandey 2025), transcribed once from its tables.

They are the claims the book compares against (:mod:`lungseg.paper.claims`) and checks for
internal consistency (:mod:`lungseg.paper.consistency`); nothing measured is stored here.
"""

from __future__ import annotations

__all__ = ["MISMATCHED_REFERENCES", "PAPER_ABSTRACT", "PAPER_TABLE2", "PAPER_TABLE3", "PAPER_TABLE4"]

#: Table 2: segmentation quality per model.
PAPER_TABLE2: dict[str, dict[str, float]] = {
    "unet": {"dice": 0.82, "iou": 0.74, "small_tumor_recall": 0.68, "robustness_std": 0.07},
    "attention": {"dice": 0.89, "iou": 0.83, "small_tumor_recall": 0.81, "robustness_std": 0.03},
}
#: Table 3: pixel classification metrics per model.
PAPER_TABLE3: dict[str, dict[str, float]] = {
    "unet": {"accuracy": 0.87, "precision": 0.79, "recall": 0.68, "f1": 0.73},
    "attention": {"accuracy": 0.92, "precision": 0.86, "recall": 0.81, "f1": 0.83},
}
#: Table 4 rows: (technique, cited reference, accuracy, precision, recall, F1) in %; None = "--".
PAPER_TABLE4: list[tuple[str, int | None, float | None, float | None, float | None, float | None]] = [
    ("SVM with miRNA biomarkers", 9, 90.10, None, None, None),
    ("SVM with Taxonomic Indexes", 14, 98.11, None, None, None),
    ("CNN on LIDC Database", 19, 86.84, None, None, None),
    ("Auto Encoder", 17, 75.01, None, None, None),
    ("Deep Belief Network", 18, None, None, 73.40, 82.20),
    ("Traditional U-Net (Baseline)", None, 87.0, 79.0, 68.0, 73.0),
    ("Proposed Attention U-Net", None, 92.0, 86.0, 81.0, 83.0),
]
#: The abstract's headline figures.
PAPER_ABSTRACT: dict[str, float] = {"accuracy": 0.92, "dice": 0.89, "f1": 0.83}
#: References whose text in the paper (what is attributed to them) does not match the cited work.
MISMATCHED_REFERENCES: list[dict[str, str]] = [
    {"ref": "[9]", "attributed": "SVM on miRNA biomarkers / texture of solitary pulmonary nodules (90.1 % accuracy)",
     "cited work": "Chen et al. 2017, texture analysis of multiphase hepatic CT for hepatocellular carcinoma"},
    {"ref": "[11]", "attributed": "SVM lung-cancer model on miRNA biomarkers",
     "cited work": "Bera et al. 2020, pH/temperature-responsive nanocomposites as drug carriers"},
    {"ref": "[14]", "attributed": "SVM with taxonomic difference indexes, 98.11 % accuracy",
     "cited work": "Aleesa et al. 2020, review of deep-learning intrusion detection systems"},
    {"ref": "[19]", "attributed": "multi-scale two-layer CNN on LIDC, 86.84 % accuracy",
     "cited work": "Li et al. 2020, cross-modality segmentation with online mutual knowledge distillation"},
    {"ref": "[18]", "attributed": "deep belief network: sensitivity 73.40 %, specificity 82.20 % (text); F1 82.20 % (Table 4)",
     "cited work": "Dey et al. 2018, 3D CNNs for nodule classification (no deep belief network)"},
]

