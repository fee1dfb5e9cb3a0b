"""Support for the book's notebooks: run profiles, paths, provenance and the paper's published numbers.

The notebooks in ``notebooks/`` call the library only; what they share (the settings of a
profile, where the repository root is, the numbers printed in the paper, and the internal
consistency checks a reader can do on those numbers) lives here so it is tested and typed, as
does the chapters' own logic: running a profile's grid (chapter 4), the published-vs-measured
comparison with its verdicts (chapter 5, :func:`claims`), the choice of example slices and the
Figure 3 numbers (chapter 6), attention per body region (chapter 7) and the per-image effect of
the CRF (chapter 8).

Profiles:
    ``quick``: the default of ``make book`` on a 2-core CPU. A tiny synthetic study (8 phantom
        patients at 128x128), small networks at 64x64, 3 short epochs, one seed. It shows the workflow, not
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
    "CLAIM_METRICS",
    "PREVALENCE_DEPENDENT",
    "VERDICT_TOLERANCE",
    "SIZE_BINS",
    "FIGURE3_METRICS",
    "train_config",
    "experiment_dir",
    "run_grid",
    "run_summaries",
    "run_histories",
    "verdict",
    "primary_loss",
    "claims",
    "write_claims",
    "published_results",
    "format_estimate",
    "side_by_side",
    "verdict_counts",
    "held_out_patients",
    "run_dir",
    "example_slices",
    "figure3_values",
    "body_regions",
    "attention_by_region",
    "equivalent_diameter_mm",
    "size_bin",
    "crf_change",
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
    # Sized so that `make book` fits ~10 minutes on 2 CPU cores: 6 small runs of 20 epochs of 256
    # slices (half with tumour) at 64x64, enough for Dice and hybrid runs to start learning. It
    # exercises the whole pipeline; the networks are far too small and short-trained for the paper.
    "quick": dict(
        n_patients=24, phantom_size=128, phantom_slices=24, image_size=64, base_channels=8, depth=3, epochs=20,
        batch_size=8, seeds=(0,), losses=("dice", "focal", "hybrid"), n_boot=200,
    ),
    # Sized by measurement (scripts/run_profile.py, results/medium/provenance.json): the full grid of
    # 18 trainings plus CRF evaluation in under an hour of a contended 2-core CPU.
    "medium": dict(
        n_patients=60, phantom_size=128, phantom_slices=24, image_size=64, base_channels=8, depth=3, epochs=24,
        batch_size=8, seeds=(0, 1, 2), n_boot=200,
    ),
    "paper": dict(
        n_patients=100, phantom_size=256, phantom_slices=40, image_size=256, base_channels=32, depth=4, epochs=100,
        batch_size=16, seeds=(0, 1, 2), n_boot=1000,
    ),
}


#: Training settings of each profile beyond :class:`ProfileSettings` (learning rate, early stopping on
#: validation Dice, tumour oversampling, epoch length, augmentation, data loading), used by
#: :func:`train_config` for the book's chapters and ``scripts/run_profile.py`` alike.
TRAIN_SETTINGS: dict[str, dict[str, Any]] = {
    "quick": dict(patience=None, tumour_fraction=0.5, samples_per_epoch=256, lr=2e-3, augment=True),
    "medium": dict(patience=8, tumour_fraction=0.5, samples_per_epoch=256, lr=2e-3, augment=True),
    "paper": dict(patience=10, tumour_fraction=0.5, samples_per_epoch=None, lr=1e-3, augment=True, num_workers=4),
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


# ---------------------------------------------------------------------------------------------
# Chapter 4: the comparison grid of a profile.


def train_config(settings: ProfileSettings, data: str | os.PathLike[str] = "", **overrides: Any) -> Any:
    """The :class:`lungseg.config.TrainConfig` shared by every run of a profile's grid: the profile's
    network and data sizes plus its :data:`TRAIN_SETTINGS`, then ``overrides`` (the model, loss and
    seed are set per run by :func:`lungseg.experiment.run_experiment`)."""
    from lungseg.training import TrainConfig

    extra = {**TRAIN_SETTINGS.get(settings.profile, {}), **overrides}
    return TrainConfig(data=str(data), base_channels=settings.base_channels, depth=settings.depth,
                       image_size=settings.image_size, epochs=settings.epochs, batch_size=settings.batch_size,
                       device=settings.device, **extra)


def experiment_dir(settings: ProfileSettings) -> Path:
    """The experiment folder of a profile: ``<output_dir>/experiment`` (runs, results.json/.csv)."""
    return resolve(settings.output_dir) / "experiment"


def run_grid(settings: ProfileSettings, data: str | os.PathLike[str], progress: bool = True) -> dict[str, Any]:
    """Train and evaluate the profile's grid {models} x {losses} x {seeds}, CRF off and on.

    Finished runs in :func:`experiment_dir` are reused, interrupted ones resumed (see
    :func:`lungseg.experiment.run_experiment`, whose ``results.json`` this returns).
    """
    from lungseg.experiment import run_experiment

    return run_experiment(data, experiment_dir(settings), models=settings.models, losses=settings.losses,
                          crf=(False, True), seeds=settings.seeds, base_config=train_config(settings), n_boot=0,
                          device=settings.device, progress=progress)


def run_summaries(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per run of an experiment: model, loss, seed, whether it was trained in this call or
    reused, the device, epochs, best validation Dice and wall time (from each run's ``metrics.json``)."""
    rows = []
    for run in results["runs"]:
        summary = load_json(Path(run["run"]) / "metrics.json") or {}
        epochs = summary.get("epochs_run") or 0
        wall = summary.get("wall_time_s")
        rows.append({
            "run": Path(run["run"]).name, "model": run["model"], "loss": run["loss"], "seed": run["seed"],
            "status": run["status"], "device": summary.get("device"), "epochs": epochs,
            "best epoch": summary.get("best_epoch"), "best val Dice": summary.get("best_val_dice"),
            "wall time (s)": wall, "s / epoch": wall / epochs if wall is not None and epochs else None,
        })
    return rows


