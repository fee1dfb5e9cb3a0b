"""`Predictor`: the two constructors give the same network, and its methods agree with one another
(threshold mask, CRF mask, attention maps, one batched loop whatever the batch size)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lungseg.config import TrainConfig
from lungseg.errors import LungsegError
from lungseg.inference import Predictor, Segmentation
from lungseg.inference.bundle import export_model
from lungseg.training import train


@pytest.fixture(scope="module")
def runs(tiny, make_npz, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predictor")
    data = make_npz(root / "hu.npz", n_patients=4, per_patient=2, size=32, seed=6)
    train(TrainConfig(data=str(data), model="attention", epochs=1, **tiny), root / "attention", progress=False)
    train(TrainConfig(data=str(data), model="unet", epochs=1, **tiny), root / "unet", progress=False)
    return {"root": root, "data": data, "attention": root / "attention", "unet": root / "unet"}


def test_from_run_dir_holds_what_segmenting_needs(runs: dict[str, Path]) -> None:
    p = Predictor.from_run_dir(runs["attention"], device="cpu", precision="fp32")
    assert p.run_dir == runs["attention"] and p.config.model == "attention" and p.epoch == 1
    assert p.device.type == "cpu" and p.precision == "fp32" and p.threshold == p.config.threshold
    assert not p.model.training and set(p.split) == {"train", "val", "test"}
    assert p.crf_window == tuple(p.fingerprint.window)


def test_probabilities_do_not_depend_on_the_batch_size(runs: dict[str, Path]) -> None:
    images = np.load(runs["data"])["images"][:5].astype(np.float32)
    p = Predictor.from_run_dir(runs["attention"], device="cpu")
    probs = p.probabilities(images, batch_size=16)
    assert probs.shape == images.shape and probs.dtype == np.float32 and 0 <= probs.min() <= probs.max() <= 1
    np.testing.assert_allclose(p.probabilities(images, batch_size=2), probs, atol=1e-6)
    same, alphas = p.attention_maps(images)
    np.testing.assert_array_equal(same, probs)
    assert len(alphas) == p.config.depth and all(a.shape == images.shape for a in alphas)


def test_masks_threshold_crf_and_segment(runs: dict[str, Path]) -> None:
    images = np.load(runs["data"])["images"][:3].astype(np.float32)
    p = Predictor.from_run_dir(runs["attention"], device="cpu")
    probs = p.probabilities(images)
    np.testing.assert_array_equal(p.mask(probs), (probs >= p.threshold).astype(np.uint8))
    np.testing.assert_array_equal(p.mask(probs, 0.3), (probs >= 0.3).astype(np.uint8))
    crf = p.crf_mask(images, probs)
    assert crf.dtype == np.uint8 and crf.shape == images.shape and set(np.unique(crf)) <= {0, 1}
    np.testing.assert_array_equal(p.binarize(images, probs, crf=True), crf)
    seg = p.segment(images, crf=False, threshold=0.3, attention=True)
    assert isinstance(seg, Segmentation) and len(seg.alphas) == p.config.depth
    np.testing.assert_array_equal(seg.mask, p.mask(probs, 0.3))


def test_from_bundle_and_load_agree_with_the_run(runs: dict[str, Path]) -> None:
    images = np.load(runs["data"])["images"][:3].astype(np.float32)
    zip_path = export_model(runs["unet"], runs["root"] / "unet.zip")
    direct = Predictor.from_run_dir(runs["unet"], device="cpu")
    for other in (Predictor.from_bundle(zip_path, device="cpu"), Predictor.load(zip_path, device="cpu")):
        assert other.run_dir == zip_path.resolve() and other.config == direct.config
        np.testing.assert_array_equal(other.probabilities(images), direct.probabilities(images))
    with pytest.raises(LungsegError, match="one checkpoint"):
        Predictor.load(zip_path, checkpoint="last")


def test_bad_inputs_are_refused(runs: dict[str, Path]) -> None:
    p = Predictor.from_run_dir(runs["unet"], device="cpu")
    with pytest.raises(ValueError, match=r"\(N, H, W\), got shape \(32, 32\)"):
        p.probabilities(np.zeros((32, 32), np.float32))
    with pytest.raises(LungsegError, match="batch_size"):
        p.probabilities(np.zeros((1, 32, 32), np.float32), batch_size=0)
    with pytest.raises(LungsegError, match="attention maps need an 'attention' model"):
        p.attention_maps(np.zeros((1, 32, 32), np.float32))
