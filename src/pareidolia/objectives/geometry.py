"""A geometric expression guide [ours]: move the 68 landmarks toward each emotion's template.

The classifier guide (face-api's expression net) is satisfied by texture that no person or
independent judge reads as an expression (README, "Shipped protectors"). This guide asks for
the geometry itself, measured by the face-api 68-point net: for *happy* the mouth corners move
up and out and the cheeks lift the lower eyelids; for *surprised* the brows rise, the eyes open
and the mouth and jaw drop. Each template is a displacement per landmark in units of the
inter-ocular distance (IOD), in the image's own frame (x right, y down). The loss is the mean
squared distance, in IOD², of the edited face's points to the original points plus the
template, over the template's points.
"""

from __future__ import annotations

import torch
from torch import nn

from pareidolia.objectives.landmarks import LaplacianLoss

__all__ = [
    "TEMPLATES",
    "LandmarkExpressionLoss",
    "displacements",
    "inter_ocular",
    "smile_lift",
    "template_error",
]

_RIGHT_EYE = list(range(36, 42))  # image left
_LEFT_EYE = list(range(42, 48))


def _happy() -> dict[int, tuple[float, float]]:
    t: dict[int, tuple[float, float]] = {
        48: (-0.07, -0.06),  # mouth corner, image left: out and up
        54: (0.07, -0.06),
        49: (-0.03, -0.03),
        53: (0.03, -0.03),
        60: (-0.05, -0.05),  # inner corners follow
        64: (0.05, -0.05),
        59: (-0.02, -0.02),
        55: (0.02, -0.02),
    }
    for i in (40, 41, 46, 47):  # lower eyelids lift with the cheeks
        t[i] = (0.0, -0.015)
    return t


def _surprised() -> dict[int, tuple[float, float]]:
    t: dict[int, tuple[float, float]] = {}
    for i in range(17, 27):  # brows up, the inner ends a little less
        t[i] = (0.0, -0.09 if i not in (21, 22) else -0.07)
    for i in (37, 38, 43, 44):  # upper eyelids up
        t[i] = (0.0, -0.035)
    for i in (40, 41, 46, 47):  # lower eyelids down a little
        t[i] = (0.0, 0.01)
    for i in (65, 66, 67):  # inner lower lip: the mouth opens
        t[i] = (0.0, 0.10)
    for i in (55, 56, 57, 58, 59):  # outer lower lip
        t[i] = (0.0, 0.09)
    for i in (6, 7, 8, 9, 10):  # the jaw drops
        t[i] = (0.0, 0.05)
    for i in (48, 54, 60, 64):  # corners narrow slightly as the mouth drops open
        t[i] = (0.02 if i in (48, 60) else -0.02, 0.03)
    return t


TEMPLATES: dict[str, dict[int, tuple[float, float]]] = {
    "happy": _happy(),
    "surprised": _surprised(),
}


def inter_ocular(points: torch.Tensor) -> torch.Tensor:
    """Distance (B,) between the two eye centres of landmarks (B, 68, 2)."""
    right = points[:, _RIGHT_EYE].mean(1)
    left = points[:, _LEFT_EYE].mean(1)
    return (left - right).norm(dim=-1)


def smile_lift(points: torch.Tensor) -> torch.Tensor:
    """How far (B,) the mouth corners (48, 54) of landmarks (B, 68, 2) stand above the middle
    of the lips (51, 57, 62, 66), in inter-ocular distances: about 0 for a closed neutral
    mouth, 0.1 or more for a broad smile, negative when the corners droop."""
    middle = points[:, [51, 57, 62, 66], 1].mean(1)
    corners = points[:, [48, 54], 1].mean(1)
    return (middle - corners) / inter_ocular(points).clamp_min(1e-6)


def displacements(points_hat: torch.Tensor, points_orig: torch.Tensor) -> torch.Tensor:
    """Landmark moves (B, 68, 2) from ``points_orig`` to ``points_hat``, in IOD units of the
    original face."""
    iod = inter_ocular(points_orig).clamp_min(1e-6)
    return (points_hat - points_orig) / iod[:, None, None]


def template_error(
    points_hat: torch.Tensor, points_orig: torch.Tensor, emotion: str
) -> torch.Tensor:
    """Mean squared distance (B,) in IOD² of the landmark moves from ``points_orig`` to
    ``points_hat`` (B, 68, 2) to ``emotion``'s template, over the template's points."""
    template = TEMPLATES[emotion]
    idx = sorted(template)
    want = torch.tensor(
        [template[i] for i in idx], dtype=points_hat.dtype, device=points_hat.device
    )
    moves = displacements(points_hat, points_orig)[:, idx]
    return (moves - want).pow(2).sum(-1).mean(-1)


class LandmarkExpressionLoss(nn.Module):
    """Mean squared error (B,) in IOD² between the edited face's landmark moves and the
    emotion's template, over the template's points. Landmarks come from the face-api 68-point
    net through its differentiable chip (shared with L_lap)."""

    def __init__(
        self,
        emotion: str,
        working_size: int = 256,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        if emotion not in TEMPLATES:
            raise ValueError(
                f"no landmark template for {emotion!r} (have {', '.join(sorted(TEMPLATES))})"
            )
        self.emotion = emotion
        self.points_net = LaplacianLoss(working_size, device)

    def loss_from_points(self, points_hat: torch.Tensor, points_orig: torch.Tensor) -> torch.Tensor:
        """The loss (B,) from landmark sets (B, 68, 2) of the edited and original faces."""
        return template_error(points_hat, points_orig, self.emotion)

    def forward(self, x_hat: torch.Tensor, x_orig: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            p_orig = self.points_net.landmarks(x_orig)
        return self.loss_from_points(self.points_net.landmarks(x_hat), p_orig)