def run_histories(results: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """``{run name: {column: values}}`` from every run's ``history.csv`` (one row per epoch)."""
    import csv

    histories = {}
    for run in results["runs"]:
        path = Path(run["run"]) / "history.csv"
        if not path.is_file():
            continue
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        histories[Path(run["run"]).name] = {k: [float(r[k]) if r[k] not in ("", None) else math.nan for r in rows]
                                            for k in (rows[0] if rows else {})}
    return histories


# ---------------------------------------------------------------------------------------------
# Chapter 5: the paper's numbers against ours, with a verdict.

#: Each metric of the paper's Tables 2 and 3 and the results-table columns that measure it, with
#: the aggregation of each (the paper states none): "pooled" over all test pixels, mean "per image"
#: or "per patient"; pooled F1 is pooled Dice (both 2TP/(2TP+FP+FN)).
CLAIM_METRICS: dict[str, list[tuple[str, str]]] = {
    "dice": [("dice_pooled", "pooled"), ("dice_per_image", "per image"), ("dice_per_patient", "per patient")],
    "iou": [("iou_pooled", "pooled"), ("iou_per_image", "per image")],
    "small_tumor_recall": [("small_tumor_recall", "lesions < 10 mm")],
    "robustness_std": [("intensity_robustness_std", "SD over perturbations")],
    "accuracy": [("accuracy_pooled", "pooled")],
    "precision": [("precision_pooled", "pooled")],
    "recall": [("recall_pooled", "pooled")],
    "f1": [("dice_pooled", "pooled (= Dice)")],
}
#: Metrics whose value is set by the data's tumour prevalence more than by the model: pixel
#: accuracy counts the (overwhelming) background, so a number from other data says nothing.
PREVALENCE_DEPENDENT = frozenset({"accuracy"})
#: Tolerance of the verdict when there is no confidence interval (one seed).
VERDICT_TOLERANCE = 0.02


def verdict(paper: float | None, mean: float | None, low: float | None = None, high: float | None = None, *,
            tol: float = VERDICT_TOLERANCE, not_comparable: str | None = None) -> tuple[str, str]:
    """Compare a published number with a measured one.

    Args:
        paper: the paper's value (``None``: the paper gives none).
        mean: our mean over seeds (``None``: not measured).
        low, high: our 95 % interval over seeds; ``None`` with one seed.
        tol: with an interval, the paper's value may lie this far outside it (its two printed
            decimals); without one, this far from the mean.
        not_comparable: a reason why the two cannot be compared at all.

    Returns:
        ``(verdict, reason)`` with verdict ``"reproduced"``, ``"not reproduced"`` or ``"not comparable"``.
    """
    if not_comparable:
        return "not comparable", not_comparable
    if paper is None:
        return "not comparable", "the paper gives no value"
    if mean is None or not math.isfinite(mean):
        return "not comparable", "not measured here (undefined on these data)"
    if low is not None and high is not None:
        if low - tol <= paper <= high + tol:
            return "reproduced", f"paper's {paper:.2f} lies within our 95 % CI [{low:.3f}, {high:.3f}] (±{tol})"
        side = "above" if paper > high else "below"
        return "not reproduced", f"paper's {paper:.2f} is {side} our 95 % CI [{low:.3f}, {high:.3f}]"
    if abs(mean - paper) <= tol:
        return "reproduced", f"one seed (no CI): {mean:.3f} within ±{tol} of the paper's {paper:.2f}"
    side = "above" if paper > mean else "below"
    return "not reproduced", f"one seed (no CI): paper's {paper:.2f} is {side} our {mean:.3f} by more than {tol}"


def primary_loss(results: dict[str, Any]) -> str:
    """The loss the paper's Tables 2–3 use (hybrid, eq. 9) when the grid has it, else the first."""
    losses = list(results["settings"]["losses"])
    return "hybrid" if "hybrid" in losses else losses[0]


def claims(results: dict[str, Any], *, loss: str | None = None, data_note: str | None = None) -> list[dict[str, Any]]:
    """Every number of the paper's Tables 2–3 against the experiment's, with a verdict.

    Args:
        results: ``results.json`` of :func:`lungseg.experiment.run_experiment`.
        loss: the grid's loss to compare (default :func:`primary_loss`).
        data_note: appended to every reason (e.g. "synthetic phantom, not the paper's data").

    Returns:
        Rows in the format of :data:`CLAIMS_FILE` (``claim, paper, measured, ci_low, ci_high,
        aggregation, verdict, reason``) plus ``table, model, metric, column, crf, loss, n_seeds``;
        one row per (model, paper metric, aggregation, CRF off/on), and one for the paper's
        Attention-minus-U-Net Dice gain per CRF setting when both models were trained.
    """
    loss = loss or primary_loss(results)
    cells = {(c["model"], c["loss"], bool(c["crf"])): c for c in results["cells"]}
    rows = []

    def add(row: dict[str, Any], stat: dict[str, Any], paper: float | None, reason_nc: str | None) -> None:
        v, why = verdict(paper, stat.get("mean"), stat.get("low"), stat.get("high"), not_comparable=reason_nc)
        rows.append({**row, "paper": paper, "measured": stat.get("mean"), "ci_low": stat.get("low"),
                     "ci_high": stat.get("high"), "n_seeds": stat.get("n", 0), "verdict": v,
                     "reason": why + (f"; {data_note}" if data_note and v != "not comparable" else "")})

    for (model, cell_loss, crf), cell in cells.items():
        if cell_loss != loss:
            continue
        for table, published in (("Table 2", PAPER_TABLE2), ("Table 3", PAPER_TABLE3)):
            for metric, paper in published.get(model, {}).items():
                for column, aggregation in CLAIM_METRICS[metric]:
                    nc = ("pixel accuracy counts background pixels, so it is set by the data's tumour "
                          "prevalence: a value from other data cannot be compared" if metric in PREVALENCE_DEPENDENT
                          else None)
                    add({"claim": f"{table}: {model} {metric} = {paper:.2f}", "table": table, "model": model,
                         "metric": metric, "column": column, "aggregation": aggregation, "crf": crf, "loss": loss},
                        cell[column], paper, nc)
    for diff in results.get("differences", []):
        a, b = diff["a"], diff["b"]
        if (diff["factor"] == "model" and a["loss"] == loss and {a["model"], b["model"]} == {"unet", "attention"}):
            sign = 1.0 if b["model"] == "attention" else -1.0
            stat = {k: (None if diff["dice_pooled"][k] is None else sign * diff["dice_pooled"][k])
                    for k in ("mean", "low", "high")}
            if sign < 0:
                stat["low"], stat["high"] = stat["high"], stat["low"]
            stat["n"] = diff["dice_pooled"]["n"]
            gain = round(PAPER_TABLE2["attention"]["dice"] - PAPER_TABLE2["unet"]["dice"], 4)
            add({"claim": f"Table 2: attention - unet dice = {gain:.2f}", "table": "Table 2", "model": "attention - unet",
                 "metric": "dice gain", "column": "dice_pooled", "aggregation": "paired, pooled",
                 "crf": bool(a["crf"]), "loss": loss}, stat, gain, None)
    return rows


def write_claims(rows: list[dict[str, Any]], settings: ProfileSettings) -> Path:
    """Write the rows of :func:`claims` to ``<output_dir>/`` :data:`CLAIMS_FILE` (read by chapter 9)."""
    path = resolve(settings.output_dir) / CLAIMS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2, allow_nan=False, default=float) + "\n", encoding="utf-8")
    return path


