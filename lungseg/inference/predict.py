"""Prediction on a user's own scans: DICOM series, NIfTI volumes, PNG/JPEG images or ``.npz`` files.

This module only orchestrates, as a descent: it reads the input (:mod:`lungseg.inference.readers`),
segments it with a :class:`lungseg.inference.Predictor`, and hands the result to the writers
(:mod:`lungseg.inference.writers`, :mod:`lungseg.inference.dicom_out`); none of them calls back.

The tumour mask is written in the input's own geometry — a NIfTI volume with the input's affine
(for a DICOM series, the RAS affine that overlays the series voxel for voxel), a PNG of the same
size for each image, or an ``.npz`` with ``masks`` for an ``.npz`` input — optionally with the
probability map and the attention coefficients of every gate, and a summary of the lesions found
(count, volume in mL, equivalent diameter in mm, slice range). Slices are segmented in batches.
Nothing is ever written over an input: every file a prediction writes (the mask, the extras, the
lesion summary, ``summary.csv``) is checked by :func:`lungseg.files.check_output` against the input
and the model (run folder or ``.zip``) before the first is written, comparing files, not only names
(a hard or symbolic link to an input is refused like the input); each is written atomically.

A DICOM series' mask can also be written as DICOM (``output_format``): a DICOM Segmentation
(``"dicom-seg"``) or an RT Structure Set (``"rtstruct"``) that references the series and loads on
top of it in a viewer (:mod:`lungseg.inference.dicom_out`); the mask is the one the NIfTI output holds.
A *folder of studies* (a folder whose top level holds subfolders, one DICOM series each, and/or
NIfTI volumes, but no DICOM or image files of its own) is segmented study by study into one
output folder per study (:func:`lungseg.inference.writers.study_output`), with one progress bar and a summary table
(``summary.csv``: :data:`lungseg.inference.writers.SUMMARY_COLUMNS`).

The input is read and checked in full before anything is written: NaN or infinite intensities are
refused (with their count), so is a folder of images that also holds other files, and so are two
images whose masks would share a name (``scan.png`` and ``scan.jpg`` would both give
``scan_mask.png``; names are never silently changed, rename one of the inputs instead).
``threshold`` and ``batch_size`` are checked by :func:`predict` itself, not only by the CLI.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import lungseg.inference.writers as writers
from lungseg.device import resolve_device, resolve_prediction_precision
from lungseg.errors import DataError, DataWarning, LungsegError
from lungseg.files import check_output, write_json
from lungseg.inference.checks import check_positive_int, check_threshold
from lungseg.inference.coarse import check_coarse_pass, resolve_coarse_pass
from lungseg.inference.lesions import image_lesion_summary, lesion_summary, world_affine
from lungseg.inference.planes import check_planes, resolve_planes
from lungseg.inference.predictor import Predictor, Segmentation
from lungseg.inference.readers import VOLUME_SUFFIXES, list_studies, read_input, strip_suffix
from lungseg.inference.scan import check_region, segment_scan
from lungseg.inference.tta import check_tta

__all__ = ["predict"]


def _needs_dicom(inp: Path, output_format: str, what: str) -> LungsegError:
    return LungsegError(
        f"{inp}: --format {output_format} needs a DICOM series input (the result references the series' slices"
        f" and frame of reference), but this is {what}; use --format nifti"
    )


def predict(
    run_dir: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    output_format: str = "nifti",
    probabilities: bool = False,
    attention: bool = False,
    crf: bool = False,
    threshold: float | None = None,
    batch_size: int = 16,
    checkpoint: str = "best",
    device: str = "auto",
    precision: str = "auto",
    tta: str | None = None,
    region: str = "auto",
    keep_outside_lungs: bool = False,
    keep_unsure: bool = False,
    planes: str = "auto",
    coarse: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Segment tumours in ``input_path`` with a trained run and write the result to ``out_path``.

    Args:
        run_dir: run directory of :func:`lungseg.training.train`.
        input_path: DICOM series folder, NIfTI file, PNG/JPEG file or folder, ``.npz`` with
            ``images`` ``(N, H, W)`` (optional ``intensity``, ``spacing``), or a folder of studies
            (:func:`lungseg.inference.readers.list_studies`: subfolders holding one DICOM series each, and/or NIfTI files).
        out_path: a ``.nii``/``.nii.gz`` file (volumes), ``.dcm`` file (a DICOM series with
            ``output_format`` ``"dicom-seg"`` or ``"rtstruct"``), ``.png`` file (one image), ``.npz``
            file (``.npz`` input), or a folder that receives ``mask.nii.gz`` / ``seg.dcm`` /
            ``rtstruct.dcm`` / ``<name>_mask.png`` / ``predictions.npz`` and the extras (see
            :func:`lungseg.inference.writers.volume_outputs`). For a folder of studies, a folder receiving one folder per
            study (:func:`lungseg.inference.writers.study_output`) and ``summary.csv``.
        output_format: a volume's mask as ``"nifti"`` (default), ``"dicom-seg"`` (a DICOM
            Segmentation) or ``"rtstruct"`` (an RT Structure Set); the DICOM formats need a DICOM
            series input, whose slices they reference.
        probabilities, attention: also write the tumour probability map; the attention coefficients of every gate.
        crf: refine with the CRF of eq. (10) instead of thresholding.
        threshold: probability threshold, a finite number in (0, 1) (default: the run's).
        batch_size, checkpoint, device: slices per forward pass (a positive integer); ``"best"`` or ``"last"``; the device.
        precision: ``"auto"`` (bf16, or fp16 on GPUs without bf16, on CUDA; bf16 on a CPU with native bf16; else fp32:
            :func:`~lungseg.device.resolve_prediction_precision`), ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA only).
        tta: ``"none"``, ``"flips"`` or ``"dihedral"`` (:mod:`lungseg.inference.tta`); ``None``: the run's.
        region, keep_outside_lungs, keep_unsure, planes, coarse: for a CT volume (:func:`~.scan.segment_scan`): where
            it is searched, whether candidates mostly outside the lungs or unsure ones stay, the slices, the coarse pass.
        progress: show progress bars (one over all studies for a folder of studies).

    Returns:
        A summary: the files written and the lesions found (also written as ``*lesions.json``).
        For a folder of studies: ``{"studies": [one row per study, the columns of summary.csv],
        "failed": count, "files": [...]}``; a study that cannot be read or segmented is recorded
        with its error and the others are still segmented.

    Raises:
        LungsegError: a bad argument (``threshold``, ``batch_size``, ``output_format``, ``region``, ``planes``, ``coarse``),
            a DICOM output format for an input that is not a DICOM series, an output inside the input, two
            studies whose outputs would share a name, or a model that does not fit the input or the options.
            :class:`~lungseg.errors.DataError` (a subclass) for bad input: unreadable files, NaN or
            infinite intensities (counted in the message), a folder of images that also holds other
            files, or two images whose masks would share a name (``scan.png`` and ``scan.jpg``); all
            are checked before anything is written.
        FileNotFoundError: the input does not exist.
    """
    inp, out = Path(input_path), Path(out_path)
    _check_arguments(batch_size, threshold, tta, output_format, region, planes, coarse)
    check_output(out, inputs := [inp, Path(run_dir)])  # no output may be or lie inside the scans or the model
    studies = list_studies(inp)
    if output_format != "nifti" and inp.is_file():
        raise _needs_dicom(inp, output_format, "a single file")
    if studies is not None:
        _check_studies(inp, out, studies, output_format)
    run = _load_model(run_dir, checkpoint, device, precision, tta, attention, planes, coarse)
    options = dict(output_format=output_format, probabilities=probabilities, attention=attention, crf=crf,
                   inputs=[*inputs, *(studies or [])], threshold=threshold, batch_size=batch_size, region=region,
                   keep_outside_lungs=keep_outside_lungs, keep_unsure=keep_unsure, planes=planes, coarse=coarse)
    if studies is not None:
        return _predict_studies(run, inp, out, studies, options, progress)
    return _predict_loaded(run, inp, out, progress=progress, **options)


