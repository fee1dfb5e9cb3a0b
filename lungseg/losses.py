"""Training losses: soft Dice (eq. 7), focal (eq. 8) and the hybrid of the two (eq. 9).

All losses take raw logits and binary targets of the same shape ``(B, 1, H, W)`` and return a scalar.
They compute in float32 even under autocast: a float16 sum of probabilities over a batch of 256 x 256
slices overflows.

Two choices the paper leaves open, stated here:

* **Dice reduction.** ``reduction="batch"`` (default) sums intersections and areas over the whole batch
  before forming the ratio of eq. (7), as MONAI's ``DiceLoss(batch=True)``. ``reduction="image"``
  forms one ratio per image and averages them. Per-image Dice is ill-posed on tumour-free slices, which
  are most slices of a CT study: with ``sum(g) = 0`` the loss is ``1 - eps / (sum(p) + eps)``, which is
  close to 1 for any non-negligible prediction and only drops when *every* probability is far below
  ``eps``, so such slices add a large, noisy gradient that pushes the whole slice to zero. Batch-level
  Dice stays well defined whenever the batch contains any tumour pixel.
* **Focal loss normalisation.** Eq. (8) is written as a sum over pixels of ``-alpha (1 - p_t)^gamma
  log(p_t)`` with ``p_t`` the probability of the true class. Like Lin et al. (2017) we use the
  alpha-balanced binary form (``alpha`` for tumour pixels, ``1 - alpha`` for background) and take the
  *mean* over pixels, so both terms of eq. (9) are O(1) and ``lam`` actually balances them (a sum over
  65,536 pixels per slice would swamp the Dice term).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BCELoss",
    "DiceLoss",
    "FocalLoss",
    "HybridLoss",
    "LOSSES",
    "build_loss",
]

LOSSES = ("hybrid", "dice", "focal", "bce")
_REDUCTIONS = ("batch", "image")


def _check(logits: torch.Tensor, target: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``(B, 1, H, W)`` logits / binary target; return both as float32 tensors."""
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError(f"{name}: logits and target must be torch tensors, got {type(logits).__name__} and "
                         f"{type(target).__name__}")
    if logits.ndim != 4 or logits.shape[1] != 1:
        raise ValueError(f"{name}: logits must have shape (B, 1, H, W), got {tuple(logits.shape)}")
    if target.shape != logits.shape:
        raise ValueError(f"{name}: target shape {tuple(target.shape)} does not match logits shape "
                         f"{tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"{name}: logits must be floating point, got dtype {logits.dtype}")
    logits = logits.float()
    target = target.to(dtype=torch.float32)
    # One device->host transfer for both checks (a sync per call, negligible next to a U-Net step).
    finite, binary = torch.stack([torch.isfinite(logits).all(), ((target == 0) | (target == 1)).all()]).tolist()
    if not finite:
        raise ValueError(f"{name}: logits contain NaN or Inf (shape {tuple(logits.shape)}, dtype {logits.dtype})")
    if not binary:
        raise ValueError(f"{name}: target must be binary (values 0/1), got values outside {{0, 1}} "
                         f"(shape {tuple(target.shape)}, dtype {target.dtype})")
    return logits, target


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"dice reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_focal_params(alpha: float | None, gamma: float) -> None:
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"focal alpha must be in [0, 1] or None, got {alpha!r}")
    if not gamma >= 0.0:
        raise ValueError(f"focal gamma must be >= 0, got {gamma!r}")


