"""A phantom test study with power: the published grid's runs scored on many fresh patients.

The grid's own test split holds the few patients its study leaves (23 of the medium profile's 150;
5 of the 32 it had first), so its intervals cannot decide the paper's claims. The phantom's data are unlimited and its
truth exact, so this module generates an *independent* test study: the profile's generator settings
(the same population as the training patients), its own data seed :data:`TEST_STUDY_SEED` (never used
for training, tuning or checkpoint choice), and enough patients for :data:`MIN_SMALL_TUMOURS` tumours
under 10 mm. Every run of the grid is evaluated on all of its patients, with and without the CRF, from
one pass of the network (:func:`lungseg.evaluation.evaluate_run_crf_settings`), and the cells and
paired differences are formed exactly as the grid's (:func:`lungseg.experiment.grid.grid_cells`), so
their intervals resample the training seeds and these patients.

The robustness figure is not measured here (it re-segments every image once per perturbation): its
value stays the grid's.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from lungseg.errors import LungsegError
from lungseg.experiment.grid import (
    TABLE_METRICS,
    GridKey,
    Rows,
    grid_cells,
    grid_differences,
    has_figure,
    run_name,
    write_results,
)
from lungseg.experiment.profiles import ProfileSettings, phantom_config, phantom_study, profile_dir
from lungseg.experimentdir import ExperimentDir
from lungseg.paths import portable, resolve

__all__ = [
    "MIN_SMALL_TUMOURS",
    "TEST_STUDY_PATIENTS",
    "TEST_STUDY_SEED",
    "evaluate_on_test_study",
    "prepare_test_study",
    "study_composition",
    "study_fingerprint",
]

#: The test study's data seed: no other study of the book uses it.
TEST_STUDY_SEED = 7001
#: Patients of the test study: enough for :data:`MIN_SMALL_TUMOURS` tumours under 10 mm at the
#: generator's tumour-count and size distribution (about 0.55 per patient).
TEST_STUDY_PATIENTS = 400
#: The fewest tumours under 10 mm (equivalent-sphere diameter) the study must hold.
MIN_SMALL_TUMOURS = 100
#: Small, as for small-tumour recall.
SMALL_MM = 10.0
#: The figure the test study does not measure (it re-segments every image once per HU perturbation).
ROBUSTNESS = "intensity_robustness_std"

#: A scored run's record of its scoring: written with ``"complete": false`` before a run is scored (again) and
#: with ``"complete": true`` once both CRF settings' evaluations are, with the study they score, the numerics,
#: the device and the seconds. A scoring stopped half-way (a time limit, a killed worker) leaves an incomplete
#: record, so its runs are scored again.
SCORED_RECORD = "test_study.json"


def _keep_grid_figure(cells: list[dict[str, Any]], differences: list[dict[str, Any]], grid_results: dict[str, Any],
                      name: str) -> None:
    """Put the grid's own figure ``name`` (not measured on the test study) into its cells and differences,
    marked as measured on the grid's test split."""
    def key(row: dict[str, Any]) -> str:
        return json.dumps([row.get(k) for k in ("model", "loss", "crf", "factor", "a", "b")], sort_keys=True)

    for mine, theirs in ((cells, grid_results["cells"]), (differences, grid_results["differences"])):
        by_key = {key(r): r for r in theirs}
        for row in mine:
            if key(row) in by_key and name in by_key[key(row)]:
                row[name] = {**by_key[key(row)][name], "measured_on": "the grid's own test split"}


def test_study_dir(settings: ProfileSettings) -> Path:
    """Where the profile's test study is generated (git-ignored, like the training study)."""
    return resolve(f"{settings.data_dir}-test")


def prepare_test_study(settings: ProfileSettings, n_patients: int = TEST_STUDY_PATIENTS,
                       data_seed: int = TEST_STUDY_SEED, progress: bool = True, workers: int = 1) -> Path:
    """Generate the profile's test study once (reused while its manifest matches), by ``workers`` processes.

    Raises:
        ValueError: ``data_seed`` is the training study's seed.
    """
    if data_seed == settings.data_seed:
        raise ValueError(f"the test study's data seed {data_seed} is the training study's: it would not be independent")
    return phantom_study(test_study_dir(settings), n_patients, data_seed, phantom_config(settings), progress=progress,
                         workers=workers)


