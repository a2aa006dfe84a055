"""What every noise-based baseline shares: the ``protect`` interface and the L∞ sign-step loop.

A baseline takes working crops (B, 3, W, W) in [0, 1] and an :class:`IdentityLoss` (the same
L_A that MAP minimises, METHOD.md §3.2), and returns protected crops of the same shape, with
``|x̂ − x| ≤ ε`` everywhere and values in [0, 1]. The perturbation lives in the working crop's
pixel space, so every surrogate sees it through its own differentiable chip; gradients are taken
with respect to the pixels only (the surrogates' weights are frozen by the zoo).

FGSM, PGD, MI-FGSM and TI-DIM are all instances of one loop,

    g ← μ·g + ∇ / ‖∇‖₁,   x̂ ← Π_{B∞(x, ε) ∩ [0, 1]} (x̂ − α·sign(g)),

differing only in the start point, α, μ, the number of steps and how ∇ is computed; that loop
is :func:`sign_descent`. (With μ = 0 the normalisation does not change the sign, so PGD and FGSM
are the plain signed-gradient steps of their papers.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor

from pareidolia.objectives.identity import IdentityLoss

Gradient = Callable[[Tensor], Tensor]  # adversarial crops (B, 3, H, W) → ∂objective/∂crops


class Baseline(Protocol):
    """A noise-based protection method configured by a frozen dataclass."""

    config: Any

    def protect(self, crops: Tensor, loss: IdentityLoss) -> Tensor:
        """Protected copies of ``crops`` (B, 3, H, W) in [0, 1] that lower ``loss``."""
        ...


def check_crops(crops: Tensor) -> None:
    """Raise a ValueError unless ``crops`` is a float batch (B, 3, H, W) with values in [0, 1]."""
    if crops.ndim != 4 or crops.shape[1] != 3:
        raise ValueError(f"expected working crops of shape (B, 3, H, W), got {tuple(crops.shape)}")
    if not crops.is_floating_point():
        raise ValueError(f"expected float crops in [0, 1], got dtype {crops.dtype}")
    if crops.numel() and (crops.min() < 0 or crops.max() > 1):
        raise ValueError(
            "crops must lie in [0, 1]; convert uint8 images with faces.align.to_tensor"
        )


def check_epsilon(epsilon: float) -> None:
    """Raise a ValueError unless the L∞ budget is in (0, 1] (pixel units of [0, 1] images)."""
    if not 0 < epsilon <= 1:
        raise ValueError(f"epsilon must be in (0, 1] (e.g. 8/255), got {epsilon}")


def check_steps(steps: int) -> None:
    """Raise a ValueError unless an iterative method has at least one step."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")


def loss_gradient(loss: Callable[[Tensor], Tensor]) -> Gradient:
    """∇ₓ Σ_b loss(x)_b: the per-sample gradients of a per-sample loss (samples are independent,
    the surrogates being in eval mode), taken with respect to the pixels only."""

    def gradient(x: Tensor) -> Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return torch.autograd.grad(loss(x).sum(), x)[0]

    return gradient


def project(x_adv: Tensor, x: Tensor, epsilon: float) -> Tensor:
    """Projection onto the L∞ ball of radius ``epsilon`` around ``x``, intersected with [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - epsilon), x + epsilon).clamp(0.0, 1.0)


def l1_normalise(g: Tensor) -> Tensor:
    """``g`` divided by its mean absolute value per sample (Dong et al. 2018's ∇/‖∇‖₁)."""
    return g / g.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)


def sign_descent(
    x: Tensor,
    start: Tensor,
    gradient: Gradient,
    *,
    epsilon: float,
    step_size: float,
    steps: int,
    momentum: float,
) -> Tensor:
    """Iterated signed-gradient descent with momentum inside B∞(x, ε) ∩ [0, 1].

    ``start`` is the first iterate (``x`` itself or a random point of the ball); ``gradient``
    gives the (possibly transformed) gradient of the objective at the current iterate.
    """
    x_adv = project(start, x, epsilon)
    g = torch.zeros_like(x)
    for _ in range(steps):
        g = momentum * g + l1_normalise(gradient(x_adv))
        x_adv = project(x_adv - step_size * g.sign(), x, epsilon)
    return x_adv.detach()


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator for a method's randomness: draws are made on the CPU and moved to the
    crops' device, so a seed gives the same perturbation on every device."""
    return torch.Generator().manual_seed(seed)
