"""One geometry for every reader and writer.

Every reader brings a volume to the voxel orientation of an axial DICOM series through its affine
(:func:`lungseg.data.nifti.read_nifti`, :func:`lungseg.data.nifti.canonical_volume`), oblique volumes
are refused, and ``lungseg predict`` writes masks and maps back in the input's own shape, voxel order
and affine. The end-to-end tests segment a real CT (the committed LIDC-IDRI-0314 crop,
``book/data/lidc-idri-0314``, CC BY 3.0) stored in several voxel orders with the published model,
and compare the written results in world coordinates, through their affines only.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from lungseg.cli import main
from lungseg.data.nifti import (
    OBLIQUE_TOLERANCE_DEG,
    affine_from_geometry,
    as_stored,
    canonical_volume,
    dicom_affine,
    lps_to_ras,
    obliquity_degrees,
    read_nifti,
    stored_ras_affine,
    voxel_spacing,
    write_nifti,
)
from lungseg.data.volume import CTVolume
from lungseg.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_RUN = ROOT / "results" / "medium" / "experiment" / "runs" / "attention-hybrid-seed2"
LIDC_CROP = ROOT / "book" / "data" / "lidc-idri-0314" / "crop.npz"
# slices of the crop segmented end to end: through the nodule, few enough to take seconds
N_SLICES = 4


def _rotated_lps_affine(degrees: float, spacing=(2.5, 0.8, 0.7)) -> np.ndarray:
    """An axial series' LPS affine turned by ``degrees`` in the slice plane (an oblique grid)."""
    a = np.deg2rad(degrees)
    return affine_from_geometry((-100.0, -80.0, 30.0), (np.cos(a), np.sin(a), 0, -np.sin(a), np.cos(a), 0), spacing)


def _dicom_like(shape=(4, 5, 6), spacing=(2.5, 0.8, 0.7)) -> tuple[np.ndarray, np.ndarray]:
    """A random volume and the RAS affine of an axial DICOM series holding it (IOP (1, 0, 0, 0, 1, 0))."""
    image = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    return image, lps_to_ras(affine_from_geometry((-100.0, -80.0, 30.0), (1, 0, 0, 0, 1, 0), spacing))


def _voxel_orders():
    """Every axis-aligned voxel order: the 6 permutations of the NIfTI axes times the 8 flips."""
    for order in itertools.permutations(range(3)):
        for flips in itertools.product((False, True), repeat=3):
            yield order, flips