def published_results(exclude: str | None = None) -> dict[str, dict[str, Any]]:
    """``{profile: results.json}`` of the committed experiments in ``results/<profile>/experiment/``
    (e.g. a medium or paper run published with the repository), except ``exclude``."""
    found = {}
    for name in PROFILES:
        if name == exclude:
            continue
        data = load_json(f"results/{name}/experiment/results.json")
        if data is not None:
            found[name] = data
    return found


# ---------------------------------------------------------------------------------------------
# Chapter 7: where the attention gates look.

#: HU threshold separating the body (soft tissue, > -500 HU) from air, and aerated lung inside it.
BODY_HU = -500.0
LUNG_HU = -400.0


def body_regions(image_hu: Any, mask: Any | None = None) -> dict[str, Any]:
    """Split a CT slice ``(H, W)`` in HU into disjoint regions: ``tumour`` (the mask), ``lung``
    (aerated tissue inside the body), ``other tissue`` (the rest of the body) and ``outside body``.

    The body is the largest connected component above :data:`BODY_HU` with its holes (the lungs)
    filled; lung is the part of the body below :data:`LUNG_HU`.

    Raises:
        ValueError: ``image_hu`` is not 2D, or ``mask`` has another shape.
    """
    import numpy as np
    from scipy import ndimage

    img = np.asarray(image_hu, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"image_hu must be (H, W), got shape {img.shape}")
    tumour = np.zeros(img.shape, bool) if mask is None else np.asarray(mask) > 0
    if tumour.shape != img.shape:
        raise ValueError(f"mask must have the image's shape {img.shape}, got {tumour.shape}")
    labels, n = ndimage.label(img > BODY_HU)
    if n:
        largest = 1 + int(np.argmax(ndimage.sum_labels(np.ones_like(img), labels, index=range(1, n + 1))))
        body = ndimage.binary_fill_holes(labels == largest)
    else:
        body = np.zeros(img.shape, bool)
    body |= tumour
    lung = body & (img < LUNG_HU) & ~tumour
    return {"tumour": tumour, "lung": lung, "other tissue": body & ~lung & ~tumour, "outside body": ~body}