def _check_arguments(batch_size: int, threshold: float | None, tta: str | None, output_format: str,
                     region: str = "auto", planes: str = "auto", coarse: str = "auto") -> None:
    """Refuse a bad batch size, threshold, test-time augmentation, output format, region, planes or coarse pass,
    naming it."""
    check_positive_int(batch_size, "batch_size")
    check_threshold(threshold)
    if tta is not None:
        check_tta(tta)
    writers.check_format(output_format)
    check_region(region)
    check_planes(planes)
    check_coarse_pass(coarse)


def _load_model(run_dir: str | os.PathLike[str], checkpoint: str, device: str, precision: str, tta: str | None,
                attention: bool, planes: str, coarse: str = "auto") -> Predictor:
    """The model of ``run_dir`` in ``predict``'s numerics (:func:`~lungseg.device.resolve_prediction_precision`),
    checked against the options (:func:`_check_model`)."""
    run = Predictor.load(run_dir, checkpoint=checkpoint, device=device, tta=tta,
                         precision=resolve_prediction_precision(precision, resolve_device(device)))
    _check_model(run, attention, planes, coarse)
    return run


def _check_model(run: Predictor, attention: bool, planes: str, coarse: str = "auto") -> None:
    """Refuse, before any input is read, what the loaded model cannot do: attention maps without attention
    gates, three planes or the coarse pass without a stated pixel size."""
    if attention and run.config.model != "attention":
        raise LungsegError(f"--attention needs an 'attention' model; {run.run_dir} holds a {run.config.model!r} model")
    resolve_planes(planes, run, "--planes")
    resolve_coarse_pass(coarse, run, "--coarse-pass")


