"""Run a profile's comparison grid and publish its light results under ``results/<profile>/``.

One command reproduces the ``medium`` (CPU) or ``paper`` (GPU) experiment of the book::

    python scripts/run_profile.py --profile paper --device cuda      # or: make experiment PROFILE=paper DEVICE=cuda

Steps:
    1. generate the profile's synthetic study into ``data/phantom-<profile>`` (git-ignored; reused
       when its manifest matches);
    2. (every profile but quick) choose each loss's α, λ, learning rate and threshold on the
       validation patients (:func:`lungseg.experiment.tune.tune`, shortened runs of the attention
       network) into the tuning folder of ``runs/<profile>``, its tables published in ``results/<profile>``;
    3. train and evaluate {UNet, AttentionResUNet} x {Dice, Focal, Hybrid} x seeds, CRF off/on, with
       those choices (:func:`lungseg.experiment.run_experiment`) into the grid folder of ``runs/<profile>``
       (git-ignored: full checkpoints live there; an interrupted grid resumes where it stopped);
    4. publish into the grid folder of ``results/<profile>``: the tables, each run's light files and its
       best weights in half precision (so that the book re-renders without training), a model card
       beside the attention run of best validation Dice, the test tumours with each Dice and hybrid run's
       recall of them (what chapter 5 shows), and the profile's provenance (commit,
       device, versions, wall time of tuning, of the grid and of every run, time per epoch and where
       the time went).

The folders and files are those of :class:`lungseg.experimentdir.ProfileDir`. ``--whole-slice`` then
trains the paper's literal whole-slice recipe once for comparison (:func:`whole_slice_run`, published
in the profile's whole-slice folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lungseg.analysis import (  # noqa: E402
    TUMOUR_TABLE_LOSSES,
    best_validation_run,
    grid_span,
    run_timing,
    write_grid_tumour_table,
)
from lungseg.errors import LungsegError  # noqa: E402
from lungseg.experiment import (  # noqa: E402
    ProfileSettings,
    grid_workers,
    prepare_data,
    profile_settings,
    run_experiment,
    run_name,
    train_config,
)
from lungseg.experiment.grid import metric_value  # noqa: E402
from lungseg.experiment.workers import check_workers  # noqa: E402
from lungseg.experimentdir import ExperimentDir, ProfileDir  # noqa: E402
from lungseg.paths import resolve  # noqa: E402
from lungseg.rundir import RunDir  # noqa: E402

# A run directory publishes RunDir.published_files() (never the last checkpoint; the best one only
# with the model card); the experiment folder publishes its tables.
#: Largest (half-precision) checkpoint that is published; larger ones stay in runs/ only.
MAX_MODEL_BYTES = 2 * 1024 * 1024


def run_profile(
    profile: str = "medium",
    *,
    device: str = "auto",
    runs_dir: str | os.PathLike[str] | None = None,
    results_dir: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    train_overrides: dict[str, Any] | None = None,
    tune: bool | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Generate the data, run the grid and publish it; returns the published folder ``results/<profile>``.

    Args:
        profile: a key of :data:`lungseg.experiment.PROFILES`.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        runs_dir: where the full run directories (with checkpoints) go; default ``runs/<profile>``.
        results_dir: the published folder; default ``results/<profile>``.
        overrides: :class:`lungseg.experiment.ProfileSettings` overrides (tests use a tiny grid).
        train_overrides: :class:`TrainConfig` overrides on top of :data:`lungseg.experiment.TRAIN_SETTINGS`.
        tune: choose the losses' open settings on validation data first (default: for every profile
            but ``quick``); the grid then trains with the choice.
        progress: progress bars.
        workers: runs trained side by side (default: the profile's on a CPU, one on a GPU).
    """
    tune = profile != "quick" if tune is None else tune
    settings = profile_settings(profile, device=device, **(overrides or {}))
    workers = grid_workers(settings) if workers is None else check_workers(workers)
    runs = ProfileDir(resolve(runs_dir or f"runs/{profile}"))
    published = ProfileDir(resolve(results_dir or settings.output_dir))
    started = time.time()
    t0 = time.time()
    data = prepare_data(settings, progress=progress)
    data_s = time.time() - t0
    exp_dir = runs.grid
    config = train_config(settings, data, cache_dir=str(runs.cache_path), **(train_overrides or {}))
    t0 = time.time()
    loss_settings = _tune(settings, config, data, runs.tune, published.tune, progress, workers) if tune else {}
    tune_s = time.time() - t0
    t0 = time.time()
    results = run_experiment(
        data, exp_dir, models=settings.models, losses=settings.losses, crf=(False, True),
        seeds=settings.seeds, base_config=config, loss_settings=loss_settings, n_boot=settings.n_boot,
        device=device, progress=progress, workers=workers,
    )
    grid_s = time.time() - t0
    publish(settings, exp_dir, published, results, data, timing={"generate_data_s": data_s, "tune_s": tune_s,
                                                           "grid_call_s": grid_s, "total_s": time.time() - started,
                                                           "workers": workers})
    print(f"{profile}: data {data_s:.0f} s, tuning {tune_s:.0f} s, grid {grid_s:.0f} s,"
          f" total {time.time() - started:.0f} s ({(time.time() - started) / 60:.1f} min)", flush=True)
    return published.path