class DiceLoss(nn.Module):
    """Soft Dice loss, eq. (7): ``1 - (2 sum p g + eps) / (sum p + sum g + eps)`` with ``p = sigmoid(logits)``.

    Args:
        eps: smoothing constant in numerator and denominator.
        reduction: ``"batch"`` (sums over the whole batch, default) or ``"image"`` (mean of per-image
            losses); see the module docstring for why batch-level is the default.

    Raises:
        ValueError: unknown ``reduction``; when called, wrong shapes, non-finite logits or a non-binary
            target (any real/int/bool dtype with values 0/1 is accepted).
    """

    def __init__(self, eps: float = 1e-6, reduction: str = "batch") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.eps, self.reduction = eps, reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` logits and binary target -> scalar loss."""
        logits, target = _check(logits, target, "DiceLoss")
        return self.compute(logits, target)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Eq. (7) on inputs already checked and cast to float32 (what :class:`HybridLoss` calls)."""
        prob = torch.sigmoid(logits)
        dims = (0, 2, 3) if self.reduction == "batch" else (2, 3)
        intersection = (prob * target).sum(dims)
        area = prob.sum(dims) + target.sum(dims)
        return (1.0 - (2.0 * intersection + self.eps) / (area + self.eps)).mean()


class FocalLoss(nn.Module):
    """Alpha-balanced binary focal loss, eq. (8) (Lin et al. 2017), mean over pixels.

    ``FL = mean_i -alpha_t (1 - p_t)^gamma log(p_t)`` where ``p_t = p`` and ``alpha_t = alpha`` on tumour
    pixels, ``p_t = 1 - p`` and ``alpha_t = 1 - alpha`` on background. Computed from logits with
    ``logsigmoid`` so it stays finite for any finite logit. ``alpha=None, gamma=0`` is binary cross-entropy.

    Args:
        alpha: weight of the positive (tumour) class in [0, 1], or ``None`` for no class balancing.
        gamma: focusing exponent ``>= 0``.

    Raises:
        ValueError: ``alpha`` or ``gamma`` out of range; when called, wrong shapes, non-finite logits or
            a non-binary target.
    """

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        _check_focal_params(alpha, gamma)
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` logits and binary target -> scalar loss."""
        logits, target = _check(logits, target, "FocalLoss")
        return self.compute(logits, target)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Eq. (8) on inputs already checked and cast to float32 (what :class:`HybridLoss` calls)."""
        # z = logit of the true class; log p_t and log(1 - p_t) through logsigmoid never form log(0).
        z = logits * (2.0 * target - 1.0)
        loss = -F.logsigmoid(z)
        if self.gamma != 0:
            loss = torch.exp(self.gamma * F.logsigmoid(-z)) * loss
        if self.alpha is not None:
            loss = (self.alpha * target + (1.0 - self.alpha) * (1.0 - target)) * loss
        return loss.mean()


class HybridLoss(nn.Module):
    """The paper's hybrid loss, eq. (9): ``lam * Dice + (1 - lam) * Focal``.

    It holds its two terms as submodules (:attr:`dice`, eq. 7, and :attr:`focal`, eq. 8), as MONAI's
    ``DiceFocalLoss`` does, so each equation is written once.

    Args:
        lam: weight ``lambda`` of the Dice term, in [0, 1].
        alpha: focal positive-class weight.
        gamma: focal focusing exponent.
        eps: Dice smoothing constant.
        reduction: Dice reduction, ``"batch"`` (default) or ``"image"``.

    Raises:
        ValueError: ``lam`` outside [0, 1], or a parameter its terms refuse.
    """

    def __init__(self, lam: float = 0.5, alpha: float | None = 0.25, gamma: float = 2.0, eps: float = 1e-6,
                 reduction: str = "batch") -> None:
        super().__init__()
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"HybridLoss: lam must be in [0, 1], got {lam!r}")
        self.lam = lam
        self.dice = DiceLoss(eps=eps, reduction=reduction)
        self.focal = FocalLoss(alpha=alpha, gamma=gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` logits and binary target -> scalar loss."""
        # Checked once here (errors name HybridLoss); the terms then compute on the checked float32 tensors.
        logits, target = _check(logits, target, "HybridLoss")
        return self.lam * self.dice.compute(logits, target) + (1.0 - self.lam) * self.focal.compute(logits, target)


class BCELoss(nn.Module):
    """Binary cross-entropy from logits (mean over pixels), with the same input checks as the other losses.

    The plain pixel-wise baseline the Dice/focal terms are compared against.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` logits and binary target -> scalar loss."""
        logits, target = _check(logits, target, "BCELoss")
        return F.binary_cross_entropy_with_logits(logits, target)


def build_loss(name: str, lam: float = 0.5, alpha: float | None = 0.25, gamma: float = 2.0,
               eps: float = 1e-6, reduction: str = "batch") -> nn.Module:
    """Instantiate a loss by name: ``"hybrid"`` (eq. 9), ``"dice"`` (eq. 7), ``"focal"`` (eq. 8) or ``"bce"``.

    Arguments that do not apply to the chosen loss are ignored (``reduction`` is the Dice term's).

    Raises:
        ValueError: unknown name or out-of-range parameters.
    """
    if name == "hybrid":
        return HybridLoss(lam=lam, alpha=alpha, gamma=gamma, eps=eps, reduction=reduction)
    if name == "dice":
        return DiceLoss(eps=eps, reduction=reduction)
    if name == "focal":
        return FocalLoss(alpha=alpha, gamma=gamma)
    if name == "bce":
        return BCELoss()
    raise ValueError(f"build_loss: unknown loss {name!r}; expected one of {LOSSES}")
