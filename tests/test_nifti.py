"""NIfTI reading/writing and the DICOM <-> NIfTI geometry (lungseg.data.nifti); the one voxel orientation
every reader brings a volume to is tests/test_geometry.py's."""

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
    read_nifti_as_stored,
    voxel_spacing,
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
    got, got_affine = read_nifti_as_stored(tmp_path / "img.nii.gz")
    np.testing.assert_array_equal(got, image)
    np.testing.assert_allclose(voxel_spacing(got_affine), (2.5, 0.8, 0.7), atol=1e-6)
    np.testing.assert_allclose(got_affine, affine, atol=1e-5)
    got_mask, _ = read_nifti_as_stored(tmp_path / "mask.nii")
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
    got, _ = read_nifti_as_stored(tmp_path / "four.nii")
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


def _nifti_bytes(data: np.ndarray | None = None, **fields) -> bytes:
    """A single-file NIfTI-1 (int16 5x4x3, 0.7 x 0.8 x 2.5 mm) with raw header ``fields`` overwritten."""
    data = np.arange(60, dtype=np.int16).reshape(5, 4, 3) if data is None else data
    raw = nib.Nifti1Image(data, np.diag([0.7, 0.8, 2.5, 1.0])).to_bytes()
    header = np.frombuffer(raw[:348], dtype=nib.nifti1.header_dtype).copy()
    for name, value in fields.items():
        header[name] = value
    return header.tobytes() + raw[348:]


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        pytest.param(_nifti_bytes(qform_code=0, sform_code=1, srow_y=[0, 0, 0, 5]),
                     r"geometry is degenerate \(voxel size \[0\.7, 0\.0, 2\.5\] mm", id="zero-voxel-size"),
        pytest.param(_nifti_bytes(qform_code=0, sform_code=1, srow_x=[0.7, 0, 0, np.nan]),
                     r"geometry \(affine\) is not finite", id="nan-affine"),
        pytest.param(_nifti_bytes(dim=[3, 5, 0, 3, 1, 1, 1, 1]), r"empty volume \(array shape \(5, 0, 3\)\)",
                     id="empty"),
        pytest.param(nib.Nifti1Image(np.zeros((2, 3, 4), np.complex64), np.eye(4)).to_bytes(),
                     r"voxels of type complex64; expected integer or floating-point", id="complex"),
        pytest.param(_nifti_bytes()[:400], r"not a readable NIfTI file \(OSError: Expected 120 bytes, got 48 bytes",
                     id="truncated-one-line"),  # nibabel's message has a line break
        pytest.param(_nifti_bytes(dim=[3, 30_000, 30_000, 30_000, 1, 1, 1, 1]),
                     r"declares \(30000, 30000, 30000\) voxels of int16 .* truncated or corrupt", id="huge-dims"),
    ],
)
def test_damaged_headers_are_one_line_errors_naming_the_file(tmp_path, raw: bytes, match: str):
    """Headers the fuzzer (tests/test_fuzz.py) found giving silent garbage (zero or NaN spacing, empty or
    complex arrays) or multi-line messages; a header declaring more voxels than the file holds is
    refused before anything is allocated (also for .nii.gz, where deflate bounds the ratio)."""
    import gzip

    for name, data in (("ct.nii", raw), ("ct.nii.gz", gzip.compress(raw))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=rf"{name}: .*{match}") as err:
            read_nifti(tmp_path / name)
        assert "\n" not in str(err.value)

