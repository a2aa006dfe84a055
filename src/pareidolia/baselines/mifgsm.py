"""MI-FGSM — Dong, Liao, Pang, Su, Zhu, Hu & Li, "Boosting Adversarial Attacks with Momentum",
CVPR 2018.

Iterative FGSM with a momentum term over L1-normalised gradients,
g ← μ·g + ∇/‖∇‖₁, x̂ ← clip(x̂ − α·sign(g)), with the paper's μ = 1.0, T = 10 iterations and
α = ε/T, so the iterate can just reach the boundary of the ε-ball.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pareidolia.baselines.base import (
    check_crops,
    check_epsilon,
    check_steps,
    loss_gradient,
    sign_descent,
)
from pareidolia.objectives.identity import IdentityLoss


@dataclass(frozen=True)
class MIFGSMConfig:
    """MI-FGSM budget ε (L∞, [0, 1] pixel units), iterations T (α = ε/T) and decay μ."""

    epsilon: float = 8 / 255
    steps: int = 10
    momentum: float = 1.0

    def __post_init__(self) -> None:
        check_epsilon(self.epsilon)
        check_steps(self.steps)


class MIFGSM:
    """Momentum iterative FGSM on the identity loss."""

    def __init__(self, config: MIFGSMConfig | None = None) -> None:
        self.config = config or MIFGSMConfig()

    def protect(self, crops: Tensor, loss: IdentityLoss) -> Tensor:
        """Protected crops after T momentum steps of size ε/T toward the target."""
        check_crops(crops)
        cfg = self.config
        return sign_descent(
            crops,
            crops,
            loss_gradient(loss),
            epsilon=cfg.epsilon,
            step_size=cfg.epsilon / cfg.steps,
            steps=cfg.steps,
            momentum=cfg.momentum,
        )
