"""lum-eot [ours]: a luminance-bounded residual optimised per face with expectation over
transformations — the bar MAP must clear (FINDINGS: the most natural edit measured).

The edit is a ``grid``² luminance field upsampled bilinearly to the working crop and bounded in
L∞ by ``epsilon`` (clamped after every step), added equally to R, G and B, so chroma does not
change at all; optionally (``chroma_grid`` > 0) a coarser two-channel chroma field bounded by
``chroma_epsilon`` is added in YCbCr. The loss is the identity loss toward the target over the
surrogates plus ``w_dodge`` times the mean cosine to the face's own original embeddings, each
evaluated on ``copies`` transformed views per step (:func:`pareidolia.refine.eot_copies`: the
face's own size, random down-scale 0.5–1.0, blur, shifts, noise, real JPEG with a
straight-through gradient). Adam, ``steps`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pareidolia.baselines.base import check_crops, check_epsilon, check_steps, seeded_generator
from pareidolia.colour import CBCR_TO_RGB
from pareidolia.objectives.identity import IdentityLoss
from pareidolia.refine import eot_copies


@dataclass(frozen=True)
class LumEOTConfig:
    """Budget, parametrisation and optimiser of lum-eot (ours)."""

    epsilon: float = 12 / 255  # luminance L∞; 8/255 and 16/255 are the other offered budgets
    grid: int = 64
    chroma_grid: int = 0  # 0: luminance only
    chroma_epsilon: float = 4 / 255
    steps: int = 20
    lr: float = 2 / 255
    w_dodge: float = 1.0
    copies: int = 3
    jpeg: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_epsilon(self.epsilon)
        check_steps(self.steps)
        if self.grid < 2 or self.chroma_grid < 0 or self.copies < 1:
            raise ValueError("need grid >= 2, chroma_grid >= 0 and copies >= 1")


class LumEOT:
    """lum-eot behind the baselines' ``protect(crops, loss)`` interface."""

    def __init__(self, config: LumEOTConfig) -> None:
        self.config = config

    def protect(self, crops: Tensor, loss: IdentityLoss) -> Tensor:
        check_crops(crops)
        c = self.config
        b, s = crops.shape[0], crops.shape[-1]
        gen = seeded_generator(c.seed)
        x0 = crops.detach()
        with torch.no_grad():
            own = {m: e.detach() for m, e in loss.ensemble(x0).items()}
        dy = torch.zeros(b, 1, c.grid, c.grid, device=x0.device, requires_grad=True)
        params = [dy]
        dc = None
        if c.chroma_grid > 0:
            dc = torch.zeros(
                b, 2, c.chroma_grid, c.chroma_grid, device=x0.device, requires_grad=True
            )
            params.append(dc)
        opt = torch.optim.Adam(params, lr=c.lr)

        def edit() -> Tensor:
            x = x0 + F.interpolate(dy, size=(s, s), mode="bilinear", align_corners=False)
            if dc is not None:
                up = F.interpolate(dc, size=(s, s), mode="bilinear", align_corners=False)
                x = x + torch.einsum("kc,bchw->bkhw", torch.from_numpy(CBCR_TO_RGB).to(x), up)
            return x.clamp(0.0, 1.0)

        for _ in range(c.steps):
            with torch.enable_grad():
                views = eot_copies(edit(), [s] * b, c.copies, gen, c.jpeg)
                emb = loss.ensemble(views)
                target = torch.stack(
                    [
                        1.0 - (e.view(c.copies, b, -1) * loss.target_embedding(m)).sum(-1)
                        for m, e in emb.items()
                    ]
                ).mean()
                dodge = torch.stack(
                    [(e.view(c.copies, b, -1) * own[m][None]).sum(-1) for m, e in emb.items()]
                ).mean()
                objective = target + c.w_dodge * dodge
                opt.zero_grad(set_to_none=True)
                objective.backward()
            opt.step()
            with torch.no_grad():
                dy.clamp_(-c.epsilon, c.epsilon)
                if dc is not None:
                    dc.clamp_(-c.chroma_epsilon, c.chroma_epsilon)
        with torch.no_grad():
            return edit().detach()
