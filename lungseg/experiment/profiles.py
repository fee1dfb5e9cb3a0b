"""Run profiles: the sizes of the data, the networks and the grid at three budgets, and the
configuration of the comparison grid they imply.

The book's chapters and ``scripts/run_profile.py`` both take their settings from here: a profile
names a synthetic study (:func:`prepare_data`), the :class:`~lungseg.config.TrainConfig` shared by
every run of the grid (:func:`train_config`) and the grid itself (:func:`run_grid`).

Profiles:
    ``quick``: trains everything from scratch in minutes on a 2-core CPU (``make book PROFILE=quick``,
        and what CI runs): 24 phantom patients at 128x128, tiny networks on whole 64x64 slices, one
        seed. It shows the workflow, not the paper's numbers.
    ``medium``: the default of ``make book``, which renders its published results: the paper's
        256x256 geometry on a CPU (150 patients: 105 training, 22 validation, 23 test; width-8
        networks trained on 96x96 patches in bf16 through a cosine schedule, 5 seeds, two runs side
        by side, the losses' open choices tuned on validation data first), scored on an independent
        400-patient test study (:mod:`lungseg.experiment.teststudy`); a few hours to re-train on two
        cores (measured in ``results/medium/provenance.json`` and ``benchmarks/NOTES.md``).
    ``paper``: the paper-scale run for a GPU (150 patients at 256x256, the full
        comparison grid with 3 seeds, early stopping on validation Dice).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lungseg.config import TrainConfig
from lungseg.experiment.grid import run_experiment
from lungseg.experiment.tune import chosen_settings
from lungseg.experimentdir import ProfileDir
from lungseg.paths import resolve

__all__ = [
    "PROFILES",
    "TRAIN_SETTINGS",
    "ProfileSettings",
    "experiment_dir",
    "grid_workers",
    "phantom_config",
    "phantom_study",
    "prepare_data",
    "profile_dir",
    "profile_settings",
    "run_grid",
    "train_config",
    "tune_dir",
    "tuned_settings",
]


@dataclass(frozen=True)
class ProfileSettings:
    """Every knob a chapter or the profile script needs for one profile.

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
        workers: runs trained side by side on a CPU, each with ``cores // workers`` threads
            (:mod:`lungseg.experiment.workers`); a GPU trains one run at a time.
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
    workers: int = 1
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
    # The paper's 256x256 geometry on a 2-core CPU: narrow networks (width 8: 0.5 M parameters, so
    # all 30 checkpoints publish in a few MB), trained on 96x96 patches in bf16 with a cosine
    # schedule to its end, two runs side by side with one thread each. 150 patients (105 / 22 / 23):
    # a 32-patient study (22 / 5 / 5) left checkpoint choice to 5 validation patients and the
    # networks to 27 training tumours (benchmarks/NOTES.md); the time is measured in
    # results/medium/provenance.json. Five seeds: with three, the seed level of a cell's interval
    # spans about the range of three values, and the U-Net's seeds differ by 0.05 pooled Dice.
    "medium": dict(
        n_patients=150, phantom_size=256, phantom_slices=24, image_size=256, base_channels=8, depth=4, epochs=16,
        batch_size=16, seeds=(0, 1, 2, 3, 4), n_boot=200, workers=2,
    ),
    "paper": dict(
        n_patients=150, phantom_size=256, phantom_slices=40, image_size=256, base_channels=32, depth=4, epochs=100,
        batch_size=16, seeds=(0, 1, 2), n_boot=1000,
    ),
}


