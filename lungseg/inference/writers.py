"""Writing :func:`lungseg.inference.predict`'s results in the input's own geometry, and reporting them.

A volume's mask is a NIfTI volume with the input's shape, voxel order and affine (for a DICOM series,
the RAS affine that overlays the series voxel for voxel), or for a DICOM series a DICOM SEG or RT
Structure Set (:mod:`lungseg.inference.dicom_out`) referencing its slices: a volume the readers
reoriented is put back in its file's voxel order first (:func:`lungseg.data.nifti.as_stored`); an image's mask is a PNG of the same size; an ``.npz`` input's
masks are an ``.npz`` with ``masks``. The probability map and the attention coefficients of every
gate go beside the mask on request. Where each result goes is decided here too
(:func:`volume_outputs`, :func:`study_output`), and :func:`format_summary` reports a prediction.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.errors import LungsegError
from lungseg.files import atomic_file, write_csv
from lungseg.inference.dicom_out import FORMATS
from lungseg.inference.predictor import Segmentation
from lungseg.inference.readers import VOLUME_SUFFIXES, strip_suffix

__all__ = [
    "SUMMARY_COLUMNS", "SUMMARY_TABLE", "check_format", "extra_outputs", "format_study_table", "format_summary",
    "image_outputs",
    "npz_output", "study_output", "volume_outputs", "write_image", "write_npz", "write_study_table", "write_volume",
]

# the result file of a volume written to a folder, per output format
_RESULT_NAMES = {"nifti": "mask.nii.gz", "dicom-seg": "seg.dcm", "rtstruct": "rtstruct.dcm"}
SUMMARY_TABLE = "summary.csv"
#: ``set_aside``/``set_aside_ml``: the candidates left out of the mask as lying mostly outside the lungs or as
#: unsure (:func:`lungseg.inference.scan.segment_scan`; 0 where none were, or the scan was searched whole);
#: ``planes``: the slices the network ran on (``"axial"`` or ``"three"``); ``precision``: the arithmetic it ran in
#: (``"fp32"``, ``"bf16"`` or ``"fp16"``, :func:`lungseg.device.resolve_prediction_precision`); ``lesions``: the
#: candidates in the mask.
SUMMARY_COLUMNS: tuple[str, ...] = ("input", "slices", "lesions", "tumour_voxels", "volume_ml", "set_aside",
                                    "set_aside_ml", "planes", "coarse_pass", "precision", "output", "seconds", "error")


def check_format(output_format: str) -> None:
    """Refuse an output format that is not one of :data:`lungseg.inference.dicom_out.FORMATS`."""
    if output_format not in FORMATS:
        raise LungsegError(f"output format must be one of {', '.join(FORMATS)}; got {output_format!r}")


def study_output(out: str | os.PathLike[str], study: str | os.PathLike[str]) -> Path:
    """The output folder of one study of a folder of studies: ``out/<study name without .nii/.nii.gz>``."""
    return Path(out) / strip_suffix(Path(study).name)


def volume_outputs(out: str | os.PathLike[str], output_format: str = "nifti") -> tuple[Path, str]:
    """Where a volume's result goes: ``(result file, prefix of the extras and the lesion summary)``.

    ``out`` is the result file itself when it has the format's suffix (``.nii``/``.nii.gz`` for
    ``"nifti"``, ``.dcm`` for ``"dicom-seg"`` and ``"rtstruct"``), the extras then being
    ``<out without suffix>_probability.nii.gz`` etc.; otherwise it is a folder receiving
    ``mask.nii.gz``, ``seg.dcm`` or ``rtstruct.dcm`` and ``probability.nii.gz`` etc.
    """
    out = Path(out)
    check_format(output_format)
    name = out.name.lower()
    is_file = name.endswith(VOLUME_SUFFIXES) if output_format == "nifti" else name.endswith(".dcm")
    if is_file:
        stem = out.name[: -len(".dcm")] if name.endswith(".dcm") else strip_suffix(out.name)
        return out, f"{out.parent / stem}_"
    if output_format != "nifti" and name.endswith(VOLUME_SUFFIXES):
        raise LungsegError(f"--out {out}: a {output_format} result is a .dcm file (or a folder), not NIfTI")
    return out / _RESULT_NAMES[output_format], f"{out}/"


def extra_outputs(prefix: str, suffix: str, probabilities: bool, attention_levels: int) -> list[Path]:
    """The extras written beside a mask, in order: ``<prefix>probability<suffix>`` when ``probabilities``,
    then ``<prefix>attention_level<k><suffix>`` for each of ``attention_levels`` gates (the output guard
    checks these names before anything is written, as it does the mask's)."""
    names = (["probability"] if probabilities else []) + [f"attention_level{k}" for k in range(attention_levels)]
    return [Path(f"{prefix}{name}{suffix}") for name in names]


def _extra_maps(seg: Segmentation, probabilities: bool) -> list[np.ndarray]:
    """The arrays of :func:`extra_outputs`, in its order, as float32."""
    return [a.astype(np.float32) for a in ([seg.probs] if probabilities else []) + list(seg.alphas)]


def write_volume(vol: Any, seg: Segmentation, result_path: Path, prefix: str, *, probabilities: bool,
                 headers: list[Any] | None = None, output_format: str = "nifti",
                 algorithm: dict[str, Any] | None = None) -> list[str]:
    """A volume's mask in the input's own geometry — NIfTI with the input's shape, voxel order and
    affine, or with the series' ``headers`` a DICOM SEG or RT Structure Set (``output_format``)
    referencing its slices — and the extras as NIfTI beside it, in the same geometry: the
    probabilities when ``probabilities``, and the gate maps ``seg.alphas``. ``seg`` lies on
    ``vol``'s grid (the common orientation when the reader reoriented ``vol``).

    Returns:
        The files written, the mask first.
    """
    from lungseg.data.nifti import as_stored, stored_ras_affine, write_nifti

    affine = stored_ras_affine(vol)
    mask = as_stored(seg.mask.astype(np.uint8), vol)
    if headers is None:
        written = [str(write_nifti(mask, result_path, affine=affine))]
    else:
        from lungseg.inference.dicom_out import write_dicom_seg, write_rtstruct

        writer = write_dicom_seg if output_format == "dicom-seg" else write_rtstruct
        written = [str(writer(mask, headers, result_path, algorithm or {}))]
    extras = extra_outputs(prefix, ".nii.gz", probabilities, len(seg.alphas))
    for path, array in zip(extras, _extra_maps(seg, probabilities)):
        written.append(str(write_nifti(as_stored(array, vol), path, affine=affine)))
    return written


def image_outputs(out: Path, image: Path, single_file: bool) -> tuple[Path, str]:
    """``(mask file, prefix of the extras)`` of one input image: ``out`` itself for a single image
    written to a ``.png``, else ``out/<name>_mask.png``."""
    if single_file:
        return out, f"{out.parent / strip_suffix(out.name)}_"
    prefix = f"{out / strip_suffix(image.name)}_"
    return Path(f"{prefix}mask.png"), prefix


def _save_png(array01: np.ndarray, path: str | Path) -> str:
    from PIL import Image

    with atomic_file(path) as fh:
        Image.fromarray(np.round(np.clip(array01, 0, 1) * 255).astype(np.uint8)).save(fh, format="PNG")
    return str(path)


def write_image(seg: Segmentation, mask_path: Path, prefix: str, probabilities: bool) -> list[str]:
    """One image's mask as a PNG (0/255) of its size, and the extras (the probabilities when
    ``probabilities``, the gate maps) as PNGs ``<prefix>probability.png``, ``<prefix>attention_level<k>.png``."""
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    written = [_save_png((seg.mask[0] > 0).astype(np.float32), mask_path)]
    extras = extra_outputs(prefix, ".png", probabilities, len(seg.alphas))
    for path, array in zip(extras, _extra_maps(seg, probabilities)):
        written.append(_save_png(array[0], path))
    return written


def npz_output(out: Path) -> Path:
    """The ``.npz`` of an ``.npz`` input's masks: ``out`` itself when it ends in ``.npz``, else ``out/predictions.npz``."""
    return out if out.suffix.lower() == ".npz" else out / "predictions.npz"


def write_npz(seg: Segmentation, npz_path: Path, probabilities: bool) -> list[str]:
    """The masks (uint8 ``masks``) and extras (``probabilities`` when asked for, ``attention_level<k>``)
    of an ``.npz`` stack as one compressed ``.npz``."""
    arrays: dict[str, np.ndarray] = {"masks": seg.mask.astype(np.uint8)}
    if probabilities:
        arrays["probabilities"] = seg.probs.astype(np.float32)
    for level, a in enumerate(seg.alphas):
        arrays[f"attention_level{level}"] = a.astype(np.float32)
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(npz_path) as fh:
        np.savez_compressed(fh, **arrays)
    return [str(npz_path)]


def write_study_table(table: Path, rows: list[dict[str, Any]]) -> None:
    """``summary.csv`` of a folder of studies: one row per study, the columns :data:`SUMMARY_COLUMNS`."""
    table.parent.mkdir(parents=True, exist_ok=True)
    write_csv(table, rows, SUMMARY_COLUMNS)


#: Lesions :func:`format_summary` lists one by one, largest first.
_SHOWN = 20


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable account of :func:`lungseg.inference.predict`'s summary (a table for a folder of studies)."""
    if "studies" in summary:
        return format_study_table(summary)
    les = summary["lesions"]
    lines = [f"{les['count']} lesion(s) found in {summary['input']}"]
    how = ["the network run on axial, coronal and sagittal slices; --planes axial for axial only"
           ] if summary.get("planes") == "three" else []
    if summary.get("coarse_pass"):
        how.append("also at twice its pixel size: --coarse-pass on")
    if how:
        lines[0] += f" ({'; '.join(how)})"
    if summary.get("planes_note"):
        lines.append(f"note: {summary['planes_note']}")
    shown = [e for e in les.get("lesions", []) if "volume_ml" in e][:_SHOWN]
    for e in shown:
        sure = f", peak probability {e['peak_probability']:.2f}" if "peak_probability" in e else ""
        lines.append(
            f"  lesion {e['id']}: {e['volume_ml']:.3f} mL, equivalent diameter {e['equivalent_diameter_mm']:.1f} mm,"
            f" slices {e['slice_range'][0]}-{e['slice_range'][1]}{sure}"
        )
    if shown and les["count"] > len(shown):
        lines.append(f"  ... and {les['count'] - len(shown)} more (every lesion is in the lesion summary)")
    aside = summary.get("set_aside")
    if aside and aside["count"]:
        reasons = [les.get("reason", "outside the lungs") for les in aside["lesions"]]
        why = ", ".join(f"{reasons.count(r)} {r}" for r in ("outside the lungs", "unsure") if r in reasons)
        lines.append(f"{aside['count']} candidate(s), {_ml(aside['total_volume_ml'])} mL in all, set aside ({why}; listed in"
                     " the lesion summary; --keep-outside-lungs and --keep-unsure keep them)")
    lines.append("wrote: " + ", ".join(summary["files"]))
    return "\n".join(lines)


def _ml(volume_ml: float) -> str:
    """A volume in mL for the printed summaries: two significant digits below 1 mL (0.058, not 0.1)."""
    return f"{volume_ml:.2g}" if volume_ml < 1 else f"{volume_ml:.1f}"


def format_study_table(summary: dict[str, Any]) -> str:
    """The summary table of a folder of studies (the rows of ``summary.csv``) as aligned text."""
    header = ("input", "slices", "tumour voxels", "volume mL", "set aside", "seconds", "output")
    rows = []
    for r in summary["studies"]:
        name = Path(r["input"]).name
        if r.get("error"):
            rows.append((name, "-", "-", "-", "-", f"{r['seconds']:.2f}", f"failed: {r['error']}"))
            continue
        volume = "-" if r["volume_ml"] is None else f"{r['volume_ml']:.3f}"
        aside = f"{r['set_aside']} ({_ml(r['set_aside_ml'])} mL)" if r["set_aside"] else "0"
        rows.append((name, str(r["slices"]), str(r["tumour_voxels"]), volume, aside, f"{r['seconds']:.2f}", r["output"]))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    right = (False, True, True, True, True, True)

    def line(cells: tuple[str, ...]) -> str:
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)]
        return "  ".join([*parts, cells[-1]])

    lines = [line(header), *(line(row) for row in rows)]
    n, failed = len(summary["studies"]), summary["failed"]
    lines.append(f"{n - failed} of {n} studies segmented" + (f", {failed} failed" if failed else "")
                 + f"; wrote {', '.join(summary['files'])}")
    return "\n".join(lines)
