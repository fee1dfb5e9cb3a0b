"""The synthetic chest-CT generator (lungseg.data.phantom): realism, tumours, files, determinism."""

from __future__ import annotations

import json
import time

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage

from lungseg.data.dicom import read_dicom_series
from lungseg.data.nifti import dicom_affine, lps_to_ras, read_nifti
from lungseg.data.phantom import (
    GENERATOR_VERSION,
    JUXTA_MEDIASTINAL,
    MANIFEST_FORMAT,
    TISSUE_LABELS,
    PhantomConfig,
    generate_patient,
    generate_study,
    load_study,
)
from lungseg.errors import DataError, LungsegError

SMALL = PhantomConfig(image_size=64, n_slices=8)
MEDIUM = PhantomConfig(image_size=128, n_slices=12)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom") / "study"
    generate_study(out, n_patients=4, seed=7, config=SMALL, progress=False)
    return out


@pytest.fixture(scope="module")
def cohort():
    """Thirty small in-memory patients for the population statistics."""
    return [generate_patient(seed, SMALL) for seed in range(30)]


def test_study_layout_and_manifest(study):
    manifest = json.loads((study / "manifest.json").read_text())
    assert manifest["format"] == MANIFEST_FORMAT
    assert manifest["generator_version"] == GENERATOR_VERSION
    assert manifest["seed"] == 7
    assert PhantomConfig.from_dict(manifest["config"]) == SMALL
    assert [p["patient_id"] for p in manifest["patients"]] == [f"phantom-{i:03d}" for i in range(4)]
    for p in manifest["patients"]:
        assert len(list((study / p["patient_id"] / "ct").glob("*.dcm"))) == SMALL.n_slices
        assert (study / p["patient_id"] / "mask.nii.gz").is_file()
        assert p["n_tumours"] == len(p["tumours"])
        for t in p["tumours"]:
            assert t["type"] in ("solid", "part-solid", "ground-glass")
            assert t["shape"] in ("smooth", "lobulated", "spiculated")
            assert t["location"] in ("isolated", "juxta-pleural", "juxta-vascular")
            assert set(t) >= {"centre_voxel_zyx", "centre_mm_lps", "equivalent_diameter_mm", "slices"}


def test_study_reads_back_exactly_through_dicom_and_nifti(study):
    volumes = load_study(study)
    assert len(volumes) == 4
    manifest = volumes.manifest
    for i, volume in enumerate(volumes):
        expected, tumours = generate_patient((7, i), SMALL, patient_id=f"phantom-{i:03d}")
        assert volume.patient_id == expected.patient_id
        np.testing.assert_array_equal(volume.image, expected.image)
        np.testing.assert_array_equal(volume.mask, expected.mask)
        assert volume.spacing == pytest.approx(expected.spacing, abs=1e-9)
        np.testing.assert_allclose(volume.affine, expected.affine, atol=1e-6)
        assert volume.meta["tumours"] == tumours == manifest["patients"][i]["tumours"]
    assert volumes["phantom-002"].patient_id == "phantom-002"


def test_mask_is_aligned_with_the_series_in_world_coordinates(study):
    """A mask voxel and the DICOM pixel with the same index sit at the same patient position."""
    patient = study / "phantom-001"
    (series,) = read_dicom_series(patient / "ct")
    mask_img = nib.load(str(patient / "mask.nii.gz"))
    k, i, j = 3, 10, 40
    ds = pydicom.dcmread(sorted((patient / "ct").glob("*.dcm"))[k])
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient]).reshape(2, 3)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    lps = ipp + j * dx * iop[0] + i * dy * iop[1]
    ras = (mask_img.affine @ np.array([j, i, k, 1.0]))[:3]
    np.testing.assert_allclose(ras, lps * np.array([-1, -1, 1]), atol=1e-4)
    np.testing.assert_allclose(mask_img.affine, dicom_affine(series), atol=1e-6)
    mask, _, _ = read_nifti(patient / "mask.nii.gz")
    assert mask.shape == series.image.shape and mask.dtype == np.uint8


