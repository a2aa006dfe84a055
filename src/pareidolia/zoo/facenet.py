"""FaceNet's Inception-ResNet-v1 in the facenet-pytorch layout (512-D, 160×160 input).

The makeup-attack line (Adv-Makeup, AMT-GAN, CLIP2Protect, DiffAM) uses facenet-pytorch's
``InceptionResnetV1`` trained on VGGFace2 (David Sandberg's TensorFlow FaceNet, converted by
Tim Esler) as one of its four FR models, distributed as ``facenet.pth``. No weights ship with
pareidolia (facenet-pytorch downloads them at run time, which this project cannot do); users
bring the file and :func:`pareidolia.zoo.paper_fr.load_paper_fr` loads it here.

Module names follow facenet-pytorch exactly, so its state dicts load unchanged:

=================================  ==========================================  ==============
name                               layer                                       output (160²)
=================================  ==========================================  ==============
``conv2d_1a``                      3×3 stride 2, valid                         32×79×79
``conv2d_2a`` / ``conv2d_2b``      3×3 valid / 3×3 same                        64×77×77
``maxpool_3a``                     max-pool 3 stride 2                         64×38×38
``conv2d_3b`` / ``conv2d_4a``      1×1 / 3×3 valid                             192×36×36
``conv2d_4b``                      3×3 stride 2, valid                         256×17×17
``repeat_1``                       5 × Block-35 (residual scale 0.17)          256×17×17
``mixed_6a``                       reduction A                                 896×8×8
``repeat_2``                       10 × Block-17 (scale 0.10)                  896×8×8
``mixed_7a``                       reduction B                                 1792×3×3
``repeat_3`` / ``block8``          5 × Block-8 (scale 0.20); last w/o ReLU     1792×3×3
``avgpool_1a``, ``dropout``        global mean; dropout (training only)        1792
``last_linear``, ``last_bn``       linear without bias; BN1d (ε = 1e-3)        512
=================================  ==========================================  ==============

Every ``BasicConv2d`` is conv (no bias) → BN (ε = 1e-3, TensorFlow's) → ReLU; the residual
blocks' final 1×1 ``conv2d`` has a bias. The paper repos' copy of the class always builds a
classifier ``logits`` (512 → 8631 VGGFace2 identities) that the embedding never uses; this module
leaves it out and the loader drops those keys.

Input: 160×160 RGB in [−1, 1] (the attack repos feed their [−1, 1] images, bilinearly resized,
rather than facenet-pytorch's ``(x − 127.5) / 128``, which is the same scale up to 0.4 %).
Output: the raw 512-D embedding (facenet-pytorch L2-normalises it; cosine is unchanged).
"""

from __future__ import annotations

import torch
from torch import nn

EMBEDDING_DIM = 512
INPUT_SIZE = 160
VGGFACE2_CLASSES = 8631


class BasicConv2d(nn.Module):
    """Conv without bias → batch norm (ε = 1e-3) → ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Block35(nn.Module):
    """Inception-ResNet-A on 256 channels: three branches (1×1; 1×1→3×3; 1×1→3×3→3×3, 32 wide
    each) concatenated, 1×1 back to 256, scaled and added to the input, ReLU."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(256, 32, 1)
        self.branch1 = nn.Sequential(BasicConv2d(256, 32, 1), BasicConv2d(32, 32, 3, padding=1))
        self.branch2 = nn.Sequential(
            BasicConv2d(256, 32, 1),
            BasicConv2d(32, 32, 3, padding=1),
            BasicConv2d(32, 32, 3, padding=1),
        )
        self.conv2d = nn.Conv2d(96, 256, kernel_size=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), dim=1)
        return self.relu(x + self.scale * self.conv2d(mixed))


