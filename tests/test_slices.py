"""Patient-level splits and the preprocessed 2D slice dataset."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lungseg.data import open_dataset
from lungseg.data.npz import write_npz
from lungseg.data.slices import SliceDataset, patient_split
from lungseg.errors import DataError
from lungseg.preprocess import Fingerprint, preprocess_slices

S = 32


# ---------------------------------------------------------------------------------------------
# patient_split
# ---------------------------------------------------------------------------------------------
def _ids(n: int) -> list[str]:
    return [f"p{i:03d}" for i in range(n)]


@pytest.mark.parametrize("n", [3, 4, 5, 7, 10, 40, 101])
def test_split_partitions_patients(n: int) -> None:
    ids = _ids(n)
    flags = [i % 3 == 0 for i in range(n)]
    split = patient_split(ids, flags, seed=1)
    parts = [set(split[k]) for k in ("train", "val", "test")]
    assert all(parts), f"an empty part for n={n}: {split}"
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == set(ids)
    assert abs(len(parts[0]) - 0.7 * n) <= 1.5


def test_split_is_stratified() -> None:
    ids = _ids(50)
    flags = {p: i % 4 == 1 for i, p in enumerate(ids)}  # 13 of 50 have tumours
    overall = sum(flags.values()) / len(ids)
    split = patient_split(ids, flags, seed=3)
    for name, part in split.items():
        share = sum(flags[p] for p in part) / len(part)
        assert abs(share - overall) <= 1 / len(part), (name, share, overall)


def test_split_deterministic_and_order_free() -> None:
    ids = _ids(30)
    flags = [i % 2 == 0 for i in range(30)]
    a = patient_split(ids, flags, seed=7)
    b = patient_split(ids[::-1], flags[::-1], seed=7)
    c = patient_split(ids, flags, seed=8)
    assert a == b and a != c


def test_split_argument_errors() -> None:
    with pytest.raises(ValueError, match="unique"):
        patient_split(["a", "a", "b"], [True, False, True])
    with pytest.raises(ValueError, match="has_tumour has 2 entries for 3"):
        patient_split(["a", "b", "c"], [True, False])
    with pytest.raises(ValueError, match="fractions"):
        patient_split(["a", "b", "c"], [True, False, True], fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="empty"):
        patient_split([], [])


# ---------------------------------------------------------------------------------------------
# SliceDataset
# ---------------------------------------------------------------------------------------------
def _study(tmp_path: Path, n_patients: int = 4, per_patient: int = 5, size: int = 48) -> Path:
    """Slices whose image is bright exactly where the mask is."""
    rng = np.random.default_rng(0)
    n = n_patients * per_patient
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        if i % 2 == 0:  # half of the slices hold an off-centre, asymmetric lesion
            r, c = rng.integers(6, size - 24, size=2)
            masks[i, r : r + 16, c : c + 9] = 1
            masks[i, r : r + 5, c + 9 : c + 16] = 1
    images = np.where(masks == 1, 200.0, -800.0) + rng.normal(0, 5, size=masks.shape)
    ids = np.repeat([f"pt{i}" for i in range(n_patients)], per_patient)
    spacing = np.tile([0.75, 0.75], (n, 1))
    return write_npz(tmp_path / "study.npz", images.astype(np.float32), masks, patient_ids=ids, spacing=spacing)


def _fingerprint(size: int = S) -> Fingerprint:
    return Fingerprint(mean=-600.0, std=400.0, image_size=size)


def test_slice_dataset_items_and_info(tmp_path: Path) -> None:
    ds = open_dataset(_study(tmp_path))
    sd = SliceDataset(ds, ["pt2", "pt0"], _fingerprint(), S)
    assert len(sd) == 10
    image, mask = sd[3]
    assert image.shape == mask.shape == (1, S, S) and image.dtype == mask.dtype == torch.float32
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
    info = sd.slice_info[3]
    assert info.patient_id == "pt2" and info.slice_index == 3
    assert info.spacing == pytest.approx((0.75 * 48 / S, 0.75 * 48 / S))
    assert info.tumour_pixels == int(mask.sum())
    expected = preprocess_slices(ds["pt2"].image[3:4], _fingerprint())[0]
    np.testing.assert_allclose(image[0].numpy(), expected, rtol=1e-6)


def test_slice_dataset_argument_errors(tmp_path: Path) -> None:
    ds = open_dataset(_study(tmp_path))
    with pytest.raises(DataError, match="unknown patient ids.*'ghost'"):
        SliceDataset(ds, ["pt0", "ghost"], _fingerprint(), S)
    with pytest.raises(ValueError, match="image_size=64 differs from fingerprint.image_size=32"):
        SliceDataset(ds, ["pt0"], _fingerprint(), 64)
    unit_fp = Fingerprint(mean=0.4, std=0.2, window=None, image_size=S, intensity="unit")
    with pytest.raises(DataError, match=r"'hu' intensities but the fingerprint.*'unit'"):
        SliceDataset(ds, ["pt0"], unit_fp, S)


def test_cache_hit_skips_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _study(tmp_path)
    cache = tmp_path / "cache"
    first = SliceDataset(open_dataset(path), ["pt0", "pt1"], _fingerprint(), S, cache_dir=cache)
    assert not first.cache_hit and (first.cache_path / "images.npy").is_file() and first.cache_path.parent == cache
    assert [p.name for p in cache.iterdir()] == [first.cache_path.name]  # no temporary left behind
    ds = open_dataset(path)
    monkeypatch.setattr(type(ds), "_load", lambda self, pid: pytest.fail(f"volume {pid} re-read"))
    second = SliceDataset(ds, ["pt0", "pt1"], _fingerprint(), S, cache_dir=cache)
    assert second.cache_hit and second.slice_info == first.slice_info
    np.testing.assert_array_equal(second.images, first.images)
    monkeypatch.undo()
    # any change of the preprocessing or of the source gives another key
    other_fp = SliceDataset(open_dataset(path), ["pt0", "pt1"], Fingerprint(mean=-500.0, std=400.0, image_size=S), S)
    assert other_fp.cache_key() != second.cache_key()
    assert SliceDataset(open_dataset(path), ["pt1", "pt0"], _fingerprint(), S).cache_key() != second.cache_key()
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    third = SliceDataset(open_dataset(path), ["pt0", "pt1"], _fingerprint(), S, cache_dir=cache)
    assert not third.cache_hit and third.cache_path != first.cache_path


def test_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    path = _study(tmp_path)
    first = SliceDataset(open_dataset(path), ["pt0"], _fingerprint(), S, cache_dir=tmp_path / "c")
    cache_path = first.cache_path
    del first  # drop its memory map before damaging the file underneath
    (cache_path / "images.npy").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable slice cache"):
        again = SliceDataset(open_dataset(path), ["pt0"], _fingerprint(), S, cache_dir=tmp_path / "c")
    assert not again.cache_hit and len(again) == 5
    np.testing.assert_array_equal(again.images, SliceDataset(open_dataset(path), ["pt0"], _fingerprint(), S).images)


def test_cached_dataset_pickles_without_copying(tmp_path: Path) -> None:
    ds = open_dataset(_study(tmp_path))
    sd = SliceDataset(ds, ["pt1", "pt3"], _fingerprint(), S, cache_dir=tmp_path / "c")
    assert isinstance(sd._images, np.memmap)
    blob = pickle.dumps(sd)
    in_memory = pickle.dumps(SliceDataset(ds, ["pt1", "pt3"], _fingerprint(), S))
    # the slices are reopened from the cache in the receiving process, not pickled
    assert len(blob) <= len(in_memory) - sd.images.nbytes - sd.masks.nbytes + 1024
    clone = pickle.loads(blob)
    assert all(torch.equal(a, b) for a, b in zip(clone[7], sd[7]))


def test_tumour_slices_flag_the_resized_masks(tmp_path: Path) -> None:
    ds = open_dataset(_study(tmp_path, n_patients=4, per_patient=5))
    sd = SliceDataset(ds, ds.patient_ids, _fingerprint(), S)
    tumour = sd.tumour_slices
    assert tumour.dtype == bool and 0 < tumour.sum() < len(sd)
    np.testing.assert_array_equal(tumour, sd.masks.reshape(len(sd), -1).any(axis=1))


def test_unit_intensity_dataset(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 1, (4, 20, 20)).astype(np.float32)
    masks = (images > 0.8).astype(np.uint8)
    ds = open_dataset(write_npz(tmp_path / "u.npz", images, masks, intensity="unit"))
    fp = Fingerprint(mean=0.5, std=0.29, window=None, image_size=16, intensity="unit")
    sd = SliceDataset(ds, ds.patient_ids, fp, 16)
    image, mask = sd[0]
    assert image.shape == (1, 16, 16) and float(image.min()) >= (0 - 0.5) / 0.29 - 1e-5
    assert float(image.max()) <= (1 - 0.5) / 0.29 + 1e-5


def test_phantom_study_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Phantom DICOM study -> patient split -> training fingerprint -> cached slice dataset."""
    from lungseg.data import phantom

    study = phantom.generate_study(
        tmp_path / "study",
        n_patients=6,
        seed=1,
        config=phantom.PhantomConfig(image_size=64, n_slices=6),
        progress=False,
    )
    before = sorted((p, p.stat().st_mtime_ns) for p in Path(study).rglob("*"))
    ds = open_dataset(study)
    split = patient_split(ds.patient_ids, [ds.has_tumour(p) for p in ds.patient_ids], seed=0)
    assert all(split.values()) and sum(map(len, split.values())) == 6
    fp = Fingerprint.from_volumes(ds.volumes(split["train"]), image_size=S)
    train = SliceDataset(ds, split["train"], fp, S, cache_dir=tmp_path / "cache")
    assert len(train) == 6 * len(split["train"])
    image, mask = train[0]
    assert image.shape == mask.shape == (1, S, S)
    assert abs(float(train.images.mean())) < 1.0  # z-scored with the training statistics
    monkeypatch.setattr("lungseg.data.dicom.read_dicom_series", lambda *a, **k: pytest.fail("DICOM re-parsed"))
    monkeypatch.setattr("lungseg.data.phantom.study.read_dicom_series", lambda *a, **k: pytest.fail("DICOM re-parsed"))
    again = SliceDataset(open_dataset(study), split["train"], fp, S, cache_dir=tmp_path / "cache")
    assert again.cache_hit and np.array_equal(again.masks, train.masks)
    assert sorted((p, p.stat().st_mtime_ns) for p in Path(study).rglob("*")) == before
