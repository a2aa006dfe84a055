"""TI-DIM — translation-invariant (Dong, Pang, Su & Zhu, "Evading Defenses to Transferable
Adversarial Examples by Translation-Invariant Attacks", CVPR 2019) diverse-input (Xie, Zhang,
Zhou, Bai, Wang, Ren & Yuille, "Improving Transferability of Adversarial Examples with Input
Diversity", CVPR 2019) momentum attack: M-DI²-FGSM with TI gradient smoothing.

Each of the T steps (T = 10, α = ε/T, μ = 1.0 as in both papers):

1. Diverse input, with probability p = 0.5 (else the crop as is): for a W-pixel crop, draw an
   integer side r uniformly from [W, ⌊1.1·W⌋) (256 → [256, 281)), resize the crop to r×r with
   nearest-neighbour interpolation, zero-pad it at a uniformly drawn offset to ⌊1.1·W⌋ square,
   then resize bilinearly back to W so the surrogates' chip samplers see a W-pixel crop. One draw
   per step for the whole batch, as in Xie et al.'s reference code.
2. The gradient of the identity loss at the transformed input (back-propagated through the
   transform to the crop) is convolved per channel with a k×k Gaussian kernel, the density of
   N(0, 1) sampled at k points over [−3, 3] and normalised to sum 1 (Dong et al.'s ``gkern``),
   i.e. σ = (k − 1)/6 pixels. Default k = 7 at 256 px (σ = 1 px); Dong et al. use 15 at 299 px
   against defended models — pass ``kernel_size=15`` for that setting.
3. Momentum on the L1-normalised smoothed gradient and a signed step, projected to the ε-ball.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pareidolia.baselines.base import (
    check_crops,
    check_epsilon,
    check_steps,
    loss_gradient,
    seeded_generator,
    sign_descent,
)
from pareidolia.objectives.identity import IdentityLoss


@dataclass(frozen=True)
class TIDIMConfig:
    """TI-DIM budget (L∞ ε, T steps of α = ε/T), momentum, input diversity and TI kernel."""

    epsilon: float = 8 / 255
    steps: int = 10
    momentum: float = 1.0
    diversity_prob: float = 0.5
    resize_ratio: float = 1.1
    kernel_size: int = 7
    seed: int = 0

    def __post_init__(self) -> None:
        check_epsilon(self.epsilon)
        check_steps(self.steps)
        if not 0 <= self.diversity_prob <= 1:
            raise ValueError(f"diversity_prob must be in [0, 1], got {self.diversity_prob}")
        if self.resize_ratio <= 1:
            raise ValueError(f"resize_ratio must exceed 1, got {self.resize_ratio}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {self.kernel_size}")


def gaussian_kernel(size: int, nsig: float = 3.0) -> Tensor:
    """(size, size) Gaussian kernel summing to 1: N(0, 1) sampled at ``size`` points over
    [−nsig, nsig] on each axis (Dong et al. 2019's ``gkern``)."""
    if size == 1:
        return torch.ones(1, 1)
    t = torch.linspace(-nsig, nsig, size, dtype=torch.float64)
    k1 = torch.exp(-0.5 * t**2)
    k2 = torch.outer(k1, k1)
    return (k2 / k2.sum()).float()


def smooth(grad: Tensor, kernel: Tensor) -> Tensor:
    """Per-channel ('same', zero-padded) convolution of ``grad`` (B, C, H, W) with ``kernel``."""
    c = grad.shape[1]
    weight = kernel.to(grad)[None, None].expand(c, 1, -1, -1)
    return F.conv2d(grad, weight, padding=kernel.shape[-1] // 2, groups=c)


def diverse_input(
    x: Tensor, generator: torch.Generator, probability: float, ratio: float
) -> Tensor:
    """Xie et al.'s random resize-and-pad of square crops (B, C, W, W), resized back to W."""
    width = x.shape[-1]
    padded_width = max(int(width * ratio), width + 1)
    # Every draw is made whether or not the transform applies, so p does not shift the stream.
    apply = torch.rand((), generator=generator).item() < probability
    side = int(torch.randint(width, padded_width, (), generator=generator))
    top, left = torch.randint(0, padded_width - side + 1, (2,), generator=generator).tolist()
    if not apply:
        return x
    resized = F.interpolate(x, size=(side, side), mode="nearest")
    rest = padded_width - side
    padded = F.pad(resized, (left, rest - left, top, rest - top), value=0.0)
    return F.interpolate(padded, size=(width, width), mode="bilinear", align_corners=False)


class TIDIM:
    """Momentum attack with diverse inputs and translation-invariant gradients."""

    def __init__(self, config: TIDIMConfig | None = None) -> None:
        self.config = config or TIDIMConfig()

    def protect(self, crops: Tensor, loss: IdentityLoss) -> Tensor:
        """Protected crops after T TI-DIM steps of size ε/T toward the target."""
        check_crops(crops)
        if crops.shape[-1] != crops.shape[-2]:
            raise ValueError(f"TI-DIM expects square working crops, got {tuple(crops.shape[-2:])}")
        cfg = self.config
        generator = seeded_generator(cfg.seed)
        kernel = gaussian_kernel(cfg.kernel_size)
        raw = loss_gradient(
            lambda x: loss(diverse_input(x, generator, cfg.diversity_prob, cfg.resize_ratio))
        )

        def gradient(x: Tensor) -> Tensor:
            return smooth(raw(x), kernel)

        return sign_descent(
            crops,
            crops,
            gradient,
            epsilon=cfg.epsilon,
            step_size=cfg.epsilon / cfg.steps,
            steps=cfg.steps,
            momentum=cfg.momentum,
        )
