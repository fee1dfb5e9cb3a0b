"""What the book's chapters call to find what they render: the results their earlier chapters
wrote, and the run and test slices that chapters 6–8 draw.

It is the top of the package: it imports the stages below it (profiles and grid from
:mod:`lungseg.experiment`, the paper's numbers and claims from :mod:`lungseg.paper`, run and image
analyses from :mod:`lungseg.analysis`) and nothing imports it. The chapters import those stages
directly for everything else; here is only what ties the chapters together: where one chapter's
output lies for the next.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lungseg.analysis.runs import held_out_patients, run_dir
from lungseg.data import open_dataset
from lungseg.experiment.profiles import PROFILES, ProfileSettings, prepare_data, profile_dir, profile_settings
from lungseg.experimentdir import ProfileDir
from lungseg.files import write_json
from lungseg.paper.claims import primary_loss
from lungseg.paths import resolve

__all__ = [
    "CLAIMS_FILE",
    "FigureInputs",
    "figure_inputs",
    "load_json",
    "load_results",
    "published_results",
    "write_claims",
]

#: Where chapter 5 writes its measured-vs-claimed rows (relative to a profile's output folder) and
#: chapter 9 reads them: a JSON list of the rows of :func:`lungseg.paper.claims`
#: (:attr:`lungseg.experimentdir.ProfileDir.claims_path`).
CLAIMS_FILE = ProfileDir.CLAIMS


def load_json(path: str | os.PathLike[str]) -> Any | None:
    """A JSON results file relative to the repository root, or ``None`` when it does not exist
    (the chapter that writes it has not run yet)."""
    p = resolve(path)
    if not p.is_file():
        return None
    with open(p, encoding="utf-8") as fh:
        return json.load(fh)


def load_results(settings: ProfileSettings) -> dict[str, Any]:
    """The results table of the profile's grid, which chapter 4 runs.

    Raises:
        FileNotFoundError: chapter 4 has not run with this profile.
    """
    grid = profile_dir(settings).grid
    results = load_json(grid.results_path)
    if results is None:
        raise FileNotFoundError(f"{grid.results_path} is missing: run chapter 4 (notebooks/04_training) with profile "
                                f"{settings.profile!r} first")
    # A results table records its runs' absolute folders; in another clone (Colab, a fresh checkout)
    # the published runs lie beside the table instead.
    for run in results.get("runs", []):
        recorded = Path(run["run"])
        beside = grid.run(recorded.name).path
        if not recorded.is_dir() and beside.is_dir():
            run["run"] = str(beside)
    return results


def published_results(exclude: str | None = None) -> dict[str, dict[str, Any]]:
    """``{profile: results table}`` of the experiments committed in the profiles' folders (e.g. a
    medium or paper run published with the repository), except the profile ``exclude``."""
    found = {}
    for name in PROFILES:
        if name != exclude:
            data = load_json(profile_dir(profile_settings(name)).grid.results_path)
            if data is not None:
                found[name] = data
    return found


def write_claims(rows: list[dict[str, Any]], settings: ProfileSettings) -> Path:
    """Write the rows of :func:`lungseg.paper.claims` to the profile's :data:`CLAIMS_FILE` (read by
    chapter 9)."""
    return write_json(rows, profile_dir(settings).claims_path)


@dataclass(frozen=True)
class FigureInputs:
    """What chapters 6–8 draw from: the grid's results, the dataset, and which runs and patients.

    Attributes:
        results: the results table of the profile's grid (:func:`load_results`).
        dataset: the dataset the grid ran on (:func:`lungseg.data.open_dataset`).
        manifest: the phantom study's manifest (``None`` for other data).
        loss: the loss of the runs shown (:func:`lungseg.paper.primary_loss`: the paper's).
        seed: the seed of the runs shown (the grid's first).
        test_ids: the test patients shared by every run (never seen in training or checkpoint
            selection).
    """

    results: dict[str, Any]
    dataset: Any
    manifest: dict[str, Any] | None
    loss: str
    seed: int
    test_ids: list[str]

    def run_dir(self, model: str) -> Path:
        """The folder of the grid's run of ``model`` with :attr:`loss` and :attr:`seed`."""
        return run_dir(self.results, model, self.loss, self.seed)

    def describe(self) -> str:
        """One line for the chapter: the test patients, the loss and the seed."""
        return f"test patients ({len(self.test_ids)}): {self.test_ids}; loss {self.loss!r}, seed {self.seed}"


def figure_inputs(settings: ProfileSettings, data_dir: str | os.PathLike[str] | None = None) -> FigureInputs:
    """The :class:`FigureInputs` of a profile: chapter 4's results and the data it ran on.

    Args:
        settings: the chapter's profile.
        data_dir: the chapter's ``data_dir`` parameter (``None``: the profile's phantom study).

    Raises:
        FileNotFoundError: chapter 4 has not run with this profile, or ``data_dir`` does not exist.
    """
    results = load_results(settings)
    dataset = open_dataset(prepare_data(settings, data_dir, progress=False))
    return FigureInputs(results=results, dataset=dataset, manifest=getattr(dataset, "manifest", None),
                        loss=primary_loss(results), seed=results["settings"]["seeds"][0],
                        test_ids=held_out_patients(results))
