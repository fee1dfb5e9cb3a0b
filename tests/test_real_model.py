"""The published real-CT model (``results/real-ct``, ``scripts/train_real_model.py``): what it is, the
input it expects, a model card whose numbers follow from the published cross-validation, and (where
``../shared/realct`` is present) that ``lungseg predict`` segments the real patches with it."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lungseg.errors import LungsegError
from lungseg.inference import Predictor, predict

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script(load_script: Any) -> Any:
    return load_script("train_real_model")


@pytest.fixture(scope="module")
def model(script: Any) -> Path:
    return ROOT / script.DEFAULT_OUT


def test_the_model_expects_unit_patches_and_predicts_with_the_eight_symmetries(model: Path) -> None:
    predictor = Predictor.from_bundle(model, device="cpu")
    assert predictor.fingerprint.intensity == "unit" and predictor.fingerprint.image_size == 48
    assert predictor.config.model == "attention" and predictor.config.epochs == 40
    assert predictor.tta == "dihedral"  # tta "auto" resolved for a 48² input
    assert not Path(predictor.config.data).is_absolute()


def test_the_model_card_states_the_data_its_licence_and_the_cross_validated_dice(model: Path, script: Any) -> None:
    with zipfile.ZipFile(model) as zf:
        card = zf.read(next(n for n in zf.namelist() if n.endswith("docs/README.md"))).decode()
    cv = script.cross_validated_dice()
    assert 0.0 < cv["low"] < cv["mean"] < cv["high"] < 1.0 and len(cv["per_fold"]) == 5
    assert f"**{cv['mean']:.3f}**" in card and f"[{cv['low']:.3f}, {cv['high']:.3f}]" in card
    for needed in ("CC BY-SA 4.0", "Task06", "min-max scaled", "Not for clinical use", "[-970, 150] HU",
                   "2 mm per pixel", "read its lesion table as candidates"):
        assert needed in card, needed
    scans = json.loads(script.WHOLE_SCANS.read_text(encoding="utf-8"))["scans"]
    for row in scans:  # the whole-scan line follows from the published measurement
        assert f"{row['scan']}: Dice {row['dice']:.2f}" in card


def test_the_model_states_the_pixel_size_and_hu_window_of_its_training_patches(model: Path, script: Any) -> None:
    fingerprint = Predictor.from_bundle(model, device="cpu").fingerprint
    assert fingerprint.pixel_mm == script.PIXEL_MM == 2.0
    assert fingerprint.unit_window == script.UNIT_WINDOW


def test_hounsfield_slices_without_geometry_are_refused_with_a_message(model: Path, tmp_path: Path) -> None:
    """An ``.npz`` of HU slices (no scan, no lungs to search) is refused; whole scans are converted."""
    np.savez(tmp_path / "hu.npz", images=np.full((2, 48, 48), -800.0, dtype=np.float32))
    with pytest.raises(LungsegError, match="unit"):
        predict(model, tmp_path / "hu.npz", tmp_path / "out.npz", device="cpu", progress=False)
    assert not (tmp_path / "out.npz").exists()


def test_a_png_without_a_pixel_size_is_segmented_with_a_warning(model: Path, tmp_path: Path) -> None:
    from PIL import Image

    from lungseg.errors import DataWarning

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)).save(tmp_path / "slice.png")
    with pytest.warns(DataWarning, match=r"slice\.png: PNG/JPEG images carry no pixel size.* 2 mm per pixel"):
        predict(model, tmp_path / "slice.png", tmp_path / "out.png", device="cpu", progress=False)
    assert (tmp_path / "out.png").is_file()


@pytest.mark.skipif(not (ROOT.parent / "shared" / "realct" / "msd-task06-2mm-patches").is_dir(),
                    reason="../shared/realct (the real MSD patches) is absent in this clone")
def test_predict_segments_the_real_patches_it_was_trained_on(model: Path, script: Any, tmp_path: Path) -> None:
    """On its own training patches the model must fit them at least as well as the recipe does on
    held-out patients: a check that the published weights are the trained real-CT model."""
    from lungseg.experiment.realct import load_real_patches
    from lungseg.metrics import confusion

    patches = load_real_patches()
    np.savez(tmp_path / "patches.npz", images=patches.images, intensity="unit")
    summary = predict(model, tmp_path / "patches.npz", tmp_path / "pred.npz", device="cpu", progress=False)
    with np.load(tmp_path / "pred.npz") as z:
        masks = z["masks"].astype(bool)
    assert masks.shape == patches.masks.shape and json.dumps(summary)
    assert confusion(masks, patches.masks.astype(bool)).dice >= script.cross_validated_dice()["mean"]


LIDC = ROOT.parent / "shared" / "realct" / "lidc-idri-0314"


@pytest.mark.skipif(not LIDC.is_dir(), reason="../shared/realct (the real LIDC-IDRI-0314 scan) is absent in this clone")
def test_predict_finds_the_real_nodule_in_a_hu_scan(model: Path, tmp_path: Path) -> None:
    """The model on 30 slices of the real LIDC-IDRI-0314 series in HU (a NIfTI crop of the series around
    the nodule; the whole series is measured by ``benchmarks/real_ct_scans.py``): it must mark most of
    the 2-of-4-reader consensus and nothing outside the lungs' region."""
    import nibabel as nib

    from lungseg.inference.readers import read_input
    from lungseg.inference.region import lung_region

    ct = read_input(LIDC / "ct")[1][0]
    reference = read_input(LIDC / "nodule_consensus.nii.gz")[1][0].image > 0.5
    z = np.nonzero(reference.any(axis=(1, 2)))[0]
    keep = slice(max(0, int(z.min()) - 6), int(z.max()) + 7)
    affine = np.diag([-ct.spacing[2], -ct.spacing[1], ct.spacing[0], 1.0])  # canonical voxel order, RAS
    scan = tmp_path / "crop.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(ct.image[keep].transpose(2, 1, 0)), affine), scan)
    summary = predict(model, scan, tmp_path / "mask.nii.gz", device="cpu", progress=False)
    mask = read_input(tmp_path / "mask.nii.gz")[1][0].image > 0.5
    assert summary["region"] == "lungs" and mask.shape == reference[keep].shape
    assert summary["planes"] == "axial" and "30 mm" in summary["planes_note"]  # a slab too short for three planes
    found = (mask & reference[keep]).sum() / reference.sum()
    assert found >= 0.6, f"only {found:.0%} of the consensus nodule marked"
    assert not (mask & ~lung_region(ct.image[keep], ct.spacing)).any()


