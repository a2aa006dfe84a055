"""FGSM — Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples",
ICLR 2015.

One signed-gradient step of the full budget, here descending the identity loss (a targeted,
impersonating step): x̂ = clip₀¹(x − ε·sign(∇ₓ L_A(x))).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pareidolia.baselines.base import check_crops, check_epsilon, loss_gradient, sign_descent
from pareidolia.objectives.identity import IdentityLoss


@dataclass(frozen=True)
class FGSMConfig:
    """Budget of FGSM: L∞ radius ε in [0, 1] pixel units (the single step has size ε)."""

    epsilon: float = 8 / 255

    def __post_init__(self) -> None:
        check_epsilon(self.epsilon)


class FGSM:
    """Fast gradient sign method: one step of size ε against the identity loss."""

    def __init__(self, config: FGSMConfig | None = None) -> None:
        self.config = config or FGSMConfig()

    def protect(self, crops: Tensor, loss: IdentityLoss) -> Tensor:
        """Protected crops: ``crops`` moved by ±ε per pixel toward the target identity."""
        check_crops(crops)
        eps = self.config.epsilon
        return sign_descent(
            crops, crops, loss_gradient(loss), epsilon=eps, step_size=eps, steps=1, momentum=0.0
        )