def attention_by_region(images_hu: Any, masks: Any, alphas: list[Any]) -> list[dict[str, Any]]:
    """Mean attention coefficient (eq. 6) of every gate inside each region of :func:`body_regions`.

    Args:
        images_hu: slices ``(N, H, W)`` in HU.
        masks: ground truth ``(N, H, W)``.
        alphas: one array ``(N, H, W)`` per gate, deepest first (as returned by
            :func:`lungseg.inference.predict_probabilities` with ``return_attention=True``).

    Returns:
        One row per gate: ``gate``, the mean coefficient over the pixels of each region (pooled
        over the slices; ``None`` for a region with no pixel), and ``tumour / lung``, the ratio of
        the tumour and lung means (> 1: the gate favours tumour over the surrounding lung).
    """
    import numpy as np

    images = np.asarray(images_hu)
    m = np.asarray(masks)
    if images.ndim != 3 or m.shape != images.shape:
        raise ValueError(f"images_hu and masks must both be (N, H, W); got {images.shape} and {m.shape}")
    for i, a in enumerate(alphas):
        if np.shape(a) != images.shape:
            raise ValueError(f"alphas[{i}] must have the images' shape {images.shape}, got {np.shape(a)}")
    regions = [body_regions(img, mk) for img, mk in zip(images, m)]
    names = ("tumour", "lung", "other tissue", "outside body")
    rows = []
    for level, alpha in enumerate(alphas):
        a = np.asarray(alpha, dtype=np.float64)
        row: dict[str, Any] = {"gate": level + 1}
        for name in names:
            total = sum(float(a[i][r[name]].sum()) for i, r in enumerate(regions))
            count = sum(int(r[name].sum()) for r in regions)
            row[name] = total / count if count else None
            row[f"{name} pixels"] = count
        row["tumour / lung"] = (row["tumour"] / row["lung"]) if row["tumour"] is not None and row["lung"] else None
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Chapter 8: what the CRF changes, image by image.


