"""Shared fixtures of the test suite: small datasets and tiny training settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lungseg.crf import MISSING_CRF, crf_available


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Where pydensecrf2 is missing (no C++ compiler to build it), a test that failed because the CRF
    could not run is reported as skipped, with the reason; where it is installed, nothing changes."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call" and not crf_available():
        said = str(report.longrepr) + report.capstdout + report.capstderr
        if "pydensecrf2" in said:
            report.outcome = "skipped"
            report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: needs the CRF: {MISSING_CRF}")


def write_toy_npz(path: Path, n_patients: int = 10, per_patient: int = 4, size: int = 32, seed: int = 0) -> Path:
    """Bright discs (soft tissue, HU) on noisy lung parenchyma, grouped into patients."""
    rng = np.random.default_rng(seed)
    n = n_patients * per_patient
    images = (-850 + rng.normal(0, 40, (n, size, size))).astype(np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        r = rng.uniform(size / 10, size / 5)
        cy, cx = rng.uniform(size / 3, 2 * size / 3, 2)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        masks[i] = m
        images[i][m] = rng.uniform(-100, 60) + rng.normal(0, 30, m.sum())
    pids = np.array([f"p{i // per_patient:02d}" for i in range(n)])
    np.savez(path, images=images, masks=masks, patient_ids=pids, spacing=np.full((n, 2), 0.8))
    return path


@pytest.fixture(scope="session")
def make_npz() -> Callable[..., Path]:
    """:func:`write_toy_npz`: a toy ``.npz`` dataset of bright discs on lung, grouped into patients."""
    return write_toy_npz


@pytest.fixture(scope="session")
def tiny() -> dict[str, Any]:
    """TrainConfig fields of a network small enough to train in seconds on a CPU, an epoch being one
    pass over the (few) training slices rather than the default's at least 512 samples."""
    return dict(base_channels=4, depth=2, batch_size=8, device="cpu", min_samples_per_epoch=1)


def write_rtstruct(path: Path, ct_folder: Path, rois: dict[str, list[np.ndarray]]) -> Path:
    """A minimal RT Structure Set (PS3.3 A.19) on the CT series in ``ct_folder``, written with pydicom.

    Args:
        path: the file to write.
        ct_folder: a folder of one CT series (its first file's UIDs are referenced).
        rois: ROI name -> closed planar contours, each ``(N, 3)`` LPS millimetres.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ct = pydicom.dcmread(sorted(ct_folder.glob("*.dcm"))[0], stop_before_pixels=True)
    rtstruct = "1.2.840.10008.5.1.4.1.1.481.3"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = rtstruct
    ds.file_meta.MediaStorageSOPInstanceUID = sop = generate_uid(entropy_srcs=[str(path)])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = rtstruct, sop, "RTSTRUCT"
    ds.PatientID, ds.PatientName = ct.PatientID, ct.PatientName
    ds.StudyInstanceUID = ct.StudyInstanceUID
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(path), "series"])
    ds.StructureSetLabel = "test"
    series = Dataset()
    series.SeriesInstanceUID = ct.SeriesInstanceUID
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = ct.StudyInstanceUID
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = ct.FrameOfReferenceUID
    frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]
    ds.StructureSetROISequence, ds.ROIContourSequence = [], []
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName = number, name
        roi.ReferencedFrameOfReferenceUID = ct.FrameOfReferenceUID
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ContourSequence = []
        for points in contours:
            contour = Dataset()
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [f"{v:.6g}" for v in np.asarray(points, float).ravel()]
            item.ContourSequence.append(contour)
        ds.ROIContourSequence.append(item)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="session")
def make_rtstruct() -> Callable[..., Path]:
    """:func:`write_rtstruct`: a minimal RT Structure Set on a CT series folder."""
    return write_rtstruct


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], Any]:
    """``load_script(name)``: the module of ``scripts/<name>.py`` (the scripts are not a package)."""
    return _load_script


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], Any]:
    """``load_benchmark(name)``: the module of ``benchmarks/<name>.py``."""
    return lambda name: _load_script(name, "benchmarks")


def _load_script(name: str, folder: str = "scripts") -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
