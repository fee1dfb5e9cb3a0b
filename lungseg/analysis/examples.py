"""Which slices a figure shows: representative test slices chosen by rule, not by hand (chapter 6)."""

from __future__ import annotations

from typing import Any

__all__ = ["example_slices"]


def _juxta_pleural(manifest: dict[str, Any], patient_ids: list[str],
                   area_of: dict[tuple[str, int], int]) -> tuple[str, int, int] | None:
    """The central slice of the first juxta-pleural tumour the phantom manifest lists among
    ``patient_ids`` whose slice holds tumour pixels, as ``(patient_id, slice, pixels)``."""
    for record in manifest.get("patients", []):
        pid = record["patient_id"]
        if pid not in patient_ids:
            continue
        pleural = [t for t in record["tumours"] if t.get("location") == "juxta-pleural"]
        if pleural:
            z = int(round(pleural[0]["centre_voxel_zyx"][0]))
            if area_of.get((pid, z), 0) > 0:
                return pid, z, area_of[(pid, z)]
    return None


def example_slices(dataset: Any, patient_ids: list[str], manifest: dict[str, Any] | None = None,
                   min_pixels: int = 8) -> dict[str, tuple[str, int, int]]:
    """Representative slices for the figures: ``{label: (patient_id, slice, tumour pixels)}``.

    Labels: ``"largest tumour"``, ``"smallest tumour"`` (the smallest cross-section of at least
    ``min_pixels`` pixels, so that it is visible), ``"juxta-pleural tumour"`` (the central slice of
    the first tumour the phantom manifest locates on the chest wall, if any among ``patient_ids``)
    and ``"tumour-free"`` (the middle tumour-free slice of the first patient that has one). A label
    with no matching slice is left out.

    Args:
        dataset: ``{patient_id: CTVolume}`` (e.g. a :class:`lungseg.data.CTDataset`).
        patient_ids: the patients to choose from (e.g. the test split).
        manifest: a phantom study's manifest (``None``: no juxta-pleural row).
        min_pixels: the smallest tumour cross-section worth showing.
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
    pleural = None if manifest is None else _juxta_pleural(manifest, patient_ids, {(p, z): a for a, p, z in areas})
    if pleural is not None:
        found["juxta-pleural tumour"] = pleural
    for pid in patient_ids:
        free = [z for a, p, z in areas if p == pid and a == 0]
        if free:
            found["tumour-free"] = (pid, free[len(free) // 2], 0)
            break
    return found
