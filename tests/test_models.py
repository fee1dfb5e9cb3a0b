"""Tests for lungseg.models: shapes, parameter counts from layer formulas, attention gates, FLOPs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from lungseg.models import AttentionResUNet, SegmentationModel, UNet, build_model, count_parameters, forward_flops
from lungseg.models.blocks import AttentionGate

BASE = 4  # tiny networks keep the tests fast
REPO = Path(__file__).resolve().parents[1]
MEDIUM_CHECKPOINTS = sorted((REPO / "results" / "medium").glob("**/best.pt"))


def _conv(c_in: int, c_out: int, k: int, bias: bool) -> int:
    return k * k * c_in * c_out + (c_out if bias else 0)


def _bn(c: int) -> int:
    return 2 * c


def _expected_unet(in_ch: int, out_ch: int, base: int, depth: int) -> int:
    """Parameter count of eqs. (2)-(3) written out layer by layer."""
    ch = [base * 2**level for level in range(depth + 1)]
    total = 0
    for c_in, c_out in zip([in_ch, *ch[:-1]], ch):  # encoder: two conv3x3 (no bias) + BN
        total += _conv(c_in, c_out, 3, False) + _bn(c_out) + _conv(c_out, c_out, 3, False) + _bn(c_out)
    for level in range(depth):  # decoder: 2x2 transposed conv (bias), then two conv3x3 on the concat
        c, c_up = ch[level], ch[level + 1]
        total += _conv(c_up, c, 2, True)
        total += _conv(2 * c, c, 3, False) + _bn(c) + _conv(c, c, 3, False) + _bn(c)
    return total + _conv(base, out_ch, 1, True)


def _residual(c_in: int, c_out: int) -> int:
    total = _conv(c_in, c_out, 3, False) + _bn(c_out) + _conv(c_out, c_out, 3, False) + _bn(c_out)
    return total + (_conv(c_in, c_out, 1, False) + _bn(c_out) if c_in != c_out else 0)


def _expected_attention(in_ch: int, out_ch: int, base: int, depth: int) -> int:
    ch = [base * 2**level for level in range(depth + 1)]
    total = sum(_residual(c_in, c_out) for c_in, c_out in zip([in_ch, *ch[:-1]], ch))
    for level in range(depth):
        c, c_g = ch[level], ch[level + 1]
        inter = max(c // 2, 1)
        gate = _conv(c, inter, 2, False) + _conv(c_g, inter, 1, True) + _conv(inter, 1, 1, True)
        total += gate + _conv(c_g, c, 2, True) + _residual(2 * c, c)
    return total + _conv(base, out_ch, 1, True)


@pytest.mark.parametrize(("depth", "in_ch", "out_ch"), [(1, 1, 1), (2, 1, 1), (3, 2, 3)])
def test_parameter_counts_match_layer_formulas(depth: int, in_ch: int, out_ch: int) -> None:
    unet = UNet(in_ch, out_ch, base_channels=BASE, depth=depth)
    att = AttentionResUNet(in_ch, out_ch, base_channels=BASE, depth=depth)
    assert count_parameters(unet) == _expected_unet(in_ch, out_ch, BASE, depth)
    assert count_parameters(att) == _expected_attention(in_ch, out_ch, BASE, depth)
    assert count_parameters(att) > count_parameters(unet)


def test_count_parameters_trainable_only() -> None:
    model = UNet(base_channels=BASE, depth=1)
    total = count_parameters(model)
    model.segmentation_head.requires_grad_(False)
    assert count_parameters(model) == total - _conv(BASE, 1, 1, True)
    assert count_parameters(model, trainable_only=False) == total


@pytest.mark.parametrize("name", ["unet", "attention"])
@pytest.mark.parametrize(("depth", "size"), [(4, (48, 48)), (4, (32, 64)), (2, (12, 20)), (1, (2, 2))])
def test_output_shape(name: str, depth: int, size: tuple[int, int]) -> None:
    model = build_model(name, base_channels=BASE, depth=depth)
    out = model(torch.randn(2, 1, *size))
    assert out.shape == (2, 1, *size)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("name", ["unet", "attention"])
def test_48x48_depth4_has_3x3_bottleneck(name: str) -> None:
    model = build_model(name, base_channels=BASE, depth=4)
    seen: list[torch.Size] = []
    model.encoder[-1].register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    model(torch.randn(1, 1, 48, 48))
    assert seen == [torch.Size([1, BASE * 16, 3, 3])]


def test_submodule_names_and_multichannel_output() -> None:
    for cls in (UNet, AttentionResUNet):
        model = cls(in_channels=3, out_channels=2, base_channels=BASE, depth=2)
        assert len(model.encoder) == 3 and len(model.decoder) == 2
        assert isinstance(model.segmentation_head, nn.Conv2d)
        assert model(torch.randn(1, 3, 8, 8)).shape == (1, 2, 8, 8)


def test_attention_maps_shapes_order_and_range() -> None:
    model = AttentionResUNet(base_channels=BASE, depth=3)
    x = torch.randn(2, 1, 32, 48)
    logits, alphas = model(x, return_attention=True)
    assert logits.shape == (2, 1, 32, 48)
    # deepest (coarsest) gate first, full resolution last
    assert [tuple(a.shape) for a in alphas] == [(2, 1, 8, 12), (2, 1, 16, 24), (2, 1, 32, 48)]
    for alpha in alphas:
        assert alpha.min() >= 0 and alpha.max() <= 1
    model.eval()
    torch.testing.assert_close(model(x), model(x, return_attention=True)[0])
    assert isinstance(model(x), torch.Tensor)


def test_gradients_flow_through_every_attention_gate() -> None:
    torch.manual_seed(0)
    model = AttentionResUNet(base_channels=BASE, depth=3)
    x = torch.randn(2, 1, 16, 16)
    target = (torch.rand(2, 1, 16, 16) > 0.7).float()
    nn.functional.binary_cross_entropy_with_logits(model(x), target).backward()
    gates = [stage.gate for stage in model.decoder]
    assert len(gates) == 3
    for gate in gates:
        for conv in (gate.theta_x, gate.phi_g, gate.psi):
            grad = conv.weight.grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_attention_gate_multiplies_skip_by_alpha() -> None:
    gate = AttentionGate(x_channels=6, g_channels=12)
    x, g = torch.randn(2, 6, 8, 10), torch.randn(2, 12, 4, 5)
    gated, alpha = gate(x, g)
    assert alpha.shape == (2, 1, 8, 10)
    torch.testing.assert_close(gated, x * alpha)
    # eq. (6) by hand on the coarse grid, then resampled
    coarse = torch.sigmoid(gate.psi(torch.relu(gate.theta_x(x) + gate.phi_g(g))))
    torch.testing.assert_close(alpha, nn.functional.interpolate(coarse, size=(8, 10), mode="bilinear"))


def test_conv_before_batch_norm_has_no_bias_and_kaiming_init() -> None:
    torch.manual_seed(0)
    for model in (UNet(base_channels=8, depth=2), AttentionResUNet(base_channels=8, depth=2)):
        modules = list(model.modules())
        for mod, nxt in zip(modules, modules[1:]):
            if isinstance(mod, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d):
                assert mod.bias is None
        # Kaiming normal (fan_out, ReLU): std = sqrt(2 / (out_channels * k * k))
        conv = model.encoder[1].residual[0] if isinstance(model, AttentionResUNet) else model.encoder[1][0][0]
        expected = (2 / (conv.out_channels * 9)) ** 0.5
        assert conv.weight.std().item() == pytest.approx(expected, rel=0.15)
    no_bn = UNet(base_channels=BASE, depth=1, batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in no_bn.modules())
    assert all(m.bias is not None for m in no_bn.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name", ["unet", "attention"])
def test_channels_last_gives_same_output(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, base_channels=BASE, depth=2).eval()
    x = torch.randn(2, 1, 16, 16)
    expected = model(x)
    model_cl = model.to(memory_format=torch.channels_last)
    out = model_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["unet", "attention"])
def test_bad_input_raises_value_error_with_shape(name: str) -> None:
    model = build_model(name, base_channels=BASE, depth=4)
    with pytest.raises(ValueError, match=r"multiples of 2\*\*depth = 16.*\(1, 1, 40, 48\)"):
        model(torch.randn(1, 1, 40, 48))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\).*\(1, 48, 48\)"):
        model(torch.randn(1, 48, 48))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\).*\(1, 3, 48, 48\)"):
        model(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match=r"floating-point.*torch.int64"):
        model(torch.zeros(1, 1, 48, 48, dtype=torch.long))


def test_bad_config_and_unknown_model_raise() -> None:
    with pytest.raises(ValueError, match="depth"):
        UNet(depth=0)
    with pytest.raises(ValueError, match="base_channels"):
        AttentionResUNet(base_channels=0)
    with pytest.raises(ValueError, match="unknown model 'segformer'"):
        build_model("segformer")


def test_forward_flops_of_a_single_conv_matches_formula() -> None:
    conv = nn.Conv2d(3, 5, kernel_size=3, padding=1, bias=False)
    # 2 FLOPs per multiply-accumulate: 2 * C_in * C_out * k * k * H * W
    assert forward_flops(conv, image_size=(8, 12), in_channels=3) == 2 * 3 * 5 * 9 * 8 * 12


def test_forward_flops_of_models_scale_and_restore_mode() -> None:
    unet = UNet(base_channels=BASE, depth=2)
    att = AttentionResUNet(base_channels=BASE, depth=2)
    f16, f32 = forward_flops(unet, 16), forward_flops(unet, 32)
    assert f16 > 0 and f32 == 4 * f16  # convolutions scale with H * W
    assert forward_flops(att, 16) > f16
    assert unet.training  # restored after the eval-mode measurement


def test_both_networks_are_segmentation_models() -> None:
    for name, cls in (("unet", UNet), ("attention", AttentionResUNet)):
        model = build_model(name, base_channels=BASE, depth=2)
        assert isinstance(model, cls) and isinstance(model, SegmentationModel)
    unet = UNet(base_channels=BASE, depth=2)
    assert all(stage.gate is None for stage in unet.decoder)
    with pytest.raises(TypeError):  # the U-Net has no attention maps to return
        unet(torch.randn(1, 1, 8, 8), return_attention=True)


@pytest.mark.parametrize("name", ["unet", "attention"])
def test_check_input_shape_quotes_the_shape(name: str) -> None:
    model = build_model(name, base_channels=BASE, depth=2)
    model.check_input_shape(torch.zeros(1, 1, 8, 12))
    with pytest.raises(ValueError, match=r"multiples of 2\*\*depth = 4.*\(2, 1, 8, 10\)"):
        model.check_input_shape(torch.zeros(2, 1, 8, 10))
    with pytest.raises(ValueError, match="torch.Tensor"):
        model.check_input_shape([[0.0]])


@pytest.mark.parametrize("name", ["unet", "attention"])
def test_predict_is_eval_mode_forward_without_autograd(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, base_channels=BASE, depth=2)
    x = torch.randn(2, 1, 16, 16)
    model(x)  # a training-mode pass moves the batch-norm running statistics away from their start
    out = model.predict(x)
    assert not model.training and not out.requires_grad and out.is_inference()
    with torch.no_grad():
        assert torch.equal(out, model(x))


@pytest.mark.parametrize(
    "checkpoint",
    MEDIUM_CHECKPOINTS
    or [pytest.param(None, marks=pytest.mark.skip(reason="no committed results/medium/**/best.pt in this checkout"))],
    ids=lambda p: p.parent.name if isinstance(p, Path) else "absent",
)
def test_committed_medium_checkpoint_loads_strictly(checkpoint: Path) -> None:
    config = json.loads((checkpoint.parent / "config.json").read_text())
    model = build_model(config["model"], in_channels=1, out_channels=1, base_channels=config["base_channels"],
                        depth=config["depth"], batch_norm=config["batch_norm"])
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    model.load_state_dict(state, strict=True)
    size = 2 ** config["depth"]
    assert torch.isfinite(model.predict(torch.zeros(1, 1, size, size))).all()
