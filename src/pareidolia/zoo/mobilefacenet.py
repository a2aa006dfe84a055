"""MobileFaceNet (Chen et al., 2018) in TreB1eN's InsightFace_Pytorch layout, 512-D, 112×112.

The makeup-attack line (Adv-Makeup, AMT-GAN, CLIP2Protect, DiffAM) builds its fourth FR model as
``irse.MobileFaceNet(512)`` and distributes the weights as ``mobile_face.pth``. No weights ship
with pareidolia; users bring the file and :func:`pareidolia.zoo.paper_fr.load_paper_fr` loads
it here. (This is not the offline zoo's 256-D "MobileFace", a different network.)

Module names follow InsightFace_Pytorch exactly, so its state dicts load unchanged:

=========================  ===================================================  ===========
name                       layer                                                output
=========================  ===================================================  ===========
``conv1``                  3×3 stride 2 conv block                              64×56×56
``conv2_dw``               3×3 depthwise conv block                             64×56×56
``conv_23``                bottleneck, expand to 128, stride 2                  64×28×28
``conv_3``                 4 residual bottlenecks, expand to 128                64×28×28
``conv_34``                bottleneck, expand to 256, stride 2                  128×14×14
``conv_4``                 6 residual bottlenecks, expand to 256                128×14×14
``conv_45``                bottleneck, expand to 512, stride 2                  128×7×7
``conv_5``                 2 residual bottlenecks, expand to 256                128×7×7
``conv_6_sep``             1×1 conv block to 512                                512×7×7
``conv_6_dw``              7×7 depthwise linear block (global depthwise conv)   512×1×1
``linear``, ``bn``         linear without bias; BN1d                            512
=========================  ===================================================  ===========

A *conv block* (``Conv_block``) is conv (no bias) → BN → PReLU; a *linear block*
(``Linear_block``) is conv → BN without activation. A bottleneck (``Depth_Wise``) is a 1×1 conv
block expanding to ``expand`` channels (named ``groups`` upstream), a 3×3 depthwise conv block
carrying the stride, and a 1×1 linear block ``project``; it adds its input when it is one of the
``Residual`` stacks' units (``<stack>.model.<i>``).

Input: 112×112 RGB in [−1, 1]. Output: the raw 512-D embedding (upstream L2-normalises it;
cosine is unchanged).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

EMBEDDING_DIM = 512
INPUT_SIZE = 112


class ConvBlock(nn.Module):
    """Conv (no bias) → BN → PReLU; ``groups=channels`` makes it depthwise; without ``act``
    the PReLU is left out (MobileNet-v2's linear bottleneck output, :class:`LinearBlock`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.prelu = nn.PReLU(out_channels) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.prelu(x) if self.prelu is not None else x


LinearBlock = partial(ConvBlock, act=False)
"""Conv (no bias) → BN, no activation."""


class Bottleneck(nn.Module):
    """Inverted residual: 1×1 expand → 3×3 depthwise (stride) → 1×1 linear projection."""

    def __init__(
        self, in_channels: int, out_channels: int, expand: int, stride: int, residual: bool
    ) -> None:
        super().__init__()
        self.residual = residual
        self.conv = ConvBlock(in_channels, expand, kernel_size=1)
        self.conv_dw = ConvBlock(
            expand, expand, kernel_size=3, stride=stride, padding=1, groups=expand
        )
        self.project = LinearBlock(expand, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.conv_dw(self.conv(x)))
        return x + out if self.residual else out


class ResidualStack(nn.Module):
    """``count`` residual bottlenecks at constant width, held in ``model`` as upstream."""

    def __init__(self, channels: int, count: int, expand: int) -> None:
        super().__init__()
        self.model = nn.Sequential(
            *(Bottleneck(channels, channels, expand, stride=1, residual=True) for _ in range(count))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MobileFaceNet(nn.Module):
    """MobileFaceNet for 112×112 faces with a ``embedding_dim``-D output."""

    def __init__(self, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.conv1 = ConvBlock(3, 64, kernel_size=3, stride=2, padding=1)
        self.conv2_dw = ConvBlock(64, 64, kernel_size=3, padding=1, groups=64)
        self.conv_23 = Bottleneck(64, 64, expand=128, stride=2, residual=False)
        self.conv_3 = ResidualStack(64, count=4, expand=128)
        self.conv_34 = Bottleneck(64, 128, expand=256, stride=2, residual=False)
        self.conv_4 = ResidualStack(128, count=6, expand=256)
        self.conv_45 = Bottleneck(128, 128, expand=512, stride=2, residual=False)
        self.conv_5 = ResidualStack(128, count=2, expand=256)
        self.conv_6_sep = ConvBlock(128, 512, kernel_size=1)
        self.conv_6_dw = LinearBlock(512, 512, kernel_size=7, groups=512)
        self.conv_6_flatten = nn.Flatten()
        self.linear = nn.Linear(512, embedding_dim, bias=False)
        self.bn = nn.BatchNorm1d(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 112, 112) RGB in [−1, 1] → (B, 512) raw embedding."""
        x = self.conv_23(self.conv2_dw(self.conv1(x)))
        x = self.conv_34(self.conv_3(x))
        x = self.conv_45(self.conv_4(x))
        x = self.conv_6_dw(self.conv_6_sep(self.conv_5(x)))
        return self.bn(self.linear(self.conv_6_flatten(x)))


def mobile_face() -> MobileFaceNet:
    """The network for ``mobile_face.pth`` (InsightFace_Pytorch ``MobileFaceNet(512)``)."""
    return MobileFaceNet(EMBEDDING_DIM)
