"""Domain randomisation of the phantom's appearance (:mod:`lungseg.data.phantom.randomise`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lungseg.data.phantom import TISSUE_LABELS, PhantomConfig, generate_patient
from lungseg.data.phantom.randomise import AppearanceRandomisation, randomise_appearance, thick_slices

SMALL = PhantomConfig(image_size=96, n_slices=12, diameter_range_mm=(20.0, 40.0), tumour_count_probs=(0, 1, 0, 0),
                      tumour_type_probs=(1.0, 0.0, 0.0))  # one solid tumour


@pytest.fixture(scope="module")
def patient():
    vol, _ = generate_patient(11, SMALL)
    assert vol.mask.any()
    return vol


def test_only_the_image_changes_and_the_input_is_left_alone(patient) -> None:
    before = patient.image.copy()
    out = randomise_appearance(patient, 3)
    np.testing.assert_array_equal(patient.image, before)
    np.testing.assert_array_equal(out.mask, patient.mask)
    assert out.spacing == patient.spacing and np.array_equal(out.affine, patient.affine)
    assert out.image.dtype == np.float32 and np.array_equal(out.image, np.rint(out.image))
    assert out.image.min() >= -1024 and out.image.max() <= 3071
    assert not np.array_equal(out.image, patient.image)
    assert "appearance" in out.meta and "appearance" not in patient.meta


def test_the_same_seed_gives_the_same_image_and_another_seed_another(patient) -> None:
    np.testing.assert_array_equal(randomise_appearance(patient, 3).image, randomise_appearance(patient, 3).image)
    assert not np.array_equal(randomise_appearance(patient, 3).image, randomise_appearance(patient, 4).image)


def test_tumours_get_the_texture_recorded_and_nothing_else_changes(patient) -> None:
    """With only the tumour texture on, the change inside the tumour is a field whose SD is about the
    amplitude recorded in ``meta["appearance"]`` (a smooth field over a few grains of a 20-40 mm tumour)."""
    quiet = AppearanceRandomisation(
        tissue_shift_hu={}, texture_hu={"tumour": 150.0}, cavity_probability=0.0, bias_hu=0.0, blur_mm=(0.0, 0.0),
        low_resolution_probability=0.0, noise_hu=(0.0, 0.0))
    out = randomise_appearance(patient, 5, quiet)
    amplitude = out.meta["appearance"]["tissues"]["tumour"]["texture_hu"]
    inside = patient.meta["tissue"] == TISSUE_LABELS["tumour"]
    change = out.image - patient.image
    assert amplitude > 10
    assert 0.4 * amplitude < change[inside].std() < 1.6 * amplitude
    # the lung got no texture of its own: only its pixels at the tumour's soft edge change
    lung = patient.meta["tissue"] == TISSUE_LABELS["lung"]
    changed = change != 0
    assert changed[lung].mean() < 0.05


def test_a_large_tumour_can_get_an_air_core_that_stays_in_the_mask(patient) -> None:
    cavities = AppearanceRandomisation(cavity_probability=1.0, cavity_min_diameter_mm=5.0, cavity_hu=(-1000.0, -1000.0))
    out = randomise_appearance(patient, 7, cavities)
    assert out.meta["appearance"]["cavities"], "no core carved"
    tumour = patient.mask > 0
    assert (out.image[tumour] < -700).sum() > 0.05 * tumour.sum()
    assert (patient.image[tumour] < -700).sum() < 0.01 * tumour.sum()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown tissue"):
        AppearanceRandomisation(texture_hu={"brain": 10.0})
    with pytest.raises(ValueError, match="low <= high"):
        AppearanceRandomisation(noise_hu=(5.0, 1.0))
    with pytest.raises(ValueError, match="cavity_probability"):
        AppearanceRandomisation(cavity_probability=1.5)


def test_a_volume_without_tissue_labels_is_refused(patient) -> None:
    bare = dataclasses.replace(patient, meta={})
    with pytest.raises(ValueError, match="tissue"):
        randomise_appearance(bare, 0)


def test_a_randomised_study_on_disk_keeps_the_masks_and_records_the_draws(tmp_path) -> None:
    """``lungseg phantom --randomise``: the same patients and masks as a plain study, other images, the
    settings and each patient's draws in the manifest, and the same files from the same arguments."""
    import json

    from lungseg.cli import main
    from lungseg.data.phantom import load_study

    args = ["phantom", "--patients", "2", "--seed", "3", "--size", "64", "--slices", "6", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert main([*args, "--randomise", "--out", str(tmp_path / "varied")]) == 0
    assert main([*args, "--randomise", "--out", str(tmp_path / "again")]) == 0
    plain, varied, again = (load_study(tmp_path / name) for name in ("plain", "varied", "again"))
    for a, b, c in zip(plain, varied, again):
        np.testing.assert_array_equal(a.mask, b.mask)
        assert not np.array_equal(a.image, b.image)
        np.testing.assert_array_equal(b.image, c.image)
    manifest = json.loads((tmp_path / "varied" / "manifest.json").read_text())
    assert manifest["randomisation"]["noise_hu"] == list(AppearanceRandomisation().noise_hu)
    assert all("appearance" in p for p in manifest["patients"])
    assert "randomisation" not in json.loads((tmp_path / "plain" / "manifest.json").read_text())


def test_thick_slices_spread_a_slice_along_z_and_keep_its_mean() -> None:
    hu = np.full((21, 4, 4), -1000.0, dtype=np.float32)
    hu[10] = 0.0  # one bright slice, 2 mm apart from its neighbours
    np.testing.assert_array_equal(thick_slices(hu, 2.0, 2.0), hu)  # no thicker than the spacing: unchanged
    np.testing.assert_array_equal(thick_slices(hu, 2.0, 1.0), hu)
    thick = thick_slices(hu, 2.0, 6.0)
    profile = thick[:, 0, 0] + 1000.0
    assert profile[10] < 1000.0 and profile[9] > 0 and profile[11] > 0  # the slice fades into its neighbours
    assert profile[9] == pytest.approx(profile[11]) and profile[8] < profile[9]
    assert profile.sum() == pytest.approx(1000.0, rel=1e-4)  # partial volume moves intensity, never makes it
    # the thicker the slice, the wider the spread: FWHM of the added blur sqrt(6**2 - 2**2) mm
    sigma_px = np.sqrt(36 - 4) / (2 * np.sqrt(2 * np.log(2))) / 2.0
    spread = np.sqrt(np.sum(profile * (np.arange(21) - 10) ** 2) / profile.sum())
    assert spread == pytest.approx(sigma_px, rel=0.02)


def test_slice_thickness_is_off_by_default_and_recorded_when_drawn(patient) -> None:
    plain = randomise_appearance(patient, 7)
    assert "slice_thickness_mm" not in plain.meta["appearance"]
    thick = randomise_appearance(patient, 7, AppearanceRandomisation(slice_thickness_mm=(5.0, 5.0)))
    assert thick.meta["appearance"]["slice_thickness_mm"] == 5.0
    # the other draws are the default variant's: only the slab averaging differs
    assert {k: v for k, v in thick.meta["appearance"].items() if k != "slice_thickness_mm"} == plain.meta["appearance"]
    assert not np.array_equal(thick.image, plain.image)
    assert np.abs(np.diff(thick.image, axis=0)).mean() < np.abs(np.diff(plain.image, axis=0)).mean()
    with pytest.raises(ValueError, match="slice_thickness_mm"):
        AppearanceRandomisation(slice_thickness_mm=(3.0, 1.0))
    with pytest.raises(ValueError, match="slice_thickness_mm"):
        AppearanceRandomisation(slice_thickness_mm=(-1.0, 1.0))
