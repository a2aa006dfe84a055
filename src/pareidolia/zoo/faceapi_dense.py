"""face-api's 68-point landmark net and its 7-class expression net, ported from TF.js.

Both networks of ``@vladmandic/face-api`` 1.7.15 (MIT; ``model/face_landmark_68_model.bin`` and
``model/face_expression_model.bin``) are a shared *architecture*, face-api's
``FaceFeatureExtractor``, followed by one fully connected layer. Each file holds its own
extractor weights, so the two models here share the :class:`FaceFeatureExtractor` class, not
its parameters. This module reproduces face-api's JS op for op (``FaceFeatureExtractor.
forwardInput``, ``denseBlock4``, ``depthwiseSeparableConv``, ``FaceProcessor.runNet``) so
outputs match the original runtime (``tests/zoo/test_faceapi_dense.py``), as differentiable
PyTorch modules so attacks can back-propagate to the input pixels.

Extractor, for a 112×112 chip:

==========  ==========================================================  ===========
stage       op                                                          output
==========  ==========================================================  ===========
normalise   (255·x − mean RGB (122.782, 117.001, 104.298)) / 255        3×112×112
``dense0``  3×3 conv + bias, stride 2; then 3 separable convs           32×56×56
``dense1``  separable conv, stride 2; then 3 separable convs            64×28×28
``dense2``  separable conv, stride 2; then 3 separable convs            128×14×14
``dense3``  separable conv, stride 2; then 3 separable convs            256×7×7
pool        7×7 average pool, stride 2, VALID                           256×1×1
==========  ==========================================================  ===========

A dense block (``denseBlock4``) with convs c0…c3 computes::

    o1 = relu(c0(x)); o2 = c1(o1); o3 = c2(relu(o1 + o2)); o4 = c3(relu(o1 + o2 + o3))
    out = relu(o1 + o2 + o3 + o4)

A separable conv is a 3×3 depthwise conv (no bias) then a 1×1 conv plus bias, no activation.
All convs use TF "SAME" padding: for stride 2 on an even size the single padding pixel goes at
the bottom/right, done here with an explicit ``F.pad``.

Heads:

- landmarks: ``fc`` 256 → 136 = 68 × (x, y), interleaved, iBUG-68 order. face-api's
  ``postProcess`` maps them from the square, centre-padded network input back to the original
  image: ``(out · inputSize − pad) / size``; for a square chip the padding is 0 and the size is
  ``inputSize``, so the raw outputs already are (x, y) in [0, 1] of the chip.
- expression: ``fc`` 256 → 7 logits in :data:`pareidolia.zoo.spec.EMOTIONS` order (face-api's
  ``FACE_EXPRESSION_LABELS``); face-api applies softmax, this module returns ``log_softmax``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pareidolia.zoo.spec import ModelSpec

# Mean RGB that face-api subtracts from 0..255 pixels before dividing by 255.
MEAN_RGB: tuple[float, float, float] = (122.782, 117.001, 104.298)
WIDTHS: tuple[int, ...] = (32, 64, 128, 256)


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero-pad ``x`` (N, C, H, W) as TF's "SAME" does: total ``max((⌈n/s⌉−1)·s + k − n, 0)``
    per axis, the odd extra pixel at the bottom / right."""
    pads: list[int] = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad wants the last axis first
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class SameConv(nn.Module):
    """Full 3×3 conv with bias and TF "SAME" padding (``dense0/conv0``)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(tf_same_pad(x, 3, self.stride))


class SeparableConv(nn.Module):
    """``tf.separableConv2d(x, depthwise, pointwise, stride, 'same') + bias``."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(c_in, c_in, 3, stride=stride, groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(tf_same_pad(x, 3, self.stride)))


class DenseBlock(nn.Module):
    """face-api's ``denseBlock4`` (stride 2 in its first conv), see the module docstring."""

    def __init__(self, c_in: int, c_out: int, first: bool) -> None:
        super().__init__()
        self.conv0 = SameConv(c_in, c_out, 2) if first else SeparableConv(c_in, c_out, 2)
        self.conv1 = SeparableConv(c_out, c_out, 1)
        self.conv2 = SeparableConv(c_out, c_out, 1)
        self.conv3 = SeparableConv(c_out, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = F.relu(self.conv0(x))
        out2 = self.conv1(out1)
        out3 = self.conv2(F.relu(out1 + out2))
        out4 = self.conv3(F.relu(out1 + (out2 + out3)))
        return F.relu(out1 + (out2 + (out3 + out4)))


class FaceFeatureExtractor(nn.Module):
    """(B, 3, 112, 112) RGB in [0, 1] → (B, 256) bottleneck features."""

    mean_rgb: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        c_in = (3, *WIDTHS[:-1])
        self.dense0 = DenseBlock(c_in[0], WIDTHS[0], first=True)
        self.dense1 = DenseBlock(c_in[1], WIDTHS[1], first=False)
        self.dense2 = DenseBlock(c_in[2], WIDTHS[2], first=False)
        self.dense3 = DenseBlock(c_in[3], WIDTHS[3], first=False)
        self.register_buffer("mean_rgb", torch.tensor(MEAN_RGB).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x * 255.0 - self.mean_rgb) / 255.0
        x = self.dense3(self.dense2(self.dense1(self.dense0(x))))
        x = F.avg_pool2d(x, 7, stride=2)
        return torch.flatten(x, 1)


class FaceApiLandmarks(nn.Module):
    """face-api ``FaceLandmark68Net``: chip (B, 3, 112, 112) in [0, 1] → (B, 68, 2) iBUG-68
    points (x, y) in [0, 1] chip coordinates."""

    def __init__(self) -> None:
        super().__init__()
        self.extractor = FaceFeatureExtractor()
        self.fc = nn.Linear(WIDTHS[-1], 136)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.extractor(x)).view(-1, 68, 2)


class FaceApiExpression(nn.Module):
    """face-api ``FaceExpressionNet``: chip (B, 3, 112, 112) in [0, 1] → (B, 7)
    log-probabilities in :data:`pareidolia.zoo.spec.EMOTIONS` order."""

    def __init__(self) -> None:
        super().__init__()
        self.extractor = FaceFeatureExtractor()
        self.fc = nn.Linear(WIDTHS[-1], 7)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The 7 raw scores before face-api's softmax."""
        return self.fc(self.extractor(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.logits(x), dim=-1)


_INPUT_DESC = "112×112 RGB in [0, 1], faceapi112 chip; inside: ×255, minus mean RGB, ÷255"

SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="faceapi_landmarks",
        role="landmarks",
        chip="faceapi112",
        input_size=112,
        input_desc=_INPUT_DESC,
        output_dim=136,
        weights_file="faceapi_landmarks.safetensors",
        sha256="ada2dcb2fe297182393890f0b447ab117c6c18b4d1665b52cfede103b2f3ddb1",
        licence="MIT",
        source="npm @vladmandic/face-api@1.7.15 model/face_landmark_68_model.bin",
        factory=FaceApiLandmarks,
    ),
    ModelSpec(
        name="faceapi_expression",
        role="expression",
        chip="faceapi112",
        input_size=112,
        input_desc=_INPUT_DESC,
        output_dim=7,
        weights_file="faceapi_expression.safetensors",
        sha256="7c03c5edef21b7bbfced0721c292a6d3b68a3f0db5d2fe393b9c941966f3d00e",
        licence="MIT",
        source="npm @vladmandic/face-api@1.7.15 model/face_expression_model.bin",
        factory=FaceApiExpression,
    ),
)