def equivalent_diameter_mm(pixels: Any, spacing_yx: tuple[float, float]) -> Any:
    """Diameter of the disc with the area of ``pixels`` pixels of size ``spacing_yx`` mm."""
    import numpy as np

    return 2.0 * np.sqrt(np.asarray(pixels, dtype=np.float64) * spacing_yx[0] * spacing_yx[1] / np.pi)


#: Tumour-size bins of chapter 8 (equivalent diameter of the slice's tumour area, mm).
SIZE_BINS: tuple[tuple[str, float, float], ...] = (
    ("no tumour", 0.0, 0.0), ("< 10 mm", 0.0, 10.0), ("10-20 mm", 10.0, 20.0), (">= 20 mm", 20.0, math.inf),
)


def size_bin(diameter_mm: float) -> str:
    """The :data:`SIZE_BINS` label of a slice's tumour size (0 for a tumour-free slice)."""
    if diameter_mm <= 0:
        return SIZE_BINS[0][0]
    return next(name for name, lo, hi in SIZE_BINS[1:] if lo <= diameter_mm < hi)


def crf_change(run_dir: str | os.PathLike[str], spacing: dict[str, tuple[float, float]] | None = None) -> list[dict[str, Any]]:
    """Per-image effect of the CRF: the rows of a run's ``eval_crf_off_per_image.csv`` and
    ``eval_crf_on_per_image.csv`` (written by :func:`lungseg.run_experiment`) side by side.

    Args:
        run_dir: a run of the experiment, evaluated with CRF off and on.
        spacing: ``{patient_id: (dy, dx)}`` mm, to express tumour sizes as equivalent diameters;
            ``None`` bins by pixels only (``diameter_mm`` is then ``None``).

    Returns:
        One row per test image: ``image_id``, ``patient_id``, ``slice``, ``tumour_pixels``,
        ``diameter_mm``, ``size``, ``dice_off``, ``dice_on``, ``dice_change`` (``None`` where the
        Dice is undefined: no tumour and nothing predicted), ``fp_off``, ``fp_on``, ``fn_off``, ``fn_on``.

    Raises:
        FileNotFoundError: a per-image CSV is missing (evaluate the run with and without CRF first).
    """
    import csv

    run = Path(run_dir)
    tables = {}
    for state in ("off", "on"):
        path = run / f"eval_crf_{state}_per_image.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; evaluate {run} with crf={state == 'on'} first")
        with open(path, encoding="utf-8", newline="") as fh:
            tables[state] = {r["image_id"]: r for r in csv.DictReader(fh)}
    if tables["off"].keys() != tables["on"].keys():
        raise ValueError(f"{run}: the CRF-off and CRF-on evaluations cover different images")

    def num(x: str) -> float | None:
        return None if x in ("", None) else float(x)

    rows = []
    for image_id, off in tables["off"].items():
        on = tables["on"][image_id]
        pixels = int(off["tumour_pixels"])
        diameter = None
        if spacing is not None and off["patient_id"] in spacing:
            diameter = float(equivalent_diameter_mm(pixels, spacing[off["patient_id"]]))
        d_off, d_on = num(off["dice"]), num(on["dice"])
        rows.append({
            "image_id": image_id, "patient_id": off["patient_id"], "slice": int(off["slice"]), "tumour_pixels": pixels,
            "diameter_mm": diameter,
            "size": size_bin(diameter) if diameter is not None else SIZE_BINS[0][0] if pixels == 0 else "tumour",
            "dice_off": d_off, "dice_on": d_on,
            "dice_change": None if d_off is None or d_on is None else d_on - d_off,
            "fp_off": int(off["fp"]), "fp_on": int(on["fp"]), "fn_off": int(off["fn"]), "fn_on": int(on["fn"]),
        })
    return rows


