"""Paste an edited working crop back into the full-resolution photo.

Only the *change* is pasted: the residual (edited crop − original crop) is warped back into the
photo with the inverse of the face's similarity transform and added to the original pixels under
a feathered oval mask. The photo keeps its full-resolution detail (the crop's resampling blur
cancels out of the residual), nothing outside the oval changes, and an unchanged crop leaves the
photo unchanged byte for byte.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

from pareidolia.faces.align import Alignment

__all__ = ["blend_edit", "face_mask", "paste_residual"]

# The oval, in units of the crop side: centre and semi-axes. In the FFHQ-style working crop the
# eyes lie at ~0.47 of the height and the mouth at ~0.75; the oval covers brows to chin and
# cheek to cheek, leaving hair and background (where a diffusion round trip only adds noise).
_OVAL_CENTRE = (0.5, 0.54)
_OVAL_AXES = (0.31, 0.38)
_FEATHER = 0.04  # Gaussian sigma of the edge, in units of the crop side


@cache
def _face_mask(size: int, feather: float) -> np.ndarray:
    sigma = max(feather * size, 0.5)
    inset = 2.0 * sigma  # shrink the filled oval so the blur's half-way line is near its rim
    centre = (round(_OVAL_CENTRE[0] * size), round(_OVAL_CENTRE[1] * size))
    axes = (
        max(1, round(_OVAL_AXES[0] * size - inset)),
        max(1, round(_OVAL_AXES[1] * size - inset)),
    )
    hard = np.zeros((size, size), np.float32)
    cv2.ellipse(hard, centre, axes, 0.0, 0.0, 360.0, 1.0, thickness=-1, lineType=cv2.LINE_AA)
    soft = cv2.GaussianBlur(hard, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_CONSTANT)
    soft[soft < 1.0 / 512.0] = 0.0  # compact support: the tails would not change a uint8 pixel
    soft[[0, -1], :] = 0.0
    soft[:, [0, -1]] = 0.0
    soft = np.clip(soft / float(soft.max()), 0.0, 1.0)
    soft.setflags(write=False)
    return soft


def face_mask(size: int, feather: float = _FEATHER) -> np.ndarray:
    """The blending mask of a working crop of ``size`` px: (S, S) float32 in [0, 1], 1 over the
    face's oval, a Gaussian falloff of sigma ``feather``·S at its rim, exactly 0 from a little
    outside the rim to the crop border (so the crop's edges never show in the photo)."""
    return _face_mask(int(size), float(feather))


def _support_box(
    mask: np.ndarray, inverse: np.ndarray, height: int, width: int
) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the photo pixels the warped mask can touch, clipped; None if none."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    corners = np.array(
        [
            [xs.min() - 1, ys.min() - 1, 1.0],
            [xs.max() + 1, ys.min() - 1, 1.0],
            [xs.min() - 1, ys.max() + 1, 1.0],
            [xs.max() + 1, ys.max() + 1, 1.0],
        ]
    )
    pts = corners @ inverse.T
    x0 = max(0, int(np.floor(pts[:, 0].min())) - 1)
    y0 = max(0, int(np.floor(pts[:, 1].min())) - 1)
    x1 = min(width, int(np.ceil(pts[:, 0].max())) + 2)
    y1 = min(height, int(np.ceil(pts[:, 1].max())) + 2)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def _anti_alias(residual: np.ndarray, scale: float) -> np.ndarray:
    """Low-pass the residual before it is shrunk by ``scale`` (crop px per photo px) so a small
    face does not receive aliased high frequencies."""
    if scale <= 1.25:
        return residual
    sigma = 0.5 * float(np.sqrt(scale**2 - 1.0))
    return cv2.GaussianBlur(residual, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT_101)


def paste_residual(
    photo: np.ndarray,
    residual: np.ndarray,
    alignment: Alignment,
    mask: np.ndarray | None = None,
    *,
    in_place: bool = False,
) -> np.ndarray:
    """Add a crop-space ``residual`` (S, S, 3) float to ``photo`` (H, W, 3) uint8 under ``mask``
    (default :func:`face_mask`), both warped back with ``alignment``'s inverse; returns a new
    uint8 photo, or ``photo`` itself changed with ``in_place`` (no copy of a large photo per
    face). Work is limited to the bounding box of the warped mask, so the cost does not grow
    with the photo's size."""
    size = alignment.size
    if residual.shape[:2] != (size, size):
        raise ValueError(f"residual must be ({size}, {size}, C), got {residual.shape}")
    m = face_mask(size) if mask is None else mask.astype(np.float32)
    out = photo if in_place else photo.copy()
    box = _support_box(m, alignment.inverse, photo.shape[0], photo.shape[1])
    if box is None:
        return out
    x0, y0, x1, y1 = box
    inv = alignment.inverse.copy()
    inv[:, 2] -= (x0, y0)  # photo ROI coordinates
    dsize = (x1 - x0, y1 - y0)
    res = _anti_alias(residual.astype(np.float32), alignment.scale)
    warped_res = cv2.warpAffine(
        res, inv, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    warped_mask = cv2.warpAffine(
        m, inv, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    if warped_res.ndim == 2:
        warped_res = warped_res[:, :, None]
    roi = out[y0:y1, x0:x1].astype(np.float32)
    roi += warped_res * warped_mask[:, :, None]
    out[y0:y1, x0:x1] = np.clip(np.rint(roi), 0, 255).astype(np.uint8)
    return out


def blend_edit(
    photo: np.ndarray,
    original_crop: np.ndarray,
    edited_crop: np.ndarray,
    alignment: Alignment,
    mask: np.ndarray | None = None,
    *,
    in_place: bool = False,
) -> np.ndarray:
    """Put an edit of one face into ``photo`` (H, W, 3) uint8 (changed itself with
    ``in_place``, else a copy).

    ``original_crop`` is the working crop the edit started from (taken from the *original*
    photo with ``alignment``), ``edited_crop`` the edited version (both (S, S, 3) uint8). Their
    difference is pasted (:func:`paste_residual`), so faces of one photo may be blended one
    after another onto the running output.
    """
    if original_crop.shape != edited_crop.shape:
        raise ValueError(f"crops differ in shape: {original_crop.shape} vs {edited_crop.shape}")
    residual = edited_crop.astype(np.float32) - original_crop.astype(np.float32)
    return paste_residual(photo, residual, alignment, mask, in_place=in_place)