def whole_slice_run(profile: str = "medium", *, device: str = "auto", runs_dir: str | os.PathLike[str] | None = None,
                    results_dir: str | os.PathLike[str] | None = None, progress: bool = True,
                    workers: int | None = None, overrides: dict[str, Any] | None = None) -> Path:
    """The paper's literal recipe beside the patch-trained grid: the attention network with the hybrid
    loss (every seed, the tuned settings) trained on whole 256² slices for the same arithmetic as a
    patch run, evaluated on the same test patients (:mod:`lungseg.experiment.whole_slice`); published
    to the profile's whole-slice folder with the per-seed comparison table. Run after the grid."""
    from lungseg.experiment import tuned_settings
    from lungseg.experiment.whole_slice import patch_vs_whole, run_whole_slice

    settings = profile_settings(profile, device=device, **(overrides or {}))
    workers = grid_workers(settings) if workers is None else check_workers(workers)
    runs = ProfileDir(resolve(runs_dir or f"runs/{profile}"))
    published = ProfileDir(resolve(results_dir or settings.output_dir))
    data = prepare_data(settings, progress=progress)
    config = train_config(settings, data, cache_dir=str(runs.cache_path))
    started = time.time()
    rows = run_whole_slice(data, runs.whole_slice, config, model="attention", loss="hybrid", seeds=settings.seeds,
                           loss_settings=tuned_settings(settings).get("hybrid", {}), device=device,
                           workers=workers, progress=progress)
    wall_s = time.time() - started
    target = published.whole_slice
    if target.path.exists():
        shutil.rmtree(target.path)
    for row in rows:
        run = RunDir(row["run"])
        dest = target.run(run.path.name).create()
        for path in run.published_files():
            if path.is_file():  # evaluated with the CRF off only
                shutil.copy2(path, dest.path / path.name)
    patch_vs_whole(published.grid, target, model="attention", loss="hybrid", seeds=settings.seeds, write=True)
    target.provenance_path.write_text(json.dumps({"wall_s": round(wall_s, 1), "workers": workers,
                                                  "trained": [r["status"] for r in rows]}, indent=2) + "\n",
                                      encoding="utf-8")
    print(f"{profile} whole-slice: {wall_s:.0f} s ({workers} worker(s))", flush=True)
    return target.path


#: How a profile's tuning runs are shortened: one network (the paper's), one seed, fewer epochs.
TUNE_BUDGET = dict(model="attention", seed=0, epochs=10, patience=None)


