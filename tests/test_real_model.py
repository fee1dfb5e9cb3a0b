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
    for needed in ("CC BY-SA 4.0", "Task06", "min-max scaled", "Not for clinical use", "not** a whole-scan model"):
        assert needed in card, needed


def test_hounsfield_input_is_refused_with_a_message(model: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "hu.npz", images=np.full((2, 48, 48), -800.0, dtype=np.float32))
    with pytest.raises(LungsegError, match="unit"):
        predict(model, tmp_path / "hu.npz", tmp_path / "out.npz", device="cpu", progress=False)
    assert not (tmp_path / "out.npz").exists()


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
