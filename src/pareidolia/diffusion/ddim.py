"""Deterministic DDIM (η = 0): inversion of a face to timestep t0 and generation back from it.

Small pure functions over (model, ᾱ table, x, timestep grid), in the manner of k-diffusion's
samplers, so tests can drive them with toy models. With ε = ε_θ(x_t, t):

    x̂₀     = (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t
    x_t'   = √ᾱ_t'·x̂₀ + √(1−ᾱ_t')·ε

Timestep convention (DiffusionCLIP / DiffAM, whose pipeline MAP follows): ᾱ_t is entry t of the
schedule's table, so ᾱ_0 = 1 − β_1, and the virtual timestep −1 has ᾱ = 1 (clean). On the grid
g = (0, …, t0) :func:`invert` takes the input face as x_0 and steps g[k] → g[k+1]: len(g) − 1
network calls. :func:`generate` steps g[k] → g[k−1] and finally 0 → −1, returning x̂₀ of the last
step: len(g) network calls. The last step removes the tiny noise level of t = 0 (√(1−ᾱ_0) = 0.01),
so generate(invert(x)) converges to x̂₀(x, 0), not bit-exactly to x, as the grid gets finer.

Images are batches (B, C, H, W) in [−1, 1].
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from pareidolia.runtime import autocast

if TYPE_CHECKING:
    from diffusers.models.unets.unet_2d import UNet2DModel

CLEAN = -1  # the virtual timestep with ᾱ = 1


class EpsModel(Protocol):
    """A noise predictor: ε̂ of shape x.shape from a batch x and timesteps t (B,) of dtype long."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


def unet_eps(unet: UNet2DModel, dtype: torch.dtype = torch.float32) -> EpsModel:
    """Wrap a diffusers ``UNet2DModel`` (which returns an output object) as an :class:`EpsModel`
    whose forward pass runs in ``dtype`` (:func:`pareidolia.runtime.autocast`) and returns ε̂
    as float32, so the DDIM arithmetic and everything downstream stay float32."""

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with autocast(x.device, dtype):
            out = unet(x, t).sample
        return out.float()

    return eps


def timestep_grid(t0: int, n_steps: int) -> tuple[int, ...]:
    """The grid ``round(linspace(0, 1, n_steps) · t0)``: increasing integer timesteps 0 … t0.

    Rounds half up, in exact integer arithmetic (no float ties to break differently across
    platforms). When ``n_steps > t0 + 1`` rounding repeats timesteps; repeats are dropped,
    because a DDIM step from t to t is the identity that would still cost a network call, so the
    grid then has t0 + 1 points (every timestep). Otherwise it has exactly ``n_steps`` points.
    DiffusionCLIP's code truncates (``int``) instead of rounding: its grids differ by at most one
    timestep at some points.
    """
    if t0 < 1:
        raise ValueError(f"t0 must be at least 1, got {t0}")
    if n_steps < 2:
        raise ValueError(f"n_steps must be at least 2 (the grid holds 0 and t0), got {n_steps}")
    n = n_steps - 1
    return tuple(dict.fromkeys((2 * i * t0 + n) // (2 * n) for i in range(n_steps)))


def alpha_bar(alphas_cumprod: torch.Tensor, t: int) -> float:
    """ᾱ at timestep ``t``: the table entry, or 1 for the clean timestep −1."""
    return 1.0 if t == CLEAN else float(alphas_cumprod[t])


def ddim_step(
    model: EpsModel, alphas_cumprod: torch.Tensor, x: torch.Tensor, t: int, t_next: int
) -> torch.Tensor:
    """One η = 0 DDIM step from timestep ``t`` to ``t_next`` (either direction)."""
    a_t, a_next = alpha_bar(alphas_cumprod, t), alpha_bar(alphas_cumprod, t_next)
    eps = model(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
    x0 = (x - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)
    return math.sqrt(a_next) * x0 + math.sqrt(1.0 - a_next) * eps


def _checked_grid(alphas_cumprod: torch.Tensor, t0: int, n_steps: int) -> tuple[int, ...]:
    if t0 >= len(alphas_cumprod):
        raise ValueError(f"t0 = {t0} is beyond the schedule's {len(alphas_cumprod)} timesteps")
    return timestep_grid(t0, n_steps)


def invert(
    model: EpsModel, alphas_cumprod: torch.Tensor, x: torch.Tensor, t0: int, n_steps: int
) -> torch.Tensor:
    """Map faces ``x`` to their DDIM latent at ``t0`` by walking the grid upward.

    Runs without autograd: inversion uses the frozen pretrained network and its latents are
    cached, so nothing upstream of them is ever trained.
    """
    grid = _checked_grid(alphas_cumprod, t0, n_steps)
    with torch.no_grad():
        for t, t_next in itertools.pairwise(grid):
            x = ddim_step(model, alphas_cumprod, x, t, t_next)
    return x


def generate(
    model: EpsModel,
    alphas_cumprod: torch.Tensor,
    x_t0: torch.Tensor,
    t0: int,
    n_steps: int,
    checkpoint: bool = False,
) -> torch.Tensor:
    """Decode latents ``x_t0`` to clean images by walking the grid downward, differentiably.

    Gradients flow to the model's parameters through every step (MAP fine-tunes the whole
    network through generation). ``checkpoint=True`` recomputes each step in the backward pass
    instead of storing its activations, so memory holds one step's activations rather than
    ``n_steps``' at the cost of one extra forward per step; results and gradients are the same.
    """
    grid = _checked_grid(alphas_cumprod, t0, n_steps)
    targets = (CLEAN, *grid[:-1])
    x = x_t0
    for t, t_next in zip(reversed(grid), reversed(targets), strict=True):
        if checkpoint:
            x = _checkpoint(ddim_step, model, alphas_cumprod, x, t, t_next, use_reentrant=False)
        else:
            x = ddim_step(model, alphas_cumprod, x, t, t_next)
    return x


def guided_generate(
    model: EpsModel,
    alphas_cumprod: torch.Tensor,
    x_t0: torch.Tensor,
    t0: int,
    n_steps: int,
    guide: Callable[[torch.Tensor, int], torch.Tensor],
) -> torch.Tensor:
    """:func:`generate` without autograd through the network, with ``guide(x̂₀, t)`` correcting
    each step's clean estimate before it is re-noised with the same ε (guidance on x̂₀, as in
    universal guidance): x_t' = √ᾱ_t'·guide(x̂₀) + √(1−ᾱ_t')·ε. The last step returns the
    guided x̂₀ itself."""
    grid = _checked_grid(alphas_cumprod, t0, n_steps)
    targets = (CLEAN, *grid[:-1])
    x = x_t0
    for t, t_next in zip(reversed(grid), reversed(targets), strict=True):
        a_t, a_next = alpha_bar(alphas_cumprod, t), alpha_bar(alphas_cumprod, t_next)
        with torch.no_grad():
            eps = model(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
            x0 = (x - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)
        x0 = guide(x0, t).detach()
        x = math.sqrt(a_next) * x0 + math.sqrt(1.0 - a_next) * eps
    return x