def test_tumour_centres_agree_with_the_masks_and_the_affine(study):
    volumes = load_study(study)
    checked = 0
    for volume in volumes:
        for t in volume.meta["tumours"]:
            k, i, j = t["centre_voxel_zyx"]
            world = (volume.affine @ np.array([j, i, k, 1.0]))[:3]
            np.testing.assert_allclose(world, t["centre_mm_lps"], atol=0.001 * max(volume.spacing) + 0.002)
            z0, z1 = t["slices"]
            assert volume.mask[z0].any() and volume.mask[z1].any()
            checked += 1
    assert volumes and sum(int(v.mask.sum()) for v in volumes) == sum(
        t["n_voxels"] for p in volumes.manifest["patients"] for t in p["tumours"])
    assert checked == sum(p["n_tumours"] for p in volumes.manifest["patients"])


def test_tissue_hounsfield_ranges():
    volume, _ = generate_patient(3, MEDIUM)
    tissue, image = volume.meta["tissue"], volume.image

    def median(name: str) -> float:
        return float(np.median(image[tissue == TISSUE_LABELS[name]]))

    lung = float(np.median(image[volume.meta["lung_mask"] > 0]))
    assert -900 <= lung <= -750
    assert median("air") < -950
    assert -150 <= median("fat") <= -50
    assert 0 <= median("muscle") <= 65
    assert median("bone") > 200
    assert 20 <= median("abdomen") <= 90
    assert median("vessel") > lung + 300  # vessels are far denser than the parenchyma around them
    posterior = image[:, 64:, :][volume.meta["lung_mask"][:, 64:, :] > 0]
    anterior = image[:, :64, :][volume.meta["lung_mask"][:, :64, :] > 0]
    assert np.median(posterior) > np.median(anterior)  # dependent density gradient
    assert np.array_equal(image, np.round(image))  # CT values are integers


