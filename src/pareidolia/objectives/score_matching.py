"""L_SM, the score-matching regulariser (METHOD.md §3.6).

While the UNet is tuned through the generation chain, it is also asked to stay a valid face
denoiser: ‖ε_θ(√ᾱ_t x + √(1−ᾱ_t) ε, t) − ε‖² on the clean training faces x in [−1, 1], with t
drawn uniformly from the integers 0..t_max (t_max = t0 by default, or the whole schedule) and
ε ~ N(0, I). Timestep t indexes the ᾱ table as in :mod:`pareidolia.diffusion.schedule`.
The squared error is averaged over pixels (as in DDPM's training loss), one value per face.
"""

from __future__ import annotations

import torch

from pareidolia.diffusion.ddim import EpsModel


def sample_noise(
    x: torch.Tensor, t_max: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Timesteps t (B,) long, uniform in 0..t_max, and noise ε like ``x``.

    Drawn on the generator's device (CPU by default) then moved to ``x``'s, so a seed gives the
    same draw on every device.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    t = torch.randint(0, t_max + 1, (x.shape[0],), generator=generator, device=gen_device)
    eps = torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype)
    return t.to(x.device), eps.to(x.device)


def score_matching_loss(
    model: EpsModel,
    x: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    t_max: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L_SM per sample (B,) of clean faces ``x`` (B, C, H, W) in [−1, 1].

    ``t_max`` is the largest timestep drawn (t0 in MAP); None draws over the whole schedule.
    """
    n = alphas_cumprod.shape[0]
    t_max = n - 1 if t_max is None else t_max
    if not 0 <= t_max < n:
        raise ValueError(f"t_max must be in 0..{n - 1}, got {t_max}")
    t, eps = sample_noise(x, t_max, generator)
    return noised_loss(model, x, alphas_cumprod, t, eps)


def noised_loss(
    model: EpsModel,
    x: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
) -> torch.Tensor:
    """L_SM per sample (B,) of clean faces ``x`` noised at timesteps ``t`` with noise ``eps``
    (as :func:`sample_noise` draws them)."""
    a = alphas_cumprod.to(x.device)[t].to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
    x_t = a.sqrt() * x + (1.0 - a).sqrt() * eps
    return (model(x_t, t) - eps).pow(2).flatten(1).mean(1)


class ScoreMatchingLoss:
    """L_SM with a fixed schedule and t range: ``loss(model, x, generator) → (B,)``."""

    def __init__(self, alphas_cumprod: torch.Tensor, t0: int, all_timesteps: bool = False) -> None:
        self.alphas_cumprod = alphas_cumprod
        self.t_max: int | None = None if all_timesteps else t0
        if self.t_max is not None and not 0 <= self.t_max < alphas_cumprod.shape[0]:
            raise ValueError(f"t0 must be in 0..{alphas_cumprod.shape[0] - 1}, got {t0}")

    def __call__(
        self, model: EpsModel, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return score_matching_loss(model, x, self.alphas_cumprod, self.t_max, generator)

    def draw(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The timesteps and noise :meth:`__call__` would draw for ``x``, drawn apart from the
        loss (a batch split between processes draws them whole, then each takes its rows)."""
        t_max = self.alphas_cumprod.shape[0] - 1 if self.t_max is None else self.t_max
        return sample_noise(x, t_max, generator)

    def at(
        self, model: EpsModel, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        """L_SM per sample of ``x`` with the timesteps and noise of :meth:`draw`."""
        return noised_loss(model, x, self.alphas_cumprod, t, eps)