def _check_studies(inp: Path, out: Path, studies: list[Path], output_format: str) -> None:
    """Refuse, before anything is written, a folder of studies whose outputs would collide, that holds NIfTI
    volumes while a DICOM format is asked for, or an output inside one of its studies (a study may be a link
    to a folder outside ``inp``)."""
    check_output(out, studies)
    if output_format != "nifti":
        volumes = [p.name for p in studies if p.is_file()]
        if volumes:
            raise _needs_dicom(inp, output_format, f"a folder of studies holding NIfTI volume(s) ({', '.join(volumes[:5])})")
    if out.name.lower().endswith((*VOLUME_SUFFIXES, ".dcm", ".png", ".npz")):
        raise LungsegError(f"--out {out}: a folder of studies is written to a folder (one subfolder per study), not a file")
    seen: dict[str, Path] = {writers.SUMMARY_TABLE.casefold(): out / writers.SUMMARY_TABLE}
    for study in studies:
        target = writers.study_output(out, study)
        key = target.name.casefold()
        if key in seen:
            raise LungsegError(
                f"{inp}: {study.name} and {seen[key].name} would both be written to {target}; rename one of them"
            )
        seen[key] = study


def _predict_studies(run: Predictor, inp: Path, out: Path, studies: list[Path], options: dict[str, Any],
                     progress: bool) -> dict[str, Any]:
    """Each study of a folder of studies into its own output folder; one progress bar; ``summary.csv``."""
    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    bar = tqdm(studies, desc="predict", unit="series", disable=not progress)
    for study in bar:
        bar.set_postfix_str(study.name, refresh=False)
        target = writers.study_output(out, study)
        start = time.perf_counter()
        row: dict[str, Any] = {"input": str(study)}
        try:
            summary = _predict_loaded(run, study, target, progress=False, volumes_only=True, **options)
        except (LungsegError, OSError, ValueError) as exc:  # DataError is a LungsegError
            row.update(error=" ".join(str(exc).split()) or type(exc).__name__, precision=run.precision,
                       seconds=round(time.perf_counter() - start, 2))
            rows.append(row)
            continue
        row.update(
            slices=summary["shape"][0], lesions=summary["lesions"]["count"], tumour_voxels=summary["tumour_voxels"],
            volume_ml=summary["lesions"]["total_volume_ml"], output=summary["files"][0],
            set_aside=(summary.get("set_aside") or {}).get("count", 0),
            set_aside_ml=(summary.get("set_aside") or {}).get("total_volume_ml") or 0.0, planes=summary["planes"],
            coarse_pass="on" if summary.get("coarse_pass") else "off",
            precision=run.precision, seconds=round(time.perf_counter() - start, 2), error="",
        )
        rows.append(row)
    table = out / writers.SUMMARY_TABLE
    check_output(table, options["inputs"])
    writers.write_study_table(table, rows)
    return {
        "input": str(inp), "run": str(run.run_dir), "crf": bool(options["crf"]), "precision": run.precision,
        "output_format": options["output_format"], "studies": rows,
        "failed": sum(1 for r in rows if r.get("error")), "files": [str(table)],
    }


