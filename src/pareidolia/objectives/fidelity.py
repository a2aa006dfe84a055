"""Fidelity to the original face (METHOD.md §3.7): λ₁‖x̂ − x‖₁ (DiffAM weight 3), plus LPIPS
(weight 10) where its weights exist.

No LPIPS network ships with pareidolia: a perceptual term is an injected callable
``(x_hat, x) → (B,)``, and :func:`require_lpips` is the clear error path for users who ask for
LPIPS without supplying one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from pareidolia.errors import UserError

PerceptualLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

L1_WEIGHT = 3.0
LPIPS_WEIGHT = 10.0


def l1_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """mean |x̂ − x| per sample (B,), averaged over channels and pixels."""
    if x_hat.shape != x.shape:
        raise ValueError(f"shape mismatch: {tuple(x_hat.shape)} vs {tuple(x.shape)}")
    return (x_hat - x).abs().flatten(1).mean(1)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (reflect padding) of (B, C, H, W)."""
    radius = max(1, int(3.0 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def lowpass_l1_loss(x_hat: torch.Tensor, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """mean |G_σ ∗ (x̂ − x)| per sample (B,): the L1 of the *low-frequency* change only (colour,
    shading, skin tone), ``sigma`` in pixels. Ours, not the paper's: on the small offline prior
    the identity loss otherwise pays with blotchy colour shifts, while MAP's edits belong in the
    middle and high frequencies (METHOD.md, Figure 2)."""
    if x_hat.shape != x.shape:
        raise ValueError(f"shape mismatch: {tuple(x_hat.shape)} vs {tuple(x.shape)}")
    return _gaussian_blur(x_hat - x, sigma).abs().flatten(1).mean(1)


def require_lpips(perceptual: PerceptualLoss | None) -> PerceptualLoss:
    """The user's LPIPS callable, or a UserError: pareidolia ships no LPIPS weights."""
    if perceptual is None:
        raise UserError(
            "LPIPS was requested but no LPIPS weights are available: pareidolia does not ship "
            "them; supply an LPIPS callable (x_hat, x) -> (B,) or set the LPIPS weight to 0"
        )
    return perceptual


class FidelityLoss:
    """l1_weight·L1 (+ lpips_weight·LPIPS when ``lpips_weight`` > 0) per sample (B,)."""

    def __init__(
        self,
        l1_weight: float = L1_WEIGHT,
        lpips_weight: float = 0.0,
        perceptual: PerceptualLoss | None = None,
    ) -> None:
        self.l1_weight = l1_weight
        self.lpips_weight = lpips_weight
        self.perceptual = require_lpips(perceptual) if lpips_weight > 0 else None

    def __call__(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        loss = self.l1_weight * l1_loss(x_hat, x)
        if self.perceptual is not None:
            loss = loss + self.lpips_weight * self.perceptual(x_hat, x)
        return loss
