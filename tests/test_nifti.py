"""NIfTI reading/writing and the DICOM <-> NIfTI geometry (lungseg.data.nifti)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from lungseg.data.nifti import (
    affine_from_geometry,
    default_lps_affine,
    dicom_affine,
    lps_to_ras,
    read_nifti,
    write_nifti,
)
from lungseg.data.volume import CTVolume
from lungseg.errors import DataError


def _oblique_lps_affine() -> np.ndarray:
    angle = np.deg2rad(10)
    row = np.array([np.cos(angle), np.sin(angle), 0.0])
    col = np.array([-np.sin(angle), np.cos(angle), 0.0])
    return affine_from_geometry((-100.0, -80.0, 30.0), (*row, *col), (2.5, 0.8, 0.7))


def test_round_trip_keeps_values_dtype_and_axis_convention(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(5, 7, 9)).astype(np.float32)
    mask = (rng.uniform(size=(5, 7, 9)) > 0.7).astype(np.uint8)
    affine = lps_to_ras(_oblique_lps_affine())
    write_nifti(image, tmp_path / "img.nii.gz", affine=affine)
    write_nifti(mask, tmp_path / "mask.nii", affine=affine)
    got, spacing, got_affine = read_nifti(tmp_path / "img.nii.gz")
    np.testing.assert_array_equal(got, image)
    np.testing.assert_allclose(spacing, (2.5, 0.8, 0.7), atol=1e-6)
    np.testing.assert_allclose(got_affine, affine, atol=1e-5)
    got_mask, _, _ = read_nifti(tmp_path / "mask.nii")
    assert got_mask.dtype == np.uint8
    np.testing.assert_array_equal(got_mask, mask)
    # On disk the data are (X, Y, Z) = the in-memory (Z, H, W) transposed.
    on_disk = np.asanyarray(nib.load(str(tmp_path / "img.nii.gz")).dataobj)
    assert on_disk.shape == (9, 7, 5)
    np.testing.assert_array_equal(on_disk[4, 2, 1], image[1, 2, 4])


def test_spacing_only_gives_the_dicom_consistent_default_geometry(tmp_path):
    mask = np.zeros((3, 4, 6), dtype=np.uint8)
    write_nifti(mask, tmp_path / "m.nii.gz", spacing=(3.0, 1.5, 1.25))
    _, spacing, affine = read_nifti(tmp_path / "m.nii.gz")
    assert spacing == pytest.approx((3.0, 1.5, 1.25))
    np.testing.assert_allclose(affine, lps_to_ras(default_lps_affine((3, 4, 6), (3.0, 1.5, 1.25))))
    # Columns run to patient left (RAS x decreases), rows to posterior (RAS y decreases).
    assert affine[0, 0] < 0 and affine[1, 1] < 0 and affine[2, 2] > 0


def test_dicom_affine_maps_the_same_voxel_to_the_same_point():
    lps = _oblique_lps_affine()
    volume = CTVolume(np.zeros((4, 5, 6), np.float32), None, (2.5, 0.8, 0.7), "p", affine=lps,
                      meta={"affine_space": "LPS"})
    ras = dicom_affine(volume)
    voxel = np.array([5.0, 4.0, 3.0, 1.0])  # (j, i, k)
    p_lps, p_ras = lps @ voxel, ras @ voxel
    np.testing.assert_allclose(p_ras[:3], p_lps[:3] * np.array([-1, -1, 1]))
    ras_volume = CTVolume(volume.image, None, volume.spacing, "p", affine=ras, meta={"affine_space": "RAS"})
    np.testing.assert_allclose(dicom_affine(ras_volume), ras)
    bare = CTVolume(volume.image, None, volume.spacing, "p")
    np.testing.assert_allclose(dicom_affine(bare), lps_to_ras(default_lps_affine((4, 5, 6), volume.spacing)))


def test_single_volume_4d_file_is_accepted(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(4, 3, 2, 1)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "four.nii"))
    got, _, _ = read_nifti(tmp_path / "four.nii")
    assert got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, data[..., 0].transpose(2, 1, 0))


def test_bad_files_raise_data_error_naming_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.nii.gz"):
        read_nifti(tmp_path / "missing.nii.gz")
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"this is not a nifti file" * 20)
    with pytest.raises(DataError, match="junk.nii.gz"):
        read_nifti(junk)
    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.float32), np.eye(4)), str(tmp_path / "flat.nii"))
    with pytest.raises(DataError, match=r"flat.nii.*3D"):
        read_nifti(tmp_path / "flat.nii")


def test_write_argument_checks(tmp_path):
    vol = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="path"):
        write_nifti(vol, tmp_path / "x.png", spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="exactly one"):
        write_nifti(vol, tmp_path / "x.nii", affine=np.eye(4), spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="exactly one"):
        write_nifti(vol, tmp_path / "x.nii")
    with pytest.raises(ValueError, match=r"\(Z, H, W\)"):
        write_nifti(np.zeros((3, 4)), tmp_path / "x.nii", spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="4x4"):
        write_nifti(vol, tmp_path / "x.nii", affine=np.eye(3))
