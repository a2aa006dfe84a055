"""Landmark refinement: YuNet's five points drift with head roll (a face rotated 8° can come back
with level eyes), which misaligns every chip. Re-estimating the five points from a 68-point
landmark net on the face's own chip, twice, makes alignment follow the face.

The 68-point predictor is passed in (``faces`` sits upstream of the model zoo).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pareidolia.faces.align import align_to, warp_crop
from pareidolia.faces.templates import CHIPS

Landmarker = Callable[[np.ndarray], np.ndarray]
"""(S, S, 3) uint8 chip → (68, 2) iBUG-68 points in chip pixels."""


def five_from_68(points: np.ndarray) -> np.ndarray:
    """iBUG-68 → the five alignment points: eye centres (36–41, 42–47), nose tip (30),
    mouth corners (48, 54)."""
    return np.stack(
        [points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]]
    )


def refine_landmarks(
    rgb: np.ndarray,
    five: np.ndarray,
    landmarker: Landmarker,
    chip: str = "faceapi112",
    rounds: int = 2,
) -> np.ndarray:
    """Re-estimate five points in photo pixels by running ``landmarker`` on the face's chip."""
    template = CHIPS[chip]
    for _ in range(rounds):
        al = align_to(five, template)
        pts = landmarker(warp_crop(rgb, al))
        five = np.c_[five_from_68(pts), np.ones(5)] @ al.inverse.T
    return five
