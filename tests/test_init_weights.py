"""Starting a run from another run's weights (``TrainConfig.init_weights``, ``lungseg train --init-weights``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from lungseg.config import TrainConfig
from lungseg.errors import LungsegError
from lungseg.models import build_model
from lungseg.training import train
from lungseg.training.init_weights import load_initial_weights


@pytest.fixture(scope="module")
def pretrained(tiny, make_npz, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pretrained")
    data = make_npz(root / "toy.npz")
    train(TrainConfig(data=str(data), epochs=2, **tiny), root / "run", progress=False)
    return root / "run"


def _first_conv(state: dict[str, torch.Tensor]) -> str:
    return next(k for k, v in state.items() if v.ndim == 4)


def _tiny_model(tiny, **changes):
    return build_model("attention", in_channels=1, out_channels=1, base_channels=changes.get("base_channels", 4),
                       depth=changes.get("depth", 2), batch_norm=True)


@pytest.mark.parametrize("source", ["folder", "checkpoint"])
def test_the_weights_come_from_a_run_folder_or_a_checkpoint(tiny, pretrained: Path, source: str) -> None:
    best = torch.load(pretrained / "best.pt", weights_only=True)["model"]
    path = {"folder": pretrained, "checkpoint": pretrained / "best.pt"}[source]
    model = _tiny_model(tiny)
    key = _first_conv(best)
    assert not torch.equal(model.state_dict()[key], best[key])
    load_initial_weights(model, path)
    for k, v in best.items():
        torch.testing.assert_close(model.state_dict()[k], v.float() if v.is_floating_point() else v, msg=k)


def test_a_fine_tuned_run_starts_from_the_weights_and_records_them(tiny, make_npz, pretrained: Path,
                                                                    tmp_path: Path) -> None:
    """Zero epochs are not allowed, so one epoch of a tiny learning rate: the weights stay near the
    pretrained ones, far nearer than a fresh run's random initialisation."""
    data = make_npz(tmp_path / "toy.npz", seed=5)
    config = dict(data=str(data), epochs=1, lr=1e-7, **tiny)
    train(TrainConfig(init_weights=str(pretrained), **config), tmp_path / "tuned", progress=False)
    train(TrainConfig(**config), tmp_path / "fresh", progress=False)
    start = torch.load(pretrained / "best.pt", weights_only=True)["model"]
    key = _first_conv(start)
    tuned = torch.load(tmp_path / "tuned" / "last.pt", weights_only=True)["model"][key]
    fresh = torch.load(tmp_path / "fresh" / "last.pt", weights_only=True)["model"][key]
    assert (tuned - start[key]).abs().max() < 1e-4 < (fresh - start[key]).abs().max()
    from lungseg.rundir import RunDir

    assert Path(RunDir(tmp_path / "tuned").read_config().init_weights).resolve() == pretrained.resolve()


def test_weights_of_another_network_are_refused_with_the_mismatch_named(tiny, pretrained: Path) -> None:
    with pytest.raises(LungsegError, match="do not fit this network.*shapes"):
        load_initial_weights(_tiny_model(tiny, base_channels=8), pretrained)
    with pytest.raises(LungsegError, match="do not fit this network.*(missing|unexpected)"):
        load_initial_weights(_tiny_model(tiny, depth=3), pretrained)


def test_an_export_is_refused_with_the_way_out(tiny, pretrained: Path, tmp_path: Path) -> None:
    from lungseg.inference.bundle import export_model

    archive = export_model(pretrained, tmp_path / "model.zip")
    with pytest.raises(LungsegError, match="exported model archive; start from the run folder"):
        load_initial_weights(_tiny_model(tiny), archive)


def test_a_missing_or_empty_source_is_named(tiny, tmp_path: Path) -> None:
    with pytest.raises(LungsegError, match="does not exist"):
        load_initial_weights(_tiny_model(tiny), tmp_path / "nowhere")
    with pytest.raises(LungsegError, match="without a best checkpoint"):
        load_initial_weights(_tiny_model(tiny), tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LungsegError, match="junk.pt"):
        load_initial_weights(_tiny_model(tiny), tmp_path / "junk.pt")


def test_the_weights_are_never_inside_or_the_same_as_the_new_run(tiny, make_npz, pretrained: Path,
                                                                  tmp_path: Path) -> None:
    """A fresh run clears its folder of earlier results: the weights it starts from may not be there."""
    import shutil

    data = make_npz(tmp_path / "toy.npz", seed=7)
    with pytest.raises(LungsegError, match="is the input"):
        train(TrainConfig(data=str(data), epochs=1, init_weights=str(pretrained), **tiny), pretrained, progress=False)
    folder = tmp_path / "new"
    folder.mkdir()
    shutil.copy(pretrained / "best.pt", folder / "best.pt")
    before = (folder / "best.pt").read_bytes()
    config = TrainConfig(data=str(data), epochs=1, init_weights=str(folder / "best.pt"), **tiny)
    with pytest.raises(LungsegError, match="no lungseg run|lies inside the output folder"):
        train(config, folder, progress=False)
    assert (folder / "best.pt").read_bytes() == before
    from lungseg.training.init_weights import read_initial_weights

    with pytest.raises(LungsegError, match="lies inside the output folder"):  # the check of its own
        read_initial_weights(config, folder)
    assert read_initial_weights(dataclasses.replace(config, init_weights=None), folder) is None


def test_a_wrong_network_is_refused_before_the_run_folder_is_written(tiny, make_npz, pretrained: Path,
                                                                     tmp_path: Path) -> None:
    """Checked in prepare: the corrected command can then use the same --out."""
    data = make_npz(tmp_path / "toy.npz", seed=8)
    config = dict(data=str(data), epochs=1, init_weights=str(pretrained), **tiny)
    with pytest.raises(LungsegError, match="do not fit this network"):
        train(TrainConfig(**{**config, "base_channels": 8}), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "config.json").exists()
    train(TrainConfig(**config), tmp_path / "run", progress=False)


def test_a_relative_path_is_recorded_absolute_and_a_resume_accepts_it(tiny, make_npz, pretrained: Path,
                                                                       tmp_path: Path, monkeypatch) -> None:
    from lungseg.rundir import RunDir

    data = make_npz(tmp_path / "toy.npz", seed=9)
    monkeypatch.chdir(pretrained.parent)
    config = TrainConfig(data=str(data), epochs=2, init_weights=pretrained.name, **tiny)
    train(config, tmp_path / "run", progress=False)
    assert Path(RunDir(tmp_path / "run").read_config().init_weights) == pretrained.resolve()
    result = train(config, tmp_path / "run", resume=True, progress=False)  # the same weights, spelt relative
    assert result.epochs_run == 2
    with pytest.raises(LungsegError, match="init_weights"):
        train(dataclasses.replace(config, init_weights=str(pretrained / "best.pt")), tmp_path / "run", resume=True,
              progress=False)


def test_the_command_line_passes_the_option(tiny, make_npz, pretrained: Path, tmp_path: Path) -> None:
    from lungseg.cli import main

    data = make_npz(tmp_path / "toy.npz", seed=6)
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1", "--base-channels", "4",
               "--depth", "2", "--device", "cpu", "--min-samples-per-epoch", "1", "--init-weights", str(pretrained)])
    assert rc == 0
    from lungseg.rundir import RunDir

    assert RunDir(tmp_path / "run").read_config().init_weights