def test_anatomy_varies_between_patients_and_has_the_expected_structures(cohort):
    sizes = {tuple(v.meta["params"]["body_semi_axes_mm"]) for v, _ in cohort}
    spacings = {v.spacing for v, _ in cohort}
    assert len(sizes) == len(cohort) and len(spacings) > 20
    for volume, _ in cohort[:5]:
        tissue = volume.meta["tissue"]
        present = {name for name, label in TISSUE_LABELS.items() if (tissue == label).any()}
        assert {"air", "fat", "muscle", "bone", "lung", "vessel", "mediastinum"} <= present
        assert (tissue[0] == TISSUE_LABELS["abdomen"]).any()  # liver dome in the lowest slice
        assert not (tissue[-1] == TISSUE_LABELS["abdomen"]).any()
        lungs = volume.meta["lung_mask"][volume.n_slices // 2]
        _, n_lungs = __import__("scipy").ndimage.label(lungs)
        assert n_lungs >= 2


def test_tumour_statistics(cohort):
    counts = [len(t) for _, t in cohort]
    assert 0 in counts and max(counts) <= 3
    tumours = [t for _, ts in cohort for t in ts]
    diameters = np.array([t["equivalent_diameter_mm"] for t in tumours])
    assert np.all((diameters >= 3.0) & (diameters <= 50.0))
    assert np.mean(diameters < 15) > 0.4  # log-uniform: small lesions are common
    assert {t["type"] for t in tumours} == {"solid", "part-solid", "ground-glass"}
    assert {t["location"] for t in tumours} >= {"isolated", "juxta-pleural"}
    for volume, ts in cohort:
        mask = volume.mask.astype(bool)
        assert not np.any(mask & (volume.meta["lung_mask"] == 0)), "tumour mask outside the lungs"
        assert int(mask.sum()) == sum(t["n_voxels"] for t in ts)
        assert set(np.unique(volume.mask)) <= {0, 1}
        if not ts:
            assert not mask.any()
        for t in ts:
            assert t["slices"][1] >= t["slices"][0]


def test_tumour_types_have_their_densities():
    volume, tumours = generate_patient(11, PhantomConfig(
        image_size=128, n_slices=12, tumour_count_probs=(0, 0, 0, 1), tumour_type_probs=(0, 0, 1),
        diameter_range_mm=(15, 30), noise_std_range=(5, 5)))
    ggo = np.median(volume.image[volume.mask > 0])
    assert -700 <= ggo <= -200
    volume, _ = generate_patient(11, PhantomConfig(
        image_size=128, n_slices=12, tumour_count_probs=(0, 0, 0, 1), tumour_type_probs=(1, 0, 0),
        diameter_range_mm=(15, 30), noise_std_range=(5, 5)))
    assert np.median(volume.image[volume.mask > 0]) > -150


def test_tumours_persist_across_slices():
    volume, tumours = generate_patient(5, PhantomConfig(
        image_size=128, n_slices=16, tumour_count_probs=(0, 1, 0, 0), diameter_range_mm=(20, 30)))
    (t,) = tumours
    assert t["slices"][1] - t["slices"][0] + 1 >= 5


def test_tumours_can_be_placed_against_the_mediastinum():
    config = PhantomConfig(image_size=128, n_slices=16, tumour_count_probs=(0, 0, 0, 1), diameter_range_mm=(8, 30),
                           juxta_mediastinal_share=1.0)
    touching = 0
    for k in range(3):
        volume, tumours = generate_patient((11, k), config)
        assert tumours and all(t["placement"] == JUXTA_MEDIASTINAL for t in tumours)
        grown = ndimage.binary_dilation(volume.mask > 0) & (volume.mask == 0)
        mediastinum = volume.meta["tissue"] == TISSUE_LABELS["mediastinum"]
        touching += int((grown & mediastinum).any())
        named = [t for t in tumours if t["location"] == JUXTA_MEDIASTINAL]
        assert len(named) >= len(tumours) - 1  # a tumour squeezed against the chest wall too may read juxta-pleural
    assert touching == 3


def test_a_setting_added_later_leaves_earlier_studies_as_they_were():
    """At its default the new setting is not written (so the manifests, and fingerprints, of published studies
    stay the same) and draws nothing (so their patients stay the same)."""
    assert "juxta_mediastinal_share" not in PhantomConfig().to_dict()
    assert PhantomConfig.from_dict(PhantomConfig().to_dict()) == PhantomConfig()
    asked = PhantomConfig(juxta_mediastinal_share=0.2)
    assert asked.to_dict()["juxta_mediastinal_share"] == 0.2 and PhantomConfig.from_dict(asked.to_dict()) == asked
    small = dict(image_size=96, n_slices=12, tumour_count_probs=(0, 0, 0, 1))
    plain, _ = generate_patient(3, PhantomConfig(**small))
    moved, tumours = generate_patient(3, PhantomConfig(**small, juxta_mediastinal_share=1.0))
    assert np.array_equal(plain.mask, generate_patient(3, PhantomConfig(**small, juxta_mediastinal_share=0.0))[0].mask)
    assert not np.array_equal(plain.mask, moved.mask)  # the setting does move the tumours


def test_generation_is_deterministic(tmp_path):
    a, ta = generate_patient(42, SMALL)
    b, tb = generate_patient(42, SMALL)
    c, _ = generate_patient(43, SMALL)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert ta == tb
    assert not np.array_equal(a.image, c.image)
    generate_study(tmp_path / "one", 2, seed=1, config=SMALL, progress=False)
    generate_study(tmp_path / "two", 2, seed=1, config=SMALL, progress=False)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert len(files) == 2 * (SMALL.n_slices + 1) + 1
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel


def test_a_study_written_by_several_processes_is_the_same_study(tmp_path):
    """Patients written side by side (in any order) give the sequential call's bytes, manifest included."""
    generate_study(tmp_path / "one", 3, seed=4, config=SMALL, progress=False)
    generate_study(tmp_path / "three", 3, seed=4, config=SMALL, progress=False, workers=2)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "three") for p in (tmp_path / "three").rglob("*") if p.is_file())
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "three" / rel).read_bytes(), rel
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="workers must be a positive integer"):
            generate_study(tmp_path / "bad", 1, seed=4, config=SMALL, progress=False, workers=bad)