def _tune(settings: ProfileSettings, config: Any, data: Path, tune_runs: ExperimentDir, published: ExperimentDir,
          progress: bool, workers: int = 1) -> dict[str, dict[str, Any]]:
    """Choose each loss's α, λ, learning rate and threshold on the validation patients
    (:func:`lungseg.experiment.tune.tune`), publish the table, and return the choice per loss."""
    import dataclasses

    from lungseg.experiment.tune import chosen_settings, tune

    result = tune(data, tune_runs, base_config=dataclasses.replace(config, **TUNE_BUDGET),
                  losses=settings.losses, progress=progress, workers=workers)
    published.path.mkdir(parents=True, exist_ok=True)
    for source, target in zip(tune_runs.tune_paths, published.tune_paths):
        shutil.copy2(source, target)
    return chosen_settings(result)


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _grid_run(exp_dir: ExperimentDir, run: dict[str, Any]) -> RunDir:
    """The run directory of one row of the results table's ``runs``."""
    return exp_dir.run(run_name(run["model"], run["loss"], run["seed"]))


def _best_attention_run(results: dict[str, Any], exp_dir: ExperimentDir) -> RunDir | None:
    """The attention run with the highest best validation Dice (the model the book's attention-map
    and CRF chapters use; :func:`lungseg.analysis.best_validation_run`)."""
    best = best_validation_run(results, exp_dir.runs_path, model="attention")
    return None if best is None else RunDir(best)


def _fmt(stat: dict[str, Any] | None) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    if stat.get("low") is None:
        return f"{stat['mean']:.3f} (n={stat['n']})"
    return f"{stat['mean']:.3f} [{stat['low']:.3f}, {stat['high']:.3f}] (n={stat['n']})"


def _card_metrics(run: RunDir, loss: str, results: dict[str, Any]) -> list[str]:
    """The model card's test-metrics section: this checkpoint's evaluations and the seed-averaged cell."""
    off = run.read_evaluation(False)
    on = run.read_evaluation(True) if run.evaluation_path(True).is_file() else {}
    cell = next((c for c in results["cells"] if c["model"] == "attention" and c["loss"] == loss and not c["crf"]),
                None)

    def row(name: str, ev: dict[str, Any], *path: str) -> str:
        v = metric_value(ev, path)
        return f"| {name} | {'n/a' if v is None else f'{v:.3f}'} |"

    return [
        "## Test metrics of this checkpoint",
        "Pooled = one confusion matrix over all test pixels; per image = mean over test slices (slices where",
        "target and prediction are both empty are excluded); per patient = mean over test patients.",
        "",
        "| metric | value |", "|---|---|",
        row("Dice, pooled", off, "pooled", "dice"),
        row("IoU, pooled", off, "pooled", "iou"),
        row("Dice, per image", off, "per_image", "dice"),
        row("Dice, per patient", off, "per_patient", "dice"),
        row("precision, pooled", off, "pooled", "precision"),
        row("recall, pooled", off, "pooled", "recall"),
        row("small-tumour recall (< 10 mm)", off, "small_tumor_recall"),
        row("Dice, pooled, with CRF", on, "pooled", "dice"),
        "",
        f"Seed-averaged cell (attention, {loss}, CRF off), mean [95 % t-interval] over seeds:"
        f" pooled Dice {_fmt(cell['dice_pooled']) if cell else 'n/a'}.",
    ]


