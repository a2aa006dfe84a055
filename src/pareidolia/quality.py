"""Image quality of an edit: PSNR and SSIM of uint8 pictures (the images a user gets)."""

from __future__ import annotations

import cv2
import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of two uint8 images (peak 255); ∞ when identical."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def _gauss_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004) of two uint8 (H, W, 3) images.

    Gaussian window 11×11, σ = 1.5, K1 = 0.01, K2 = 0.03, data range 255, population variance,
    each channel over the window positions that fit inside the image, then averaged: the
    numbers of scikit-image's ``structural_similarity(..., channel_axis=2,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)``, computed
    with separable float64 filters (fast enough for every face of a benchmark)."""
    g = _gauss_1d()
    half = len(g) // 2
    x, y = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(img: np.ndarray) -> np.ndarray:
        out = cv2.sepFilter2D(img, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)
        return out[half:-half, half:-half]

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx**2
    vy = blur(y * y) - my**2
    cxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())
