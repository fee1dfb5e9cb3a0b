"""Fuzzing the readers of user files: bad bytes give a lungseg error naming the file, never anything else.

Every reader a user's file reaches — DICOM series (:func:`read_dicom_series` and the DICOM dataset of
:func:`open_dataset`, with an RT Structure Set), NIfTI (:func:`read_nifti`), ``.npz`` (:func:`read_npz`, :func:`open_dataset`,
:func:`read_npz_images`, which ``predict`` uses) and PNG/JPEG (:func:`read_image`) — is given random
bytes and mutated valid files: truncated, bytes flipped, overwritten, inserted or deleted, header fields
set to odd values (dtype, shape, dims, sizes, UIDs, NaN, ...), elements and keys deleted or renamed.
Each call must either return data that passes the reader's own promises (finite, the right shape) or
raise :class:`LungsegError` whose message is one line naming the file. Any other exception type fails
the test (hypothesis then shrinks it to the smallest file that shows it); so does an example slower
than ``DEADLINE`` (a near-hang) or a test slower than its ``timeout`` (a hang).

The examples are derandomized, so CI runs the same files every time (about 20 s in all on one core).
``LUNGSEG_FUZZ=deep pytest tests/test_fuzz.py`` runs twenty times as many fresh random examples, for
bug hunting.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lungseg.data import open_dataset
from lungseg.data.dicom import read_dicom_series
from lungseg.data.dicom_write import write_dicom_series
from lungseg.data.images import read_image
from lungseg.data.nifti import read_nifti
from lungseg.data.npz import read_npz, read_npz_images
from lungseg.data.volume import CTVolume
from lungseg.errors import LungsegError

DEADLINE = timedelta(seconds=3)  # per example; the files are tiny, a correct reader needs milliseconds
_DEEP = os.environ.get("LUNGSEG_FUZZ") == "deep"
settings.register_profile(
    "lungseg-fuzz", derandomize=not _DEEP, database=None, deadline=DEADLINE, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

pytestmark = [pytest.mark.timeout(3600 if _DEEP else 120), pytest.mark.filterwarnings("ignore")]


def fuzz(n: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``@settings`` of a fuzz test: ``n`` examples (x20 with ``LUNGSEG_FUZZ=deep``)."""
    return settings(settings.get_profile("lungseg-fuzz"), max_examples=n * 20 if _DEEP else n)


def expect_clean(read: Callable[[], Any], named: str) -> Any:
    """``read()``'s value, or ``None`` when it raised a :class:`LungsegError` of one line naming ``named``.

    Any other exception propagates, failing the test.
    """
    try:
        return read()
    except LungsegError as err:
        message = str(err)
        assert "\n" not in message, f"error of more than one line: {message!r}"
        assert named in message, f"error does not name {named!r}: {message!r}"
        return None


# ------------------------------------------------------------------------------------------- mutations
@st.composite
def mutated(draw: st.DrawFn, data: bytes, hot: int | None = None) -> bytes:
    """``data`` truncated, with bytes flipped, overwritten, inserted or deleted (1-4 edits).

    ``hot``: bias half the edits into the first ``hot`` bytes (a header, where parsers branch most).
    """
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not buf:
            break
        limit = len(buf) if hot is None or draw(st.booleans()) else min(hot, len(buf))
        pos = draw(st.integers(0, limit - 1))
        op = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "delete"]))
        if op == "truncate":
            del buf[pos:]
        elif op == "flip":
            buf[pos] ^= draw(st.integers(1, 255))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            buf[pos : pos + len(chunk)] = chunk
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            del buf[pos : pos + draw(st.integers(1, 16))]
    return bytes(buf)


def fresh_dir(root: Path, name: str) -> Path:
    folder = root / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ------------------------------------------------------------------------------------------- DICOM
def _seed_series() -> list[bytes]:
    """Three 8x10 slices of a valid CT series (explicit VR little endian, no sequences)."""
    import tempfile

    image = np.arange(3 * 8 * 10, dtype=np.float32).reshape(3, 8, 10) - 1000
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_dicom_series(CTVolume(image, None, (2.5, 0.8, 0.7), "fuzz"), Path(tmp), uid_seed="fuzz")
        return [p.read_bytes() for p in paths]


SERIES = _seed_series()
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}