def _model_card(settings: ProfileSettings, run: RunDir, results: dict[str, Any], provenance: dict[str, Any]) -> str:
    config = run.read_config()
    metrics = run.read_metrics()
    lines = [
        f"# Model card: AttentionResUNet, `{settings.profile}` profile",
        "",
        "**Intended use: demonstration only.** Trained on a *synthetic* phantom study generated by",
        "`lungseg phantom`; it has never seen a real CT scan and must not be used on patient data or for",
        "any clinical purpose. It lets the book's attention-map and CRF chapters and `lungseg predict`",
        "run without training.",
        "",
        "## Data",
        f"- Synthetic phantom study: {settings.n_patients} patients, seed {settings.data_seed},"
        f" {settings.phantom_slices} slices of {settings.phantom_size}x{settings.phantom_size} per patient"
        f" (`python scripts/run_profile.py --profile {settings.profile}` regenerates it into `{settings.data_dir}`).",
        f"- Patient-level split (seed {config.split_seed}, fractions {list(config.split_fractions)}):"
        f" {metrics.get('n_patients')} patients; the split is in `{run.split_path.name}`.",
        "",
        "## Model and training",
        f"- `{config.model}`, base channels {config.base_channels}, depth {config.depth},"
        f" input {config.image_size}x{config.image_size}, loss `{config.loss}`, seed {config.seed}.",
        f"- {metrics['epochs_run']} epochs (max {config.epochs}, early stopping patience {config.patience}"
        f" on validation Dice); best validation Dice {metrics['best_val_dice']:.3f} at epoch {metrics['best_epoch']}.",
        f"- Chosen as the attention run with the highest validation Dice among"
        f" {len([r for r in results['runs'] if r['model'] == 'attention'])} attention runs (the test split"
        " played no part in the choice).",
        "",
        *_card_metrics(run, config.loss, results),
        "",
        "## Provenance",
        f"- git commit `{provenance.get('git', {}).get('commit')}`, device `{provenance.get('device')}`,"
        f" torch {provenance.get('packages', {}).get('torch')}.",
        "- Load with `lungseg.inference.Predictor.from_run_dir(<this folder>)` or `lungseg predict --run <this folder> ...`.",
        "",
    ]
    return "\n".join(lines)


def _copy_runs(exp_dir: ExperimentDir, target: ExperimentDir, results: dict[str, Any]) -> dict[str, Any]:
    """Copy every run's :meth:`RunDir.published_files` into ``target``; returns each run's status and timing."""
    per_run: dict[str, Any] = {}
    for row in results["runs"]:
        src = _grid_run(exp_dir, row)
        dst = target.run(src.path.name).create()
        for path in src.published_files():
            if path.is_file():
                shutil.copy2(path, dst.path / path.name)
        # the weights in half precision, so that the book re-renders every chapter without retraining
        best = src.checkpoint_path("best")
        if best.is_file():
            shutil.copy2(best, dst.checkpoint_path("best"))
            dst.compact_checkpoint("best")
            if dst.checkpoint_path("best").stat().st_size > MAX_MODEL_BYTES:
                dst.checkpoint_path("best").unlink()
        per_run[src.path.name] = {"status": row["status"], **run_timing(src)}
    return per_run


def _publish_best_model(settings: ProfileSettings, exp_dir: ExperimentDir, target: ExperimentDir,
                        results: dict[str, Any], provenance: dict[str, Any]) -> dict[str, Any]:
    """Publish the best attention run's weights with a model card when they are small; returns what was done."""
    best = _best_attention_run(results, exp_dir)
    if best is None:
        return {"run": None, "committed": False}
    dst = target.run(best.path.name)
    weights = dst.checkpoint_path("best")  # the published (half-precision) weights
    size = weights.stat().st_size if weights.is_file() else MAX_MODEL_BYTES
    if size < MAX_MODEL_BYTES:
        dst.model_card_path.write_text(_model_card(settings, best, results, provenance), encoding="utf-8")
    return {"run": best.path.name, "bytes": size, "committed": size < MAX_MODEL_BYTES}


