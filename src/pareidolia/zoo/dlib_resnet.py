"""dlib's face-recognition ResNet-29 (128-D embedding), as ported to TF.js by face-api.

The network is the one dlib ships as ``dlib_face_recognition_resnet_model_v1`` (CC0 weights);
face-api (``@vladmandic/face-api`` 1.7.15, MIT) re-implemented it in TF.js with uint8-quantised
weights. This module reproduces face-api's ``FaceRecognitionNet.forwardInput`` op for op so
that the embeddings match the original runtime (see ``tests/zoo/test_dlib.py``), while being an
ordinary differentiable PyTorch module, so attacks can back-propagate to the input pixels.

Layout (TF "NHWC" in face-api, NCHW here), for a 150×150 chip:

===================  ==========================================  =========
stage                op                                          output
===================  ==========================================  =========
normalise            (255·x − mean RGB) / 255                    3×150×150
``conv32_down``      7×7 conv, stride 2, VALID; scale; ReLU      32×72×72
max-pool             3×3, stride 2, VALID                        32×35×35
``conv32_1..3``      residual                                    32×35×35
``conv64_down``      residual-down                               64×17×17
``conv64_1..3``      residual                                    64×17×17
``conv128_down``     residual-down                               128×8×8
``conv128_1..2``     residual                                    128×8×8
``conv256_down``     residual-down (output padded 3→4)           256×4×4
``conv256_1..2``     residual                                    256×4×4
``conv256_down_out`` residual-down (output padded 1→2)           256×2×2
global mean, ``fc``  256 → 128 (no bias)                         128
===================  ==========================================  =========

Every conv is followed by dlib's affine "scale" layer (per-channel ``x·w + b``, the folded batch
norm) before its ReLU. Same-person rule for these embeddings: Euclidean distance < 0.6.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pareidolia.zoo.spec import ModelSpec

# Mean RGB that face-api subtracts from 0..255 pixels before dividing by 255.
MEAN_RGB: tuple[float, float, float] = (122.782, 117.001, 104.298)


class ConvScale(nn.Module):
    """Conv with bias, then a per-channel affine scale (``weight``, ``bias``), optional ReLU.

    Kept as two steps (not folded into one conv) so the float arithmetic follows face-api's
    ``convLayer``: ``conv2d → add bias → mul scale.weights → add scale.biases → relu``.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=True)
        self.scale_weight = nn.Parameter(torch.ones(c_out))
        self.scale_bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: torch.Tensor, relu: bool = True) -> torch.Tensor:
        out = self.conv(x)
        out = out * self.scale_weight.view(1, -1, 1, 1) + self.scale_bias.view(1, -1, 1, 1)
        return F.relu(out) if relu else out


class Residual(nn.Module):
    """Identity residual block: ``relu(x + scale(conv(relu(scale(conv(x))))))``.

    Both convs are 3×3 stride 1 with TF "SAME" padding, which for an odd kernel at stride 1 is
    one pixel on every side.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvScale(channels, channels, 3, stride=1, padding=1)
        self.conv2 = ConvScale(channels, channels, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x), relu=False)
        return F.relu(out + x)


class ResidualDown(nn.Module):
    """Down-sampling residual block, as face-api's ``residualDown``.

    Main path: 3×3 stride-2 VALID conv (+scale, ReLU), then 3×3 stride-1 SAME conv (+scale).
    Shortcut: 2×2 stride-2 VALID average pool of the input, with zero channels appended when the
    width grows. When the pooled map is one pixel larger than the main path (odd sizes: 7→3 vs
    8→4), the main path gets one zero row at the bottom and one zero column at the right.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = ConvScale(c_in, c_out, 3, stride=2, padding=0)
        self.conv2 = ConvScale(c_out, c_out, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x), relu=False)
        pooled = F.avg_pool2d(x, kernel_size=2, stride=2)
        if pooled.shape[-2:] != out.shape[-2:]:
            # face-api concatenates exactly one zero row (bottom) and one zero column (right).
            out = F.pad(out, (0, 1, 0, 1))
        if pooled.shape[1] != out.shape[1]:
            # face-api concatenates a zero tensor of the pooled shape: channels double.
            pooled = torch.cat([pooled, torch.zeros_like(pooled)], dim=1)
        return F.relu(pooled + out)


class DlibResNet(nn.Module):
    """dlib ResNet-29 face embedder: (B, 3, 150, 150) RGB in [0, 1] → (B, 128) raw embedding.

    Parameter names follow face-api's weight names (``conv32_1.conv1.conv.weight`` ↔
    ``conv32_1/conv1/conv/filters``), so the conversion script is a plain rename.
    """

    input_size = 150

    def __init__(self) -> None:
        super().__init__()
        self.mean_rgb: torch.Tensor
        self.register_buffer("mean_rgb", torch.tensor(MEAN_RGB).view(1, 3, 1, 1), persistent=False)
        self.conv32_down = ConvScale(3, 32, 7, stride=2, padding=0)
        self.conv32_1 = Residual(32)
        self.conv32_2 = Residual(32)
        self.conv32_3 = Residual(32)
        self.conv64_down = ResidualDown(32, 64)
        self.conv64_1 = Residual(64)
        self.conv64_2 = Residual(64)
        self.conv64_3 = Residual(64)
        self.conv128_down = ResidualDown(64, 128)
        self.conv128_1 = Residual(128)
        self.conv128_2 = Residual(128)
        self.conv256_down = ResidualDown(128, 256)
        self.conv256_1 = Residual(256)
        self.conv256_2 = Residual(256)
        self.conv256_down_out = ResidualDown(256, 256)
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed chips ``x`` (B, 3, 150, 150) in [0, 1]; returns (B, 128), not normalised."""
        # face-api works on 0..255 pixels: subtract the mean RGB, then divide by 255.
        out = (x * 255.0 - self.mean_rgb) / 255.0
        out = self.conv32_down(out)
        out = F.max_pool2d(out, kernel_size=3, stride=2)
        for block in (
            self.conv32_1,
            self.conv32_2,
            self.conv32_3,
            self.conv64_down,
            self.conv64_1,
            self.conv64_2,
            self.conv64_3,
            self.conv128_down,
            self.conv128_1,
            self.conv128_2,
            self.conv256_down,
            self.conv256_1,
            self.conv256_2,
            self.conv256_down_out,
        ):
            out = block(out)
        return self.fc(out.mean(dim=(2, 3)))


SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="dlib",
        role="fr",
        chip="dlib150",
        input_size=150,
        input_desc="150×150 RGB in [0, 1], dlib chip; inside: ×255, minus mean RGB, ÷255",
        output_dim=128,
        weights_file="dlib.safetensors",
        sha256="0eb3fd917acd4cd5b82d80e2bd95479d9002ed517d6ddf455641c9b5a3172728",
        licence="MIT (face-api port of dlib, CC0 weights)",
        source="npm @vladmandic/face-api@1.7.15 model/face_recognition_model.bin",
        factory=DlibResNet,
    ),
)
