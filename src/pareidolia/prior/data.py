"""Training batches of the offline prior: augmented real working crops mixed with DCGAN faces.

Every face reaches the model's resolution R through one similarity warp, from its five-point
template onto the working template, composed with the augmentation's jitter (flip, scale,
rotation, translation); then colour jitter. The warp samples at 2R and is then averaged 2×2
down to R, so bilinear interpolation never resamples at the final resolution (it would blur
the training faces, and the prior would learn the blur). Real crops are reduced to 2R once,
with area averaging. DCGAN faces (64 px) are upsampled by the same warp; the working crop
shows more than the DCGAN's 64 px square, and that border is filled with a heavy blur of the
face's reflection rather than the reflection itself (a mirrored DCGAN face puts a second chin
or mouth at the border, shapes that real crops never show).

The whole batch is warped at once with ``grid_sample`` on the training device. All randomness
comes from the two generators passed in (numpy for choices and jitter, torch for DCGAN
latents), so a batch depends only on their states: training resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pareidolia.faces.templates import umeyama, working_template
from pareidolia.prior.dcgan import DCGAN_POINTS, NZ, SIZE, DCGANGenerator

_GREY = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Augment:
    """Ranges of the random jitter (each drawn uniformly in ±range; flip with probability ½)."""

    flip: bool = True
    scale: float = 0.05  # relative zoom
    rotate_deg: float = 5.0
    shift: float = 0.03  # fraction of the crop side
    brightness: float = 0.06  # added, on [0, 1] pixel values
    contrast: float = 0.1  # relative
    saturation: float = 0.1  # relative


NO_AUGMENT = Augment(False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _jitter(aug: Augment, size: int, rng: np.random.Generator) -> np.ndarray:
    """3×3 map of crop pixels to jittered crop pixels, about the crop's centre."""
    flip = aug.flip and rng.random() < 0.5
    s = 1.0 + rng.uniform(-aug.scale, aug.scale)
    a = math.radians(rng.uniform(-aug.rotate_deg, aug.rotate_deg))
    dx, dy = rng.uniform(-aug.shift, aug.shift, size=2) * size
    c = (size - 1) / 2.0
    to_centre = np.array([[1.0, 0, -c], [0, 1, -c], [0, 0, 1]])
    mirror = np.diag([-1.0 if flip else 1.0, 1.0, 1.0])
    cos, sin = s * math.cos(a), s * math.sin(a)
    rot = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])
    back = np.array([[1.0, 0, c + dx], [0, 1, c + dy], [0, 0, 1]])
    return back @ rot @ mirror @ to_centre


def _normaliser(size: int) -> np.ndarray:
    """Pixel coordinates → ``grid_sample`` coordinates (align_corners=False)."""
    return np.array([[2.0 / size, 0, 1.0 / size - 1], [0, 2.0 / size, 1.0 / size - 1], [0, 0, 1]])


def _theta(maps: list[np.ndarray], src: int, dst: int) -> torch.Tensor:
    """``affine_grid`` matrices (B, 2, 3) of maps from source pixels to output pixels."""
    n_src, n_dst_inv = _normaliser(src), np.linalg.inv(_normaliser(dst))
    return torch.tensor(
        np.stack([(n_src @ np.linalg.inv(m) @ n_dst_inv)[:2] for m in maps]), dtype=torch.float32
    )