#: Training settings of each profile beyond :class:`ProfileSettings` (learning rate, early stopping on
#: validation Dice, tumour oversampling, epoch length, augmentation, data loading), used by
#: :func:`train_config` for the book's chapters and ``scripts/run_profile.py`` alike.
#: The quick and medium profiles keep the Dice pooling and augmentation they were tuned and published
#: with (the batch's pooled Dice, no up-down flip, no test-time augmentation); ``lungseg train``'s defaults moved on after a
#: cross-validation on real CT patches (``benchmarks/NOTES.md``); the medium grid, retrained at 150
#: patients, kept them so that one thing (the study's size) changed at a time.
PUBLISHED_AUGMENT_AND_DICE: dict[str, Any] = dict(dice_reduction="batch", flip_ud=0.0, tta="none")
TRAIN_SETTINGS: dict[str, dict[str, Any]] = {
    "quick": dict(patience=None, split_fractions=(0.7, 0.15, 0.15), tumour_fraction=0.5, patch_size=None, samples_per_epoch=256, lr=2e-3, augment=True,
                  **PUBLISHED_AUGMENT_AND_DICE),
    # No early stopping: the learning rate decays to 1 % over the run (cosine), and the validation Dice
    # settles as it does; a run stopped on a noisy plateau at full learning rate (patience 4, as
    # first published) lost most of what the schedule's tail adds. Epochs of 1344 96x96 patches (the
    # pixels of 768 128x128 ones): smaller crops, more of them, learnt faster on the validation
    # patients (validation Dice 0.89 after 10 epochs against 0.49 with 128x128 crops, same seed).
    "medium": dict(patience=None, split_fractions=(0.7, 0.15, 0.15), patch_size=96, foreground_fraction=0.5,
                   samples_per_epoch=1344, lr=2e-3, augment=True, precision="bf16", **PUBLISHED_AUGMENT_AND_DICE),
    "paper": dict(patience=10, split_fractions=(0.7, 0.15, 0.15), patch_size=128, foreground_fraction=0.5, samples_per_epoch=None, lr=1e-3, augment=True),
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


def phantom_config(settings: ProfileSettings) -> Any:
    """The :class:`lungseg.data.phantom.PhantomConfig` of a profile's synthetic study.

    Patient ``i`` of the study is ``generate_patient((settings.data_seed, i), phantom_config(settings))``,
    which also returns the tissue labels that are not written to disk.
    """
    from lungseg.data.phantom import PhantomConfig

    return PhantomConfig(image_size=settings.phantom_size, n_slices=settings.phantom_slices)


def prepare_data(settings: ProfileSettings, data_dir: str | os.PathLike[str] | None = None,
                 progress: bool = True) -> Path:
    """The dataset a profile runs on: ``data_dir`` when given, else the profile's phantom study.

    The synthetic study is generated once (``settings.n_patients`` patients, seed
    ``settings.data_seed``) into ``settings.data_dir`` and reused by every later chapter as long as
    its manifest matches (generator version, seed, patient count and generator settings); anything
    else in that folder is replaced by the profile's study, which
    :func:`lungseg.data.phantom.generate_study` allows only for an earlier phantom study.

    Raises:
        FileNotFoundError: ``data_dir`` is given but does not exist.
    """
    if data_dir is not None:
        path = resolve(data_dir)
        if not path.exists():
            raise FileNotFoundError(f"data_dir {str(data_dir)!r}: no such file or folder ({path})")
        return path
    return phantom_study(resolve(settings.data_dir), settings.n_patients, settings.data_seed, phantom_config(settings),
                         progress=progress)


def phantom_study(out: Path, n_patients: int, data_seed: int, config: Any, progress: bool = True,
                  workers: int = 1) -> Path:
    """The phantom study ``(n_patients, data_seed, config)`` in ``out``: reused while its manifest matches
    (generator version, seed, patient count and settings), generated otherwise (by ``workers`` processes);
    anything else in ``out`` is replaced, which :func:`lungseg.data.phantom.generate_study` allows only for
    an earlier phantom study."""
    from lungseg.data.phantom import GENERATOR_VERSION, generate_study, load_study
    from lungseg.errors import DataError

    wanted = {"generator_version": GENERATOR_VERSION, "seed": data_seed, "n_patients": n_patients,
              "config": json.loads(json.dumps(config.to_dict()))}
    try:
        manifest = load_study(out).manifest
    except DataError:
        manifest = {}
    if manifest and all(manifest.get(k) == v for k, v in wanted.items()):
        return out
    stale = out.is_dir() and any(out.iterdir())
    return Path(generate_study(out, n_patients=n_patients, seed=data_seed, config=config, progress=progress,
                               overwrite=stale, workers=workers))


def train_config(settings: ProfileSettings, data: str | os.PathLike[str] = "", **overrides: Any) -> TrainConfig:
    """The :class:`lungseg.config.TrainConfig` shared by every run of a profile's grid: the profile's
    network and data sizes plus its :data:`TRAIN_SETTINGS`, then ``overrides`` (the model, loss and
    seed are set per run by :func:`lungseg.experiment.run_experiment`)."""
    extra = {**TRAIN_SETTINGS.get(settings.profile, {}), **overrides}
    return TrainConfig(data=str(data), base_channels=settings.base_channels, depth=settings.depth,
                       image_size=settings.image_size, epochs=settings.epochs, batch_size=settings.batch_size,
                       device=settings.device, **extra)


def grid_workers(settings: ProfileSettings) -> int:
    """Runs trained side by side: the profile's ``workers`` on a CPU, one at a time on a GPU."""
    from lungseg.device import resolve_device

    return settings.workers if resolve_device(settings.device).type == "cpu" else 1


def profile_dir(settings: ProfileSettings) -> ProfileDir:
    """The folder a profile's chapters write to and read from (``settings.output_dir``, from the
    repository root): its grid, tuning, whole-slice comparison and claims."""
    return ProfileDir(resolve(settings.output_dir))


def tune_dir(settings: ProfileSettings) -> Path:
    """The tuning folder of a profile (its table of candidates and the choice)."""
    return profile_dir(settings).tune.path


def tuned_settings(settings: ProfileSettings) -> dict[str, dict[str, Any]]:
    """The per-loss settings chosen on validation data for this profile (``{}`` when it was not tuned):
    α, λ, learning rate and threshold, from :func:`lungseg.experiment.tune.tune`'s published choice."""
    tuning = profile_dir(settings).tune
    if not tuning.tune_choice_path.is_file():
        return {}
    return chosen_settings(tuning.read_tune_choice())


def experiment_dir(settings: ProfileSettings) -> Path:
    """The experiment folder of a profile (its runs and results table)."""
    return profile_dir(settings).grid.path


def run_grid(settings: ProfileSettings, data: str | os.PathLike[str], progress: bool = True) -> dict[str, Any]:
    """Train and evaluate the profile's grid {models} x {losses} x {seeds}, CRF off and on.

    Finished runs in :func:`experiment_dir` are reused, interrupted ones resumed (see
    :func:`lungseg.experiment.run_experiment`, whose results table this returns).
    """
    return run_experiment(data, experiment_dir(settings), models=settings.models, losses=settings.losses,
                          crf=(False, True), seeds=settings.seeds, base_config=train_config(settings),
                          loss_settings=tuned_settings(settings), n_boot=0,
                          device=settings.device, progress=progress, workers=grid_workers(settings))
