"""Prediction on a user's own scans: DICOM series, NIfTI volumes, PNG/JPEG images or ``.npz`` files.

The tumour mask is written in the input's own geometry — a NIfTI volume with the input's affine
(for a DICOM series, the RAS affine that overlays the series voxel for voxel), a PNG of the same
size for each image, or an ``.npz`` with ``masks`` for an ``.npz`` input — optionally with the
probability map and the attention coefficients of every gate, and a summary of the lesions found
(count, volume in mL, equivalent diameter in mm, slice range). Slices are segmented in batches.
Nothing is ever written into the input's folder.

A DICOM series' mask can also be written as DICOM (``output_format``): a DICOM Segmentation
(``"dicom-seg"``) or an RT Structure Set (``"rtstruct"``) that references the series and loads on
top of it in a viewer (:mod:`lungseg.inference.dicom_out`); the mask is the one the NIfTI output holds.
A *folder of studies* (a folder whose top level holds subfolders, one DICOM series each, and/or
NIfTI volumes, but no DICOM or image files of its own) is segmented study by study into one
output folder per study (:func:`study_output`), with one progress bar and a summary table
(``summary.csv``: input, slices, tumour voxels, volume, output, seconds).

The input is read and checked in full before anything is written: NaN or infinite intensities are
refused (with their count), so is a folder of images that also holds other files, and so are two
images whose masks would share a name (``scan.png`` and ``scan.jpg`` would both give
``scan_mask.png``; names are never silently changed, rename one of the inputs instead).
``threshold`` and ``batch_size`` are checked by :func:`predict` itself, not only by the CLI.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from lungseg.errors import DataError, LungsegError
from lungseg.files import check_output, write_csv, write_json
from lungseg.inference.dicom_out import FORMATS
from lungseg.inference.run import binarize, check_positive_int, load_run, predict_probabilities, require_finite
from lungseg.metrics import equivalent_sphere_diameter_mm

VOLUME_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
# the result file of a volume written to a folder, per output format
_RESULT_NAMES = {"nifti": "mask.nii.gz", "dicom-seg": "seg.dcm", "rtstruct": "rtstruct.dcm"}
SUMMARY_TABLE = "summary.csv"
SUMMARY_COLUMNS: tuple[str, ...] = ("input", "slices", "tumour_voxels", "volume_ml", "output", "seconds", "error")


def _strip_suffix(name: str) -> str:
    for suf in (".nii.gz", ".nii", ".npz", ".png", ".jpg", ".jpeg", ".json"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def lesion_summary(mask: np.ndarray, spacing: tuple[float, float, float] | None) -> dict[str, Any]:
    """Connected tumour components of a volume mask.

    Args:
        mask: binary ``(Z, H, W)``; components are 26-connected in 3D (a lesion spans slices).
        spacing: ``(z, y, x)`` voxel size in mm, or ``None`` when unknown (sizes in voxels then).

    Returns:
        ``{"count", "total_volume_ml", "lesions": [{"id", "voxels", "volume_ml",
        "equivalent_diameter_mm", "slice_range": [first, last], "centroid_voxel": [z, y, x]}]}``,
        largest first. The equivalent diameter is that of the sphere of the same volume,
        ``(6 V / π)^(1/3)``.
    """
    labels, n = ndimage.label(mask > 0, structure=np.ones((3, 3, 3), dtype=bool))
    voxel_ml = None if spacing is None else float(np.prod(spacing)) / 1000.0
    lesions = []
    if n:
        objects = ndimage.find_objects(labels)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        centroids = ndimage.center_of_mass(mask > 0, labels, range(1, n + 1))
        for k in range(n):
            voxels = int(sizes[k])
            entry: dict[str, Any] = {
                "voxels": voxels,
                "slice_range": [int(objects[k][0].start), int(objects[k][0].stop - 1)],
                "centroid_voxel": [round(float(c), 2) for c in centroids[k]],
            }
            if voxel_ml is not None:
                vol_ml = voxels * voxel_ml
                entry["volume_ml"] = round(vol_ml, 4)
                entry["equivalent_diameter_mm"] = round(equivalent_sphere_diameter_mm(vol_ml, 1000.0), 3)
            lesions.append(entry)
    lesions.sort(key=lambda e: -e["voxels"])
    for i, e in enumerate(lesions, 1):
        e["id"] = i
    return {
        "count": len(lesions),
        "total_volume_ml": None if voxel_ml is None else round(sum(e["volume_ml"] for e in lesions), 4),
        "connectivity": "26-connected 3D components",
        "lesions": lesions,
    }


def image_lesion_summary(mask2d: np.ndarray, spacing: tuple[float, float] | None) -> dict[str, Any]:
    """Connected tumour components of one 2D mask (:func:`lungseg.metrics.lesions`, 8-connected),
    largest first; areas in mm² and equivalent diameters when the pixel spacing is known."""
    from lungseg.metrics import lesions

    found = sorted(lesions(mask2d > 0, (1.0, 1.0) if spacing is None else spacing), key=lambda les: -len(les.pixels))
    entries = []
    for lesion in found:
        entry: dict[str, Any] = {"pixels": len(lesion.pixels)}
        if spacing is not None:
            entry["area_mm2"] = round(lesion.area_mm2, 3)
            entry["equivalent_diameter_mm"] = round(lesion.diameter_mm, 3)
        entries.append(entry)
    return {"count": len(found), "connectivity": "8-connected 2D components", "lesions": entries}


def _check_arguments(threshold: float | None, batch_size: int) -> None:
    """Refuse arguments that would give silent garbage or a raw Python error further down."""
    check_positive_int(batch_size, "batch_size")
    if threshold is not None:
        number = isinstance(threshold, (int, float, np.integer, np.floating)) and not isinstance(threshold, bool)
        if not (number and math.isfinite(threshold) and 0 < threshold < 1):
            raise LungsegError(f"threshold must be a finite probability in (0, 1), got {threshold!r}")


def _check_mask_names(folder: Path, images: list[Path]) -> None:
    """Refuse two images whose masks would have the same name (``scan.png`` and ``scan.jpg`` -> ``scan_mask.png``).

    Names are compared case-insensitively, as they would collide on macOS and Windows file systems.
    """
    seen: dict[str, Path] = {}
    for path in images:
        key = _strip_suffix(path.name).casefold()
        if key in seen:
            raise DataError(
                f"{folder}: {seen[key].name} and {path.name} would both be written as"
                f" {_strip_suffix(seen[key].name)}_mask.png; rename one of them (each image's mask is <name>_mask.png)"
            )
        seen[key] = path


def _read_folder(path: Path) -> tuple[str, list[Any]]:
    """A folder of PNG/JPEG images (nothing else) or of one CT DICOM series."""
    from lungseg.data.dicom import is_dicom_file, read_dicom_series
    from lungseg.data.images import is_image_file, read_image

    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if is_image_file(p)]
    others = [p for p in files if not is_image_file(p)]
    if images and not any(is_dicom_file(p) for p in others):  # with DICOM files it is a series folder
        if others:
            shown = ", ".join(p.name for p in others[:5]) + (", ..." if len(others) > 5 else "")
            raise DataError(
                f"{path}: holds {len(images)} PNG/JPEG image(s) but also {len(others)} other file(s) ({shown});"
                " a folder to segment holds only PNG/JPEG images (.png, .jpg, .jpeg) or the files of one CT DICOM"
                " series; move the other files out"
            )
        _check_mask_names(path, images)
        return "images", [(p, read_image(p)) for p in images]
    volumes = read_dicom_series(path)
    for vol in volumes:
        require_finite(vol.image, path)
    return "volume", volumes


def _read_input(path: Path) -> tuple[str, list[Any]]:
    """``(kind, items)``: kind ``"volume"`` (items: CTVolume), ``"images"`` ((path, array)) or ``"npz"``.

    Every kind is checked before anything is written: finite intensities, readable files, and (for
    a folder of images) one mask name per image.
    """
    from lungseg.data.images import is_image_file, read_image
    from lungseg.data.volume import CTVolume

    if not path.exists():
        raise FileNotFoundError(f"{path}: input not found")
    name = path.name.lower()
    if path.is_dir():
        return _read_folder(path)
    if name.endswith(VOLUME_SUFFIXES):
        from lungseg.data.nifti import read_nifti

        array, spacing, affine = read_nifti(path)
        image = np.asarray(array, dtype=np.float32)
        require_finite(image, path)
        vol = CTVolume(
            image=image, mask=None, spacing=spacing, patient_id=_strip_suffix(path.name),
            affine=affine, intensity="hu", source=str(path), meta={"affine_space": "RAS"},
        )
        return "volume", [vol]
    if is_image_file(path):
        return "images", [(path, read_image(path))]
    if name.endswith(".npz"):
        from lungseg.data.npz import read_npz_images

        images, intensity, spacing = read_npz_images(path)  # finite float32 (N, H, W), never unpickled
        return "npz", [images, intensity, spacing]
    raise DataError(
        f"{path}: unsupported input; expected a DICOM series folder, a NIfTI volume (.nii/.nii.gz),"
        " PNG/JPEG images (a file or a folder) or an .npz file with 'images'"
    )


def _check_format(output_format: str) -> None:
    if output_format not in FORMATS:
        raise LungsegError(f"output format must be one of {', '.join(FORMATS)}; got {output_format!r}")


def _needs_dicom(inp: Path, output_format: str, what: str) -> LungsegError:
    return LungsegError(
        f"{inp}: --format {output_format} needs a DICOM series input (the result references the series' slices"
        f" and frame of reference), but this is {what}; use --format nifti"
    )


def list_studies(path: str | os.PathLike[str]) -> list[Path] | None:
    """The studies of a *folder of studies*, or ``None`` when ``path`` is not one.

    A folder of studies holds no DICOM or PNG/JPEG files at its top level, and at least one
    subfolder (a DICOM series, searched recursively) or NIfTI volume (``.nii``/``.nii.gz``); these
    are its studies, sorted by name. Other top-level files are skipped with a warning; hidden
    entries (``.name``) are ignored.
    """
    from lungseg.data.dicom import is_dicom_file
    from lungseg.data.images import is_image_file

    folder = Path(path)
    if not folder.is_dir():
        return None
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file()]
    if any(is_image_file(p) or is_dicom_file(p) for p in files):
        return None
    studies = [p for p in entries if p.is_dir() or (p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES))]
    if not studies:
        return None
    for p in files:
        if p not in studies:
            warnings.warn(f"{p}: neither a study folder nor a NIfTI volume; skipped", stacklevel=2)
    return studies


def study_output(out: str | os.PathLike[str], study: str | os.PathLike[str]) -> Path:
    """The output folder of one study of a folder of studies: ``out/<study name without .nii/.nii.gz>``."""
    return Path(out) / _strip_suffix(Path(study).name)


def volume_outputs(out: str | os.PathLike[str], output_format: str = "nifti") -> tuple[Path, str]:
    """Where a volume's result goes: ``(result file, prefix of the extras and the lesion summary)``.

    ``out`` is the result file itself when it has the format's suffix (``.nii``/``.nii.gz`` for
    ``"nifti"``, ``.dcm`` for ``"dicom-seg"`` and ``"rtstruct"``), the extras then being
    ``<out without suffix>_probability.nii.gz`` etc.; otherwise it is a folder receiving
    ``mask.nii.gz``, ``seg.dcm`` or ``rtstruct.dcm`` and ``probability.nii.gz`` etc.
    """
    out = Path(out)
    _check_format(output_format)
    name = out.name.lower()
    is_file = name.endswith(VOLUME_SUFFIXES) if output_format == "nifti" else name.endswith(".dcm")
    if is_file:
        stem = out.name[: -len(".dcm")] if name.endswith(".dcm") else _strip_suffix(out.name)
        return out, f"{out.parent / stem}_"
    if output_format != "nifti" and name.endswith(VOLUME_SUFFIXES):
        raise LungsegError(f"--out {out}: a {output_format} result is a .dcm file (or a folder), not NIfTI")
    return out / _RESULT_NAMES[output_format], f"{out}/"


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
    progress: bool = True,
) -> dict[str, Any]:
    """Segment tumours in ``input_path`` with a trained run and write the result to ``out_path``.

    Args:
        run_dir: run directory of :func:`lungseg.training.train`.
        input_path: DICOM series folder, NIfTI file, PNG/JPEG file or folder, ``.npz`` with
            ``images`` ``(N, H, W)`` (optional ``intensity``, ``spacing``), or a folder of studies
            (:func:`list_studies`: subfolders holding one DICOM series each, and/or NIfTI files).
        out_path: a ``.nii``/``.nii.gz`` file (volumes), ``.dcm`` file (a DICOM series with
            ``output_format`` ``"dicom-seg"`` or ``"rtstruct"``), ``.png`` file (one image), ``.npz``
            file (``.npz`` input), or a folder that receives ``mask.nii.gz`` / ``seg.dcm`` /
            ``rtstruct.dcm`` / ``<name>_mask.png`` / ``predictions.npz`` and the extras (see
            :func:`volume_outputs`). For a folder of studies, a folder receiving one folder per
            study (:func:`study_output`) and ``summary.csv``.
        output_format: a volume's mask as ``"nifti"`` (default), ``"dicom-seg"`` (a DICOM
            Segmentation) or ``"rtstruct"`` (an RT Structure Set); the DICOM formats need a DICOM
            series input, whose slices they reference.
        probabilities: also write the tumour probability map.
        attention: also write the attention coefficients of every gate (attention model only).
        crf: refine with the CRF of eq. (10) instead of thresholding.
        threshold: probability threshold, a finite number in (0, 1) (default: the run's).
        batch_size: slices per forward pass, a positive integer.
        checkpoint: ``"best"`` or ``"last"``.
        device: inference device.
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 elsewhere), ``"fp32"`` or ``"bf16"``
            (on a CPU with native bf16 about 2x faster; see :func:`lungseg.inference.load_run`).
        progress: show progress bars (one over all studies for a folder of studies).

    Returns:
        A summary: the files written and the lesions found (also written as ``*lesions.json``).
        For a folder of studies: ``{"studies": [one row per study, the columns of summary.csv],
        "failed": count, "files": [...]}``; a study that cannot be read or segmented is recorded
        with its error and the others are still segmented.

    Raises:
        LungsegError: a bad argument (``threshold``, ``batch_size``, ``output_format``), a DICOM
            output format for an input that is not a DICOM series, an output inside the input, two
            studies whose outputs would share a name, or a model that does not fit the input.
            :class:`~lungseg.errors.DataError` (a subclass) for bad input: unreadable files, NaN or
            infinite intensities (counted in the message), a folder of images that also holds other
            files, or two images whose masks would share a name (``scan.png`` and ``scan.jpg``); all
            are checked before anything is written.
        FileNotFoundError: the input does not exist.
    """
    inp, out = Path(input_path), Path(out_path)
    _check_arguments(threshold, batch_size)
    _check_format(output_format)
    check_output(out, [inp])
    studies = list_studies(inp)
    if output_format != "nifti" and inp.is_file():
        raise _needs_dicom(inp, output_format, "a single file")
    if studies is not None:
        _check_studies(inp, out, studies, output_format)
    run = load_run(run_dir, checkpoint=checkpoint, device=device, precision=precision)
    if attention and run.config.model != "attention":
        raise LungsegError(f"--attention needs an 'attention' model; {run.run_dir} holds a {run.config.model!r} model")
    options = dict(output_format=output_format, probabilities=probabilities, attention=attention, crf=crf,
                   threshold=threshold, batch_size=batch_size)
    if studies is not None:
        return _predict_studies(run, inp, out, studies, options, progress)
    return _predict_loaded(run, inp, out, progress=progress, **options)


def _check_studies(inp: Path, out: Path, studies: list[Path], output_format: str) -> None:
    """Refuse, before anything is written, a folder of studies whose outputs would collide or that
    holds NIfTI volumes while a DICOM format is asked for."""
    if output_format != "nifti":
        volumes = [p.name for p in studies if p.is_file()]
        if volumes:
            raise _needs_dicom(inp, output_format, f"a folder of studies holding NIfTI volume(s) ({', '.join(volumes[:5])})")
    if out.name.lower().endswith((*VOLUME_SUFFIXES, ".dcm", ".png", ".npz")):
        raise LungsegError(f"--out {out}: a folder of studies is written to a folder (one subfolder per study), not a file")
    seen: dict[str, Path] = {SUMMARY_TABLE.casefold(): out / SUMMARY_TABLE}
    for study in studies:
        target = study_output(out, study)
        key = target.name.casefold()
        if key in seen:
            raise LungsegError(
                f"{inp}: {study.name} and {seen[key].name} would both be written to {target}; rename one of them"
            )
        seen[key] = study


def _predict_studies(run: Any, inp: Path, out: Path, studies: list[Path], options: dict[str, Any],
                     progress: bool) -> dict[str, Any]:
    """Each study of a folder of studies into its own output folder; one progress bar; ``summary.csv``."""
    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    bar = tqdm(studies, desc="predict", unit="series", disable=not progress)
    for study in bar:
        bar.set_postfix_str(study.name, refresh=False)
        target = study_output(out, study)
        start = time.perf_counter()
        row: dict[str, Any] = {"input": str(study)}
        try:
            summary = _predict_loaded(run, study, target, progress=False, volumes_only=True, **options)
        except (LungsegError, OSError, ValueError) as exc:  # DataError is a LungsegError
            row.update(error=" ".join(str(exc).split()) or type(exc).__name__, seconds=round(time.perf_counter() - start, 2))
            rows.append(row)
            continue
        row.update(
            slices=summary["shape"][0], tumour_voxels=summary["tumour_voxels"],
            volume_ml=summary["lesions"]["total_volume_ml"], output=summary["files"][0],
            seconds=round(time.perf_counter() - start, 2), error="",
        )
        rows.append(row)
    table = out / SUMMARY_TABLE
    check_output(table, [inp])
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, rows, SUMMARY_COLUMNS)
    return {
        "input": str(inp), "run": str(run.run_dir), "crf": bool(options["crf"]), "precision": run.precision,
        "output_format": options["output_format"], "studies": rows,
        "failed": sum(1 for r in rows if r.get("error")), "files": [str(table)],
    }


def _predict_loaded(run: Any, inp: Path, out: Path, *, output_format: str, probabilities: bool, attention: bool,
                    crf: bool, threshold: float | None, batch_size: int, progress: bool,
                    volumes_only: bool = False) -> dict[str, Any]:
    """:func:`predict` of one input with a loaded run: read and check it, segment, write."""
    check_output(out, [inp])
    kind, items = _read_input(inp)
    if volumes_only and kind != "volume":
        raise DataError(f"{inp}: holds {kind}, not a CT volume; a folder of studies holds DICOM series and NIfTI volumes")
    if output_format != "nifti":
        if kind != "volume":
            raise _needs_dicom(inp, output_format, "PNG/JPEG images" if kind == "images" else "an .npz file")
        if items[0].meta.get("format") != "dicom":
            raise _needs_dicom(inp, output_format, "a NIfTI volume")
    model_intensity = run.fingerprint.intensity
    data_intensity = "unit" if kind == "images" else (items[1] if kind == "npz" else "hu")
    if data_intensity != model_intensity:
        raise LungsegError(
            f"{inp}: the input's intensities are {data_intensity!r} but the model in {run.run_dir} was trained"
            f" on {model_intensity!r} data (HU cannot be recovered from PNG/JPEG images)"
        )

    def segment(images: np.ndarray) -> Segmentation:
        try:
            res = predict_probabilities(run, images, batch_size=batch_size, return_attention=attention, progress=progress)
        except ValueError as exc:
            raise LungsegError(f"{inp}: {exc}") from None
        probs, alphas = res if attention else (res, [])
        return Segmentation(binarize(run, images, probs, crf, threshold), probs, alphas)

    summary: dict[str, Any] = {"input": str(inp), "run": str(run.run_dir), "crf": bool(crf), "precision": run.precision}
    if kind == "volume":
        summary["output_format"] = output_format
        summary["algorithm"] = _algorithm(run, crf, threshold)
    writer = {"volume": _write_volume, "images": _write_images, "npz": _write_npz}[kind]
    written, lesion_path = writer(inp, items, out, segment, probabilities, summary)
    check_output(lesion_path, [inp])
    summary["files"] = written + [str(lesion_path)]
    write_json(summary, lesion_path)
    return summary


def _algorithm(run: Any, crf: bool, threshold: float | None) -> dict[str, Any]:
    """What makes the mask, for the DICOM results' algorithm identification and the summary."""
    from lungseg import __version__

    return {
        "name": "lungseg", "version": __version__, "run": run.run_dir.name, "model": run.config.model,
        "loss": run.config.loss, "epoch": run.epoch, "crf": "on" if crf else "off",
        "threshold": run.config.threshold if threshold is None else threshold,
    }