def _predict_loaded(run: Predictor, inp: Path, out: Path, *, output_format: str, probabilities: bool,
                    attention: bool, crf: bool, threshold: float | None, batch_size: int, progress: bool,
                    inputs: list[Path], region: str = "auto", keep_outside_lungs: bool = False,
                    keep_unsure: bool = False, planes: str = "auto", coarse: str = "auto",
                    volumes_only: bool = False) -> dict[str, Any]:
    """:func:`predict` of one input with a loaded network: read and check it, segment, write.

    ``inputs`` are the files and folders no output may be (:func:`lungseg.files.check_output`)."""
    check_output(out, inputs)
    kind, items = read_input(inp)
    if volumes_only and kind != "volume":
        raise DataError(f"{inp}: holds {kind}, not a CT volume; a folder of studies holds DICOM series and NIfTI volumes")
    if output_format != "nifti":
        if kind != "volume":
            raise _needs_dicom(inp, output_format, "PNG/JPEG images" if kind == "images" else "an .npz file")
        if items[0].meta.get("format") != "dicom":
            raise _needs_dicom(inp, output_format, "a NIfTI volume")
    model_intensity = run.fingerprint.intensity
    data_intensity = "unit" if kind == "images" else (items[1] if kind == "npz" else "hu")
    if data_intensity != model_intensity and kind != "volume":  # a volume's: segment_scan converts or refuses
        raise LungsegError(
            f"{inp}: the input's intensities are {data_intensity!r} but the model in {run.run_dir} was trained"
            f" on {model_intensity!r} data (HU cannot be recovered from PNG/JPEG images)"
        )

    if kind == "images" and run.fingerprint.pixel_mm is not None:
        warnings.warn(DataWarning(
            f"{inp}: PNG/JPEG images carry no pixel size, and the model in {run.run_dir} was trained at"
            f" {run.fingerprint.pixel_mm:g} mm per pixel: it sees the images at their own scale, so tumour sizes may"
            " not be what it learnt (give it a DICOM series or NIfTI file)"), stacklevel=2)

    for asked, option in ((planes == "three", "--planes three"), (coarse == "on", "--coarse-pass on")):
        if kind != "volume" and asked:
            what = "PNG/JPEG images" if kind == "images" else "the slices of an .npz"
            warnings.warn(DataWarning(f"{inp}: {option} needs a CT volume; {what} are segmented one by one"
                                      " as the model takes them"), stacklevel=2)

    def segment(images: np.ndarray) -> Segmentation:
        try:
            return run.segment(images, crf, threshold, attention=attention, batch_size=batch_size, progress=progress)
        except ValueError as exc:
            raise LungsegError(f"{inp}: {exc}") from None

    def segment_volume(vol: Any) -> tuple[Segmentation, dict[str, Any]]:
        return segment_scan(run, vol, crf=crf, threshold=threshold, attention=attention, batch_size=batch_size,
                            progress=progress, region=region, keep_outside_lungs=keep_outside_lungs,
                            keep_unsure=keep_unsure, planes=planes, coarse=coarse, where=str(inp))

    summary: dict[str, Any] = {"input": str(inp), "run": str(run.run_dir), "crf": bool(crf), "precision": run.precision}
    if kind == "volume":
        summary["output_format"] = output_format
        summary["algorithm"] = _algorithm(run, crf, threshold, keep_outside_lungs, keep_unsure)
    step = {"volume": _predict_volume, "images": _predict_images, "npz": _predict_npz}[kind]
    guard = _Guard(inputs, probabilities, run.config.depth if attention else 0)
    written, lesion_path = step(inp, items, out, segment_volume if kind == "volume" else segment, guard, summary)
    summary["files"] = written + [str(lesion_path)]
    write_json(summary, lesion_path)
    return summary


class _Guard:
    """What a step may write: it names every file it will write, mask, extras and lesion summary,
    and :meth:`check` refuses any that is an input, before the first is written."""

    def __init__(self, inputs: list[Path], probabilities: bool, attention_levels: int) -> None:
        self.inputs, self.probabilities, self.attention_levels = inputs, probabilities, attention_levels

    def files(self, mask: Path, prefix: str, suffix: str) -> list[Path]:
        """A mask and the extras :func:`lungseg.inference.writers.extra_outputs` puts beside it."""
        return [mask, *writers.extra_outputs(prefix, suffix, self.probabilities, self.attention_levels)]

    def check(self, paths: list[Path]) -> None:
        for path in paths:
            check_output(path, self.inputs)


def _algorithm(run: Predictor, crf: bool, threshold: float | None, keep_outside_lungs: bool,
               keep_unsure: bool) -> dict[str, Any]:
    """What makes the mask, for the DICOM results' algorithm identification and the summary; the region
    searched is added once the scan is segmented (:func:`_searched_record`)."""
    from lungseg import __version__

    return {
        "name": "lungseg", "version": __version__, "run": run.run_dir.name, "model": run.config.model,
        "loss": run.config.loss, "epoch": run.epoch, "precision": run.precision, "crf": "on" if crf else "off",
        "threshold": run.threshold if threshold is None else threshold,
        "outside_lungs": "kept" if keep_outside_lungs else "set aside",
        "unsure": "kept" if keep_unsure else "set aside",
    }