def _warp(x: torch.Tensor, theta: torch.Tensor, size: int, padding: str) -> torch.Tensor:
    grid = F.affine_grid(
        theta.to(x.device), [x.shape[0], x.shape[1], size, size], align_corners=False
    )
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def _soft_border(warped: torch.Tensor, theta: torch.Tensor, src: int) -> torch.Tensor:
    """Blend what lies outside the source square (``grid_sample``'s reflection) into a heavy
    blur of it, with a feathered edge."""
    size = warped.shape[-1]
    ones = torch.ones(warped.shape[0], 1, src, src, device=warped.device)
    inside = _warp(ones, theta, size, "zeros")
    feather = max(1, size // 64) * 2 + 1
    inside = F.avg_pool2d(inside, feather, stride=1, padding=feather // 2, count_include_pad=False)
    small = F.interpolate(warped, size=max(4, size // 8), mode="area")
    small = F.avg_pool2d(small, 5, stride=1, padding=2, count_include_pad=False)
    blurred = F.interpolate(small, size=size, mode="bilinear", align_corners=False)
    return inside * warped + (1.0 - inside) * blurred


def _colour(x: torch.Tensor, aug: Augment, rng: np.random.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation jitter of images (B, 3, H, W) in [0, 1]."""
    n = x.shape[0]
    b, c, s = (
        torch.tensor(rng.uniform(-r, r, size=n), dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
        for r in (aug.brightness, aug.contrast, aug.saturation)
    )
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (1.0 + c) + mean + b
    grey = (x * torch.tensor(_GREY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)).sum(
        1, keepdim=True
    )
    return (grey + (x - grey) * (1.0 + s)).clamp(0.0, 1.0)


class FaceSampler:
    """Draws batches (B, 3, R, R) in [−1, 1] of augmented training faces on ``device``.

    ``synthetic_ratio`` is the expected share of DCGAN faces in a batch (the count is binomial,
    so every batch composition is possible); without a generator every face is real.
    """

    def __init__(
        self,
        real: Sequence[np.ndarray],
        resolution: int,
        dcgan: DCGANGenerator | None = None,
        synthetic_ratio: float = 0.0,
        augment: Augment = NO_AUGMENT,
        device: torch.device | str = "cpu",
    ) -> None:
        if not real:
            raise ValueError("no real training faces")
        if not 0.0 <= synthetic_ratio <= 1.0:
            raise ValueError(f"synthetic_ratio must lie in [0, 1], got {synthetic_ratio}")
        self.size = resolution
        self.work = 2 * resolution
        self.device = torch.device(device)
        crops = [cv2.resize(f, (self.work, self.work), interpolation=cv2.INTER_AREA) for f in real]
        self.real = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).to(self.device)
        self.dcgan = dcgan
        self.synthetic_ratio = synthetic_ratio if dcgan is not None else 0.0
        self.augment = augment
        target = working_template(self.work).points
        self._dcgan_base = np.vstack([umeyama(DCGAN_POINTS, target), [0, 0, 1]])

    def _maps(self, n: int, base: np.ndarray | None, rng: np.random.Generator) -> list[np.ndarray]:
        jitters = [_jitter(self.augment, self.work, rng) for _ in range(n)]
        return jitters if base is None else [j @ base for j in jitters]

    def batch(self, n: int, rng: np.random.Generator, gen: torch.Generator) -> torch.Tensor:
        """``n`` faces drawn with ``rng`` (choices, jitter) and ``gen`` (DCGAN latents)."""
        k = int(rng.binomial(n, self.synthetic_ratio)) if self.synthetic_ratio > 0 else 0
        picks = torch.from_numpy(rng.integers(len(self.real), size=n - k))
        real = self.real[picks.to(self.device)].float() / 255.0
        parts = []
        if n - k:  # a batch may be all synthetic (the count is binomial)
            theta = _theta(self._maps(n - k, None, rng), self.work, self.work)
            parts.append(_warp(real, theta, self.work, "reflection"))
        if k and self.dcgan is not None:
            z = torch.randn(k, NZ, 1, 1, generator=gen).to(self.device)
            with torch.no_grad():
                faces = (self.dcgan(z).float() + 1.0) / 2.0
            theta = _theta(self._maps(k, self._dcgan_base, rng), SIZE, self.work)
            parts.append(_soft_border(_warp(faces, theta, self.work, "reflection"), theta, SIZE))
        x = F.avg_pool2d(torch.cat(parts), 2)
        return _colour(x, self.augment, rng) * 2.0 - 1.0