@dataclass
class Segmentation:
    """What one call of the model gives for a stack of slices: the mask, probabilities and gate maps."""

    mask: np.ndarray
    probs: np.ndarray
    alphas: list[np.ndarray]


def _write_volume(inp: Path, items: list[Any], out: Path, segment: Any, probabilities: bool,
                  summary: dict[str, Any]) -> tuple[list[str], Path]:
    """A volume's mask in the input's geometry — NIfTI, or for a DICOM series a DICOM SEG or RT
    Structure Set referencing it (``summary["output_format"]``) — the extras as NIfTI; 3D lesion summary."""
    from lungseg.data.nifti import dicom_affine, write_nifti

    if len(items) > 1:
        uids = [v.meta.get("series_uid", v.patient_id) for v in items]
        raise LungsegError(f"{inp}: holds {len(items)} CT series ({', '.join(map(str, uids))}); point to one series folder")
    vol = items[0]
    output_format = summary.get("output_format", "nifti")
    result_path, prefix = volume_outputs(out, output_format)
    check_output(result_path, [inp])
    headers = None
    if output_format != "nifti":  # re-read the series' headers before the (long) segmentation
        from lungseg.inference.dicom_out import read_source_headers

        headers = read_source_headers(vol.meta["files"])
    seg = segment(vol.image)
    ras = str(vol.meta.get("affine_space", "LPS")).upper() == "RAS" and vol.affine is not None
    affine = vol.affine if ras else dicom_affine(vol)
    mask = seg.mask.astype(np.uint8)
    if headers is None:
        written = [str(write_nifti(mask, result_path, affine=affine))]
    else:
        from lungseg.inference.dicom_out import write_dicom_seg, write_rtstruct

        writer = write_dicom_seg if output_format == "dicom-seg" else write_rtstruct
        written = [str(writer(mask, headers, result_path, summary["algorithm"]))]
    if probabilities:
        written.append(str(write_nifti(seg.probs.astype(np.float32), Path(f"{prefix}probability.nii.gz"), affine=affine)))
    for level, a in enumerate(seg.alphas):
        written.append(str(write_nifti(a.astype(np.float32), Path(f"{prefix}attention_level{level}.nii.gz"), affine=affine)))
    summary.update(shape=list(vol.image.shape), spacing_mm=list(vol.spacing), tumour_voxels=int(mask.sum()),
                   lesions=lesion_summary(mask, vol.spacing))
    return written, Path(f"{prefix}lesions.json")


