"""Loaders behind ``lungseg.data.open_dataset``: npz, MSD Task06, Kaggle class folders, DICOM, phantom."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from lungseg.data import CTDataset, open_dataset
from lungseg.data.images import read_image
from lungseg.data.kaggle import class_label
from lungseg.data.npz import read_npz, write_npz
from lungseg.errors import DataError


# ---------------------------------------------------------------------------------------------
# helpers: small files made directly with numpy / nibabel / PIL
# ---------------------------------------------------------------------------------------------
def _slices(n: int = 6, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1000, 400, size=(n, size, size)).astype(np.float32)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    masks[::2, 4:8, 5:9] = 1
    return images, masks


def _save_nifti(path: Path, array_zhw: np.ndarray, spacing=(2.5, 0.8, 0.7), dtype=np.int16, affine=None) -> None:
    if affine is None:
        affine = np.diag([-spacing[2], -spacing[1], spacing[0], 1.0])
        affine[:3, 3] = [10.0, 20.0, -30.0]
    img = nib.Nifti1Image(np.ascontiguousarray(array_zhw.transpose(2, 1, 0)).astype(dtype), affine)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _make_msd(root: Path, n: int = 3, shape=(4, 12, 10), tumour=(True, False, True), with_json=True) -> Path:
    rng = np.random.default_rng(1)
    training = []
    for i in range(n):
        cid = f"lung_{i + 1:03d}"
        image = rng.integers(-1024, 600, size=shape).astype(np.int16)
        label = np.zeros(shape, dtype=np.uint8)
        if tumour[i % len(tumour)]:
            label[1:3, 3:6, 2:5] = 1
        _save_nifti(root / "imagesTr" / f"{cid}.nii.gz", image)
        _save_nifti(root / "labelsTr" / f"{cid}.nii.gz", label, dtype=np.uint8)
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    # macOS companion files shipped in the real archive must be ignored.
    (root / "imagesTr" / "._lung_001.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    if with_json:
        meta = {
            "name": "Lung",
            "modality": {"0": "CT"},
            "labels": {"0": "background", "1": "cancer"},
            "numTraining": n,
            "training": training,
            "test": [],
        }
        (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)


def _make_kaggle(root: Path) -> Path:
    rng = np.random.default_rng(2)
    layout = {
        "train": [
            "adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib",
            "normal",
            "large.cell.carcinoma_left.hilum_T2_N2_M0_IIIa",
        ],
        "valid": ["squamous.cell.carcinoma_left.hilum_T1_N2_M0_IIIa", "normal"],
        "test": ["adenocarcinoma", "normal"],
    }
    for split, classes in layout.items():
        for cls in classes:
            for k in range(2):
                _png(root / split / cls / f"img{k}.png", rng.integers(0, 256, size=(20, 24), dtype=np.uint8))
    # a colour JPEG and a stray non-image file
    Image.fromarray(rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)).save(root / "test" / "normal" / "c.jpg")
    (root / "train" / "normal" / "notes.txt").write_text("not an image")
    return root


# ---------------------------------------------------------------------------------------------
# npz
# ---------------------------------------------------------------------------------------------
def test_npz_groups_slices_by_patient(tmp_path: Path) -> None:
    images, masks = _slices(6)
    ids = np.array(["b", "a", "b", "a", "c", "b"])
    spacing = np.tile([0.7, 0.8], (6, 1))
    spacing[[1, 3]] = [1.2, 1.3]
    path = write_npz(tmp_path / "d.npz", images, masks, patient_ids=ids, spacing=spacing)
    ds = open_dataset(path)
    assert isinstance(ds, CTDataset) and ds.kind == "npz" and ds.has_masks
    assert ds.patient_ids == ["b", "a", "c"]  # order of first appearance
    vol = ds["b"]
    np.testing.assert_array_equal(vol.image, images[[0, 2, 5]])
    np.testing.assert_array_equal(vol.mask, masks[[0, 2, 5]])
    assert vol.spacing == (1.0, 0.7, 0.8) and vol.intensity == "hu" and vol.meta["z_spacing_known"] is False
    assert ds["a"].spacing[1:] == (1.2, 1.3)
    assert [ds.has_tumour(p) for p in ds.patient_ids] == [True, False, True]  # b has slice 0 (even), c slice 4
    assert len(list(ds.volumes())) == len(ds) == 3
    assert ds[1].patient_id == "a"


def test_npz_defaults_and_casts(tmp_path: Path) -> None:
    images, masks = _slices(3)
    path = tmp_path / "d.npz"
    np.savez(path, images=images.astype(np.float64), masks=masks.astype(bool))
    ds = open_dataset(path)
    assert ds.patient_ids == ["slice_00000", "slice_00001", "slice_00002"]
    vol = ds["slice_00001"]
    assert vol.image.dtype == np.float32 and vol.mask.dtype == np.uint8 and vol.image.shape == (1, 16, 16)
    assert vol.meta["spacing_known"] is False


def test_npz_unit_intensity(tmp_path: Path) -> None:
    images, masks = _slices(2)
    unit = (images + 1000) / 1400
    path = write_npz(tmp_path / "u.npz", unit, masks, intensity="unit")
    assert open_dataset(path)[0].intensity == "unit"
    bad = tmp_path / "bad_unit.npz"
    np.savez(bad, images=images, masks=masks, intensity=np.array("unit"))
    with pytest.raises(DataError, match=r"bad_unit\.npz.*'unit'.*\[0, 1\]"):
        read_npz(bad)


@pytest.mark.parametrize(
    ("arrays", "pattern"),
    [
        ({"images": "ok"}, r"missing key.*'masks'"),
        ({"masks": "ok"}, r"missing key.*'images'"),
        ({"images": np.full((2, 4, 4), "x"), "masks": "ok2"}, r"key 'images'.*dtype"),
        ({"images": np.zeros((2, 4, 4), dtype=complex), "masks": "ok2"}, r"key 'images'.*dtype"),
        ({"images": np.zeros((2, 4, 4), dtype=bool), "masks": "ok2"}, r"key 'images'.*dtype"),
        ({"images": np.zeros((4, 4), np.float32), "masks": "ok"}, r"key 'images'.*\(N, H, W\)"),
        ({"images": "ok", "masks": np.full((2, 4, 4), 2, np.uint8)}, r"key 'masks'.*only 0 and 1.*\[2\]"),
        ({"images": "ok", "masks": np.full((2, 4, 4), 0.5)}, r"key 'masks'.*only 0 and 1"),
        ({"images": "ok", "masks": np.zeros((3, 4, 4), np.uint8)}, r"key 'masks'.*shape \(3, 4, 4\)"),
        ({"images": "ok", "masks": np.zeros((2, 4, 5), np.uint8)}, r"key 'masks'.*shape"),
        ({"images": "ok", "masks": np.zeros((2, 4, 4), "U1")}, r"key 'masks'.*dtype"),
        ({"images": "ok", "masks": "ok", "patient_ids": np.array(["a"])}, r"key 'patient_ids'.*\(2,\)"),
        ({"images": "ok", "masks": "ok", "patient_ids": np.array(["a", ""])}, r"key 'patient_ids'.*empty"),
        ({"images": "ok", "masks": "ok", "spacing": np.ones((2, 3))}, r"key 'spacing'.*\(2, 2\)"),
        ({"images": "ok", "masks": "ok", "spacing": -np.ones((2, 2))}, r"key 'spacing'.*positive"),
        ({"images": "ok", "masks": "ok", "intensity": np.array("HU-ish")}, r"key 'intensity'"),
        ({"images": np.full((2, 4, 4), np.nan), "masks": "ok"}, r"key 'images'.*NaN"),
    ],
)
def test_npz_bad_inputs(tmp_path: Path, arrays: dict, pattern: str) -> None:
    ok_images = np.zeros((2, 4, 4), np.float32) - 500
    ok_masks = np.zeros((2, 4, 4), np.uint8)
    ok = {"images": ok_images, "masks": ok_masks}
    resolved = {k: (ok.get(k, ok_masks) if isinstance(v, str) else v) for k, v in arrays.items()}
    path = tmp_path / "bad.npz"
    np.savez(path, **resolved)
    with pytest.raises(DataError, match=r"bad\.npz: .*" + pattern):
        open_dataset(path)


def test_npz_unreadable_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file")
    with pytest.raises(DataError, match=r"garbage\.npz: not a readable \.npz"):
        open_dataset(garbage)
    pickled = tmp_path / "pickled.npz"
    images, masks = _slices(2)
    np.savez(pickled, images=images, masks=masks, patient_ids=np.array(["a", None], dtype=object))
    with pytest.raises(DataError, match=r"pickled\.npz: .*pickle"):
        open_dataset(pickled)


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, raw in members.items():
            zf.writestr(name, raw)
    return path


def _npy(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _npz_damaged(tmp_path: Path, kind: str) -> Path:
    images, masks = _slices(2)
    ok = {"images.npy": _npy(images), "masks.npy": _npy(masks)}
    if kind == "member-not-npy":  # numpy returns such a member as bytes, not as an array
        return _zip(tmp_path / "bad.npz", {"images": b"raw bytes", "masks.npy": ok["masks.npy"]})
    if kind == "non-utf8-ids":
        return _zip(tmp_path / "bad.npz", {**ok, "patient_ids.npy": _npy(np.array([b"\xff\xfe", b"a"]))})
    if kind == "garbage-npy-header":
        return _zip(tmp_path / "bad.npz", {**ok, "images.npy": b"\x93NUMPY\x01\x00\x06\x00{'x':\n" + images.tobytes()})
    if kind == "large-intensity":
        return _zip(tmp_path / "bad.npz", {**ok, "intensity.npy": _npy(np.zeros((6, 6)))})
    # "zip-version": the central directory asks for a zip version newer than Python supports
    raw = bytearray(_zip(tmp_path / "bad.npz", ok).read_bytes())
    at = raw.index(b"PK\x01\x02")
    raw[at + 6 : at + 8] = (84).to_bytes(2, "little")
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    return tmp_path / "bad.npz"


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        pytest.param("member-not-npy", r"key 'images' is not a NumPy array \(\.npy\)", id="member-not-npy"),
        pytest.param("non-utf8-ids", r"key 'patient_ids' holds bytes that are not UTF-8", id="non-utf8-ids"),
        pytest.param("garbage-npy-header", r"key 'images' is not a readable NumPy array", id="garbage-npy-header"),
        pytest.param("large-intensity", r"key 'intensity' must be .*, got a float64 array of shape \(6, 6\)$",
                     id="large-intensity"),
        pytest.param("zip-version", r"not a readable \.npz file \(NotImplementedError: zip file version 8\.4\)",
                     id="zip-version"),
    ],
)
def test_npz_damaged_files_are_one_line_errors(tmp_path: Path, kind: str, pattern: str) -> None:
    """Damaged files the fuzzer (tests/test_fuzz.py) found escaping as other exception types
    (AttributeError, UnicodeDecodeError, NotImplementedError), blamed on pickle, or printed over
    several lines."""
    path = _npz_damaged(tmp_path, kind)
    for read in (read_npz, open_dataset):
        with pytest.raises(DataError, match=r"bad\.npz: " + pattern) as err:
            read(path)
        assert "\n" not in str(err.value)


def test_npz_spacing_must_agree_within_patient(tmp_path: Path) -> None:
    images, masks = _slices(2)
    path = tmp_path / "sp.npz"
    np.savez(
        path, images=images, masks=masks, patient_ids=np.array(["p", "p"]), spacing=np.array([[1.0, 1.0], [2.0, 2.0]])
    )
    with pytest.raises(DataError, match=r"sp\.npz: key 'spacing' differs .*'p'"):
        open_dataset(path)


def test_npz_warns_on_unit_looking_hu(tmp_path: Path) -> None:
    images, masks = _slices(2)
    path = tmp_path / "w.npz"
    np.savez(path, images=(images + 1000) / 1400, masks=masks)
    with pytest.warns(UserWarning, match="intensity='unit'"):
        open_dataset(path)


# ---------------------------------------------------------------------------------------------
# MSD Task06_Lung
# ---------------------------------------------------------------------------------------------
def test_msd_reads_cases_lazily_with_geometry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _make_msd(tmp_path / "Task06_Lung")
    ds = open_dataset(root)
    assert ds.kind == "msd" and ds.has_masks and ds.patient_ids == ["lung_001", "lung_002", "lung_003"]
    assert [ds.has_tumour(p) for p in ds.patient_ids] == [True, False, True]
    vol = ds["lung_001"]
    assert vol.image.shape == (4, 12, 10) and vol.image.dtype == np.float32
    assert vol.mask.dtype == np.uint8 and int(vol.mask.sum()) == 2 * 3 * 3
    assert vol.mask[1, 3, 2] == 1 and vol.mask[0].sum() == 0
    np.testing.assert_allclose(vol.spacing, (2.5, 0.8, 0.7), rtol=1e-6)
    assert vol.affine is not None and vol.meta["affine_space"] == "RAS"
    stored = nib.load(str(root / "imagesTr" / "lung_001.nii.gz")).get_fdata()
    np.testing.assert_array_equal(vol.image, stored.transpose(2, 1, 0))
    # the label of a case is read once for has_tumour, then remembered
    import lungseg.data.msd as msd

    calls = []
    monkeypatch.setattr(msd, "read_label", lambda p: calls.append(p) or (_ for _ in ()).throw(AssertionError))
    assert ds.has_tumour("lung_003") and not calls


def test_msd_without_dataset_json_pairs_by_name(tmp_path: Path) -> None:
    root = _make_msd(tmp_path / "t", with_json=False)
    ds = open_dataset(root)
    assert ds.kind == "msd" and ds.patient_ids == ["lung_001", "lung_002", "lung_003"]
    (root / "labelsTr" / "lung_002.nii.gz").unlink()
    with pytest.raises(DataError, match=r"do not pair up.*lung_002"):
        open_dataset(root)


def test_msd_shape_mismatch(tmp_path: Path) -> None:
    root = _make_msd(tmp_path / "t")
    _save_nifti(root / "labelsTr" / "lung_002.nii.gz", np.zeros((4, 12, 9), np.uint8), dtype=np.uint8)
    ds = open_dataset(root)
    ds["lung_001"]  # other cases still load
    with pytest.raises(
        DataError, match=r"lung_002\.nii\.gz: mask shape \(4, 12, 9\).*imagesTr.*lung_002.*\(4, 12, 10\)"
    ):
        ds["lung_002"]


def test_msd_geometry_mismatch_and_non_binary_label(tmp_path: Path) -> None:
    root = _make_msd(tmp_path / "t")
    shifted = np.diag([-0.7, -0.8, 2.5, 1.0])
    shifted[:3, 3] = [10.0, 20.0, -25.0]
    _save_nifti(root / "labelsTr" / "lung_002.nii.gz", np.zeros((4, 12, 10), np.uint8), dtype=np.uint8, affine=shifted)
    labels = np.zeros((4, 12, 10), np.uint8)
    labels[0, 0, 0] = 2
    _save_nifti(root / "labelsTr" / "lung_003.nii.gz", labels, dtype=np.uint8)
    ds = open_dataset(root)
    with pytest.raises(DataError, match=r"lung_002\.nii\.gz: mask geometry .* 5 mm"):
        ds["lung_002"]
    with pytest.raises(DataError, match=r"lung_003\.nii\.gz: .*only 0 and 1.*\[2\]"):
        ds.has_tumour("lung_003")


def test_msd_missing_listed_file(tmp_path: Path) -> None:
    root = _make_msd(tmp_path / "t")
    (root / "imagesTr" / "lung_003.nii.gz").unlink()
    with pytest.raises(DataError, match=r"lung_003\.nii\.gz: listed in .*dataset\.json but not found"):
        open_dataset(root)
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match=r"dataset\.json: not a readable JSON"):
        open_dataset(root)


# ---------------------------------------------------------------------------------------------
# Kaggle class folders
# ---------------------------------------------------------------------------------------------
def test_class_label_mapping() -> None:
    assert class_label("adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib") == 1
    assert class_label("large.cell.carcinoma") == 1 and class_label("Large cell carcinoma") == 1
    assert class_label("squamous.cell.carcinoma_left.hilum_T1_N2_M0_IIIa") == 1
    assert class_label("Malignant cases") == 1
    assert class_label("normal") == 0 and class_label("Normal cases") == 0
    assert class_label("Benign cases") == 0 and class_label("Bengin cases") == 0
    assert class_label("pneumonia") is None


def test_kaggle_layout(tmp_path: Path) -> None:
    root = _make_kaggle(tmp_path / "Data")
    ds = open_dataset(tmp_path)  # a single wrapper folder is looked through
    assert ds.kind == "kaggle" and not ds.has_masks and len(ds) == 7 * 2 + 1
    parts = [ds[p].meta["split"] for p in ds.patient_ids]
    assert {part: parts.count(part) for part in set(parts)} == {"train": 6, "val": 4, "test": 5}
    pid = "train/normal/img0.png"
    vol = ds[pid]
    assert vol.mask is None and vol.intensity == "unit" and vol.image.shape == (1, 20, 24)
    assert 0.0 <= vol.image.min() and vol.image.max() <= 1.0
    np.testing.assert_allclose(vol.image[0] * 255, np.asarray(Image.open(root / pid)), atol=1e-3)
    assert vol.meta["label"] == 0 and not ds.has_tumour(pid)
    assert ds.has_tumour("valid/squamous.cell.carcinoma_left.hilum_T1_N2_M0_IIIa/img1.png")
    assert ds["test/normal/c.jpg"].image.shape == (1, 20, 24)  # colour converted to grey
    assert sum(ds.has_tumour(p) for p in ds.patient_ids) == 4 * 2


def test_kaggle_needs_masks_message(tmp_path: Path) -> None:
    from lungseg.data.slices import SliceDataset
    from lungseg.preprocess import Fingerprint

    ds = open_dataset(_make_kaggle(tmp_path / "k"))
    with pytest.raises(DataError, match=r"'kaggle' dataset has no pixel-level tumour masks"):
        ds.require_masks("training")
    fp = Fingerprint(mean=0.5, std=0.2, window=None, image_size=16, intensity="unit")
    with pytest.raises(DataError, match="no pixel-level tumour masks"):
        SliceDataset(ds, ds.patient_ids[:2], fp, 16)


def test_kaggle_unsplit_and_bad_folders(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for cls in ("Bengin cases", "Malignant cases", "Normal cases"):
        _png(tmp_path / "iq" / cls / "a.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    ds = open_dataset(tmp_path / "iq")
    assert ds.kind == "kaggle" and [ds.has_tumour(p) for p in ds.patient_ids] == [False, True, False]
    assert all(vol.meta["split"] == "all" for vol in ds)
    _png(tmp_path / "iq" / "pneumonia" / "a.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    with pytest.raises(DataError, match=r"pneumonia: unknown class folder"):
        open_dataset(tmp_path / "iq")


def test_read_image_modes_and_corrupt_files(tmp_path: Path) -> None:
    deep = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    _png(tmp_path / "d16.png", deep)
    np.testing.assert_allclose(read_image(tmp_path / "d16.png"), deep / 65535.0, atol=1e-6)
    _png(tmp_path / "full.png", np.full((32, 32), 200, np.uint8))
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"trunc\.png: corrupt or truncated"):
        read_image(tmp_path / "trunc.png")
    (tmp_path / "fake.png").write_text("hello")
    with pytest.raises(DataError, match=r"fake\.png: not a readable PNG/JPEG"):
        read_image(tmp_path / "fake.png")


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose (valid, CRC-checked) header declares ``width`` x ``height`` grey pixels, with no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_read_image_refuses_huge_and_non_png_jpeg_files(tmp_path: Path) -> None:
    # Pillow's DecompressionBombError used to escape as is; images above MAX_PIXELS are refused
    # before any pixel memory is allocated.
    with pytest.raises(DataError, match=r"bomb\.png: the image declares more pixels than"):
        read_image(_png_header_only(tmp_path / "bomb.png", 20_000, 20_000))
    with pytest.raises(DataError, match=r"big\.png: image of 8193x8193 pixels; expected at most 67108864"):
        read_image(_png_header_only(tmp_path / "big.png", 8193, 8193))
    # only the PNG and JPEG decoders run, whatever the suffix says (a GIF named .png used to be read)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "gif.png", format="GIF")
    with pytest.raises(DataError, match=r"gif\.png: not a readable PNG/JPEG image"):
        read_image(tmp_path / "gif.png")


# ---------------------------------------------------------------------------------------------
# DICOM folders and phantom studies (data-A's readers/writers)
# ---------------------------------------------------------------------------------------------
def test_dicom_folder_dataset(tmp_path: Path) -> None:
    from lungseg.data.dicom_write import write_dicom_series
    from lungseg.data.volume import CTVolume

    rng = np.random.default_rng(4)
    for pid in ("P1", "P2"):
        image = rng.integers(-1000, 400, size=(3, 16, 16)).astype(np.float32)
        write_dicom_series(CTVolume(image, None, (2.0, 0.7, 0.7), pid), tmp_path / "dicom" / pid)
    ds = open_dataset(tmp_path / "dicom")
    assert ds.kind == "dicom" and not ds.has_masks and sorted(ds.patient_ids) == ["P1", "P2"]
    vol = ds["P1"]
    assert vol.image.shape == (3, 16, 16) and vol.mask is None and not ds.has_tumour("P1")
    # a second series of the same patient gets its own id
    image = rng.integers(-1000, 400, size=(4, 16, 16)).astype(np.float32)
    write_dicom_series(CTVolume(image, None, (2.0, 0.7, 0.7), "P1"), tmp_path / "dicom" / "P1b")
    ids = open_dataset(tmp_path / "dicom").patient_ids
    assert sorted(ids) == ["P1-1", "P1-2", "P2"]


def test_phantom_study_dataset(tmp_path: Path) -> None:
    from lungseg.data import phantom

    study = phantom.generate_study(
        tmp_path / "study", n_patients=3, seed=0, config=_small_phantom(phantom), progress=False
    )
    ds = open_dataset(study)
    assert ds.kind == "phantom" and ds.has_masks and len(ds) == 3
    manifest = json.loads((Path(study) / "manifest.json").read_text())
    for entry in manifest["patients"]:
        pid = entry["patient_id"]
        vol = ds[pid]
        assert vol.mask is not None and vol.mask.shape == vol.image.shape
        assert ds.has_tumour(pid) == bool(vol.mask.any()) == bool(entry.get("tumours"))


def _small_phantom(phantom):
    return phantom.PhantomConfig(image_size=64, n_slices=8)


# ---------------------------------------------------------------------------------------------
# detection and generic errors
# ---------------------------------------------------------------------------------------------
def test_open_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: the folder is empty"):
        open_dataset(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"could not recognise.*readme\.txt"):
        open_dataset(tmp_path / "other")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(DataError, match=r"x\.csv: unsupported file type"):
        open_dataset(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="kind must be one of"):
        open_dataset(tmp_path / "other", kind="png")


def test_loaders_never_write_into_input(tmp_path: Path) -> None:
    root = _make_msd(tmp_path / "t")
    before = sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*"))
    ds = open_dataset(root)
    for vol in ds:
        assert vol.image.size
    assert sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*")) == before


def test_dataset_indexing_errors(tmp_path: Path) -> None:
    images, masks = _slices(2)
    ds = open_dataset(write_npz(tmp_path / "d.npz", images, masks))
    with pytest.raises(KeyError, match="unknown patient id 'nobody'"):
        ds["nobody"]
    with pytest.raises(IndexError):
        ds[5]
    assert "slice_00000" in ds and "nobody" not in ds


def test_npz_member_sizes_are_bounded_before_decompressing(tmp_path: Path) -> None:
    """A small .npz whose directory says an array unpacks to 2 GiB is refused from that size, unread."""
    import struct
    import zipfile

    from lungseg.limits import MAX_NPZ_MEMBER_BYTES

    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, images=np.zeros((4, 16, 16), np.float32), masks=np.zeros((4, 16, 16), np.uint8))
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        names = [info.filename for info in zf.infolist()]
    # the central directory entry of images.npy: its uncompressed size is at offset 24 of the record
    entry = raw.index(b"PK\x01\x02")  # the directory lists the members in order
    for _ in range(names.index("images.npy")):
        entry = raw.index(b"PK\x01\x02", entry + 4)
    raw[entry + 24:entry + 28] = struct.pack("<I", 2**31)
    path.write_bytes(bytes(raw))
    assert 2**31 > MAX_NPZ_MEMBER_BYTES
    with pytest.raises(DataError, match=r"bomb\.npz: key 'images' unpacks to 2147483648 bytes, over the"):
        read_npz(path)