def _stored_as(image: np.ndarray, affine: np.ndarray, order, flips) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels as a file in another voxel order: NIfTI ``(X, Y, Z)`` data and their affine.

    New voxel axis ``a`` is old axis ``order[a]``, reversed where ``flips[a]``; the affine follows by
    composing with the new-to-old voxel map (written out here, not taken from nibabel)."""
    data = image.transpose(2, 1, 0).transpose(order)
    new_to_old = np.zeros((4, 4))
    new_to_old[3, 3] = 1
    for a, (old, flip) in enumerate(zip(order, flips)):
        if flip:
            data = np.flip(data, a)
        new_to_old[old, a] = -1.0 if flip else 1.0
        new_to_old[old, 3] = data.shape[a] - 1 if flip else 0.0
    return np.ascontiguousarray(data), affine @ new_to_old


def test_read_nifti_brings_every_voxel_order_to_the_dicom_orientation(tmp_path):
    """The 48 voxel orders of one volume read back as one array, lying as the DICOM series does."""
    image, affine = _dicom_like()
    for n, (order, flips) in enumerate(_voxel_orders()):
        data, stored_affine = _stored_as(image, affine, order, flips)
        nib.save(nib.Nifti1Image(data, stored_affine), str(tmp_path / f"v{n}.nii.gz"))
        got, spacing, got_affine = read_nifti(tmp_path / f"v{n}.nii.gz")
        np.testing.assert_array_equal(got, image, err_msg=f"voxel order {order}, flips {flips}")
        np.testing.assert_allclose(got_affine, affine, atol=1e-4)
        assert spacing == pytest.approx((2.5, 0.8, 0.7))


def test_canonical_volume_keeps_what_puts_a_result_back():
    image, affine = _dicom_like()
    for order, flips in _voxel_orders():
        data, stored_affine = _stored_as(image, affine, order, flips)
        stored = np.ascontiguousarray(data.transpose(2, 1, 0))
        for space, given in (("RAS", stored_affine), ("LPS", lps_to_ras(stored_affine))):
            volume = CTVolume(stored, (stored > 0).astype(np.uint8), voxel_spacing(given), "p", affine=given,
                              meta={"affine_space": space})
            canonical = canonical_volume(volume, "scan.nii")
            np.testing.assert_array_equal(canonical.image, image)
            np.testing.assert_array_equal(canonical.mask, image > 0)
            assert canonical.spacing == pytest.approx((2.5, 0.8, 0.7))
            np.testing.assert_allclose(dicom_affine(canonical), affine, atol=1e-9)
            # a result on the canonical grid goes back to the file's voxel order and affine
            np.testing.assert_array_equal(as_stored(canonical.image, canonical), stored)
            np.testing.assert_allclose(stored_ras_affine(canonical), stored_affine, atol=1e-9)
    # already in the DICOM orientation: the very same volume, nothing to undo
    volume = CTVolume(image, None, (2.5, 0.8, 0.7), "p", affine=affine, meta={"affine_space": "RAS"})
    assert canonical_volume(volume) is volume and volume.stored is None
    assert as_stored(image, volume) is image


def test_oblique_volumes_are_refused_naming_the_file_and_the_angle(tmp_path):
    image, _ = _dicom_like()
    write_nifti(image, tmp_path / "oblique.nii.gz", affine=lps_to_ras(_rotated_lps_affine(10)))
    with pytest.raises(DataError, match=r"oblique\.nii\.gz: the voxel axes lie 10\.0 degrees from the patient axes") as err:
        read_nifti(tmp_path / "oblique.nii.gz")
    assert "\n" not in str(err.value) and "resample" in str(err.value)
    volume = CTVolume(image, None, (2.5, 0.8, 0.7), "p", affine=_rotated_lps_affine(10), meta={"affine_space": "LPS"})
    with pytest.raises(DataError, match=r"series-7: the voxel axes lie 10\.0 degrees"):
        canonical_volume(volume, "series-7")
    # within the tolerance: read, along the nearest patient axes
    slight = _rotated_lps_affine(OBLIQUE_TOLERANCE_DEG / 2)
    assert obliquity_degrees(lps_to_ras(slight)) == pytest.approx(OBLIQUE_TOLERANCE_DEG / 2)
    write_nifti(image, tmp_path / "slight.nii.gz", affine=lps_to_ras(slight))
    np.testing.assert_array_equal(read_nifti(tmp_path / "slight.nii.gz")[0], image)
    # two voxel axes along one patient axis: as oblique as it gets
    assert obliquity_degrees(np.array([[1.0, 1, 0, 0], [0, 0.05, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])) > 40


# ---------------------------------------------------------------- lungseg predict, end to end
def _on_grid(path: Path, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """A written NIfTI's voxels at the centres of another grid (``(Z, H, W)`` ``shape``, RAS ``affine``).

    Uses only the two affines: each grid voxel is mapped to the world and into the file; the grids
    must coincide in the world (a voxel order apart), so the voxel found is the same point.
    """
    img = nib.load(path)
    data = np.asanyarray(img.dataobj)
    k, i, j = np.indices(shape)
    grid = np.stack([j.ravel(), i.ravel(), k.ravel(), np.ones(j.size)])
    into_file = np.linalg.inv(img.affine) @ affine @ grid
    index = np.round(into_file[:3]).astype(int)
    np.testing.assert_allclose(into_file[:3], index, atol=1e-3, err_msg=f"{path.name} is not on the grid")
    assert (index >= 0).all() and (index < np.array(data.shape)[:, None]).all(), f"{path.name} covers another region"
    return data[index[0], index[1], index[2]].reshape(shape)


def _lidc_ct() -> tuple[np.ndarray, np.ndarray]:
    """``N_SLICES`` slices of the real CT through the nodule (HU ``(Z, H, W)``) and the RAS affine of the
    axial DICOM series holding them."""
    crop = np.load(LIDC_CROP)
    drawn = np.flatnonzero(crop["readers"].any(axis=(1, 2)))
    first = int(drawn[len(drawn) // 2]) - N_SLICES // 2
    image = crop["image_hu"][first : first + N_SLICES]
    spacing = tuple(float(s) for s in crop["spacing"])
    return image, lps_to_ras(affine_from_geometry((-50.0, -60.0, -120.0), (1, 0, 0, 0, 1, 0), spacing))


def _predict(inp: Path, out: Path, *extra: str) -> None:
    assert main(["predict", str(inp), "--run", str(PUBLISHED_RUN), "--out", str(out), "--device", "cpu",
                 "--precision", "fp32", "--quiet", *extra]) == 0


@pytest.fixture(scope="module")
def lidc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The real CT as given (the DICOM orientation), segmented once: the reference in the world."""
    if not (PUBLISHED_RUN / "best.pt").is_file():
        pytest.skip(f"published run {PUBLISHED_RUN} not present")
    root = tmp_path_factory.mktemp("geometry")
    image, affine = _lidc_ct()
    write_nifti(image, root / "given.nii.gz", affine=affine)
    _predict(root / "given.nii.gz", root / "given", "--prob", "--attention")
    mask = np.asarray(nib.load(root / "given" / "mask.nii.gz").dataobj).transpose(2, 1, 0)
    assert 0 < mask.sum() < mask.size  # a mask with outlines: the comparisons below can fail
    return {"root": root, "image": image, "affine": affine, "mask": mask}


