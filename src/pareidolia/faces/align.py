"""Alignment: similarity transforms from detected landmarks to the working crop, crops taken
from the full photo, and differentiable model chips taken from the working crop.

The working crop (FFHQ-style, default 256 px) is what the score network edits. Every face
model sees its own chip; because all chips are similarity transforms of the same five-point
template, :class:`ChipSampler` takes any chip from a working crop with one fixed
``grid_sample`` so gradients flow from the model back to the crop's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pareidolia.faces.templates import CHIPS, ChipTemplate, chip_affine, umeyama, working_template


@dataclass(frozen=True)
class Alignment:
    """A face's similarity transform: ``matrix`` maps photo pixels → crop pixels."""

    matrix: np.ndarray  # (2, 3)
    size: int

    @property
    def inverse(self) -> np.ndarray:
        """(2, 3) map from crop pixels back to photo pixels."""
        return cv2.invertAffineTransform(self.matrix)

    @property
    def scale(self) -> float:
        """Crop pixels per photo pixel."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))


def align_to(landmarks: np.ndarray, template: ChipTemplate) -> Alignment:
    """The similarity transform putting five detected points onto ``template``."""
    return Alignment(umeyama(landmarks, template.points), template.size)


def working_alignment(landmarks: np.ndarray, size: int = 256) -> Alignment:
    """Alignment of a face to the working crop at ``size`` pixels."""
    return align_to(landmarks, working_template(size))


def warp_crop(rgb: np.ndarray, alignment: Alignment) -> np.ndarray:
    """Cut the aligned crop out of an RGB photo, with reflected borders.

    When the crop shrinks the face by more than 2×, the photo is first halved with an
    anti-aliasing pyramid so fine texture does not alias into the crop.
    """
    m = alignment.matrix.copy()
    img = rgb
    while alignment.scale * (rgb.shape[1] / img.shape[1]) < 0.5 and min(img.shape[:2]) > 32:
        img = cv2.pyrDown(img)
    factor = rgb.shape[1] / img.shape[1]
    if factor != 1.0:
        m = m @ np.diag([factor, factor, 1.0])
    return cv2.warpAffine(
        img,
        m,
        (alignment.size, alignment.size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )


def crop_chip(rgb: np.ndarray, landmarks: np.ndarray, chip: str) -> np.ndarray:
    """A model's chip straight from the photo (for scoring photos without a working crop)."""
    return warp_crop(rgb, align_to(landmarks, CHIPS[chip]))


def to_tensor(crops: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) crops → float (B, 3, H, W) in [0, 1]."""
    arr = np.stack(crops) if isinstance(crops, list) else crops
    if arr.ndim == 3:
        arr = arr[None]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float() / 255.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (B, 3, H, W) in [0, 1] → uint8 (B, H, W, 3)."""
    return (x.detach().clamp(0, 1) * 255.0).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def _sampling_grid(src: ChipTemplate, dst: ChipTemplate) -> torch.Tensor:
    """grid_sample grid (1, S, S, 2) reading ``dst``'s pixels from a ``src`` crop."""
    inv = cv2.invertAffineTransform(chip_affine(src, dst))  # dst pixels → src pixels
    ys, xs = np.meshgrid(np.arange(dst.size), np.arange(dst.size), indexing="ij")
    pts = np.stack([xs, ys, np.ones_like(xs)], -1).reshape(-1, 3).astype(np.float64)
    src_xy = pts @ inv.T
    norm = (2.0 * src_xy + 1.0) / src.size - 1.0  # align_corners=False pixel-centre convention
    return torch.from_numpy(norm.reshape(1, dst.size, dst.size, 2)).float()


class ChipSampler(nn.Module):
    """Differentiable crop of a model chip from working crops of a given size.

    When the chip shrinks the crop by more than 1.5×, the crop is first box-filtered so the
    chip is anti-aliased (as the non-differentiable photo path does with a pyramid).
    """

    def __init__(self, chip: str, working_size: int = 256) -> None:
        super().__init__()
        src = working_template(working_size)
        dst = CHIPS[chip]
        self.chip = chip
        self.size = dst.size
        aff = chip_affine(src, dst)
        scale = float(np.sqrt(abs(np.linalg.det(aff[:, :2]))))
        self.pool = max(1, round(1.0 / scale)) if scale < 1 / 1.5 else 1
        pooled = ChipTemplate(
            working_size // self.pool, (src.points - (self.pool - 1) / 2) / self.pool
        )
        self.grid: torch.Tensor
        self.register_buffer("grid", _sampling_grid(pooled, dst), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, W, W) working crops (any value range) → (B, 3, S, S) chips."""
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        grid = self.grid.to(dtype=x.dtype).expand(x.shape[0], -1, -1, -1)
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
