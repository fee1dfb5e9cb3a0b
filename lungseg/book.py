"""Support for the book's notebooks: run profiles, paths, provenance and the paper's published numbers.

The notebooks in ``notebooks/`` call the library only; what they share (the settings of a
profile, where the repository root is, the numbers printed in the paper, and the internal
consistency checks a reader can do on those numbers) lives here so it is tested and typed.

Profiles:
    ``quick``: the default of ``make book`` on a 2-core CPU. A tiny synthetic study (8 phantom
        patients at 128x128), small networks, a few epochs, one seed. It shows the workflow, not
        the paper's numbers.
    ``medium``: the largest grid that fits about an hour of CPU (3 seeds).
    ``paper``: the paper-scale run for a GPU (about a hundred patients at 256x256, the full
        comparison grid with 3 seeds, early stopping on validation Dice).
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PROFILES",
    "ProfileSettings",
    "profile_settings",
    "repo_root",
    "resolve",
    "in_colab",
    "PAPER_TABLE2",
    "PAPER_TABLE3",
    "PAPER_TABLE4",
    "PAPER_ABSTRACT",
    "MISMATCHED_REFERENCES",
    "f_score",
    "iou_from_dice",
    "implied_prevalence",
    "table3_consistency",
    "dice_f1_consistency",
    "dice_iou_consistency",
    "accuracy_of_empty_prediction",
    "load_json",
    "prepare_data",
    "phantom_config",
    "precision_from_f1_recall",
    "CLAIMS_FILE",
]

#: Where chapter 5 writes its measured-vs-claimed rows (relative to a profile's output folder) and
#: chapter 9 reads them: a JSON list of ``{"claim", "paper", "measured", "ci_low", "ci_high",
#: "aggregation", "verdict", "reason"}``.
CLAIMS_FILE = "05_tables/claims.json"


@dataclass(frozen=True)
class ProfileSettings:
    """Every knob a notebook needs for one profile.

    Attributes:
        profile: ``"quick"``, ``"medium"`` or ``"paper"``.
        n_patients: phantom patients generated when no data folder is given.
        phantom_size: in-plane size of the generated slices (the generator scales the pixel
            spacing so that any size covers an adult chest).
        phantom_slices: slices per generated patient.
        image_size: network input size ``S`` (slices are resized to ``(S, S)``).
        base_channels: width of the first level of both networks.
        depth: number of pooling levels of both networks.
        epochs: maximum training epochs (early stopping may end a run sooner).
        batch_size: slices per optimisation step.
        seeds: training seeds; every cell of the comparison grid is trained once per seed.
        losses: the losses of the comparison grid.
        models: the architectures of the comparison grid.
        n_boot: bootstrap resamples for the 95 % confidence intervals.
        data_seed: seed of the phantom study (fixed: the data do not change between seeds).
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"`` or ``"cuda"``.
        output_dir: where the chapters write their results, relative to the repository root.
        data_dir: where the phantom study is generated, relative to the repository root.
    """

    profile: str
    n_patients: int
    phantom_size: int
    phantom_slices: int
    image_size: int
    base_channels: int
    depth: int
    epochs: int
    batch_size: int
    seeds: tuple[int, ...]
    losses: tuple[str, ...] = ("dice", "focal", "hybrid")
    models: tuple[str, ...] = ("unet", "attention")
    n_boot: int = 200
    data_seed: int = 2025
    device: str = "auto"
    output_dir: str = ""
    data_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PROFILES: dict[str, dict[str, Any]] = {
    "quick": dict(
        n_patients=8, phantom_size=128, phantom_slices=32, image_size=128, base_channels=8, depth=3, epochs=3,
        batch_size=8, seeds=(0,), losses=("hybrid",), n_boot=200,
    ),
    "medium": dict(
        n_patients=24, phantom_size=256, phantom_slices=40, image_size=128, base_channels=16, depth=4, epochs=15,
        batch_size=16, seeds=(0, 1, 2), n_boot=500,
    ),
    "paper": dict(
        n_patients=100, phantom_size=256, phantom_slices=40, image_size=256, base_channels=32, depth=4, epochs=100,
        batch_size=16, seeds=(0, 1, 2), n_boot=1000,
    ),
}


def profile_settings(profile: str = "quick", **overrides: Any) -> ProfileSettings:
    """The settings of a run profile, with optional overrides (e.g. from papermill parameters).

    Args:
        profile: ``"quick"``, ``"medium"`` or ``"paper"``.
        **overrides: any :class:`ProfileSettings` field; ``None`` values are ignored so that a
            notebook can pass its parameters cell through unchanged.

    Raises:
        ValueError: unknown profile or unknown override name.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    values: dict[str, Any] = dict(PROFILES[profile])
    values["output_dir"] = f"results/{profile}"
    values["data_dir"] = f"data/phantom-{profile}"
    known = set(ProfileSettings.__dataclass_fields__) - {"profile"}
    for key, value in overrides.items():
        if key not in known:
            raise ValueError(f"unknown profile setting {key!r}; expected one of {sorted(known)}")
        if value is not None:
            values[key] = tuple(value) if key in ("seeds", "losses", "models") else value
    return ProfileSettings(profile=profile, **values)


