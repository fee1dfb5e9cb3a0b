"""Device and precision selection: names resolve, unknown or unsupported choices are clear errors."""

from __future__ import annotations

import pytest
import torch

from lungseg import device as device_mod
from lungseg.device import autocast, cpu_has_bf16, resolve_device, resolve_precision
from lungseg.errors import LungsegError


def test_resolve_device_names() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(LungsegError, match="--device must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(LungsegError, match="CUDA is not available"):
            resolve_device("cuda")


def test_auto_precision_is_fp32_on_cpu_and_bf16_on_cuda() -> None:
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    with pytest.raises(LungsegError, match="--precision must be one of"):
        resolve_precision("fp16", torch.device("cpu"))


def test_bf16_on_a_cpu_without_native_bf16_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_mod, "cpu_has_bf16", lambda: False)
    with pytest.raises(LungsegError, match="emulated"):
        resolve_precision("bf16", torch.device("cpu"))
    monkeypatch.setattr(device_mod, "cpu_has_bf16", lambda: True)
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert resolve_precision("bf16", torch.device("cuda")) == "bf16"
    with pytest.raises(LungsegError, match="not supported on mps"):
        resolve_precision("bf16", torch.device("mps"))


def test_autocast_runs_convolutions_in_bf16_only_when_asked() -> None:
    conv = torch.nn.Conv2d(1, 2, 3)
    x = torch.randn(1, 1, 8, 8)
    with autocast(torch.device("cpu"), "fp32"):
        assert conv(x).dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        assert conv(x).dtype == torch.bfloat16


def test_cpu_has_bf16_is_a_bool() -> None:
    assert isinstance(cpu_has_bf16(), bool)
