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
from pareidolia.runtime import WORKING_SIZE


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


def working_alignment(landmarks: np.ndarray, size: int = WORKING_SIZE) -> Alignment:
    """Alignment of a face to the working crop at ``size`` pixels."""
    return align_to(landmarks, working_template(size))


def _source_box(alignment: Alignment, height: int, width: int, margin: int) -> tuple[int, ...]:
    """(x0, y0, x1, y1): the photo pixels the crop reads, ``margin`` wider and clipped to the
    photo, widened to hold what the crop reflects where it reaches beyond the border."""
    s = alignment.size
    corners = np.array([[0, 0, 1], [s, 0, 1], [0, s, 1], [s, s, 1]], np.float64)
    pts = corners @ alignment.inverse.T
    lo = np.floor(pts.min(0)).astype(int) - margin
    hi = np.ceil(pts.max(0)).astype(int) + margin
    box = []
    for a, b, n in ((lo[0], hi[0], width), (lo[1], hi[1], height)):
        box.append((max(0, min(a, 2 * (n - 1) - b)), min(n, max(b, -a) + 1)))
    (x0, x1), (y0, y1) = box
    if x1 - x0 < 2 or y1 - y0 < 2:  # the crop lies wholly beyond the photo: reflect all of it
        return 0, 0, width, height
    return x0, y0, x1, y1


def warp_crop(rgb: np.ndarray, alignment: Alignment, zero_border: bool = False) -> np.ndarray:
    """Cut the aligned crop out of an RGB photo, with reflected borders (black ones with
    ``zero_border``, as FR systems cut their chips: a face cut by the photo's edge is not
    completed by its own mirror image).

    Only the part of the photo the crop reads is touched, so the cost does not grow with the
    photo. When the crop shrinks the face by more than 2×, that part is first halved with an
    anti-aliasing pyramid so fine texture does not alias into the crop.
    """
    levels = 0
    while alignment.scale * 2**levels < 0.5:
        levels += 1
    step = 2**levels
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = _source_box(alignment, h, w, 4 * step + 2)
    x0, y0 = x0 - x0 % step, y0 - y0 % step  # the pyramid's grid stays the whole photo's
    img = rgb[y0:y1, x0:x1]
    factor = 1
    while factor < step and min(img.shape[:2]) > 32:
        img = cv2.pyrDown(img)
        factor *= 2
    m = alignment.matrix.copy()
    m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
    m[:, :2] *= factor
    return cv2.warpAffine(
        img,
        m,
        (alignment.size, alignment.size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT if zero_border else cv2.BORDER_REFLECT_101,
    )


def inside_mask(alignment: Alignment, height: int, width: int) -> np.ndarray:
    """(S, S) bool: the crop's pixels whose source lies inside a ``height`` × ``width`` photo;
    the others hold only padding (reflected, in a working crop)."""
    s = alignment.size
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float64)
    inv = alignment.inverse
    px = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    py = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    return (px >= -0.5) & (py >= -0.5) & (px <= width - 0.5) & (py <= height - 0.5)


def outside_share(
    alignment: Alignment, height: int, width: int, weight: np.ndarray | None = None
) -> float:
    """The share of the crop (weighted by ``weight`` (S, S), e.g. the face oval) whose pixels
    lie beyond a ``height`` × ``width`` photo, where the crop holds only reflected padding."""
    outside = ~inside_mask(alignment, height, width)
    wgt = np.ones(outside.shape) if weight is None else weight.astype(np.float64)
    total = float(wgt.sum())
    return float((wgt * outside).sum()) / total if total > 0 else 1.0


def crop_chip(rgb: np.ndarray, landmarks: np.ndarray, chip: str) -> np.ndarray:
    """A model's chip straight from the photo (for scoring photos without a working crop),
    black beyond the photo's border."""
    return warp_crop(rgb, align_to(landmarks, CHIPS[chip]), zero_border=True)


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

    def __init__(self, chip: str, working_size: int = WORKING_SIZE) -> None:
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