class Block17(nn.Module):
    """Inception-ResNet-B on 896 channels: 1×1, and 1×1→1×7→7×1 (128 wide each), 1×1 back to
    896, scaled residual, ReLU."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(896, 128, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(896, 128, 1),
            BasicConv2d(128, 128, (1, 7), padding=(0, 3)),
            BasicConv2d(128, 128, (7, 1), padding=(3, 0)),
        )
        self.conv2d = nn.Conv2d(256, 896, kernel_size=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat((self.branch0(x), self.branch1(x)), dim=1)
        return self.relu(x + self.scale * self.conv2d(mixed))


class Block8(nn.Module):
    """Inception-ResNet-C on 1792 channels: 1×1, and 1×1→1×3→3×1 (192 wide each), 1×1 back to
    1792, scaled residual, then ReLU unless ``relu=False`` (the network's last block)."""

    def __init__(self, scale: float = 1.0, relu: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(1792, 192, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(1792, 192, 1),
            BasicConv2d(192, 192, (1, 3), padding=(0, 1)),
            BasicConv2d(192, 192, (3, 1), padding=(1, 0)),
        )
        self.conv2d = nn.Conv2d(384, 1792, kernel_size=1)
        self.relu: nn.Module = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat((self.branch0(x), self.branch1(x)), dim=1)
        return self.relu(x + self.scale * self.conv2d(mixed))


class Mixed6a(nn.Module):
    """Reduction-A, 256 → 896 channels at half size: 3×3/2 conv (384), 1×1→3×3→3×3/2 (256),
    3×3/2 max-pool (256), concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(256, 384, 3, stride=2)
        self.branch1 = nn.Sequential(
            BasicConv2d(256, 192, 1),
            BasicConv2d(192, 192, 3, padding=1),
            BasicConv2d(192, 256, 3, stride=2),
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), dim=1)


class Mixed7a(nn.Module):
    """Reduction-B, 896 → 1792 channels at half size: three conv branches (384, 256, 256 wide)
    and a 3×3/2 max-pool (896), concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv2d(896, 256, 1), BasicConv2d(256, 384, 3, stride=2))
        self.branch1 = nn.Sequential(BasicConv2d(896, 256, 1), BasicConv2d(256, 256, 3, stride=2))
        self.branch2 = nn.Sequential(
            BasicConv2d(896, 256, 1),
            BasicConv2d(256, 256, 3, padding=1),
            BasicConv2d(256, 256, 3, stride=2),
        )
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x))
        return torch.cat(branches, dim=1)


class InceptionResnetV1(nn.Module):
    """FaceNet's Inception-ResNet-v1 embedding network (no classifier head); 512-D as the paper
    zoo's, 128-D as the zoo's ``facenet128`` (:mod:`pareidolia.zoo.facenet128`)."""

    def __init__(self, dropout: float = 0.6, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.conv2d_1a = BasicConv2d(3, 32, 3, stride=2)
        self.conv2d_2a = BasicConv2d(32, 32, 3)
        self.conv2d_2b = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3)
        self.conv2d_4b = BasicConv2d(192, 256, 3, stride=2)
        self.repeat_1 = nn.Sequential(*(Block35(scale=0.17) for _ in range(5)))
        self.mixed_6a = Mixed6a()
        self.repeat_2 = nn.Sequential(*(Block17(scale=0.10) for _ in range(10)))
        self.mixed_7a = Mixed7a()
        self.repeat_3 = nn.Sequential(*(Block8(scale=0.20) for _ in range(5)))
        self.block8 = Block8(relu=False)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.last_linear = nn.Linear(1792, embedding_dim, bias=False)
        self.last_bn = nn.BatchNorm1d(embedding_dim, eps=1e-3, momentum=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 160, 160) RGB in [−1, 1] → (B, embedding_dim) raw embedding."""
        x = self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x)))
        x = self.conv2d_4b(self.conv2d_4a(self.conv2d_3b(self.maxpool_3a(x))))
        x = self.repeat_2(self.mixed_6a(self.repeat_1(x)))
        x = self.block8(self.repeat_3(self.mixed_7a(x)))
        x = self.dropout(self.avgpool_1a(x)).flatten(1)
        return self.last_bn(self.last_linear(x))


def facenet() -> InceptionResnetV1:
    """The network for ``facenet.pth`` (facenet-pytorch ``InceptionResnetV1``, VGGFace2)."""
    return InceptionResnetV1()
