"""Thin-plate-spline warps of a working crop through landmark moves [ours].

A warp that moves points ``src`` of a crop onto ``dst`` is sampled at each output pixel: the
spline is fitted at the *output* positions (``dst``) with the displacement back to ``src``, and
held at zero on a ring outside the face oval, so the background does not move.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["tps_flow", "tps_morph"]


def _kernel(d: np.ndarray) -> np.ndarray:
    return np.where(d > 0, d**2 * np.log(np.maximum(d, 1e-12)), 0.0)


def tps_flow(ctrl: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """The thin-plate spline through ``values`` (N, 2) at ``ctrl`` (N, 2), on every pixel
    centre of a ``size``-pixel crop: (size, size, 2)."""
    n = len(ctrl)
    lhs = np.zeros((n + 3, n + 3))
    lhs[:n, :n] = _kernel(np.linalg.norm(ctrl[:, None] - ctrl[None], axis=-1))
    lhs[:n, :n] += 1e-3 * np.eye(n)
    affine = np.concatenate([np.ones((n, 1)), ctrl], 1)
    lhs[:n, n:], lhs[n:, :n] = affine, affine.T
    w = np.linalg.solve(lhs, np.concatenate([values, np.zeros((3, 2))]))
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    q = np.stack([xx.ravel(), yy.ravel()], 1)
    k = _kernel(np.linalg.norm(q[:, None] - ctrl[None], axis=-1))
    f = k @ w[:n] + np.concatenate([np.ones((len(q), 1)), q], 1) @ w[n:]
    return f.reshape(size, size, 2)


def tps_morph(
    x: torch.Tensor, src: np.ndarray, dst: np.ndarray, fade: np.ndarray, grid: torch.Tensor
) -> torch.Tensor:
    """Crop ``x`` (1, 3, S, S) warped so that its points ``src`` (N, 2, crop pixels) land on
    ``dst``; the displacement is multiplied by ``fade`` (S, S) (zero at the paste seam).
    ``grid``: the identity sampling grid (1, S, S, 2) of ``grid_sample``."""
    size = x.shape[-1]
    angles = np.linspace(0.0, 2.0 * np.pi, 24, endpoint=False)
    ring = size * (0.5 + 0.62 * np.stack([np.cos(angles), np.sin(angles)], 1))
    ctrl = np.concatenate([dst, ring])
    flow = tps_flow(ctrl, np.concatenate([src - dst, np.zeros_like(ring)]), size) * fade[..., None]
    moved = grid + torch.from_numpy(flow).to(x.device, x.dtype)[None] * (2.0 / size)
    return F.grid_sample(x, moved, mode="bilinear", padding_mode="border", align_corners=False)
