"""Photometric/geometric variants of a photo, standing in for "another photo of the same person"
where none exists offline, and for what social networks do to an upload."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through JPEG at ``quality``."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).copy()


def rescale(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Resize by ``factor`` (area interpolation when shrinking)."""
    h, w = rgb.shape[:2]
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return cv2.resize(
        rgb, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=interp
    )


def rotate(rgb: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the centre, keeping the size, reflecting the borders."""
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def strong_variant(rgb: np.ndarray) -> np.ndarray:
    """Mirrored, rotated 8°, brightened ×1.2, JPEG quality 40: the "same person, other photo"
    used by ``verify`` checks and by the offline protocol's target test photo."""
    out = np.ascontiguousarray(rgb[:, ::-1])
    out = rotate(out, 8.0)
    out = np.clip(out.astype(np.float32) * 1.2, 0, 255).astype(np.uint8)
    return jpeg(out, 40)


def social_network(rgb: np.ndarray) -> np.ndarray:
    """What an upload typically suffers: 0.5× resize, then JPEG quality 75."""
    return jpeg(rescale(rgb, 0.5), 75)
