"""PGD — Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018.

Projected gradient descent under an L∞ budget: an optional uniform random start in the ε-ball,
then N signed steps of size α, each followed by projection onto B∞(x, ε) ∩ [0, 1]. Budgets used
in the benchmark: ε ∈ {8/255, 16/255}; α = ε/4 (Madry et al.'s ratio, 2/255 for ε = 8/255);
N = 50.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
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
class PGDConfig:
    """PGD budget and schedule; ``step_size`` None means α = ε/4."""

    epsilon: float = 8 / 255
    steps: int = 50
    step_size: float | None = None
    random_start: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_epsilon(self.epsilon)
        check_steps(self.steps)
        if self.step_size is not None and self.step_size <= 0:
            raise ValueError(f"step_size must be positive, got {self.step_size}")

    @property
    def alpha(self) -> float:
        """The step size actually used."""
        return self.epsilon / 4 if self.step_size is None else self.step_size


class PGD:
    """L∞ projected gradient descent on the identity loss (no momentum)."""

    def __init__(self, config: PGDConfig | None = None) -> None:
        self.config = config or PGDConfig()

    def protect(self, crops: Tensor, loss: IdentityLoss) -> Tensor:
        """Protected crops after ``steps`` projected signed steps toward the target."""
        check_crops(crops)
        cfg = self.config
        start = crops
        if cfg.random_start:
            noise = torch.rand(crops.shape, generator=seeded_generator(cfg.seed), dtype=crops.dtype)
            start = crops + (2.0 * noise.to(crops.device) - 1.0) * cfg.epsilon
        return sign_descent(
            crops,
            start,
            loss_gradient(loss),
            epsilon=cfg.epsilon,
            step_size=cfg.alpha,
            steps=cfg.steps,
            momentum=0.0,
        )