def dicom_elements(data: bytes) -> dict[tuple[int, int], tuple[bytes, int, int, int]]:
    """``{(group, element): (VR, start, value start, end)}`` of an explicit VR little endian file."""
    found, pos = {}, 132
    while pos + 12 <= len(data):
        group, elem = struct.unpack_from("<HH", data, pos)
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            (length,), head = struct.unpack_from("<I", data, pos + 8), 12
        else:
            (length,), head = struct.unpack_from("<H", data, pos + 6), 8
        found[(group, elem)] = (vr, pos, pos + head, pos + head + length)
        pos += head + length
    return found


def dicom_element(tag: tuple[int, int], vr: bytes, value: bytes) -> bytes:
    if vr in _LONG_VRS:
        return struct.pack("<HH", *tag) + vr + b"\0\0" + struct.pack("<I", len(value)) + value
    return struct.pack("<HH", *tag) + vr + struct.pack("<H", len(value) & 0xFFFF) + value


# The elements the reader uses, and what odd values they may take.
_TAGS = {
    "TransferSyntaxUID": (0x0002, 0x0010), "MediaStorageSOPClassUID": (0x0002, 0x0002),
    "FileMetaInformationGroupLength": (0x0002, 0x0000), "SOPClassUID": (0x0008, 0x0016),
    "Modality": (0x0008, 0x0060), "PatientID": (0x0010, 0x0020), "SliceThickness": (0x0018, 0x0050),
    "SpacingBetweenSlices": (0x0018, 0x0088), "SeriesInstanceUID": (0x0020, 0x000E),
    "SeriesNumber": (0x0020, 0x0011), "ImagePositionPatient": (0x0020, 0x0032),
    "ImageOrientationPatient": (0x0020, 0x0037), "SamplesPerPixel": (0x0028, 0x0002),
    "PhotometricInterpretation": (0x0028, 0x0004), "NumberOfFrames": (0x0028, 0x0008),
    "Rows": (0x0028, 0x0010), "Columns": (0x0028, 0x0011), "PixelSpacing": (0x0028, 0x0030),
    "BitsAllocated": (0x0028, 0x0100), "BitsStored": (0x0028, 0x0101), "HighBit": (0x0028, 0x0102),
    "PixelRepresentation": (0x0028, 0x0103), "RescaleIntercept": (0x0028, 0x1052),
    "RescaleSlope": (0x0028, 0x1053), "PixelData": (0x7FE0, 0x0010),
}
_SYNTAXES = [
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5",
    "1.2.3.4", "",
]
_NUMBERS = ["0", "-1", "1", "nan", "NaN", "inf", "-inf", "1e999", "-0", "", " ", "abc", "1\\2", "1e-300",
            "0\\0\\0\\0\\0\\0", "1\\0\\0\\1\\0\\0", "1\\0\\0\\0\\1", "0\\0", "4294967296", "99999999999999"]


def _value(vr: bytes) -> st.SearchStrategy[bytes]:
    text = st.text(st.characters(codec="latin-1"), max_size=24).map(lambda s: s.encode("latin-1"))
    if vr in (b"US", b"UL", b"SS"):
        return st.one_of(st.integers(0, 0xFFFF).map(lambda v: struct.pack("<H", v)), st.binary(max_size=6))
    if vr in (b"DS", b"IS"):
        numeric = st.text(st.sampled_from("0123456789+-.eE\\ naifNIF"), max_size=40).map(str.encode)
        return st.one_of(st.sampled_from(_NUMBERS).map(str.encode), numeric, text)
    if vr == b"UI":
        return st.one_of(st.sampled_from(_SYNTAXES).map(str.encode), text)
    if vr in (b"OB", b"OW"):
        return st.one_of(st.binary(max_size=400), st.just(b""))
    return st.one_of(text, st.binary(max_size=24))


