"""What the zoo knows about each face model: role, input convention, weights and checksum.

Every zoo module takes a batch of RGB chips as float tensors of shape (B, 3, S, S) with values
in [0, 1] (S = ``input_size``), already aligned to the model's chip template
(:mod:`pareidolia.faces.templates`), and does its own normalisation inside ``forward``.

Outputs by role:
- ``fr`` / ``fr_judge``: (B, D) raw identity embedding (not normalised);
- ``landmarks``: (B, 68, 2) iBUG-68 points in [0, 1] chip coordinates (x, y);
- ``expression`` / ``emotion_judge``: (B, 7) log-probabilities in :data:`EMOTIONS` order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

Role = Literal["fr", "fr_judge", "landmarks", "expression", "emotion_judge"]
"""``fr_judge``: an FR model kept out of every ensemble (no surrogate, report or protector
uses it): the benchmarks' independent check, as ``emotion_judge`` is for expressions."""

EMOTIONS: tuple[str, ...] = (
    "neutral",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgusted",
    "surprised",
)


@dataclass(frozen=True)
class ModelSpec:
    """One model of the zoo: how to build it, what it eats and where its weights come from."""

    name: str
    role: Role
    chip: str  # key of pareidolia.faces.templates.CHIPS
    input_size: int
    input_desc: str
    output_dim: int
    weights_file: str  # file name inside pareidolia/zoo/weights
    sha256: str  # of the shipped safetensors file
    licence: str
    source: str  # registry package, version and file the weights were converted from
    factory: Callable[[], nn.Module]