def test_refreshing_the_card_rewrites_only_its_whole_scan_line(model: Path, script: Any, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    copy = tmp_path / "model.zip"
    shutil.copyfile(model, copy)
    with zipfile.ZipFile(copy) as zf:  # an outdated line, as after a change to how predict searches a scan
        members = {n: zf.read(n) for n in zf.namelist()}
    card = next(n for n in members if n.endswith("docs/README.md"))
    lines = members[card].decode().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("- **On two whole real scans**"))
    lines[at] = "- **On two whole real scans**: outdated.\n"
    members[card] = "".join(lines).encode()
    with zipfile.ZipFile(copy, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    script.refresh_card(copy)
    with zipfile.ZipFile(copy) as zf:
        refreshed = {n: zf.read(n) for n in zf.namelist()}
    assert "outdated" not in refreshed[card].decode() and script.whole_scan_lines() in refreshed[card].decode()
    script.refresh_card(copy)  # a second refresh keeps one size line, after the whole-scan line
    with zipfile.ZipFile(copy) as zf:
        text = zf.read(card).decode()
    assert text.count(script.SIZE_LINE) == 1 and script.whole_scan_lines() + script.training_range_line() in text
    assert all(refreshed[n] == data for n, data in members.items() if not n.endswith(("README.md", "metadata.json")))
    Predictor.from_bundle(copy, device="cpu")  # the card's new hash is checked on loading
    members[card] = b"# a card without the line\n"
    with zipfile.ZipFile(copy, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(LungsegError, match="no model card with one line on the whole real scans"):
        script.refresh_card(copy)
    shutil.copyfile(model, copy)
    monkeypatch.setattr(script, "WHOLE_SCANS", tmp_path / "never-measured.json")
    with pytest.raises(LungsegError, match="never-measured.json not found: measure the whole scans first"):
        script.refresh_card(copy)  # the line is kept, not deleted
    with zipfile.ZipFile(copy) as zf, zipfile.ZipFile(model) as published:
        assert zf.read(card) == published.read(card)
