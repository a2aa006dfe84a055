"""Fidelity to the original face (METHOD.md §3.7): the per-sample L1 distance, and the L1 of
the low-frequency change only; their weights are the protector's ``w_l1`` and ``w_lowpass``
(:class:`pareidolia.protector.ProtectorConfig`). No LPIPS term: no LPIPS network ships with
pareidolia (the benchmark measures LPIPS with user-supplied weights,
:class:`pareidolia.evaluation.metrics.Lpips`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def l1_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """mean |x̂ − x| per sample (B,), averaged over channels and pixels."""
    if x_hat.shape != x.shape:
        raise ValueError(f"shape mismatch: {tuple(x_hat.shape)} vs {tuple(x.shape)}")
    return (x_hat - x).abs().flatten(1).mean(1)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
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
    return gaussian_blur(x_hat - x, sigma).abs().flatten(1).mean(1)