def study_composition(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a phantom study holds, from its manifest: patients, tumour-free patients, tumours by size
    and by the location measured on the mask (juxta-pleural: touching the pleura; juxta-vascular:
    touching a vessel, the phantom's nearest to a central tumour; isolated)."""
    tumours = [t for p in manifest["patients"] for t in p["tumours"]]
    locations: dict[str, int] = {}
    for t in tumours:
        locations[t["location"]] = locations.get(t["location"], 0) + 1
    return {
        "patients": len(manifest["patients"]),
        "tumour_free_patients": sum(1 for p in manifest["patients"] if not p["tumours"]),
        "tumours": len(tumours),
        "tumours_under_10mm": sum(1 for t in tumours if t["equivalent_diameter_mm"] < SMALL_MM),
        "locations": dict(sorted(locations.items())),
        "data_seed": manifest["seed"],
    }


def evaluate_on_test_study(settings: ProfileSettings, data: str | os.PathLike[str] | None = None,
                           out_dir: str | os.PathLike[str] | None = None, *, precision: str = "auto",
                           progress: bool = True, workers: int = 1, reuse: bool = True) -> dict[str, Any]:
    """Score every published run of the profile's grid on the test study, CRF off and on.

    Args:
        settings: the profile (its published grid in ``results/<profile>/experiment``).
        data: the test study (default :func:`prepare_test_study`).
        out_dir: the results folder (default the profile's ``test-study`` folder).
        precision: inference numerics (``"auto"``: fp32 on a CPU, as the grid's evaluations; ``"bf16"``
            about halves the time; in ``benchmarks/NOTES.md`` it moved trained models' Dice by at most 0.004).
        progress: print a line per run.
        workers: runs scored side by side, each with ``cores // workers`` threads
            (:func:`lungseg.experiment.workers.map_in_workers`; the grid trains its runs so too). The
            scores do not depend on it.
        reuse: keep a run's earlier scores when they were made from the same grid run with its current
            best weights (the same epoch, as :meth:`lungseg.rundir.RunDir.evaluation_is_fresh` decides),
            on this very study (:func:`study_fingerprint` of its manifest, as the run's own
            :data:`SCORED_RECORD` says, written only once both CRF settings are) and at this ``precision``,
            and hold every figure of the table: a grid given more seeds, or a scoring stopped half-way,
            scores only the runs it lacks. Reused runs keep the seconds the earlier call recorded (status
            ``"reused"``); each run of the table names the device it was scored on.

    Returns:
        The results table (``settings``, ``runs``, ``cells``, ``differences``) as the grid's.
    """
    from lungseg.data.phantom import load_study
    from lungseg.experiment.workers import check_workers

    check_workers(workers)
    grid = profile_dir(settings).grid
    exp = ExperimentDir(out_dir if out_dir is not None else profile_dir(settings).test_study.path)
    out, runs_from = exp.path.resolve(), grid.path.resolve()
    if out == runs_from or runs_from in out.parents:
        # checked before the study is generated and any run's record written: the grid is an input
        raise LungsegError(f"out_dir {exp.path} lies in the published grid {grid.path}, whose runs are scored;"
                           " write the test-study results to a folder of their own")
    grid_results = grid.read_results()
    data_dir = Path(data) if data is not None else prepare_test_study(settings, progress=progress)
    manifest = load_study(data_dir).manifest
    if manifest["seed"] == settings.data_seed:
        raise ValueError(f"{data_dir}: generated with the training study's seed {settings.data_seed}, so not independent")
    small = study_composition(manifest)["tumours_under_10mm"]
    if small < MIN_SMALL_TUMOURS:
        warnings.warn(f"{data_dir}: {small} tumours under {SMALL_MM:g} mm, fewer than the {MIN_SMALL_TUMOURS} that "
                      "small-tumour recall needs for a tight interval; generate more patients", stacklevel=2)
    grid_settings = grid_results["settings"]
    models, losses, seeds = grid_settings["models"], grid_settings["losses"], grid_settings["seeds"]
    crf = [bool(c) for c in grid_settings["crf"]]
    keys = list(itertools.product(models, losses, seeds))
    started = time.perf_counter()
    fingerprint = study_fingerprint(manifest)
    evaluations, tables, runs = _score_grid_runs(keys, grid, exp, data_dir, fingerprint, len(manifest["patients"]),
                                                 crf, precision=precision, progress=progress, workers=workers,
                                                 reuse=reuse)
    cells = grid_cells(evaluations, tables, models, losses, crf, seeds)
    differences = grid_differences(evaluations, tables, models, losses, crf, seeds)
    _keep_grid_figure(cells, differences, grid_results, ROBUSTNESS)
    results_table = {
        "settings": {**{k: grid_settings[k] for k in ("models", "losses", "crf", "seeds")},
                     "data": portable(data_dir), "composition": study_composition(manifest),
                     "study_fingerprint": fingerprint, "precision": precision,
                     "runs_from": portable(grid.path), "split": "every patient of the independent test study",
                     "ci": grid_settings.get("ci"), "differences": grid_settings.get("differences"),
                     "interval": grid_settings.get("interval"),
                     "kept_from_grid": f"{ROBUSTNESS}: measured on the grid's own test split", "workers": workers},
        "runs": runs,
        "cells": cells,
        "differences": differences,
        # this call's scoring time: runs reused from an earlier call keep their own seconds in "runs"
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_results(exp, results_table)
    return exp.read_results()


def _score_grid_runs(keys: list[tuple[str, str, int]], grid: ExperimentDir, exp: ExperimentDir, data_dir: Path,
                     fingerprint: str, n_patients: int, crf: list[bool], *, precision: str, progress: bool,
                     workers: int, reuse: bool) -> tuple[dict[GridKey, dict[str, Any]], dict[GridKey, Rows | None], list[dict[str, Any]]]:
    """Each grid run of ``keys`` scored on the study (or its earlier scores reused, see
    :func:`evaluate_on_test_study`): the evaluations and per-image tables by grid key, and a row per run."""
    from lungseg.device import resolve_device, resolve_precision
    from lungseg.experiment.workers import map_in_workers

    scored_runs = [exp.run(run_name(*key)) for key in keys]
    earlier = _earlier_table(exp) if reuse else {}
    # the numerics the scoring will use ("auto" resolved as the Predictor resolves it), as the records name them
    numerics = resolve_precision(precision, resolve_device("auto"))
    study = {"data": portable(data_dir), "precision": numerics, "n_patients": n_patients}
    records = {i: _scored_record(scored) for i, scored in enumerate(scored_runs)}
    # only scores of this very study (same manifest: seed, generator version and settings, patients), complete:
    # each run's own record says so; a run scored before those records existed relies on the earlier table
    earlier_study = earlier.get("settings", {}).get("study_fingerprint") == fingerprint
    same_study = {i: (record.get("complete") is True and record.get("study_fingerprint") == fingerprint)
                  if record is not None else earlier_study for i, record in records.items()}
    reused = {i: _fresh_scores(scored, grid.run(run_name(*key)), crf, study)
              for i, (key, scored) in enumerate(zip(keys, scored_runs)) if reuse and same_study[i]}
    reused = {i: results for i, results in reused.items() if results is not None}
    seconds_before = {portable(r["run"]): r.get("seconds") for r in earlier.get("runs", [])}
    jobs = []
    for i, (key, scored) in enumerate(zip(keys, scored_runs)):
        if i not in reused:
            scored.path.mkdir(parents=True, exist_ok=True)
            jobs.append((str(grid.run(run_name(*key)).path), str(data_dir),
                         {c: str(scored.evaluation_path(c)) for c in crf}, str(scored.path / SCORED_RECORD),
                         fingerprint, precision, progress))
    if progress and reused:
        print(f"{len(reused)} of {len(keys)} runs reused: scored earlier with the same weights, study and precision")
    fresh = iter(map_in_workers(_score_run, jobs, workers, progress=False))  # each run prints its own line
    evaluations: dict[GridKey, dict[str, Any]] = {}
    tables: dict[GridKey, Rows | None] = {}
    runs = []
    for i, ((model, loss, seed), scored) in enumerate(zip(keys, scored_runs)):
        if i in reused:
            results, status = reused[i], "reused"
            seconds = (records[i] or {}).get("seconds", seconds_before.get(portable(scored.path)))
        else:
            (results, seconds), status = next(fresh), "scored"
        for c in crf:
            evaluations[(model, loss, c, int(seed))] = results[c]
            tables[(model, loss, c, int(seed))] = scored.read_per_image(c)
        record = records[i] if i in reused else _scored_record(scored)  # a fresh run's is new
        device = (record or {}).get("device")
        runs.append({"run": portable(scored.path), "model": model, "loss": loss, "seed": int(seed),
                     "status": status, "seconds": seconds, **({"device": device} if device else {})})
    return evaluations, tables, runs


def _fresh_scores(scored: Any, run: Any, crf: list[bool], study: dict[str, Any]) -> dict[bool, Any] | None:
    """The earlier evaluations of ``scored`` (one per CRF setting) when each was made from the grid run ``run``
    (its path) with its current best weights (the same epoch, the rule of the grid's own evaluations), on
    ``study`` (data path, precision, patient count), and holds every figure of :data:`~lungseg.experiment.grid.TABLE_METRICS`;
    else ``None``. (The caller has checked that the study is the same: :func:`study_fingerprint`.)"""
    if not run.has_checkpoint("best"):
        return None
    epoch = int(run.load_checkpoint("best").get("epoch", -1))
    results = {}
    for c in crf:
        path = scored.evaluation_path(c)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        same = (record.get("run") == portable(run.path) and record.get("checkpoint") == "best"
                and record.get("checkpoint_epoch") == epoch and record.get("crf") == c and record.get("split") == "all"
                and all(record.get(k) == v for k, v in study.items()) and scored.read_per_image(c) is not None
                # a record made before a figure of the table existed is made again (the robustness is the grid's)
                and all(has_figure(record, path) for name, path in TABLE_METRICS if name != ROBUSTNESS))
        if not same:
            return None
        results[c] = record
    return results


def _earlier_table(exp: ExperimentDir) -> dict[str, Any]:
    """The test study's earlier results table (empty when there is none or it cannot be read)."""
    try:
        return exp.read_results()
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


def study_fingerprint(manifest: dict[str, Any]) -> str:
    """SHA-256 of a phantom study's manifest (seed, generator version and settings, every patient's tumours):
    two studies with the same fingerprint hold the same patients."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode("utf-8")).hexdigest()


def _scored_record(scored: Any) -> dict[str, Any] | None:
    """A scored run's :data:`SCORED_RECORD`; ``None`` where it has none (scored before such records were
    written), ``{}`` (never complete) where it cannot be read."""
    path = scored.path / SCORED_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _score_run(run: str, data_dir: str, evaluation_paths: dict[bool, str], record_path: str, fingerprint: str,
               precision: str, progress: bool) -> tuple[dict[bool, Any], float]:
    """One grid run scored on the whole test study, CRF off and on from one network pass (a
    module-level function: :func:`~lungseg.experiment.workers.map_in_workers` pickles it into its
    workers); prints a line when done if ``progress``, and returns the evaluations per CRF setting and
    the seconds it took. Its :data:`SCORED_RECORD` at ``record_path`` (study ``fingerprint``) says
    "incomplete" from the start and "complete" once both evaluations are written."""
    from lungseg.errors import DataWarning
    from lungseg.evaluation import evaluate_run_crf_settings
    from lungseg.files import write_json

    write_json({"complete": False, "study_fingerprint": fingerprint}, record_path)
    started = time.perf_counter()
    with warnings.catch_warnings():
        # Runs published before content hashes name their training patients by id alone, and every
        # phantom study numbers its patients phantom-000, ...: the seeds differ (checked by the caller),
        # so a warning that the test patients are training patients would be false.
        warnings.filterwarnings("ignore", message=".*are training patients of", category=DataWarning)
        results = evaluate_run_crf_settings(run, data_dir, {c: Path(p) for c, p in evaluation_paths.items()},
                                            split="all", precision=precision, progress=False)
    seconds = round(time.perf_counter() - started, 1)
    first = next(iter(results.values()))
    write_json({"complete": True, "study_fingerprint": fingerprint, "data": first.get("data"),
                "precision": first.get("precision"), "device": _device_name(), "seconds": seconds}, record_path)
    if progress:
        print(f"{Path(run).name}: pooled Dice "
              + ", ".join(f"CRF {'on' if c else 'off'} {results[c]['pooled']['dice']:.3f}" for c in results)
              + f" ({seconds:.0f} s)", flush=True)
    return results, seconds


def _device_name() -> str:
    """Where this process runs the network: the GPU's name, or "cpu"."""
    from lungseg.device import resolve_device

    device = resolve_device("auto")
    if device.type != "cuda":
        return device.type
    import torch

    return torch.cuda.get_device_name(device)
