"""The paper: its printed numbers, their internal consistency, and its claims against ours.

* :mod:`lungseg.paper.published` — the numbers of Tables 2–4 and the abstract, and the cited
  references whose content does not match what the paper attributes to them;
* :mod:`lungseg.paper.consistency` — arithmetic checks on those numbers (chapter 9);
* :mod:`lungseg.paper.claims` — each published number against an experiment's, with a verdict
  (chapter 5);
* :mod:`lungseg.paper.figure3` — the paper's Figure 3 from an experiment (chapter 6).

It reads an experiment's results table (a plain dict) and imports nothing above
:mod:`lungseg.paper` itself.
"""

from lungseg.paper.claims import (
    CLAIM_METRICS,
    PREVALENCE_DEPENDENT,
    RELATIVE_CLAIMS,
    VERDICT_MARGIN,
    VERDICTS,
    claims,
    direction_verdict,
    format_estimate,
    primary_loss,
    relative_claims,
    side_by_side,
    verdict,
    verdict_counts,
    with_real_column,
)
from lungseg.paper.consistency import (
    accuracy_of_empty_prediction,
    dice_f1_consistency,
    dice_iou_consistency,
    f_score,
    implied_prevalence,
    iou_from_dice,
    precision_from_f1_recall,
    table3_consistency,
)
from lungseg.paper.figure3 import FIGURE3_METRICS, figure3_seed_values, figure3_values
from lungseg.paper.published import (
    MISMATCHED_REFERENCES,
    PAPER_ABSTRACT,
    PAPER_TABLE2,
    PAPER_TABLE3,
    PAPER_TABLE4,
)

__all__ = [
    "CLAIM_METRICS",
    "FIGURE3_METRICS",
    "MISMATCHED_REFERENCES",
    "PAPER_ABSTRACT",
    "PAPER_TABLE2",
    "PAPER_TABLE3",
    "PAPER_TABLE4",
    "PREVALENCE_DEPENDENT",
    "RELATIVE_CLAIMS",
    "VERDICT_MARGIN",
    "VERDICTS",
    "accuracy_of_empty_prediction",
    "claims",
    "dice_f1_consistency",
    "dice_iou_consistency",
    "f_score",
    "figure3_seed_values",
    "figure3_values",
    "format_estimate",
    "implied_prevalence",
    "iou_from_dice",
    "precision_from_f1_recall",
    "primary_loss",
    "side_by_side",
    "table3_consistency",
    "direction_verdict",
    "relative_claims",
    "verdict",
    "verdict_counts",
    "with_real_column",
]