def repo_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The repository root: the nearest folder at or above ``start`` (default: cwd) holding
    ``pyproject.toml`` and a ``lungseg`` package; the current directory when there is none
    (e.g. the package installed from a wheel on Colab)."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "lungseg").is_dir():
            return folder
    return here


def resolve(path: str | os.PathLike[str]) -> Path:
    """``path`` if absolute, otherwise relative to :func:`repo_root` (notebooks run in
    ``notebooks/`` under papermill and nbval, but their paths are written from the root)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else repo_root() / p


def prepare_data(settings: ProfileSettings, data_dir: str | os.PathLike[str] | None = None,
                 progress: bool = True) -> Path:
    """The dataset a chapter runs on: ``data_dir`` when given, else the profile's phantom study.

    The synthetic study is generated once (``settings.n_patients`` patients, seed
    ``settings.data_seed``) into ``settings.data_dir`` and reused by every later chapter as long as
    its manifest matches (generator version, seed, patient count and generator settings); a study
    made by another generator version or profile settings in that folder is regenerated.

    Raises:
        FileNotFoundError: ``data_dir`` is given but does not exist.
    """
    if data_dir is not None:
        path = resolve(data_dir)
        if not path.exists():
            raise FileNotFoundError(f"data_dir {str(data_dir)!r}: no such file or folder ({path})")
        return path
    from lungseg.data.phantom import GENERATOR_VERSION, generate_study

    out = resolve(settings.data_dir)
    config = phantom_config(settings)
    manifest_path = out / "manifest.json"
    stale = False
    if manifest_path.is_file():
        with open(manifest_path, encoding="utf-8") as fh:
            manifest = json.load(fh)
        wanted = {"generator_version": GENERATOR_VERSION, "seed": settings.data_seed,
                  "n_patients": settings.n_patients, "config": json.loads(json.dumps(config.to_dict()))}
        if all(manifest.get(k) == v for k, v in wanted.items()):
            return out
        stale = True  # made by another generator version or profile: the profile's own folder is rebuilt
    return Path(generate_study(out, n_patients=settings.n_patients, seed=settings.data_seed,
                               config=config, progress=progress, overwrite=stale))


def phantom_config(settings: ProfileSettings) -> Any:
    """The :class:`lungseg.data.phantom.PhantomConfig` of a profile's synthetic study.

    Patient ``i`` of the study is ``generate_patient((settings.data_seed, i), phantom_config(settings))``,
    which also returns the tissue labels that are not written to disk.
    """
    from lungseg.data.phantom import PhantomConfig

    return PhantomConfig(image_size=settings.phantom_size, n_slices=settings.phantom_slices)


def in_colab() -> bool:
    """True inside Google Colab (the install cell of each chapter is a no-op elsewhere)."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


# ---------------------------------------------------------------------------------------------
# The paper's published numbers (Shrivastav & Pandey 2025), transcribed from its tables.
# They are the claims the book compares against; nothing measured is stored here.
PAPER_TABLE2: dict[str, dict[str, float]] = {
    "unet": {"dice": 0.82, "iou": 0.74, "small_tumor_recall": 0.68, "robustness_std": 0.07},
    "attention": {"dice": 0.89, "iou": 0.83, "small_tumor_recall": 0.81, "robustness_std": 0.03},
}
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


def f_score(precision: float, recall: float) -> float:
    """Harmonic mean of precision and recall (the F-score of eq. 14); 0 when both are 0."""
    if precision < 0 or recall < 0:
        raise ValueError(f"precision and recall must be >= 0, got {precision}, {recall}")
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def iou_from_dice(dice: float) -> float:
    """IoU implied by a Dice computed on the same pixel set: ``J = D / (2 - D)``.

    Exact for pooled figures (one confusion matrix); for means over images the mean IoU is
    at least ``f(mean Dice)`` because ``D / (2 - D)`` is convex (Jensen), never exactly equal
    unless every image has the same Dice."""
    if not 0.0 <= dice <= 1.0:
        raise ValueError(f"dice must be in [0, 1], got {dice}")
    return dice / (2.0 - dice)


