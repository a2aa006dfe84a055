"""``mobilefacenet512``: a 512-D MobileFaceNet, the zoo's second FR judge.

The ONNX model ``package/model/fr_feature.onnx`` of the npm package
``faceplugin-face-recognition-js`` 0.0.1 (MIT by its metadata; its origin and training set
are not documented) is a MobileFaceNet in TreB1eN's InsightFace_Pytorch layout with every batch
norm folded into its conv (50 convs, 33 PReLUs). ``tools/convert_mobilefacenet512.py`` maps it
onto :class:`pareidolia.zoo.mobilefacenet.MobileFaceNet`, each folded conv's bias becoming its
batch norm's shift over unit statistics.

Its role is ``fr_judge``, as ``facenet128``'s: no surrogate, protector, report decision or
setting uses it. It is of the MobileNet family like two of the zoo's surrogates (SFace,
MobileFace), where FaceNet is not, so the two judges stand for different kinds of FR system.

Input: the 112 px ArcFace chip in [0, 1]; inside, the package's own normalisation of RGB
0..255 values, (x − 127) / 128.
"""

from __future__ import annotations

import torch
from torch import nn

from pareidolia.zoo.mobilefacenet import INPUT_SIZE, MobileFaceNet
from pareidolia.zoo.spec import ModelSpec

EMBEDDING_DIM = 512


class MobileFaceNet512(nn.Module):
    """Chips (B, 3, 112, 112) in [0, 1] → (B, 512) raw embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.net = MobileFaceNet(EMBEDDING_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x * 255.0 - 127.0) / 128.0)


SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="mobilefacenet512",
        role="fr_judge",
        chip="arcface112",
        input_size=INPUT_SIZE,
        input_desc="112×112 RGB in [0, 1], ArcFace chip; inside: ×255, −127, ×1/128",
        output_dim=EMBEDDING_DIM,
        weights_file="mobilefacenet512.safetensors",
        sha256="c20de8bbf641319ee3901386b95e2ad8885e41493d0c2a88bb019f231e56655d",
        licence="MIT (package metadata; the weights' training data is not documented)",
        source="npm faceplugin-face-recognition-js@0.0.1 package/model/fr_feature.onnx",
        factory=MobileFaceNet512,
    ),
)
