"""Phantom patients and studies: :func:`generate_patient` in memory, :func:`generate_study` on disk
(DICOM series + NIfTI tumour masks + a JSON manifest), :func:`load_study` to read one back."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lungseg.data.dicom import read_dicom_series
from lungseg.data.dicom_write import write_dicom_series
from lungseg.data.nifti import affine_from_geometry, dicom_affine, read_nifti, write_nifti
from lungseg.data.phantom.anatomy import Patient
from lungseg.data.phantom.config import GENERATOR_VERSION, MANIFEST_FORMAT, PhantomConfig
from lungseg.data.phantom.randomise import AppearanceRandomisation, randomise_appearance
from lungseg.data.phantom.tumours import add_tumours
from lungseg.data.volume import CTVolume
from lungseg.errors import DataError, LungsegError
from lungseg.files import atomic_write_text

__all__ = ["PhantomStudy", "generate_patient", "generate_study", "load_study"]


def generate_patient(
    seed: int | Sequence[int], config: PhantomConfig | None = None, patient_id: str | None = None,
) -> tuple[CTVolume, list[dict[str, Any]]]:
    """Generate one synthetic chest-CT patient.

    Args:
        seed: integer (or sequence of integers) seeding ``numpy.random.default_rng``; the same seed
            and config always give identical arrays and tumour records.
        config: generator settings; default :class:`PhantomConfig`.
        patient_id: id stored in the volume; default ``"phantom-<seed>"``.

    Returns:
        ``(volume, tumours)``: ``volume.image`` float32 ``(Z, H, W)`` integral HU, ``volume.mask``
        uint8 ``(Z, H, W)`` tumour mask inside the lungs, LPS ``affine``; ``volume.meta`` holds the
        patient parameters, ``"tissue"`` (uint8 ``(Z, H, W)`` labels, see :data:`TISSUE_LABELS`)
        and ``"lung_mask"``. ``tumours`` lists each tumour's type, shape, placement, measured
        location, centre (voxel and LPS mm), equivalent diameter and slice range.
    """
    config = config or PhantomConfig()
    seed_list = [int(seed)] if np.isscalar(seed) else [int(s) for s in seed]
    rng = np.random.default_rng(seed_list)
    patient_id = patient_id or f"phantom-{'-'.join(map(str, seed_list))}"
    p = Patient(rng, config)
    p.build_anatomy()
    p.build_trees()
    tumours = add_tumours(p)
    image = p.image_effects()
    affine = affine_from_geometry(p.grid.origin, (1, 0, 0, 0, 1, 0), p.spacing)
    meta = {
        "format": MANIFEST_FORMAT,
        "affine_space": "LPS",
        "slice_thickness": p.spacing[0],
        "seed": seed_list,
        "params": p.params,
        "tumours": tumours,
        "tissue": p.tissue,
        "lung_mask": p.lung.astype(np.uint8),
    }
    volume = CTVolume(
        image=image, mask=p.mask, spacing=p.spacing, patient_id=patient_id, affine=affine,
        intensity="hu", source="phantom", meta=meta,
    )
    return volume, tumours


def generate_study(
    out_dir: str | Path,
    n_patients: int,
    seed: int,
    config: PhantomConfig | None = None,
    progress: bool = True,
    *,
    overwrite: bool = False,
    randomisation: AppearanceRandomisation | None = None,
    workers: int = 1,
) -> Path:
    """Generate a study on disk: ``<patient_id>/ct/*.dcm``, ``<patient_id>/mask.nii.gz``, ``manifest.json``.

    Args:
        out_dir: output folder; must be empty or absent unless ``overwrite``.
        n_patients: number of patients (``phantom-000`` ...).
        seed: study seed; patient ``i`` uses ``generate_patient((seed, i), config)``.
        config: generator settings; default :class:`PhantomConfig`.
        progress: show a tqdm bar over patients.
        overwrite: replace an earlier phantom study in ``out_dir`` (only its manifest and patient
            folders are removed).
        randomisation: repaint each patient with :func:`~lungseg.data.phantom.randomise.randomise_appearance`
            (patient ``i`` seeded ``(seed, i, 1)``; the masks do not change), or ``None`` for the phantom as
            generated. The manifest records the settings and each patient's draws.
        workers: processes writing patients side by side (each patient depends only on its own seed,
            so any number gives the same files).

    Returns:
        ``out_dir`` as a ``Path``. The same arguments always write byte-identical files.
    """
    if int(n_patients) != n_patients or n_patients < 1:
        raise ValueError(f"n_patients must be a positive integer, got {n_patients!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    config = config or PhantomConfig()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise LungsegError(f"{out}: output path exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        manifest_path = out / "manifest.json"
        if not overwrite:
            raise LungsegError(f"{out}: output folder is not empty; choose a new folder (an earlier phantom study there can be replaced with overwrite=True)")
        try:
            old = json.loads(manifest_path.read_text())
            assert old.get("format") == MANIFEST_FORMAT
        except Exception:
            raise LungsegError(
                f"{out}: not an earlier lungseg phantom study (no valid manifest.json); refusing to overwrite it"
            ) from None
        for patient in old.get("patients", []):
            shutil.rmtree(out / str(patient["patient_id"]), ignore_errors=True)
        manifest_path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(out, int(seed), i, config, randomisation) for i in range(int(n_patients))]
    if workers == 1:
        patients = [_write_patient(*job) for job in tqdm(jobs, desc="phantom patients", disable=not progress)]
    else:
        # spawn, not fork: a caller may already run torch's thread pool, which fork would copy
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            patients = list(tqdm(pool.map(_write_patient, *zip(*jobs), chunksize=4), total=len(jobs),
                                 desc="phantom patients", disable=not progress))
        finally:  # on an error, the patients not yet started are dropped rather than waited for
            pool.shutdown(wait=True, cancel_futures=True)
    manifest = {
        "format": MANIFEST_FORMAT,
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "n_patients": int(n_patients),
        "config": config.to_dict(),
        **({"randomisation": randomisation.to_dict()} if randomisation is not None else {}),
        "note": "synthetic chest CT (lungseg phantom); not patient data",
        "patients": patients,
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1))
    return out


def _write_patient(out: Path, seed: int, i: int, config: PhantomConfig,
                   randomisation: AppearanceRandomisation | None) -> dict[str, Any]:
    """Patient ``i`` of study ``seed`` written to ``out/<patient_id>`` (DICOM series and NIfTI mask); returns
    its manifest record. Depends on nothing but its arguments, so patients can be written in any order."""
    pid = f"phantom-{i:03d}"
    volume, tumours = generate_patient((seed, i), config, patient_id=pid)
    if randomisation is not None:
        volume = randomise_appearance(volume, (seed, i, 1), randomisation)
    write_dicom_series(volume, out / pid / "ct", uid_seed=f"phantom:{seed}:{i}",
                       series_description="lungseg synthetic chest CT")
    write_nifti(volume.mask, out / pid / "mask.nii.gz", affine=dicom_affine(volume))
    return {
        "patient_id": pid,
        "seed": [seed, i],
        "shape_zyx": list(volume.image.shape),
        "spacing_zyx_mm": list(volume.spacing),
        "params": volume.meta["params"],
        "n_tumours": len(tumours),
        "tumour_voxels": int(volume.mask.sum()),
        "tumours": tumours,
        **({"appearance": volume.meta["appearance"]} if randomisation is not None else {}),
    }


class PhantomStudy(Sequence[CTVolume]):
    """A generated study read back lazily: each item is read from its DICOM series and NIfTI mask.

    Index by position or by patient id; ``patient_ids`` and ``manifest`` describe the study.
    """

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        self.patient_ids: list[str] = [str(p["patient_id"]) for p in manifest["patients"]]
        self._records = {str(p["patient_id"]): p for p in manifest["patients"]}

    def __len__(self) -> int:
        return len(self.patient_ids)

    def __iter__(self) -> Iterator[CTVolume]:
        for pid in self.patient_ids:
            yield self[pid]

    def __getitem__(self, key: int | str) -> CTVolume:  # type: ignore[override]
        if isinstance(key, (int, np.integer)):
            pid = self.patient_ids[key]
        elif key in self._records:
            pid = key
        else:
            raise KeyError(f"patient {key!r} not in study {self.root}")
        ct_dir, mask_path = self.root / pid / "ct", self.root / pid / "mask.nii.gz"
        volumes = read_dicom_series(ct_dir)
        if len(volumes) != 1:
            raise DataError(f"{ct_dir}: expected one CT series, found {len(volumes)}")
        volume = volumes[0]
        mask, _, mask_affine = read_nifti(mask_path)
        if mask.shape != volume.image.shape:
            raise DataError(f"{mask_path}: mask shape {mask.shape} does not match the CT series {volume.image.shape}")
        if not np.allclose(mask_affine, dicom_affine(volume), atol=1e-3):
            raise DataError(f"{mask_path}: mask geometry (affine) does not match the CT series in {ct_dir}")
        values = np.unique(mask)
        if not np.all(np.isin(values, (0, 1))):
            raise DataError(f"{mask_path}: mask values must be 0/1, found {values[:10].tolist()}")
        volume.mask = mask.astype(np.uint8)
        volume.patient_id = pid
        volume.meta["tumours"] = self._records[pid]["tumours"]
        volume.meta["phantom"] = {k: v for k, v in self._records[pid].items() if k != "tumours"}
        return volume


def load_study(directory: str | Path) -> PhantomStudy:
    """Open a study written by :func:`generate_study` (volumes are read on access).

    Raises:
        DataError: no ``manifest.json``, a manifest of another format, or missing patient folders.
    """
    root = Path(directory)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(f"{root}: no manifest.json; expected a study written by `lungseg phantom`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{manifest_path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{manifest_path}: format is not {MANIFEST_FORMAT!r}")
    for p in manifest.get("patients", []):
        if not (root / str(p["patient_id"]) / "ct").is_dir():
            raise DataError(f"{root / str(p['patient_id'])}: patient folder listed in the manifest is missing")
    return PhantomStudy(root, manifest)