def implied_prevalence(accuracy: float, precision: float, recall: float) -> float:
    """Fraction of tumour pixels that a pooled (accuracy, precision, recall) triple implies.

    With prevalence ``pi``: ``TP = R pi``, ``FN = (1 - R) pi``, ``FP = TP (1 - P) / P`` and
    ``1 - accuracy = FN + FP``, hence ``pi = (1 - A) / ((1 - R) + R (1 - P) / P)``.
    """
    if not (0 < precision <= 1 and 0 < recall <= 1 and 0 <= accuracy <= 1):
        raise ValueError(
            f"need 0<precision<=1, 0<recall<=1, 0<=accuracy<=1; got {precision}, {recall}, {accuracy}"
        )
    errors_per_positive = (1 - recall) + recall * (1 - precision) / precision
    if errors_per_positive == 0:
        return math.nan if accuracy < 1 else 0.0
    return (1 - accuracy) / errors_per_positive


def precision_from_f1_recall(f1: float, recall: float) -> float:
    """The precision that an F-score and a recall imply: ``P = F R / (2 R - F)``.

    Returns NaN when no precision in (0, 1] gives that pair (``2R <= F`` or the result exceeds 1).
    """
    if not (0 < f1 <= 1 and 0 < recall <= 1):
        raise ValueError(f"need 0<f1<=1 and 0<recall<=1, got f1={f1}, recall={recall}")
    den = 2 * recall - f1
    if den <= 0:
        return math.nan
    p = f1 * recall / den
    return p if p <= 1 + 1e-12 else math.nan


def accuracy_of_empty_prediction(prevalence: float) -> float:
    """Pixel accuracy of a model that predicts no tumour at all: ``1 - prevalence``."""
    if not 0.0 <= prevalence <= 1.0:
        raise ValueError(f"prevalence must be in [0, 1], got {prevalence}")
    return 1.0 - prevalence


def table3_consistency(table: dict[str, dict[str, float]] | None = None, tol: float = 0.005) -> list[dict[str, Any]]:
    """Recompute each row's F-score from its precision and recall (eq. 14).

    Args:
        table: rows ``{model: {accuracy, precision, recall, f1}}``; default :data:`PAPER_TABLE3`.
        tol: rounding tolerance (the paper prints two decimals).

    Returns:
        One dict per row: model, printed F, recomputed F, difference, consistent.
    """
    rows = []
    for model, r in (table or PAPER_TABLE3).items():
        f = f_score(r["precision"], r["recall"])
        rows.append({"model": model, "printed F": r["f1"], "2PR/(P+R)": round(f, 4),
                     "difference": round(r["f1"] - f, 4), "consistent": abs(r["f1"] - f) <= tol})
    return rows


def dice_f1_consistency(dice: float = PAPER_ABSTRACT["dice"], f1: float = PAPER_ABSTRACT["f1"], tol: float = 0.005) -> dict[str, Any]:
    """Pooled Dice equals pooled pixel F-score (``2TP / (2TP + FP + FN)`` both), so a Dice and
    an F1 reported for the same model can only both be pooled figures if they are equal."""
    return {"dice": dice, "f1": f1, "difference": round(dice - f1, 4),
            "can both be pooled": abs(dice - f1) <= tol}


def dice_iou_consistency(table: dict[str, dict[str, float]] | None = None, tol: float = 0.005) -> list[dict[str, Any]]:
    """Compare each printed IoU with ``D / (2 - D)`` from the printed Dice (see :func:`iou_from_dice`)."""
    rows = []
    for model, r in (table or PAPER_TABLE2).items():
        j = iou_from_dice(r["dice"])
        rows.append({"model": model, "printed Dice": r["dice"], "printed IoU": r["iou"],
                     "D/(2-D)": round(j, 4), "pooled-consistent": abs(r["iou"] - j) <= tol,
                     "per-image possible": r["iou"] >= j - tol})
    return rows


def load_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A JSON results file relative to the repository root, or ``None`` when it does not exist
    (the chapter that writes it has not run yet)."""
    p = resolve(path)
    if not p.is_file():
        return None
    with open(p, encoding="utf-8") as fh:
        return json.load(fh)
