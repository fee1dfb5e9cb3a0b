"""Test-time augmentation (:mod:`lungseg.inference.tta`): the eight symmetries of the square, their
inverses, and a :class:`~lungseg.inference.Predictor` that averages over them (``tta``), checked
against a reference written with NumPy's own flips and transposes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lungseg.config import TTA_MAX_AUTO_SIZE, TrainConfig
from lungseg.errors import LungsegError
from lungseg.inference import Predictor, predict
from lungseg.inference.tta import TTA_MODES, check_tta, symmetry, undo_symmetry
from lungseg.training import train


def _numpy_symmetry(a: np.ndarray, k: int) -> np.ndarray:
    """The reference: bit 0 flips the columns, bit 1 the rows, bit 2 transposes afterwards."""
    if k & 1:
        a = a[..., ::-1]
    if k & 2:
        a = a[..., ::-1, :]
    return np.swapaxes(a, -1, -2) if k & 4 else a


def _numpy_undo(a: np.ndarray, k: int) -> np.ndarray:
    """The reference inverse: transpose back first, then the flips (each its own inverse)."""
    if k & 4:
        a = np.swapaxes(a, -1, -2)
    if k & 2:
        a = a[..., ::-1, :]
    return a[..., ::-1] if k & 1 else a


@pytest.mark.parametrize("k", range(8))
def test_each_symmetry_matches_numpy_and_is_undone(k: int) -> None:
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3)
    np.testing.assert_array_equal(symmetry(x, k).numpy(), _numpy_symmetry(x.numpy(), k))
    np.testing.assert_array_equal(undo_symmetry(x, k).numpy(), _numpy_undo(x.numpy(), k))
    assert torch.equal(undo_symmetry(symmetry(x, k), k), x)


def test_the_eight_symmetries_are_distinct_and_the_modes_nest() -> None:
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    images = {tuple(symmetry(x, k).flatten().tolist()) for k in range(8)}
    assert len(images) == 8
    assert TTA_MODES == {"none": 1, "flips": 4, "dihedral": 8}
    for bad in ("rot90", "", "Flips"):
        with pytest.raises(LungsegError, match="none"):
            check_tta(bad)
    with pytest.raises(ValueError, match="0..7"):
        symmetry(x, 8)


@pytest.fixture(scope="module")
def run(tiny, make_npz, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tta")
    data = make_npz(root / "hu.npz", n_patients=4, per_patient=2, size=32, seed=3)
    train(TrainConfig(data=str(data), model="attention", epochs=1, **tiny), root / "run", progress=False)
    return {"root": root, "data": data, "run": root / "run"}


@pytest.mark.parametrize("mode", ["flips", "dihedral"])
def test_the_predictor_averages_the_probabilities_of_the_symmetric_slices(run: dict[str, Path], mode: str) -> None:
    images = np.load(run["data"])["images"][:3].astype(np.float32)
    plain = Predictor.from_run_dir(run["run"], device="cpu", tta="none")
    # the reference: the plain predictor on each transformed (square) slice, mapped back, averaged
    expected = np.mean([_numpy_undo(plain.probabilities(np.ascontiguousarray(_numpy_symmetry(images, k))), k)
                        for k in range(TTA_MODES[mode])], axis=0)
    averaged = Predictor.from_run_dir(run["run"], device="cpu", tta=mode)
    probs = averaged.probabilities(images)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert not np.allclose(probs, plain.probabilities(images), atol=1e-5)  # an untrained net is not symmetric
    same, alphas = averaged.attention_maps(images)
    np.testing.assert_allclose(same, probs, atol=1e-6)
    _, plain_alphas = plain.attention_maps(images)
    for a, b in zip(alphas, plain_alphas, strict=True):  # the gates are those of the slices as given
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_predict_takes_the_mode_and_refuses_an_unknown_one_before_writing(run: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(LungsegError, match="test-time augmentation"):
        predict(run["run"], run["data"], tmp_path / "out.npz", tta="rot90", device="cpu", progress=False)
    assert not (tmp_path / "out.npz").exists()
    predict(run["run"], run["data"], tmp_path / "flips.npz", tta="flips", device="cpu", precision="fp32", progress=False)
    images = np.load(run["data"])["images"].astype(np.float32)
    expected = Predictor.from_run_dir(run["run"], device="cpu", tta="flips").segment(images).mask
    with np.load(tmp_path / "flips.npz") as z:
        np.testing.assert_array_equal(z["masks"], expected)


def test_auto_is_resolved_from_the_input_size_when_training_starts(run: dict[str, Path]) -> None:
    saved = TrainConfig.from_json(run["run"] / "config.json")
    assert saved.image_size == 32 and saved.tta == "dihedral"  # "auto" for a 32² input
    assert Predictor.from_run_dir(run["run"], device="cpu").tta == "dihedral"
    assert TrainConfig(tta="auto").resolved_tta(TTA_MAX_AUTO_SIZE) == "dihedral"
    assert TrainConfig(tta="auto").resolved_tta(2 * TTA_MAX_AUTO_SIZE) == "none"  # whole slices: 8x the time
    assert TrainConfig(tta="flips").resolved_tta(512) == "flips"


def test_a_run_saved_before_the_field_predicts_without_augmentation() -> None:
    saved = TrainConfig().to_dict()
    del saved["tta"]
    assert TrainConfig.from_dict(saved, saved_run=True).tta == "none"
    with pytest.raises(LungsegError, match="tta"):
        TrainConfig(tta="rot90").validate()