def _provenance_summary(settings: ProfileSettings, exp_dir: ExperimentDir, results: dict[str, Any],
                        provenance: dict[str, Any], per_run: dict[str, Any], model_note: dict[str, Any],
                        timing: dict[str, float]) -> dict[str, Any]:
    """The profile's provenance: settings, machine, wall times, and where the time went."""

    def total(key: str) -> float:
        return round(sum(r[key] or 0.0 for r in per_run.values()), 2)

    epochs = sum(r["epochs_run"] for r in per_run.values())
    return {
        "profile": settings.profile,
        "settings": settings.to_dict(),
        "train_settings": results["settings"]["base_config"],
        "git": provenance.get("git"),
        "device": provenance.get("device"),
        "torch": provenance.get("packages", {}).get("torch"),
        "packages": provenance.get("packages"),
        "python": provenance.get("python"),
        "platform": provenance.get("platform"),
        "torch_cpu_threads": _torch_threads(),
        "workers": timing.get("workers", 1),
        "threads_per_worker": (max(1, (os.cpu_count() or 1) // timing["workers"]) if timing.get("workers", 1) > 1
                               else _torch_threads()),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "grid_wall_s": round(timing["grid_call_s"], 2),
        "grid_span_from_files_s": grid_span(results, exp_dir),
        "generate_data_s": round(timing["generate_data_s"], 2),
        "tune_s": round(timing.get("tune_s", 0.0), 2),
        "total_wall_s": round(timing["total_s"], 2),
        "runs_trained_in_this_call": sum(r["status"] == "trained" for r in per_run.values()),
        "sum_of_run_times_s": round(sum((r["train_wall_s"] or 0.0) + (r["evaluate_crf_off_s"] or 0.0)
                                        + (r["evaluate_crf_on_s"] or 0.0) for r in per_run.values()), 2),
        "time_per_epoch_s": round(total("train_and_validate_s") / epochs, 3) if epochs else None,
        "where_time_went_s": {
            "data_setup (read DICOM, preprocess, fingerprint, build model)": total("setup_s"),
            "training + per-epoch validation": total("train_and_validate_s"),
            "test evaluation without CRF": total("evaluate_crf_off_s"),
            "test evaluation with CRF (CPU)": total("evaluate_crf_on_s"),
        },
        "timing_method": run_timing.__doc__.split("\n\n")[1].strip() if run_timing.__doc__ else "",
        "note": ("grid_wall_s is the wall time of this call; runs reused from an earlier call (status"
                 " 'reused') keep their own times in per_run; with several workers the runs' own times add"
                 " up to about workers x the wall time"),
        "best_attention_model": model_note,
        "per_run": per_run,
    }


def publish(settings: ProfileSettings, exp_dir: ExperimentDir, published: ProfileDir, results: dict[str, Any],
            data: Any, timing: dict[str, float]) -> None:
    """Copy the light files of a finished grid into ``published``, write the tumour table of its published
    weights on its test patients (chapter 5 reads it instead of predicting every run again) and its provenance."""
    from lungseg.provenance import collect

    target = published.grid
    if target.path.exists():
        shutil.rmtree(target.path)  # a stale grid must not leave runs behind
    target.runs_path.mkdir(parents=True)
    for source, copy in zip(exp_dir.table_paths, target.table_paths):
        shutil.copy2(source, copy)
    per_run = _copy_runs(exp_dir, target, results)
    tumour_runs = [target.run(Path(r["run"]).name) for r in results["runs"] if r["loss"] in TUMOUR_TABLE_LOSSES]
    if tumour_runs and all(run.has_checkpoint("best") for run in tumour_runs):
        write_grid_tumour_table(target.tumours_path, [run.path for run in tumour_runs], data)
    provenance = collect(settings.device, started=None)
    model_note = _publish_best_model(settings, exp_dir, target, results, provenance)
    summary = _provenance_summary(settings, exp_dir, results, provenance, per_run, model_note, timing)
    published.path.mkdir(parents=True, exist_ok=True)
    published.provenance_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="medium", help="quick, medium or paper (default: medium)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--runs-dir", default=None, help="full run directories with checkpoints (default runs/<profile>)")
    parser.add_argument("--results-dir", default=None, help="published folder (default results/<profile>)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); 1 on a shared CPU, where"
                             " competing thread pools made training 25x slower in our measurement")
    parser.add_argument("--workers", type=int, default=None,
                        help="runs trained side by side, one process each with cores/workers threads"
                             " (default: the profile's on a CPU, 1 on a GPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--whole-slice", action="store_true",
                        help="only the whole-slice comparison run (after the grid), published beside it")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(args.threads)
    if args.workers is not None and args.workers < 1:
        print(f"error: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    try:
        if args.whole_slice:
            out = whole_slice_run(args.profile, device=args.device, runs_dir=args.runs_dir,
                                  results_dir=args.results_dir, progress=not args.no_progress, workers=args.workers)
        else:
            out = run_profile(args.profile, device=args.device, runs_dir=args.runs_dir,
                              results_dir=args.results_dir, progress=not args.no_progress, workers=args.workers)
    except (LungsegError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"published: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
