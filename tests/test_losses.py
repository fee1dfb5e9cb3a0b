"""Tests for lungseg.losses: eqs. (7)-(9), cross-checked against MONAI and torchvision."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

monai_losses = pytest.importorskip("monai.losses")
from torchvision.ops import sigmoid_focal_loss  # noqa: E402  (a core dependency: never skipped)

from lungseg.losses import (  # noqa: E402
    BCELoss,
    DiceLoss,
    FocalLoss,
    HybridLoss,
    build_loss,
)


def _batch(seed: int, shape: tuple[int, ...] = (3, 1, 16, 16), scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=gen) * scale
    target = (torch.rand(shape, generator=gen) < 0.3).float()
    return logits, target


def _perfect_logits(target: torch.Tensor, margin: float = 30.0) -> torch.Tensor:
    return (2 * target - 1) * margin


# --- perfect / worst predictions ------------------------------------------------------------------

@pytest.mark.parametrize("loss", [DiceLoss(), DiceLoss(reduction="image"), FocalLoss(), HybridLoss(), BCELoss()])
def test_perfect_prediction_gives_zero_loss(loss: torch.nn.Module) -> None:
    _, target = _batch(0)
    assert loss(_perfect_logits(target), target).item() == pytest.approx(0.0, abs=1e-6)


def test_completely_wrong_prediction_gives_dice_one() -> None:
    _, target = _batch(1)
    assert DiceLoss()(_perfect_logits(1 - target), target).item() == pytest.approx(1.0, abs=1e-6)


def test_dice_of_half_overlap_matches_hand_computation() -> None:
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2] = 1  # 8 tumour pixels
    logits = torch.full_like(target, -50.0)
    logits[..., 1:3] = 50.0  # 8 predicted, 4 of them correct
    assert DiceLoss(eps=0.0)(logits, target).item() == pytest.approx(1 - 2 * 4 / (8 + 8), abs=1e-6)


# --- batch vs per-image Dice ----------------------------------------------------------------------

def test_dice_batch_and_image_reductions_differ_on_tumour_free_slice() -> None:
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:6, 2:6] = 1  # slice 0 has a tumour, slice 1 is tumour-free
    logits = _perfect_logits(target)
    logits[1] = -3.0  # small but non-negligible probabilities (~0.047) on the empty slice
    batch = DiceLoss(reduction="batch")(logits, target).item()
    image = DiceLoss(reduction="image")(logits, target).item()
    # Batch Dice only counts the few false-positive probability mass; per-image Dice calls the
    # tumour-free slice a total failure (loss ~1), which is why batch is the default.
    assert batch < 0.2
    assert image == pytest.approx(0.5, abs=0.01)
    assert DiceLoss()(logits, target).item() == pytest.approx(batch)


def test_dice_image_reduction_is_mean_of_single_image_losses() -> None:
    logits, target = _batch(2)
    per_image = [DiceLoss()(logits[i : i + 1], target[i : i + 1]).item() for i in range(3)]
    assert DiceLoss(reduction="image")(logits, target).item() == pytest.approx(sum(per_image) / 3, rel=1e-6)


# --- MONAI cross-checks -----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("reduction", ["batch", "image"])
@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_dice_equals_monai(seed: int, reduction: str, eps: float) -> None:
    logits, target = _batch(seed)
    ref = monai_losses.DiceLoss(sigmoid=True, batch=reduction == "batch", smooth_nr=eps, smooth_dr=eps)
    expected = ref(logits, target)
    torch.testing.assert_close(DiceLoss(eps=eps, reduction=reduction)(logits, target), expected)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (0.75, 0.5), (None, 2.0), (0.25, 0.0)])
def test_focal_equals_monai(seed: int, alpha: float | None, gamma: float) -> None:
    # MONAI's sigmoid focal loss weights positives by alpha and negatives by 1 - alpha (Lin et al.)
    # and its "mean" reduction averages over every element: the same definition as ours.
    logits, target = _batch(seed)
    expected = monai_losses.FocalLoss(alpha=alpha, gamma=gamma, use_softmax=False)(logits, target)
    torch.testing.assert_close(FocalLoss(alpha=alpha, gamma=gamma)(logits, target), expected)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (0.75, 0.5), (None, 2.0), (0.25, 0.0), (0.0, 1.5)])
def test_focal_equals_torchvision(seed: int, alpha: float | None, gamma: float) -> None:
    # torchvision.ops.sigmoid_focal_loss is the reference implementation of Lin et al. (RetinaNet):
    # alpha_t = alpha for positives and 1 - alpha for negatives, no weighting when alpha < 0.
    logits, target = _batch(seed)
    tv_alpha = -1.0 if alpha is None else alpha
    expected = sigmoid_focal_loss(logits, target, alpha=tv_alpha, gamma=gamma, reduction="mean")
    torch.testing.assert_close(FocalLoss(alpha=alpha, gamma=gamma)(logits, target), expected)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), side=st.integers(1, 9), scale=st.floats(0.1, 20.0),
       alpha=st.floats(0.0, 1.0), gamma=st.floats(0.0, 4.0))
def test_property_focal_matches_torchvision(seed: int, side: int, scale: float, alpha: float, gamma: float) -> None:
    logits, target = _batch(seed, (2, 1, side, side), scale)
    torch.testing.assert_close(
        FocalLoss(alpha=alpha, gamma=gamma)(logits, target),
        sigmoid_focal_loss(logits, target, alpha=alpha, gamma=gamma, reduction="mean"),
    )


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 1.0])
def test_hybrid_equals_monai_dice_focal(lam: float) -> None:
    # DiceFocalLoss hands ``sigmoid=True`` to its Dice term only; its focal term always takes logits
    # (sigmoid inside), so raw logits go in and both terms see the same probabilities as ours.
    logits, target = _batch(7)
    eps, alpha, gamma = 1e-6, 0.25, 2.0
    ref = monai_losses.DiceFocalLoss(sigmoid=True, batch=True, smooth_nr=eps, smooth_dr=eps, gamma=gamma,
                                     alpha=alpha, lambda_dice=lam, lambda_focal=1 - lam)
    ours = HybridLoss(lam=lam, alpha=alpha, gamma=gamma, eps=eps)(logits, target)
    torch.testing.assert_close(ours, ref(logits, target))
    # ...and it is literally lam * Dice + (1 - lam) * Focal (eq. 9).
    composed = lam * DiceLoss(eps=eps)(logits, target) + (1 - lam) * FocalLoss(alpha=alpha, gamma=gamma)(logits, target)
    torch.testing.assert_close(ours, composed)


def _hybrid_as_first_written(logits: torch.Tensor, target: torch.Tensor, lam: float, alpha: float | None, gamma: float,
                             eps: float, reduction: str) -> torch.Tensor:
    """Eq. (9) as HybridLoss computed it before it held DiceLoss and FocalLoss as parts (eqs. 7-8 inline)."""
    logits, target = logits.float(), target.float()
    prob = torch.sigmoid(logits)
    dims = (0, 2, 3) if reduction == "batch" else (2, 3)
    dice = (1.0 - (2.0 * (prob * target).sum(dims) + eps) / (prob.sum(dims) + target.sum(dims) + eps)).mean()
    z = logits * (2.0 * target - 1.0)
    focal = -F.logsigmoid(z)
    if gamma != 0:
        focal = torch.exp(gamma * F.logsigmoid(-z)) * focal
    if alpha is not None:
        focal = (alpha * target + (1.0 - alpha) * (1.0 - target)) * focal
    return lam * dice + (1.0 - lam) * focal.mean()


@pytest.mark.parametrize("reduction", ["batch", "image"])
@pytest.mark.parametrize(("lam", "alpha", "gamma"), [(0.5, 0.25, 2.0), (0.25, 0.75, 2.0), (1.0, None, 0.0), (0.3, 0.6, 1.5)])
def test_hybrid_of_its_parts_equals_the_formula_it_replaced_bit_for_bit(reduction: str, lam: float, alpha: float | None,
                                                                       gamma: float) -> None:
    # HybridLoss composes DiceLoss and FocalLoss; the value and the gradient are those of the inline
    # eqs. (7)-(9) it had before, to the last bit (the same operations in the same order).
    loss = HybridLoss(lam=lam, alpha=alpha, gamma=gamma, reduction=reduction)
    assert isinstance(loss.dice, DiceLoss) and isinstance(loss.focal, FocalLoss)
    logits, target = _batch(11, (3, 1, 12, 12))
    ours_in, ref_in = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    ours = loss(ours_in, target)
    ref = _hybrid_as_first_written(ref_in, target, lam, alpha, gamma, 1e-6, reduction)
    ours.backward()
    ref.backward()
    assert torch.equal(ours, ref)
    assert torch.equal(ours_in.grad, ref_in.grad)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    batch=st.integers(1, 3),
    side=st.integers(1, 9),
    scale=st.floats(0.1, 20.0),
    alpha=st.floats(0.0, 1.0),
    gamma=st.floats(0.0, 4.0),
)
def test_property_matches_monai(seed: int, batch: int, side: int, scale: float, alpha: float, gamma: float) -> None:
    logits, target = _batch(seed, (batch, 1, side, side), scale)
    torch.testing.assert_close(
        FocalLoss(alpha=alpha, gamma=gamma)(logits, target),
        monai_losses.FocalLoss(alpha=alpha, gamma=gamma, use_softmax=False)(logits, target),
    )
    torch.testing.assert_close(
        DiceLoss(eps=1e-6)(logits, target),
        monai_losses.DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-6, smooth_dr=1e-6)(logits, target),
    )


# --- focal loss definition and numerical stability ---------------------------------------------------

def test_focal_matches_naive_formula_at_moderate_logits() -> None:
    logits, target = _batch(3, scale=2.0)
    p = torch.sigmoid(logits)
    p_t = torch.where(target == 1, p, 1 - p)
    alpha_t = torch.where(target == 1, 0.25, 0.75)
    naive = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).mean()
    torch.testing.assert_close(FocalLoss()(logits, target), naive)


def test_focal_without_alpha_and_gamma_is_bce() -> None:
    logits, target = _batch(4)
    torch.testing.assert_close(FocalLoss(alpha=None, gamma=0.0)(logits, target),
                               F.binary_cross_entropy_with_logits(logits, target))
    torch.testing.assert_close(BCELoss()(logits, target), F.binary_cross_entropy_with_logits(logits, target))


def test_focal_down_weights_easy_pixels() -> None:
    target = torch.ones(1, 1, 2, 2)
    easy, hard = torch.full_like(target, 3.0), torch.full_like(target, -3.0)
    ratio_focal = (FocalLoss()(hard, target) / FocalLoss()(easy, target)).item()
    bce = F.binary_cross_entropy_with_logits
    ratio_bce = (bce(hard, target) / bce(easy, target)).item()
    assert ratio_focal > ratio_bce  # the (1 - p_t)^gamma factor focuses on the misclassified pixel


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_losses_are_finite_with_gradients_at_extreme_logits(gamma: float) -> None:
    _, target = _batch(5)
    logits = (torch.where(target == 1, -200.0, 200.0) + torch.linspace(-50, 50, target.numel()).view_as(target))
    logits.requires_grad_(True)
    loss = HybridLoss(gamma=gamma)(logits, target)
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 1.0  # confidently wrong -> large loss
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_losses_accept_half_precision_logits_and_compute_in_float32() -> None:
    logits, target = _batch(6)
    half = HybridLoss()(logits.half(), target.bool())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, HybridLoss()(logits.half().float(), target), rtol=1e-5, atol=1e-5)


# --- input validation --------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [DiceLoss(), FocalLoss(), HybridLoss(), BCELoss()])
def test_bad_inputs_raise_value_error_naming_shapes(fn) -> None:
    logits, target = _batch(0, (2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\(2, 1, 4, 4\).*\(2, 1, 4, 5\)|\(2, 1, 4, 5\).*\(2, 1, 4, 4\)"):
        fn(logits, torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError, match=r"NaN.*\(2, 1, 4, 4\)"):
        fn(logits.masked_fill(logits > 0, float("nan")), target)
    with pytest.raises(ValueError, match=r"Inf"):
        fn(logits.masked_fill(logits > 0, float("inf")), target)
    with pytest.raises(ValueError, match=r"binary.*\(2, 1, 4, 4\).*float32"):
        fn(logits, target * 0.5)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\).*\(2, 4, 4\)"):
        fn(logits[:, 0], target[:, 0])
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\).*\(1, 2, 4, 4\)"):
        fn(logits.view(1, 2, 4, 4), target.view(1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"floating point.*int64"):
        fn(target.long(), target)


def test_bad_parameters_raise() -> None:
    with pytest.raises(ValueError, match="lam"):
        HybridLoss(lam=1.5)
    with pytest.raises(ValueError, match="alpha"):
        FocalLoss(alpha=-0.1)
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        DiceLoss(reduction="sum")
    with pytest.raises(ValueError, match="unknown loss 'tversky'"):
        build_loss("tversky")


def test_build_loss() -> None:
    logits, target = _batch(8)
    hybrid = build_loss("hybrid", lam=0.3, alpha=0.6, gamma=1.0)
    assert isinstance(hybrid, HybridLoss) and (hybrid.lam, hybrid.focal.alpha, hybrid.focal.gamma) == (0.3, 0.6, 1.0)
    assert isinstance(build_loss("dice"), DiceLoss)
    assert isinstance(build_loss("focal"), FocalLoss)
    assert isinstance(build_loss("bce"), BCELoss)
    torch.testing.assert_close(build_loss("focal", alpha=0.6, gamma=1.0)(logits, target),
                               FocalLoss(alpha=0.6, gamma=1.0)(logits, target))


def test_build_loss_passes_the_dice_reduction_on() -> None:
    torch.manual_seed(3)
    logits, target = torch.randn(3, 1, 8, 8), (torch.rand(3, 1, 8, 8) > 0.7).float()
    for reduction in ("image", "batch"):
        assert build_loss("dice", reduction=reduction)(logits, target) == pytest.approx(
            DiceLoss(reduction=reduction)(logits, target).item())
    hybrid = build_loss("hybrid", lam=1.0, reduction="image")
    assert hybrid(logits, target).item() == pytest.approx(DiceLoss(reduction="image")(logits, target).item())
    # the two poolings differ on a batch whose images differ
    assert DiceLoss(reduction="image")(logits, target).item() != pytest.approx(
        DiceLoss(reduction="batch")(logits, target).item())


def test_train_config_rejects_an_unknown_dice_reduction() -> None:
    from lungseg.config import TrainConfig
    from lungseg.errors import LungsegError

    with pytest.raises(LungsegError, match="dice_reduction must be one of"):
        TrainConfig(dice_reduction="pixel").validate()