# the same CT stored in other voxel orders: (NIfTI axes taken from, flipped)
STORED_ORDERS = {
    "left-right flipped": ((0, 1, 2), (True, False, False)),
    "coronal slices": ((0, 2, 1), (False, False, False)),
    "RAS (as nibabel's as_closest_canonical writes)": ((0, 1, 2), (True, True, False)),
    "sagittal slices, head to feet": ((1, 2, 0), (False, True, True)),
}
RESULTS = ("mask.nii.gz", "probability.nii.gz", "attention_level0.nii.gz", "attention_level3.nii.gz")


@pytest.mark.parametrize("name", list(STORED_ORDERS))
def test_one_ct_in_any_voxel_order_gives_the_same_results_in_the_world(lidc: dict[str, Any], name: str,
                                                                      tmp_path: Path) -> None:
    """A CT stored in another voxel order is segmented along the same axial slices: the mask, the
    probabilities and the attention maps are the reference's in the world, and each file has the
    input's own shape, voxel order and affine (a viewer overlays it on the input)."""
    data, affine = _stored_as(lidc["image"], lidc["affine"], *STORED_ORDERS[name])
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "ct.nii.gz"))
    _predict(tmp_path / "ct.nii.gz", tmp_path / "out", "--prob", "--attention")
    for result in RESULTS:
        written = nib.load(tmp_path / "out" / result)
        assert written.shape == data.shape, result
        np.testing.assert_allclose(written.affine, affine, atol=1e-5, err_msg=result)
        reference = _on_grid(lidc["root"] / "given" / result, lidc["image"].shape, lidc["affine"])
        np.testing.assert_allclose(_on_grid(tmp_path / "out" / result, lidc["image"].shape, lidc["affine"]),
                                   reference, atol=1e-6, err_msg=f"{result} of the {name} CT")
    # the lesion table points at the same places in the world (its voxel centroids index the common grid)
    ours, reference_lesions = _lesion_centres(tmp_path / "out"), _lesion_centres(lidc["root"] / "given")
    assert ours and [size for size, _ in ours] == [size for size, _ in reference_lesions]
    np.testing.assert_allclose([c for _, c in ours], [c for _, c in reference_lesions], atol=0.02)
    # and that place is where the written mask, read in its own voxel order and affine, has the lesion
    written = nib.load(tmp_path / "out" / "mask.nii.gz")
    labels, n = ndimage.label(np.asarray(written.dataobj) > 0, structure=np.ones((3, 3, 3)))
    summary = json.loads((tmp_path / "out" / "lesions.json").read_text())
    biggest = summary["lesions"]["lesions"][0]
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes.max() == biggest["voxels"]
    centre = np.argwhere(labels == int(np.argmax(sizes)) + 1).mean(axis=0)
    np.testing.assert_allclose((written.affine @ [*centre, 1.0])[:3], biggest["centroid_ras_mm"], atol=0.02)


def _lesion_centres(folder: Path) -> list[tuple[int, list[float]]]:
    """(voxels, centroid in RAS mm) of every lesion (and candidate set aside) of a prediction's summary."""
    summary = json.loads((folder / "lesions.json").read_text())
    found = summary["lesions"]["lesions"] + (summary.get("set_aside") or {"lesions": []})["lesions"]
    return sorted((les["voxels"], les["centroid_ras_mm"]) for les in found)


def _dicom_series(image: np.ndarray, lps: np.ndarray, folder: Path) -> Path:
    from lungseg.data.dicom_write import write_dicom_series

    volume = CTVolume(image.astype(np.float32), None, voxel_spacing(lps), "lidc-0314", affine=lps,
                      meta={"affine_space": "LPS"})
    write_dicom_series(volume, folder)
    return folder


