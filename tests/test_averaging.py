"""The moving average of the weights (:class:`lungseg.training.averaging.WeightAverage`) and a run
that validates, saves, resumes and predicts with it (``TrainConfig.ema_decay``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from lungseg.config import TrainConfig
from lungseg.errors import LungsegError
from lungseg.training import train
from lungseg.training.averaging import WeightAverage
from lungseg.training.trainer import Trainer


def test_the_average_follows_the_bias_corrected_recursion() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.9)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for n in range(1, 30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(4, 3))  # moves the batch-norm statistics and the (integer) batch count
        average.update(model)
        decay = min(0.9, (1 + n) / (10 + n))
        for k, v in model.state_dict().items():
            expected[k] = decay * expected[k] + (1 - decay) * v if v.is_floating_point() else v.clone()
    for k, v in average.model.state_dict().items():
        torch.testing.assert_close(v, expected[k], msg=k)
    assert average.model.state_dict()["1.num_batches_tracked"] == 29
    assert not any(p.requires_grad for p in average.model.parameters())
    assert not torch.equal(average.model[0].weight, model[0].weight)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_a_decay_outside_the_open_unit_interval_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(nn.Linear(1, 1), decay)
    with pytest.raises(LungsegError, match="ema_decay"):
        TrainConfig(ema_decay=decay).validate()


def test_a_run_with_an_average_saves_and_predicts_with_it(tiny, make_npz, tmp_path: Path) -> None:
    from lungseg.inference import Predictor

    data = make_npz(tmp_path / "toy.npz")
    res = train(TrainConfig(data=str(data), epochs=2, ema_decay=0.5, **tiny), tmp_path / "run", progress=False)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    key = next(k for k, v in last["model"].items() if v.ndim == 4)
    assert not torch.equal(last["model"][key], last["train_model"][key])  # the average is not the trained weights
    steps = json.loads((tmp_path / "run" / "metrics.json").read_text())["steps_per_epoch"]
    assert last["ema_updates"] == 2 * steps
    if res.best_epoch == 2:
        torch.testing.assert_close(best["model"][key], last["model"][key])
    predictor = Predictor.from_run_dir(tmp_path / "run", checkpoint="last", device="cpu")
    torch.testing.assert_close(predictor.model.state_dict()[key], last["model"][key])


def test_a_resumed_run_with_an_average_ends_as_an_uninterrupted_one(tiny, make_npz, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_npz(tmp_path / "toy.npz")
    config = TrainConfig(data=str(data), epochs=3, ema_decay=0.8, **tiny)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-exact sums (see tests/test_train.py)
    try:
        train(config, tmp_path / "whole", progress=False)
        original = Trainer.train_epoch

        def stop_at_epoch_2(self: Trainer, epoch: int, bar: object) -> torch.Tensor:
            if epoch == 1:
                raise KeyboardInterrupt
            return original(self, epoch, bar)

        monkeypatch.setattr(Trainer, "train_epoch", stop_at_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            train(config, tmp_path / "killed", progress=False)
        monkeypatch.setattr(Trainer, "train_epoch", original)
        train(config, tmp_path / "killed", resume=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    whole, resumed = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("whole", "killed"))
    assert whole["ema_updates"] == resumed["ema_updates"] > 0
    for part in ("model", "train_model"):
        assert all(torch.equal(whole[part][k], resumed[part][k]) for k in whole[part]), part