def format_estimate(mean: float | None, low: float | None = None, high: float | None = None, digits: int = 3) -> str:
    """``"0.812 [0.790, 0.834]"`` (mean and 95 % CI), ``"0.812"`` without a CI, ``"n/a"`` if unmeasured."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if low is None or high is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def side_by_side(rows: list[dict[str, Any]], table: str | None = None, reasons: bool = True) -> list[dict[str, Any]]:
    """The rows of :func:`claims` with CRF off and on in one row each: ``model, metric,
    aggregation, paper, ours (CRF off), ours (CRF on), verdict (CRF off), verdict (CRF on), reason``
    (the reason of the CRF-on row: the paper's pipeline ends with the CRF of eq. 10).

    Args:
        rows: the output of :func:`claims`.
        table: keep only ``"Table 2"`` or ``"Table 3"`` (default: all).
        reasons: include the ``reason`` column (long text; a narrow page shows it better apart).
    """
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        if table is not None and r["table"] != table:
            continue
        key = (r["model"], r["metric"], r["aggregation"])
        out = merged.setdefault(key, {"model": r["model"], "metric": r["metric"].replace("_", " "),
                                      "aggregation": r["aggregation"],
                                      "paper": r["paper"]})
        state = "on" if r["crf"] else "off"
        out[f"ours (CRF {state})"] = format_estimate(r["measured"], r["ci_low"], r["ci_high"])
        out[f"verdict (CRF {state})"] = r["verdict"]
        if reasons and (r["crf"] or "reason" not in out):
            out["reason"] = r["reason"]
    return list(merged.values())


def verdict_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many rows of :func:`claims` have each verdict."""
    counts = {"reproduced": 0, "not reproduced": 0, "not comparable": 0}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    return counts


# ---------------------------------------------------------------------------------------------
# Chapters 6-8: which slices to show, and Figure 3's numbers.


def held_out_patients(results: dict[str, Any]) -> list[str]:
    """The test patients shared by every run of an experiment (from its first run's ``split.json``)."""
    split = load_json(Path(results["runs"][0]["run"]) / "split.json")
    if split is None:
        raise FileNotFoundError(f"{results['runs'][0]['run']}/split.json is missing")
    return list(split["test"])


def run_dir(results: dict[str, Any], model: str, loss: str, seed: int | None = None) -> Path:
    """The folder of one run of an experiment (``seed``: the first seed when ``None``).

    Raises:
        KeyError: the experiment has no such run.
    """
    for run in results["runs"]:
        if run["model"] == model and run["loss"] == loss and (seed is None or run["seed"] == seed):
            return Path(run["run"])
    raise KeyError(f"the experiment has no run with model={model!r}, loss={loss!r}, seed={seed!r}")


def example_slices(dataset: Any, patient_ids: list[str], manifest: dict[str, Any] | None = None,
                   min_pixels: int = 8) -> dict[str, tuple[str, int, int]]:
    """Representative slices for the figures: ``{label: (patient_id, slice, tumour pixels)}``.

    Labels: ``"largest tumour"``, ``"smallest tumour"`` (the smallest cross-section of at least
    ``min_pixels`` pixels, so that it is visible), ``"juxta-pleural tumour"`` (the central slice of
    the first tumour the phantom manifest locates on the chest wall, if any among ``patient_ids``)
    and ``"tumour-free"`` (the middle tumour-free slice of the first patient that has one). A label
    with no matching slice is left out.
    """
    areas = []
    for pid in patient_ids:
        vol = dataset[pid]
        if vol.mask is None:
            continue
        per_slice = vol.mask.reshape(vol.n_slices, -1).sum(axis=1)
        areas += [(int(a), pid, z) for z, a in enumerate(per_slice)]
    tumour = sorted(a for a in areas if a[0] > 0)
    visible = [a for a in tumour if a[0] >= min_pixels] or tumour
    found: dict[str, tuple[str, int, int]] = {}
    if tumour:
        found["largest tumour"] = (tumour[-1][1], tumour[-1][2], tumour[-1][0])
        found["smallest tumour"] = (visible[0][1], visible[0][2], visible[0][0])
    if manifest is not None:
        area_of = {(pid, z): a for a, pid, z in areas}
        for record in manifest.get("patients", []):
            if record["patient_id"] not in patient_ids:
                continue
            pleural = [t for t in record["tumours"] if t.get("location") == "juxta-pleural"]
            if pleural:
                z = int(round(pleural[0]["centre_voxel_zyx"][0]))
                if area_of.get((record["patient_id"], z), 0) > 0:
                    found["juxta-pleural tumour"] = (record["patient_id"], z, area_of[(record["patient_id"], z)])
                    break
    for pid in patient_ids:
        free = [z for a, p, z in areas if p == pid and a == 0]
        if free:
            found["tumour-free"] = (pid, free[len(free) // 2], 0)
            break
    return found


#: Figure 3's metrics: (label, results-table column, the paper's table and key).
FIGURE3_METRICS: tuple[tuple[str, str, str], ...] = (
    ("Dice", "dice_pooled", "dice"), ("IoU", "iou_pooled", "iou"),
    ("small-tumour recall", "small_tumor_recall", "small_tumor_recall"),
    ("precision", "precision_pooled", "precision"), ("recall", "recall_pooled", "recall"), ("F1", "dice_pooled", "f1"),
)


def figure3_values(results: dict[str, Any], loss: str | None = None, crf: bool = True
                   ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
    """Bars and the paper's markers for :func:`lungseg.viz.metric_bars` (Figure 3).

    Returns:
        ``({model: {label: (mean, low, high) or mean}}, {model: {label: paper value}})``; a bar
        without an interval (one seed) is a plain mean, an unmeasured one NaN.
    """
    loss = loss or primary_loss(results)
    published = {m: {**PAPER_TABLE2.get(m, {}), **PAPER_TABLE3.get(m, {})} for m in ("unet", "attention")}
    values: dict[str, dict[str, Any]] = {}
    paper: dict[str, dict[str, float]] = {}
    for cell in results["cells"]:
        if cell["loss"] != loss or bool(cell["crf"]) != crf:
            continue
        model = cell["model"]
        values[model], paper[model] = {}, {}
        for label, column, key in FIGURE3_METRICS:
            s = cell[column]
            mean = math.nan if s["mean"] is None else s["mean"]
            values[model][label] = (mean, s["low"], s["high"]) if s["low"] is not None else mean
            if key in published.get(model, {}):
                paper[model][label] = published[model][key]
    return values, paper
