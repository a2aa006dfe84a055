"""The DDPM noise schedule and the record that travels with every score model.

MAP (like DiffAM and DiffusionCLIP before it) uses the DDPM linear schedule: β rises linearly
from 1e-4 to 0.02 over T = 1000 steps and ᾱ_t = Π_{s≤t} (1 − β_s). Index t of the ᾱ table is the
model's timestep t (0-based), so ``alphas_cumprod[0] = 1 − β_1`` is already slightly noisy; the
DDIM code (:mod:`pareidolia.diffusion.ddim`) treats "clean" as the virtual timestep −1 with ᾱ = 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from pareidolia.diffusion.hashing import model_hash

PAPER_BETA_START = 1e-4
PAPER_BETA_END = 0.02
PAPER_NUM_TRAIN_TIMESTEPS = 1000


def linear_betas(beta_start: float, beta_end: float, num_train_timesteps: int) -> torch.Tensor:
    """β_1..β_T of the DDPM linear schedule, in float64 so ᾱ keeps its precision near t = T."""
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    if num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be positive, got {num_train_timesteps}")
    return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ_t = Π_{s≤t} (1 − β_s), one entry per timestep index t = 0..T−1."""
    return torch.cumprod(1.0 - betas.to(torch.float64), dim=0)


@dataclass(frozen=True)
class ScoreModelConfig:
    """What a score network was trained with and where it came from.

    Recorded next to every model (and in every artifact built from one) so a result can be
    traced back and caches can key on ``content_hash``, the sha256 of the network's weights
    (:func:`pareidolia.diffusion.hashing.tensors_sha256` over its diffusers state dict).
    """

    beta_start: float
    beta_end: float
    num_train_timesteps: int
    resolution: int
    source: str
    content_hash: str

    @classmethod
    def of(
        cls, unet: torch.nn.Module, source: str, schedule: Mapping[str, Any]
    ) -> ScoreModelConfig:
        """The config of the diffusers ``unet`` loaded from ``source``: its noise ``schedule``
        (``beta_start``, ``beta_end``, ``num_train_timesteps``), its resolution (the UNet's
        ``sample_size``) and the hash of its weights."""
        size = unet.config["sample_size"]  # type: ignore[index]
        return cls(
            beta_start=float(schedule["beta_start"]),
            beta_end=float(schedule["beta_end"]),
            num_train_timesteps=int(schedule["num_train_timesteps"]),
            resolution=int(size if isinstance(size, int) else size[0]),
            source=source,
            content_hash=model_hash(unet),
        )

    def alphas_cumprod(self) -> torch.Tensor:
        """The ᾱ table of this model's linear schedule (float64, length ``num_train_timesteps``)."""
        return alphas_cumprod(
            linear_betas(self.beta_start, self.beta_end, self.num_train_timesteps)
        )