def test_a_dicom_series_in_another_orientation_gets_results_on_its_own_slices(lidc: dict[str, Any],
                                                                             tmp_path: Path) -> None:
    """A series whose rows run along the patient's left-right axis and whose slices go from head to feet
    (ImageOrientationPatient (0, 1, 0, 1, 0, 0)) is segmented as the axial series is; the NIfTI has the
    series' shape and affine, and the DICOM SEG and RT Structure Set outline that mask on the series' slices."""
    import highdicom as hd
    import pydicom
    from matplotlib.path import Path as Polygon

    from lungseg.data.dicom import read_dicom_series

    data, ras = _stored_as(lidc["image"], lidc["affine"], (1, 0, 2), (False, False, True))
    series = _dicom_series(data.transpose(2, 1, 0), lps_to_ras(ras), tmp_path / "ct")
    (as_read,) = read_dicom_series(series)
    np.testing.assert_allclose(as_read.meta["image_orientation"], [0, 1, 0, 1, 0, 0], atol=1e-6)
    _predict(series, tmp_path / "nifti", "--prob")
    for result in RESULTS[:2]:
        written = nib.load(tmp_path / "nifti" / result)
        assert written.shape == data.shape, result
        np.testing.assert_allclose(written.affine, dicom_affine(as_read), atol=1e-4, err_msg=result)
        reference = _on_grid(lidc["root"] / "given" / result, lidc["image"].shape, lidc["affine"])
        np.testing.assert_allclose(_on_grid(tmp_path / "nifti" / result, lidc["image"].shape, lidc["affine"]),
                                   reference, atol=1e-6, err_msg=result)
    mask = np.asarray(nib.load(tmp_path / "nifti" / "mask.nii.gz").dataobj).transpose(2, 1, 0) > 0  # series order
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in as_read.meta["files"]]
    uids = [str(h.SOPInstanceUID) for h in headers]

    _predict(series, tmp_path / "seg.dcm", "--format", "dicom-seg")
    seg = hd.seg.segread(tmp_path / "seg.dcm").get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[1], assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(seg[..., 0] > 0, mask)

    _predict(series, tmp_path / "rtstruct.dcm", "--format", "rtstruct")
    outlined = np.zeros_like(mask)
    rows, cols = mask.shape[1:]
    centres = np.c_[np.indices((rows, cols))[1].ravel(), np.indices((rows, cols))[0].ravel()]
    for contour in pydicom.dcmread(tmp_path / "rtstruct.dcm").ROIContourSequence[0].ContourSequence:
        k = uids.index(str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID))
        iop = np.asarray(headers[k].ImageOrientationPatient, dtype=float)
        d = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3) - np.asarray(headers[k].ImagePositionPatient, float)
        dy, dx = (float(v) for v in headers[k].PixelSpacing)
        outlined[k] ^= Polygon(np.c_[d @ iop[:3] / dx, d @ iop[3:] / dy]).contains_points(centres).reshape(rows, cols)
    # the outlines follow the mask's pixel edges: they agree but for boundary pixels
    assert 2 * (outlined & mask).sum() / (outlined.sum() + mask.sum()) > 0.9


def test_predict_refuses_an_oblique_volume_naming_it_and_the_angle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = np.full((3, 16, 16), -800.0, dtype=np.float32)
    write_nifti(image, tmp_path / "oblique.nii.gz", affine=lps_to_ras(_rotated_lps_affine(12)))
    assert main(["predict", str(tmp_path / "oblique.nii.gz"), "--run", str(PUBLISHED_RUN), "--out",
                 str(tmp_path / "out"), "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "oblique.nii.gz: the voxel axes lie 12.0 degrees from the patient axes" in err and "resample" in err
    assert not (tmp_path / "out").exists()


def test_the_decathlon_reader_reorients_an_image_and_its_label_alike(tmp_path: Path) -> None:
    """A Task06-style case stored in RAS (image and label) loads in the DICOM orientation, still aligned."""
    from lungseg.data.msd import MSDDataset

    image, affine = _dicom_like()
    label = (image > 0.5).astype(np.uint8)
    for folder, array in (("imagesTr", image), ("labelsTr", label)):
        data, ras = _stored_as(array, affine, (0, 1, 2), (True, True, False))
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(data, ras), str(tmp_path / folder / "lung_001.nii.gz"))
    volume = MSDDataset(tmp_path)["lung_001"]
    np.testing.assert_array_equal(volume.image, image)
    np.testing.assert_array_equal(volume.mask, label)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)