def _write_images(inp: Path, items: list[Any], out: Path, segment: Any, probabilities: bool,
                  summary: dict[str, Any]) -> tuple[list[str], Path]:
    """One PNG mask (and extras) per input image, same size; 2D lesion summaries in pixels."""
    from PIL import Image

    def save_png(array01: np.ndarray, path: str | Path) -> str:
        Image.fromarray(np.round(np.clip(array01, 0, 1) * 255).astype(np.uint8)).save(path)
        return str(path)

    single_file = len(items) == 1 and out.suffix.lower() == ".png"
    written, per_image = [], []
    for path, img in items:
        seg = segment(img[None])
        if single_file:
            mask_path, prefix = out, f"{out.parent / _strip_suffix(out.name)}_"
        else:
            prefix = f"{out / _strip_suffix(path.name)}_"
            mask_path = Path(f"{prefix}mask.png")
        check_output(mask_path, [inp])
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        written.append(save_png((seg.mask[0] > 0).astype(np.float32), mask_path))
        if probabilities:
            written.append(save_png(seg.probs[0], f"{prefix}probability.png"))
        for level, a in enumerate(seg.alphas):
            written.append(save_png(a[0], f"{prefix}attention_level{level}.png"))
        per_image.append({"image": str(path), **image_lesion_summary(seg.mask[0], None)})
    summary["lesions"] = {
        "count": sum(p["count"] for p in per_image), "images": per_image,
        "note": "PNG/JPEG images carry no pixel spacing: sizes are in pixels",
    }
    lesion_path = (out.parent / f"{_strip_suffix(out.name)}_lesions.json") if single_file else out / "lesions.json"
    return written, lesion_path