def test_output_folder_rules(tmp_path, study):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    with pytest.raises(LungsegError, match="not empty"):
        generate_study(busy, 1, seed=0, config=SMALL, progress=False)
    with pytest.raises(LungsegError, match="not an earlier lungseg phantom study"):
        generate_study(busy, 1, seed=0, config=SMALL, progress=False, overwrite=True)
    assert (busy / "notes.txt").read_text() == "keep me"
    again = tmp_path / "again"
    generate_study(again, 3, seed=0, config=SMALL, progress=False)
    generate_study(again, 1, seed=5, config=SMALL, progress=False, overwrite=True)
    assert len(load_study(again)) == 1 and not (again / "phantom-002").exists()


def test_load_study_errors(tmp_path, study):
    with pytest.raises(DataError, match="manifest.json"):
        load_study(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DataError, match="format"):
        load_study(tmp_path)
    broken = tmp_path / "broken"
    generate_study(broken, 2, seed=2, config=SMALL, progress=False)
    mask, _, affine = read_nifti(broken / "phantom-000" / "mask.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 3), np.uint8), affine), str(broken / "phantom-000" / "mask.nii.gz"))
    with pytest.raises(DataError, match="phantom-000.*mask shape"):
        load_study(broken)[0]
    bad = mask.copy()
    bad[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(bad.transpose(2, 1, 0), affine), str(broken / "phantom-000" / "mask.nii.gz"))
    with pytest.raises(DataError, match="0/1"):
        load_study(broken)[0]
    nib.save(nib.Nifti1Image(mask.transpose(2, 1, 0), lps_to_ras(np.eye(4))), str(broken / "phantom-000" / "mask.nii.gz"))
    with pytest.raises(DataError, match="geometry"):
        load_study(broken)[0]
    import shutil
    shutil.rmtree(broken / "phantom-001")
    with pytest.raises(DataError, match="phantom-001.*missing"):
        load_study(broken)


def test_config_validation():
    with pytest.raises(ValueError, match="tumour_type_probs"):
        PhantomConfig(tumour_type_probs=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="image_size"):
        PhantomConfig(image_size=16)
    with pytest.raises(ValueError, match="diameter_range_mm"):
        PhantomConfig(diameter_range_mm=(10, 5))
    with pytest.raises(ValueError, match=r"juxta_mediastinal_share must be in \[0, 1\], got 1\.5"):
        PhantomConfig(juxta_mediastinal_share=1.5)
    with pytest.raises(ValueError, match="unknown"):
        PhantomConfig.from_dict({"colour": "blue"})
    with pytest.raises(ValueError, match="n_patients"):
        generate_study("/nonexistent/never-created", 0, seed=0)


@pytest.mark.slow
def test_default_size_generation_speed(tmp_path):
    """The default study (24 x 40 x 256^2) must generate and write in under a minute: >= 16 slices/s.

    Measured as CPU time of this process, so that other jobs sharing the machine do not make it
    flaky; `lungseg bench` reports the wall-clock rate.
    """
    start = time.process_time()
    generate_study(tmp_path / "speed", n_patients=3, seed=0, progress=False)
    rate = 3 * PhantomConfig().n_slices / (time.process_time() - start)
    assert rate >= 16.0, f"{rate:.1f} slices/s"
