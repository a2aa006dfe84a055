"""The synthetic face source of the offline prior: the DCGAN of the ``gan-face-generate`` wheel.

``gan-face-generate`` 1.1.1 (PyPI, MIT code) ships ``weights.tar``, a 64×64 DCGAN generator
(Radford et al.: nz = 100 latent, ngf = 64 feature maps, transposed convolutions 4×4 → 64×64
with batch norm and ReLU, tanh output) trained on DigiFace-1M, whose synthetic faces come under
research-only terms. The faces are poor alone (64 px, rendered look) but add pose, skin-tone and
lighting variety to the two dozen real training faces.

DigiFace-1M images are aligned to the ArcFace 112×112 five-point template; the generator
reproduces that alignment: YuNet's landmarks on 32 of its faces (upscaled 4×) average within
0.8 px (eyes) and 2 px (nose, mouth) of the template scaled to 64 px, with a spread of 1.2–3.6 px
per point. So a face is mapped to the working crop with the fixed similarity
:data:`DCGAN_POINTS` → working template; the working crop shows more context than the ArcFace
crop, and :mod:`pareidolia.prior.data` fills what lies outside the generated 64 px
square with a blur.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from pareidolia.faces.templates import ARCFACE_112

NZ = 100
NGF = 64
SIZE = 64
DCGAN_POINTS = ARCFACE_112 * (SIZE / 112.0)
"""The five-point template of the generator's faces, in pixels of its 64 px output."""


class DCGANGenerator(nn.Module):
    """z (B, 100, 1, 1) → faces (B, 3, 64, 64) in [−1, 1].

    Layer indices match the source checkpoint's ``main.N`` keys (a ``Sequential`` of
    transposed conv, batch norm, ReLU per stage, then a transposed conv and tanh), so its state
    dict loads unchanged.
    """

    def __init__(self, nz: int = NZ, ngf: int = NGF) -> None:
        super().__init__()
        widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(itertools.pairwise(widths)):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, stride, pad, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The generator's state dict from the wheel's ``weights.tar`` (a ``torch.save`` dict with
    key ``netG_state_dict``, read with ``weights_only=True``) or from a safetensors copy."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(str(path))
    raw = torch.load(path, map_location="cpu", weights_only=True)
    return dict(raw["netG_state_dict"])


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> DCGANGenerator:
    """The generator with the weights at ``path``, in eval mode (batch norm uses its running
    statistics, so a face depends only on its own latent) and without gradients."""
    gen = DCGANGenerator()
    gen.load_state_dict(read_weights(path), strict=True)
    return gen.eval().requires_grad_(False).to(device)