def _write_npz(inp: Path, items: list[Any], out: Path, segment: Any, probabilities: bool,
               summary: dict[str, Any]) -> tuple[list[str], Path]:
    """The masks (and extras) of an ``.npz`` stack as ``.npz``; 2D lesion summaries per image."""
    images, _, spacing = items
    seg = segment(images)
    npz_path = out if out.suffix.lower() == ".npz" else out / "predictions.npz"
    check_output(npz_path, [inp])  # e.g. `predict data/predictions.npz --out data`
    arrays: dict[str, np.ndarray] = {"masks": seg.mask.astype(np.uint8)}
    if probabilities:
        arrays["probabilities"] = seg.probs.astype(np.float32)
    for level, a in enumerate(seg.alphas):
        arrays[f"attention_level{level}"] = a.astype(np.float32)
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(npz_path, **arrays)
    per_image = [
        {"index": i, **image_lesion_summary(seg.mask[i], None if spacing is None else tuple(spacing[i]))}
        for i in range(len(seg.mask))
    ]
    summary["lesions"] = {"count": sum(p["count"] for p in per_image), "images": per_image}
    return [str(npz_path)], npz_path.with_name(f"{_strip_suffix(npz_path.name)}_lesions.json")


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable account of :func:`predict`'s summary (a table for a folder of studies)."""
    if "studies" in summary:
        return format_study_table(summary)
    les = summary["lesions"]
    lines = [f"{les['count']} lesion(s) found in {summary['input']}"]
    for e in les.get("lesions", [])[:20]:
        if "volume_ml" in e:
            lines.append(
                f"  lesion {e['id']}: {e['volume_ml']:.3f} mL, equivalent diameter {e['equivalent_diameter_mm']:.1f} mm,"
                f" slices {e['slice_range'][0]}-{e['slice_range'][1]}"
            )
    lines.append("wrote: " + ", ".join(summary["files"]))
    return "\n".join(lines)


def format_study_table(summary: dict[str, Any]) -> str:
    """The summary table of a folder of studies (the rows of ``summary.csv``) as aligned text."""
    header = ("input", "slices", "tumour voxels", "volume mL", "seconds", "output")
    rows = []
    for r in summary["studies"]:
        name = Path(r["input"]).name
        if r.get("error"):
            rows.append((name, "-", "-", "-", f"{r['seconds']:.2f}", f"failed: {r['error']}"))
            continue
        volume = "-" if r["volume_ml"] is None else f"{r['volume_ml']:.3f}"
        rows.append((name, str(r["slices"]), str(r["tumour_voxels"]), volume, f"{r['seconds']:.2f}", r["output"]))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    right = (False, True, True, True, True)

    def line(cells: tuple[str, ...]) -> str:
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)]
        return "  ".join([*parts, cells[-1]])

    lines = [line(header), *(line(row) for row in rows)]
    n, failed = len(summary["studies"]), summary["failed"]
    lines.append(f"{n - failed} of {n} studies segmented" + (f", {failed} failed" if failed else "")
                 + f"; wrote {', '.join(summary['files'])}")
    return "\n".join(lines)
