"""Device and precision selection: names resolve, unknown or unsupported choices are clear errors."""

from __future__ import annotations

import pytest
import torch

from lungseg import device as device_mod
from lungseg.device import (
    autocast,
    cpu_has_bf16,
    grad_scaler,
    resolve_device,
    resolve_precision,
    resolve_prediction_precision,
)
from lungseg.errors import LungsegError


def test_resolve_device_names() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(LungsegError, match="--device must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(LungsegError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), "fp16"), ((7, 0), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_is_fp32_on_cpu_and_bf16_or_fp16_on_cuda(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], expected: str
) -> None:
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    # a T4 (7.5) or V100 (7.0) has no native bf16: fp16 with loss scaling; Ampere (8.0) and later: bf16
    monkeypatch.setattr(device_mod, "cuda_capability", lambda device: capability)
    assert resolve_precision("auto", torch.device("cuda")) == expected
    with pytest.raises(LungsegError, match="--precision must be one of"):
        resolve_precision("fp8", torch.device("cpu"))


def test_fp16_is_refused_off_cuda() -> None:
    with pytest.raises(LungsegError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", torch.device("cpu"))


def test_grad_scaler_is_a_pass_through_on_the_cpu_path() -> None:
    # fp32 (the CPU path) keeps the plain backward/step: the scaled loss is the loss and the step is Adam's.
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 3)
    opt_a, opt_b = torch.optim.Adam(a.parameters(), lr=0.1), torch.optim.Adam(b.parameters(), lr=0.1)
    scaler = grad_scaler(torch.device("cpu"), "fp32")
    assert not scaler.is_enabled()
    loss_a = a(x).square().mean()
    assert scaler.scale(loss_a) is loss_a
    scaler.scale(loss_a).backward()
    scaler.step(opt_a)
    scaler.update()
    b(x).square().mean().backward()
    opt_b.step()
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_training_step_on_cuda_scales_the_loss() -> None:
    device = torch.device("cuda")
    scaler = grad_scaler(device, "fp16")
    assert scaler.is_enabled()
    net = torch.nn.Conv2d(1, 1, 3).to(device)
    opt = torch.optim.Adam(net.parameters())
    with autocast(device, "fp16"):
        out = net(torch.randn(2, 1, 8, 8, device=device))
    assert out.dtype == torch.float16
    before = net.weight.detach().clone()
    scaler.scale(out.float().square().mean()).backward()
    scaler.step(opt)
    scaler.update()
    assert not torch.equal(before, net.weight.detach())


def test_bf16_on_a_cpu_without_native_bf16_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_mod, "cpu_has_bf16", lambda: False)
    with pytest.raises(LungsegError, match="emulated"):
        resolve_precision("bf16", torch.device("cpu"))
    monkeypatch.setattr(device_mod, "cpu_has_bf16", lambda: True)
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert resolve_precision("bf16", torch.device("cuda")) == "bf16"
    with pytest.raises(LungsegError, match="not supported on mps"):
        resolve_precision("bf16", torch.device("mps"))


def test_predict_takes_bf16_by_default_on_a_cpu_with_native_bf16_and_fp32_when_asked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only ``predict``'s ``auto`` changes with the CPU; training and evaluation keep fp32 there."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(device_mod, "cpu_has_bf16", lambda: True)
    assert resolve_prediction_precision("auto", cpu) == "bf16" and resolve_precision("auto", cpu) == "fp32"
    assert resolve_prediction_precision("fp32", cpu) == "fp32"
    monkeypatch.setattr(device_mod, "cpu_has_bf16", lambda: False)
    assert resolve_prediction_precision("auto", cpu) == "fp32"
    with pytest.raises(LungsegError, match="emulated"):
        resolve_prediction_precision("bf16", cpu)
    with pytest.raises(LungsegError, match="--precision must be one of"):
        resolve_prediction_precision("half", cpu)


def test_autocast_runs_convolutions_in_bf16_only_when_asked() -> None:
    conv = torch.nn.Conv2d(1, 2, 3)
    x = torch.randn(1, 1, 8, 8)
    with autocast(torch.device("cpu"), "fp32"):
        assert conv(x).dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        assert conv(x).dtype == torch.bfloat16


def test_cpu_has_bf16_is_a_bool() -> None:
    assert isinstance(cpu_has_bf16(), bool)
