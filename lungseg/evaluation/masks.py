"""Mask files made by any tool, paired by name and checked to lie on one voxel grid.

A folder of predictions and a folder of reference masks hold one file per case, ``<case>.nii.gz``,
``<case>.nii`` or ``<case>.dcm`` (a DICOM SEG), paired by ``<case>`` as nnU-Net's ``evaluate_folder``
pairs them. NIfTI masks must hold 0 and 1 only and share the reference's shape and affine (within
:data:`lungseg.data.msd.AFFINE_TOLERANCE_MM`): nothing is resampled, since a resampled mask would be
scored on voxels nobody drew. A DICOM SEG stores only its frames (lungseg's and most tools' omit the
empty ones) with their positions in patient space, so it is placed on the voxel grid of its NIfTI
partner frame by frame, and refused when a frame falls between the partner's voxels or outside them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lungseg.data.msd import AFFINE_TOLERANCE_MM, read_label
from lungseg.data.nifti import lps_to_ras
from lungseg.errors import DataError, describe

__all__ = ["MASK_SUFFIXES", "MaskPair", "pair_mask_files", "read_mask_pair"]

#: File names a mask may have: NIfTI, or a DICOM SEG.
MASK_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".dcm")


@dataclass(frozen=True)
class MaskPair:
    """One case: its name, the predicted mask file and the reference mask file."""

    case: str
    pred: Path
    ref: Path


def _case_name(path: Path) -> str | None:
    """``<case>`` of ``<case>.nii.gz`` / ``.nii`` / ``.dcm``; ``None`` for other files and hidden ones."""
    if path.name.startswith(".") or not path.is_file():
        return None
    for suffix in MASK_SUFFIXES:
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def _mask_files(folder: Path, flag: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{flag} {folder}: not a folder; expected a folder of .nii.gz/.nii/.dcm (DICOM SEG) masks")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        case = _case_name(path)
        if case is None:
            continue
        if case in found:
            raise DataError(f"{flag} {folder}: two masks of case {case!r} ({found[case].name}, {path.name}); keep one")
        found[case] = path
    if not found:
        raise DataError(f"{flag} {folder}: no mask files; expected <case>.nii.gz, <case>.nii or <case>.dcm (DICOM SEG)")
    return found


def pair_mask_files(pred_dir: str | os.PathLike[str], ref_dir: str | os.PathLike[str]) -> list[MaskPair]:
    """Pair each reference mask with the prediction of the same case name.

    Raises:
        DataError: a folder missing or without masks, a case with two masks, a reference case without a
            prediction (a tool that skipped a case must not score as if it had not), or a prediction
            without a reference.
    """
    preds, refs = _mask_files(Path(pred_dir), "--pred"), _mask_files(Path(ref_dir), "--ref")
    missing = sorted(set(refs) - set(preds))
    if missing:
        raise DataError(f"--pred {pred_dir}: no prediction for {len(missing)} reference case(s), e.g. {missing[0]!r}"
                        f" ({refs[missing[0]].name} in {ref_dir}); every reference case must be predicted")
    extra = sorted(set(preds) - set(refs))
    if extra:
        raise DataError(f"--pred {pred_dir}: {len(extra)} prediction(s) without a reference mask in {ref_dir},"
                        f" e.g. {preds[extra[0]].name}; remove them or add their references")
    return [MaskPair(case, preds[case], refs[case]) for case in sorted(refs)]


def _geometry(affine: np.ndarray, shape: tuple[int, ...]) -> str:
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    return (f"shape {tuple(shape)}, voxel {np.round(zooms[::-1], 4).tolist()} mm (z, y, x),"
            f" origin {np.round(affine[:3, 3], 3).tolist()} mm")


def _check_same_grid(pair: MaskPair, pred: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray]) -> None:
    (p, p_affine), (r, r_affine) = pred, ref
    if p.shape != r.shape or not np.allclose(p_affine, r_affine, rtol=0, atol=AFFINE_TOLERANCE_MM):
        raise DataError(
            f"{pair.pred}: its geometry ({_geometry(p_affine, p.shape)}) differs from the reference {pair.ref}"
            f" ({_geometry(r_affine, r.shape)}); masks are scored on the reference's voxel grid, not resampled"
        )


def _seg_on_grid(path: Path, shape: tuple[int, int, int], ras_affine: np.ndarray) -> np.ndarray:
    """The union of a DICOM SEG's segments placed on the ``(Z, H, W)`` grid of a NIfTI partner."""
    import highdicom

    try:
        volume = highdicom.seg.segread(path).get_volume(combine_segments=True)
    except Exception as exc:  # highdicom raises many types for files it cannot read or stack
        raise DataError(f"{path}: not a readable DICOM SEG, or its frames do not form a volume ({describe(exc)})") from None
    # SEG voxel (slice, row, column) -> LPS mm -> partner voxel (j, i, k): a signed permutation when
    # both lie on one grid
    to_partner = np.linalg.inv(lps_to_ras(ras_affine)) @ np.asarray(volume.affine, dtype=np.float64)
    linear, offset = to_partner[:3, :3], to_partner[:3, 3]
    tolerance = AFFINE_TOLERANCE_MM / np.sqrt((ras_affine[:3, :3] ** 2).sum(axis=0))  # mm in voxels, per axis
    whole = np.rint(np.c_[linear, offset])
    permutation = (np.abs(whole[:, :3]).sum(axis=0) == 1).all() and (np.abs(whole[:, :3]).sum(axis=1) == 1).all()
    if not permutation or (np.abs(np.c_[linear, offset] - whole) > tolerance[:, None]).any():
        raise DataError(f"{path}: its frames do not lie on the voxels of the reference grid ({_geometry(ras_affine, shape[::-1])});"
                        " masks are scored on the reference's voxel grid, not resampled")
    array = np.asarray(volume.array)
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in array.shape], indexing="ij")).reshape(3, -1)
    limits = np.array(shape[::-1])[:, None]  # (W, H, Z) for (j, i, k)
    placed = whole[:, :3] @ corners + whole[:, 3:]
    if (placed < 0).any() or (placed >= limits).any():
        raise DataError(f"{path}: its frames lie outside the reference grid ({_geometry(ras_affine, shape[::-1])})")
    j, i, k = (whole[:, :3] @ np.stack(np.nonzero(array)) + whole[:, 3:]).astype(np.int64)
    mask = np.zeros(shape, dtype=np.uint8)
    mask[k, i, j] = 1
    return mask


def read_mask_pair(pair: MaskPair) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Both masks of a case on the reference's grid.

    Returns:
        ``(pred, ref, spacing)``: uint8 ``(Z, H, W)`` masks in {0, 1} and the reference's ``(z, y, x)``
        spacing in mm.

    Raises:
        DataError: an unreadable file, values other than 0 and 1, a geometry other than the
            reference's, or two DICOM SEGs (neither holds the full grid).
    """
    pred_seg, ref_seg = (p.name.lower().endswith(".dcm") for p in (pair.pred, pair.ref))
    if pred_seg and ref_seg:
        raise DataError(f"{pair.pred} and {pair.ref}: two DICOM SEGs hold only their frames, not the scan's whole grid;"
                        " give the reference (or the prediction) as NIfTI")
    if ref_seg:
        pred, spacing, affine = read_label(pair.pred)
        return pred, _seg_on_grid(pair.ref, pred.shape, affine), spacing
    ref, spacing, affine = read_label(pair.ref)
    if pred_seg:
        return _seg_on_grid(pair.pred, ref.shape, affine), ref, spacing
    pred, _, pred_affine = read_label(pair.pred)
    _check_same_grid(pair, (pred, pred_affine), (ref, affine))
    return pred, ref, spacing
