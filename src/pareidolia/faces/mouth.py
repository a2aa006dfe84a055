"""The inside of a mouth that a warp opens [ours].

A thin-plate-spline warp that moves the inner lower lip down (the *surprised* template) cannot
open a closed mouth: the pixels between the lips are the lip line stretched, a band of lip
colour where a real open mouth shows its dark inside. :func:`open_mouth` shades the part of the
opening that is new (between the warped inner lips, in proportion to how much wider the opening
got) toward the shadow of a mouth's inside, a darkened tone of the face's own lips, with soft
edges. A mouth that was already as open keeps what it showed (its teeth).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

__all__ = ["INNER_LIPS", "open_mouth", "opening"]

INNER_LIPS = (60, 61, 62, 63, 64, 65, 66, 67)  # the inner lip contour, 68-point numbering
OUTER_LIPS = tuple(range(48, 60))
SHADOW = 0.3  # the inside's tone: the lips' mean colour times this
SUPERSAMPLE = 4  # the polygon is drawn this many times finer, then averaged (soft edges)


def opening(points: np.ndarray) -> float:
    """The mouth's opening: the mean gap between the inner upper lip (61–63) and the inner lower
    lip (67–65), in the points' units."""
    upper, lower = points[[61, 62, 63]], points[[67, 66, 65]]
    return float(np.mean(lower[:, 1] - upper[:, 1]).clip(0.0))


def _polygon_mask(points: np.ndarray, size: int) -> np.ndarray:
    """Coverage (S, S) in [0, 1] of the polygon ``points`` (K, 2, crop pixels: pixel i's
    centre at i)."""
    fine = np.zeros((size * SUPERSAMPLE, size * SUPERSAMPLE), np.uint8)
    pts = np.round((points + 0.5) * SUPERSAMPLE - 0.5).astype(np.int32)
    cv2.fillPoly(fine, [pts], 255)
    return fine.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean((1, 3)) / 255.0


def open_mouth(
    warped: torch.Tensor, original: torch.Tensor, src: np.ndarray, dst: np.ndarray
) -> torch.Tensor:
    """``warped`` (1, 3, S, S): ``original``'s crop after a warp that moved its landmarks
    ``src`` (68, 2, crop pixels) onto ``dst``. Where the warp opened the mouth wider, the new
    part of the opening (the share ``1 − opening(src) / opening(dst)``) is shaded toward the
    mouth's inside; otherwise ``warped`` is returned as it is."""
    before, after = opening(src), opening(dst)
    if after <= before + 0.5:  # under half a pixel wider: nothing new to shade
        return warped
    size = warped.shape[-1]
    share = 1.0 - before / after
    inside = _polygon_mask(dst[list(INNER_LIPS)], size)
    inside = cv2.GaussianBlur(inside, (0, 0), 0.8)
    lips = _polygon_mask(src[list(OUTER_LIPS)], size) - _polygon_mask(src[list(INNER_LIPS)], size)
    lips = lips.clip(0.0) if lips.sum() > 1.0 else _polygon_mask(src[list(OUTER_LIPS)], size)
    w = torch.from_numpy(lips).to(original)
    tone = (original[0] * w).sum((1, 2)) / w.sum().clamp_min(1e-6)  # the lips' mean colour
    alpha = torch.from_numpy(inside * share).to(warped)[None, None]
    return warped + alpha * (SHADOW * tone.view(1, 3, 1, 1) - warped)