def _searched_record(algorithm: dict[str, Any], searched: dict[str, Any]) -> dict[str, Any]:
    """``algorithm`` with the region :func:`lungseg.inference.scan.segment_scan` searched and the planes the network
    ran on: a scan searched whole (no lungs found, or ``--region all``) sets nothing aside, whatever was asked, and
    only three planes set unsure candidates aside."""
    record = {**algorithm, "region": searched["region"], "planes": searched["planes"],
              "coarse_pass": "on" if searched["coarse_pass"] else "off"}
    if searched["region"] != "lungs":
        record["outside_lungs"] = "kept"
    if searched["region"] != "lungs" or searched["planes"] != "three":
        record["unsure"] = "kept"
    return record


def _predict_volume(inp: Path, items: list[Any], out: Path, segment: Any, guard: _Guard,
                    summary: dict[str, Any]) -> tuple[list[str], Path]:
    """One volume: its mask in the input's geometry (``summary["output_format"]``), the extras, the 3D lesions."""
    if len(items) > 1:
        uids = [v.meta.get("series_uid", v.patient_id) for v in items]
        raise LungsegError(f"{inp}: holds {len(items)} CT series ({', '.join(map(str, uids))}); point to one series folder")
    vol = items[0]
    output_format = summary.get("output_format", "nifti")
    result_path, prefix = writers.volume_outputs(out, output_format)
    lesion_path = Path(f"{prefix}lesions.json")
    guard.check([*guard.files(result_path, prefix, ".nii.gz"), lesion_path])
    headers = None
    if output_format != "nifti":  # re-read the series' headers before the (long) segmentation
        from lungseg.inference.dicom_out import read_source_headers

        headers = read_source_headers(vol.meta["files"])
    seg, searched = segment(vol)
    summary.update(searched)
    if "algorithm" in summary:
        summary["algorithm"] = _searched_record(summary["algorithm"], searched)
    written = writers.write_volume(vol, seg, result_path, prefix, probabilities=guard.probabilities, headers=headers,
                                   output_format=output_format, algorithm=summary.get("algorithm"))
    mask = seg.mask.astype(np.uint8)
    summary.update(shape=list(vol.image.shape), spacing_mm=list(vol.spacing), tumour_voxels=int(mask.sum()),
                   lesions=lesion_summary(mask, vol.spacing, seg.probs, world_affine(vol)))
    return written, lesion_path


def _predict_images(inp: Path, items: list[Any], out: Path, segment: Any, guard: _Guard,
                    summary: dict[str, Any]) -> tuple[list[str], Path]:
    """One PNG mask (and extras) per input image, same size; 2D lesion summaries in pixels."""
    single_file = len(items) == 1 and out.suffix.lower() == ".png"
    lesion_path = (out.parent / f"{strip_suffix(out.name)}_lesions.json") if single_file else out / "lesions.json"
    targets = [writers.image_outputs(out, path, single_file) for path, _ in items]
    guard.check([*(f for mask, prefix in targets for f in guard.files(mask, prefix, ".png")), lesion_path])
    written, per_image = [], []
    for (path, img), (mask_path, prefix) in zip(items, targets):
        seg = segment(img[None])
        written += writers.write_image(seg, mask_path, prefix, guard.probabilities)
        per_image.append({"image": str(path), **image_lesion_summary(seg.mask[0], None)})
    summary["lesions"] = {
        "count": sum(p["count"] for p in per_image), "images": per_image,
        "note": "PNG/JPEG images carry no pixel spacing: sizes are in pixels",
    }
    return written, lesion_path


def _predict_npz(inp: Path, items: list[Any], out: Path, segment: Any, guard: _Guard,
                 summary: dict[str, Any]) -> tuple[list[str], Path]:
    """The masks (and extras) of an ``.npz`` stack as ``.npz``; 2D lesion summaries per image."""
    images, _, spacing = items
    npz_path = writers.npz_output(out)
    lesion_path = npz_path.with_name(f"{strip_suffix(npz_path.name)}_lesions.json")
    guard.check([npz_path, lesion_path])  # e.g. `predict data/predictions.npz --out data`
    seg = segment(images)
    written = writers.write_npz(seg, npz_path, guard.probabilities)
    per_image = [
        {"index": i, **image_lesion_summary(seg.mask[i], None if spacing is None else tuple(spacing[i]))}
        for i in range(len(seg.mask))
    ]
    summary["lesions"] = {"count": sum(p["count"] for p in per_image), "images": per_image}
    return written, lesion_path
