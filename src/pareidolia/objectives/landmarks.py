"""L_lap, the Laplacian smoothness regulariser on the 68 facial landmarks (METHOD.md §3.5).

Landmarks may move as the expression changes, but each should keep its local shape relative to
its neighbours along the iBUG-68 chains (the paper's figure 4: without it an eyebrow erodes).
With δ_i(P) = P_i − mean_{j∈N(i)} P_j, L_lap = mean_i ‖δ_i(P(x̂)) − δ_i(P(x))‖².

Points P come from the face-api 68-point net on its "faceapi112" chip, and are measured in
**chip pixels** (the net's [0, 1] output times the chip size, 112), so a loss of 1 means a mean
squared Laplacian change of one chip pixel.
"""

from __future__ import annotations

import torch

from pareidolia.objectives.chip_net import ChipNet
from pareidolia.runtime import WORKING_SIZE

LANDMARK_MODEL = "faceapi_landmarks"

# iBUG-68 chains: (first, last, closed loop?)
CHAINS: tuple[tuple[int, int, bool], ...] = (
    (0, 16, False),  # jaw
    (17, 21, False),  # right brow (image left)
    (22, 26, False),  # left brow
    (27, 30, False),  # nose bridge
    (31, 35, False),  # nostrils
    (36, 41, True),  # right eye
    (42, 47, True),  # left eye
    (48, 59, True),  # outer lip
    (60, 67, True),  # inner lip
)


def _neighbours() -> tuple[tuple[int, ...], ...]:
    """N(i) for i = 0..67: the previous and next point along the chain (one at open ends)."""
    table: dict[int, tuple[int, ...]] = {}
    for first, last, closed in CHAINS:
        idx = list(range(first, last + 1))
        n = len(idx)
        for k, i in enumerate(idx):
            if closed:
                table[i] = (idx[(k - 1) % n], idx[(k + 1) % n])
            else:
                table[i] = tuple(idx[j] for j in (k - 1, k + 1) if 0 <= j < n)
    return tuple(table[i] for i in range(68))


NEIGHBOURS: tuple[tuple[int, ...], ...] = _neighbours()


def _averaging_matrix() -> torch.Tensor:
    """(68, 68) matrix A with A[i, j] = 1/|N(i)| for j ∈ N(i), so δ = P − A P."""
    a = torch.zeros(68, 68)
    for i, nb in enumerate(NEIGHBOURS):
        for j in nb:
            a[i, j] = 1.0 / len(nb)
    return a


def laplacian_coordinates(points: torch.Tensor) -> torch.Tensor:
    """δ_i(P) = P_i − mean_{j∈N(i)} P_j of points (B, 68, 2) → (B, 68, 2); units as the input.

    Translation-invariant (each row of the averaging matrix sums to 1).
    """
    if points.shape[-2:] != (68, 2):
        raise ValueError(f"expected landmarks of shape (B, 68, 2), got {tuple(points.shape)}")
    a = _averaging_matrix().to(device=points.device, dtype=points.dtype)
    return points - torch.einsum("ij,bjd->bid", a, points)


def laplacian_change(points_hat: torch.Tensor, points_orig: torch.Tensor) -> torch.Tensor:
    """mean_i ‖δ_i(P̂) − δ_i(P)‖² per sample (B,) of two landmark sets (B, 68, 2)."""
    d = laplacian_coordinates(points_hat) - laplacian_coordinates(points_orig)
    return d.pow(2).sum(-1).mean(-1)


class LaplacianLoss(ChipNet):
    """L_lap per sample (B,) between edited and original working crops (B, 3, W, W) in [0, 1]."""

    def __init__(
        self, working_size: int = WORKING_SIZE, device: torch.device | str = "cpu"
    ) -> None:
        super().__init__(LANDMARK_MODEL, working_size, device)
        self.chip_size = self.sampler.size

    def landmarks(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 68, 2) points in chip pixels of working crops in [0, 1]."""
        return self.model(x) * self.chip_size

    def forward(self, x_hat: torch.Tensor, x_orig: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            p_orig = self.landmarks(x_orig)
        return laplacian_change(self.landmarks(x_hat), p_orig)
