"""The diffusion core: score networks (diffusers ``UNet2DModel``), DDIM inversion / generation,
and the on-disk cache of inversion latents."""

from pareidolia.diffusion.cache import LatentCache, LatentKey
from pareidolia.diffusion.ddim import EpsModel, generate, invert, timestep_grid, unet_eps
from pareidolia.diffusion.hashing import model_hash
from pareidolia.diffusion.models import (
    CELEBA_HQ_ARCH,
    PAPER_HUB_ID,
    ScoreModelError,
    SDEditArch,
    build_unet,
    convert_sdedit_ckpt,
    load_diffusers,
    load_score_model,
    load_sdedit_ckpt,
)
from pareidolia.diffusion.schedule import ScoreModelConfig, alphas_cumprod, linear_betas

__all__ = [
    "CELEBA_HQ_ARCH",
    "PAPER_HUB_ID",
    "EpsModel",
    "LatentCache",
    "LatentKey",
    "SDEditArch",
    "ScoreModelConfig",
    "ScoreModelError",
    "alphas_cumprod",
    "build_unet",
    "convert_sdedit_ckpt",
    "generate",
    "invert",
    "linear_betas",
    "load_diffusers",
    "load_score_model",
    "load_sdedit_ckpt",
    "model_hash",
    "timestep_grid",
    "unet_eps",
]