@st.composite
def mutated_header(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` (one slice) with 1-3 elements deleted, given odd values or VRs, lying lengths, or added."""
    for _ in range(draw(st.integers(1, 3))):
        elements = dicom_elements(data)
        name = draw(st.sampled_from(sorted(_TAGS)))
        tag = _TAGS[name]
        if tag not in elements:  # e.g. NumberOfFrames, absent from the seed: add it where tags stay sorted
            start = min((where for t, (_, where, _, _) in elements.items() if t > tag), default=len(data))
            vr = b"UI" if tag[0] == 2 else b"OW" if name == "PixelData" else b"IS"
            data = data[:start] + dicom_element(tag, vr, draw(_value(vr))) + data[start:]
            continue
        vr, start, vstart, end = elements[tag]
        op = draw(st.sampled_from(["delete", "value", "value", "value", "vr", "length"]))
        if op == "delete":
            data = data[:start] + data[end:]
        elif op == "value":
            value = draw(_value(vr))
            data = data[:start] + dicom_element(tag, vr, value) + data[end:]
        elif op == "vr":
            new_vr = draw(st.sampled_from([b"OB", b"UN", b"SQ", b"FD", b"US", b"DS", b"UI", b"AT", b"XX"]))
            data = data[:start] + dicom_element(tag, new_vr, data[vstart:end]) + data[end:]
        else:  # a length field that lies about the value's size
            fake = draw(st.integers(0, 0xFFFFFFFF if vr in _LONG_VRS else 0xFFFF))
            field = struct.pack("<I", fake) if vr in _LONG_VRS else struct.pack("<H", fake)
            at = vstart - len(field)
            data = data[:at] + field + data[vstart:]
    return data


def check_dicom_folder(folder: Path) -> None:
    volumes = expect_clean(lambda: read_dicom_series(folder), str(folder))
    for vol in volumes or []:
        assert vol.image.dtype == np.float32 and vol.image.ndim == 3 and vol.image.size > 0
        assert np.isfinite(vol.image).all(), "non-finite HU from a DICOM series"
        assert all(np.isfinite(s) and s > 0 for s in vol.spacing), vol.spacing
        assert np.isfinite(vol.affine).all()
    expect_clean(lambda: open_dataset(folder), str(folder))


def write_series(root: Path, files: list[bytes], names: list[str] | None = None) -> Path:
    folder = fresh_dir(root, "series")
    for i, data in enumerate(files):
        (folder / (names[i] if names else f"CT{i + 1:05d}.dcm")).write_bytes(data)
    return folder


@fuzz(150)
@given(data=st.data())
def test_dicom_series_with_mutated_bytes(root: Path, data: st.DataObject) -> None:
    files = list(SERIES)
    for i in data.draw(st.sets(st.integers(0, len(files) - 1), min_size=1)):
        pixel_start = dicom_elements(files[i])[_TAGS["PixelData"]][2]
        files[i] = data.draw(mutated(files[i], hot=pixel_start), label=f"slice {i}")
    check_dicom_folder(write_series(root, files))


@fuzz(300)
@given(data=st.data())
def test_dicom_series_with_mutated_header_fields(root: Path, data: st.DataObject) -> None:
    files = list(SERIES)
    for i in data.draw(st.sets(st.integers(0, len(files) - 1), min_size=1, max_size=2)):
        files[i] = data.draw(mutated_header(files[i]), label=f"slice {i}")
    check_dicom_folder(write_series(root, files))


@pytest.fixture(scope="module")
def rtstruct_seed(make_rtstruct: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """An RT Structure Set drawing a square tumour with a hole on the middle slice of ``SERIES``."""
    import pydicom

    folder = write_series(tmp_path_factory.mktemp("rtstruct-seed"), SERIES)
    ds = pydicom.dcmread(sorted(folder.glob("*.dcm"))[1], stop_before_pixels=True)
    ipp = np.array(ds.ImagePositionPatient, float)
    corner = lambda j, i: ipp + j * 0.7 * np.array([1.0, 0, 0]) + i * 0.8 * np.array([0, 1.0, 0])  # noqa: E731
    outer = np.array([corner(1, 1), corner(8, 1), corner(8, 6), corner(1, 6)])
    hole = np.array([corner(3, 3), corner(5, 3), corner(5, 4), corner(3, 4)])
    seed = make_rtstruct(folder / "rt.dcm", folder, {"GTV-1": [outer, hole], "Body": [outer]})
    # the unmutated seed reads to a mask with a hole (this also does the imports outside the deadline)
    (volume,) = open_dataset(folder)
    assert volume.mask is not None and volume.mask.sum() == 8 * 6 - 3 * 2
    return seed.read_bytes()


@fuzz(100)
@given(data=st.data())
def test_dicom_study_with_mutated_rtstruct(root: Path, rtstruct_seed: bytes, data: st.DataObject) -> None:
    folder = write_series(root, [*SERIES, data.draw(mutated(rtstruct_seed, hot=600), label="rtstruct")],
                          ["a.dcm", "b.dcm", "c.dcm", "rt.dcm"])

    def read() -> list[CTVolume]:
        dataset = open_dataset(folder)
        return [dataset[pid] for pid in dataset.patient_ids]

    for vol in expect_clean(read, str(folder)) or []:
        assert vol.image.shape == (3, 8, 10) and np.isfinite(vol.image).all()
        if vol.mask is not None:
            assert vol.mask.shape == vol.image.shape and set(np.unique(vol.mask)) <= {0, 1}


@fuzz(60)
@given(noise=st.binary(max_size=600), preamble=st.booleans(), suffix=st.sampled_from([".dcm", "", ".IMA", ".txt"]))
def test_dicom_folder_with_random_files(root: Path, noise: bytes, preamble: bool, suffix: str) -> None:
    junk = (bytes(128) + b"DICM" + noise) if preamble else noise
    check_dicom_folder(write_series(root, [*SERIES, junk], ["a.dcm", "b.dcm", "c.dcm", f"junk{suffix}"]))
    check_dicom_folder(write_series(root, [junk], [f"junk{suffix}"]))


# ------------------------------------------------------------------------------------------- NIfTI
def _seed_nifti() -> bytes:
    affine = np.array([[-0.7, 0, 0, 10.0], [0, -0.8, 0, 20.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.arange(5 * 4 * 3, dtype=np.int16).reshape(5, 4, 3), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img.to_bytes()


NIFTI = _seed_nifti()
_HEADER = nib.nifti1.header_dtype
_NIFTI_FIELDS = ["dim", "datatype", "bitpix", "pixdim", "vox_offset", "scl_slope", "scl_inter", "qform_code",
                 "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x", "srow_x", "srow_z", "magic",
                 "sizeof_hdr", "dim_info", "xyzt_units", "intent_code", "slice_code", "slice_end", "cal_max"]


def _field_values(field: str) -> st.SearchStrategy[Any]:
    dtype = _HEADER[field]
    base, shape = dtype.base, dtype.shape
    if base.kind in "iu":
        info = np.iinfo(base)
        low, high = int(info.min), int(info.max)
        one: st.SearchStrategy[Any] = st.one_of(st.integers(max(-2, low), 8), st.integers(low, high))
        if field == "datatype":
            codes = [int(c) for c in nib.nifti1.data_type_codes.code.keys() if isinstance(c, (int, np.integer))]
            one = st.one_of(st.sampled_from(sorted(set(codes))), one)
    elif base.kind == "f":
        one = st.one_of(st.floats(width=32), st.sampled_from([0.0, -1.0, 1.0, 2.5, 1e30]))
    else:
        one = st.binary(max_size=base.itemsize)
    if not shape:
        return one
    return st.lists(one, min_size=shape[0], max_size=shape[0])


@st.composite
def mutated_nifti_header(draw: st.DrawFn) -> bytes:
    header = np.frombuffer(NIFTI[:348], dtype=_HEADER).copy()
    for field in draw(st.lists(st.sampled_from(_NIFTI_FIELDS), min_size=1, max_size=3, unique=True)):
        value = draw(_field_values(field), label=field)
        if isinstance(value, list) and draw(st.booleans()):  # usually change one entry of dim/pixdim/srow
            original = header[field][0].copy()
            k = draw(st.integers(0, len(value) - 1))
            original[k] = value[k]
            value = original
        header[field] = value
    return header.tobytes() + NIFTI[348:]


def check_nifti(path: Path) -> None:
    got = expect_clean(lambda: read_nifti(path), path.name)
    if got is not None:
        array, spacing, affine = got
        assert array.ndim == 3 and array.size > 0 and array.dtype.kind in "biuf", (array.shape, array.dtype)
        assert all(np.isfinite(s) and s > 0 for s in spacing), spacing
        assert affine.shape == (4, 4) and np.isfinite(affine).all()


@fuzz(150)
@given(data=st.data(), gz=st.booleans())
def test_nifti_with_mutated_bytes(root: Path, data: st.DataObject, gz: bool) -> None:
    folder = fresh_dir(root, "nifti")
    if gz and data.draw(st.booleans(), label="mutate the compressed stream"):
        raw, name = data.draw(mutated(gzip.compress(NIFTI, mtime=0), hot=32)), "ct.nii.gz"
    else:
        raw = data.draw(mutated(NIFTI, hot=352))
        raw, name = (gzip.compress(raw, mtime=0), "ct.nii.gz") if gz else (raw, "ct.nii")
    (folder / name).write_bytes(raw)
    check_nifti(folder / name)


@fuzz(300)
@given(raw=mutated_nifti_header(), gz=st.booleans())
def test_nifti_with_mutated_header_fields(root: Path, raw: bytes, gz: bool) -> None:
    folder = fresh_dir(root, "nifti")
    path = folder / ("ct.nii.gz" if gz else "ct.nii")
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    check_nifti(path)


@fuzz(50)
@given(noise=st.binary(max_size=800), suffix=st.sampled_from([".nii", ".nii.gz"]))
def test_nifti_random_bytes(root: Path, noise: bytes, suffix: str) -> None:
    path = fresh_dir(root, "nifti") / f"ct{suffix}"
    path.write_bytes(noise)
    check_nifti(path)


# ------------------------------------------------------------------------------------------- npz
def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


_NPZ_ARRAYS = {
    "images": (np.arange(3 * 6 * 5, dtype=np.float32).reshape(3, 6, 5) * 10 - 900),
    "masks": (np.arange(3 * 6 * 5).reshape(3, 6, 5) % 7 == 0).astype(np.uint8),
    "patient_ids": np.array(["p1", "p1", "p2"]),
    "spacing": np.full((3, 2), 0.75),
    "intensity": np.array("hu"),
}
NPZ_MEMBERS = {f"{k}.npy": _npy(v) for k, v in _NPZ_ARRAYS.items()}
_DTYPES = ["<f4", ">f8", "<f2", "|i1", "|u1", "<i8", ">u2", "|b1", "<c8", "<U3", "|S3", "|V4", "<M8[s]", "<m8[s]",
           "[('a', '<f4')]"]
_SHAPES = st.lists(st.integers(0, 6), max_size=4).map(tuple)


def _npy_header(descr: str, fortran: bool, shape: Any) -> bytes:
    shown = descr if descr.startswith("[") else repr(descr)
    text = f"{{'descr': {shown}, 'fortran_order': {fortran!r}, 'shape': {shape!r}, }}"
    text += " " * (-(len(text) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin-1")


@st.composite
def drawn_array(draw: st.DrawFn) -> bytes:
    dtype = np.dtype(eval(d) if (d := draw(st.sampled_from(_DTYPES))).startswith("[") else d)  # noqa: S307
    shape = draw(_SHAPES)
    raw = draw(st.binary(min_size=int(np.prod(shape)) * dtype.itemsize, max_size=int(np.prod(shape)) * dtype.itemsize))
    return _npy(np.frombuffer(raw, dtype=dtype).reshape(shape))


@st.composite
def mutated_members(draw: st.DrawFn) -> dict[str, bytes]:
    """The seed's members with 1-3 of: deleted, renamed, random bytes, another array, a rewritten npy
    header (dtype, shape, order), a pickled object array, or a member that is not an ``.npy``."""
    members = dict(NPZ_MEMBERS)
    keys = ["images", "masks", "patient_ids", "spacing", "intensity"]
    for _ in range(draw(st.integers(1, 3))):
        if not members:
            break
        name = draw(st.sampled_from(sorted(members)))
        op = draw(st.sampled_from(["delete", "rename", "random", "array", "array", "header", "header", "pickle",
                                   "raw"]))
        if op == "delete":
            del members[name]
        elif op == "rename":
            members[draw(st.sampled_from(keys + ["x"])) + ".npy"] = members.pop(name)
        elif op == "random":
            prefix = draw(st.sampled_from([b"", b"\x93NUMPY\x01\x00", b"\x93NUMPY\x02\x00", b"PK\x03\x04"]))
            members[name] = prefix + draw(st.binary(max_size=200))
        elif op == "array":
            members[name] = draw(drawn_array())
        elif op == "header":
            body = _NPZ_ARRAYS[name[:-4]].tobytes() if name[:-4] in _NPZ_ARRAYS else b""
            if draw(st.booleans()):
                descr, fortran = draw(st.sampled_from(_DTYPES + ["|O", "'<f4'", "<q99"])), draw(st.booleans())
                shape = draw(st.one_of(_SHAPES, st.sampled_from([(-1, 6, 5), (2**40, 2**40), (3, 6, 5, 1), 7, "x"])))
                members[name] = _npy_header(descr, fortran, shape) + body
            else:
                text = draw(st.text(st.characters(codec="latin-1"), max_size=80)).encode("latin-1")
                members[name] = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + body
        elif op == "pickle":
            buf = io.BytesIO()
            np.save(buf, np.array([1, "two", None], dtype=object), allow_pickle=True)
            members[name] = buf.getvalue()
        else:  # the same bytes under a name without .npy: numpy returns them as bytes, not an array
            members[name[:-4] if name.endswith(".npy") else name + ".npy"] = members.pop(name)
    return members


def check_npz(path: Path) -> None:
    got = expect_clean(lambda: read_npz(path), path.name)
    if got is not None:
        assert got.images.dtype == np.float32 and np.isfinite(got.images).all()
        assert got.masks.shape == got.images.shape and set(np.unique(got.masks)) <= {0, 1}
    expect_clean(lambda: open_dataset(path), path.name)
    images = expect_clean(lambda: read_npz_images(path), path.name)
    if images is not None:
        arr, intensity, spacing = images
        assert arr.ndim == 3 and arr.dtype == np.float32 and np.isfinite(arr).all() and intensity in ("hu", "unit")
        assert spacing is None or (spacing.shape == (len(arr), 2) and (spacing > 0).all())


def write_zip(path: Path, members: dict[str, bytes], compression: int) -> None:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, raw in members.items():
            zf.writestr(name, raw)


@fuzz(300)
@given(members=mutated_members(), compression=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
def test_npz_with_mutated_members(root: Path, members: dict[str, bytes], compression: int) -> None:
    path = fresh_dir(root, "npz") / "data.npz"
    write_zip(path, members, compression)
    check_npz(path)


@fuzz(150)
@given(data=st.data(), compression=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
def test_npz_with_mutated_bytes(root: Path, data: st.DataObject, compression: int) -> None:
    path = fresh_dir(root, "npz") / "data.npz"
    write_zip(path, NPZ_MEMBERS, compression)
    path.write_bytes(data.draw(mutated(path.read_bytes())))
    check_npz(path)


@fuzz(50)
@given(noise=st.binary(max_size=400), zip_magic=st.booleans())
def test_npz_random_bytes(root: Path, noise: bytes, zip_magic: bool) -> None:
    path = fresh_dir(root, "npz") / "data.npz"
    path.write_bytes((b"PK\x05\x06" + noise) if zip_magic else noise)
    check_npz(path)


class _Trap:
    """Unpickling this touches ``path``: proof that pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def test_npz_with_pickled_arrays_runs_no_code(root: Path) -> None:
    """An object array whose unpickling would run code is refused by every npz reader, and never unpickled."""
    folder = fresh_dir(root, "pickle")
    marker = folder / "pickle-ran"
    for key in ("images", "masks", "patient_ids", "intensity"):
        arrays = {k: v for k, v in _NPZ_ARRAYS.items()}
        arrays[key] = np.array([_Trap(marker)], dtype=object)
        path = folder / f"{key}.npz"
        np.savez(path, **arrays)  # pickles the object array
        for read in (read_npz, open_dataset, read_npz_images):
            if read is read_npz_images and key in ("masks", "patient_ids"):
                continue  # predict reads only images, intensity and spacing
            with pytest.raises(LungsegError, match=rf"{key}\.npz: .*pickle"):
                read(path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------- PNG/JPEG
def _encode(array: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)).save(buf, format=fmt)
    return buf.getvalue()


_rng = np.random.default_rng(5)
IMAGES = {
    "grey.png": _encode(_rng.integers(0, 256, (6, 7), dtype=np.uint8), "PNG"),
    "deep.png": _encode(_rng.integers(0, 65536, (6, 7)).astype(np.uint16), "PNG"),
    "rgb.png": _encode(_rng.integers(0, 256, (6, 7, 3), dtype=np.uint8), "PNG"),
    "palette.png": _encode(_rng.integers(0, 4, (6, 7), dtype=np.uint8), "PNG", "P"),
    "grey.jpg": _encode(_rng.integers(0, 256, (16, 16), dtype=np.uint8), "JPEG"),
    "rgb.jpeg": _encode(_rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "JPEG"),
}


def check_image(path: Path) -> None:
    got = expect_clean(lambda: read_image(path), path.name)
    if got is not None:
        assert got.ndim == 2 and got.dtype == np.float32 and got.size > 0
        assert np.isfinite(got).all() and got.min() >= 0 and got.max() <= 1


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@fuzz(200)
@given(data=st.data(), name=st.sampled_from(sorted(IMAGES)))
def test_images_with_mutated_bytes(root: Path, data: st.DataObject, name: str) -> None:
    path = fresh_dir(root, "images") / name
    path.write_bytes(data.draw(mutated(IMAGES[name], hot=64)))
    check_image(path)


@st.composite
def png_with_new_chunk(draw: st.DrawFn) -> bytes:
    """A PNG whose header (IHDR) is rewritten, or with a chunk added or replaced, all with correct CRCs."""
    seed = IMAGES[draw(st.sampled_from(["grey.png", "deep.png", "rgb.png", "palette.png"]))]
    chunks, pos = [], 8
    while pos < len(seed):
        (length,) = struct.unpack_from(">I", seed, pos)
        chunks.append((seed[pos + 4 : pos + 8], seed[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    op = draw(st.sampled_from(["ihdr", "ihdr", "idat", "extra"]))
    if op == "ihdr":
        width, height, depth, colour, comp, filt, lace = struct.unpack(">IIBBBBB", chunks[0][1])
        big = st.one_of(st.integers(0, 40), st.integers(0, 2**31 - 1), st.sampled_from([10_000, 20_000, 70_000]))
        fields = {
            "width": draw(st.one_of(st.just(width), big)), "height": draw(st.one_of(st.just(height), big)),
            "depth": draw(st.one_of(st.just(depth), st.sampled_from([1, 2, 4, 8, 16, 0, 3, 32, 255]))),
            "colour": draw(st.one_of(st.just(colour), st.sampled_from([0, 2, 3, 4, 6, 1, 5, 7, 255]))),
            "rest": draw(st.one_of(st.just((comp, filt, lace)), st.tuples(*[st.integers(0, 255)] * 3))),
        }
        body = struct.pack(">IIBB", fields["width"], fields["height"], fields["depth"], fields["colour"])
        chunks[0] = (b"IHDR", body + bytes(fields["rest"]))
    elif op == "idat":
        i = next(k for k, (kind, _) in enumerate(chunks) if kind == b"IDAT")
        raw = draw(st.one_of(st.binary(max_size=300).map(zlib.compress), st.binary(max_size=300)))
        chunks[i] = (b"IDAT", raw)
    else:
        kind = draw(st.sampled_from([b"PLTE", b"tRNS", b"tEXt", b"zTXt", b"iCCP", b"iTXt", b"gAMA", b"sBIT"]))
        body = draw(st.one_of(st.binary(max_size=120), st.just(b"k\0\0" + zlib.compress(bytes(2_000_000)))))
        chunks.insert(draw(st.integers(1, len(chunks) - 1)), (kind, body))
    return seed[:8] + b"".join(png_chunk(kind, body) for kind, body in chunks)


@fuzz(200)
@given(raw=png_with_new_chunk())
def test_png_with_valid_crc_but_odd_chunks(root: Path, raw: bytes) -> None:
    path = fresh_dir(root, "images") / "slice.png"
    path.write_bytes(raw)
    check_image(path)


@fuzz(50)
@given(noise=st.binary(max_size=400), magic=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM",
                                                            b"GIF89a", b"P5\n4 4\n255\n", b"II*\x00"]))
def test_images_random_bytes(root: Path, noise: bytes, magic: bytes) -> None:
    path = fresh_dir(root, "images") / "slice.png"
    path.write_bytes(magic + noise)
    check_image(path)
