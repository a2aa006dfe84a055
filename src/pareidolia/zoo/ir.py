"""The "IR" ArcFace backbones of the paper protocol: IR-152 and IR-SE-50.

These are the improved-residual ResNets of InsightFace (Deng et al., ArcFace, CVPR 2019) in the
PyTorch form of face.evoLVe / TreB1eN's InsightFace_Pytorch, which the makeup-attack line
(Adv-Makeup, AMT-GAN, CLIP2Protect, DiffAM) uses as two of its four black-box FR models. No
weights ship with pareidolia: users bring the ``ir152.pth`` / ``irse50.pth`` files those repos
distribute, and :func:`pareidolia.zoo.paper_fr.load_paper_fr` loads them into these modules.

The module tree, and therefore every state-dict key, follows those repositories exactly (their
``Sequential`` indices are part of the key names, so the layers are kept in ``Sequential``
containers with the same order):

==================  ================================================================  ========
key prefix          layers                                                            output
==================  ================================================================  ========
``input_layer``     0 conv 3×3 (no bias) · 1 BN · 2 PReLU                             64×112²
``body.<i>``        IR units (below), stages of 64, 128, 256, 512 channels            512×7²
``output_layer``    0 BN2d · 1 dropout · 2 flatten (C, H, W) · 3 linear · 4 BN1d      512
==================  ================================================================  ========

One IR unit (``bottleneck_IR`` / ``bottleneck_IR_SE`` upstream) is a pre-activation residual
block: ``res_layer`` = 0 BN · 1 conv 3×3 · 2 PReLU · 3 conv 3×3 (carries the stride) · 4 BN
[· 5 squeeze-excitation], added to ``shortcut_layer`` = a 1×1 max-pool of the given stride when
the width is unchanged (no parameters), else 0 conv 1×1 strided · 1 BN. Every stage starts with
a stride-2 unit. Units per stage: 3, 8, 36, 3 for IR-152; 3, 4, 14, 3 for IR-SE-50.

Input: 112×112 RGB in [−1, 1] (the repos feed their [−1, 1] images, bilinearly resized).
Output: the raw 512-D embedding. The upstream IR-SE-50 returns it L2-normalised and IR-152 does
not; the zoo convention is raw embeddings, which changes no cosine similarity.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Mode = Literal["ir", "ir_se"]

# Units per stage of the four stages (64, 128, 256, 512 channels), by depth.
UNITS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
}
STAGE_WIDTHS = (64, 128, 256, 512)
EMBEDDING_DIM = 512
INPUT_SIZE = 112


class SqueezeExcite(nn.Module):
    """Channel attention: global mean → 1×1 conv to C/r → ReLU → 1×1 conv to C → sigmoid gate.

    Both 1×1 convs have no bias (keys ``fc1.weight``, ``fc2.weight``), as upstream.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * gate


class IRUnit(nn.Module):
    """One improved-residual unit; ``se=True`` appends squeeze-excitation to the residual branch.

    The stride sits on the second 3×3 conv (and on the shortcut), as in InsightFace's IR units.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, se: bool) -> None:
        super().__init__()
        self.shortcut_layer: nn.Module
        if in_channels == out_channels:
            # A 1×1 max-pool is plain subsampling: identity at stride 1, every other pixel at 2.
            self.shortcut_layer = nn.MaxPool2d(kernel_size=1, stride=stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        residual: list[nn.Module] = [
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(
                out_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if se:
            residual.append(SqueezeExcite(out_channels, reduction=16))
        self.res_layer = nn.Sequential(*residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRBackbone(nn.Module):
    """IR / IR-SE ResNet of depth 50, 100 or 152 for 112×112 input, 512-D embedding.

    ``dropout`` only matters in training mode (upstream: 0.4 for IR-152, 0.6 for IR-SE-50);
    it has no parameters, so it does not affect the state dict.
    """

    def __init__(self, depth: int, mode: Mode, dropout: float = 0.4) -> None:
        super().__init__()
        if depth not in UNITS:
            raise ValueError(f"IR depth must be one of {sorted(UNITS)}, not {depth}")
        self.depth = depth
        self.mode = mode
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.PReLU(64),
        )
        units: list[nn.Module] = []
        in_channels = 64
        for width, count in zip(STAGE_WIDTHS, UNITS[depth], strict=True):
            for k in range(count):
                units.append(
                    IRUnit(in_channels, width, stride=2 if k == 0 else 1, se=mode == "ir_se")
                )
                in_channels = width
        self.body = nn.Sequential(*units)
        side = INPUT_SIZE // 16  # four stride-2 stages: 112 → 7
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(512 * side * side, EMBEDDING_DIM),
            nn.BatchNorm1d(EMBEDDING_DIM),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 112, 112) RGB in [−1, 1] → (B, 512) raw embedding."""
        return self.output_layer(self.body(self.input_layer(x)))


def ir152() -> IRBackbone:
    """IR-152 as AMT-GAN builds it (``ir152.IR_152((112, 112))``), for ``ir152.pth``."""
    return IRBackbone(152, "ir", dropout=0.4)


def irse50() -> IRBackbone:
    """IR-SE-50 as AMT-GAN builds it (``irse.Backbone(50, 0.6, 'ir_se')``), for ``irse50.pth``."""
    return IRBackbone(50, "ir_se", dropout=0.6)
