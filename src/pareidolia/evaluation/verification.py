"""Face verification with the zoo's FR models: embed faces of photos, compare, decide."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pareidolia.runtime import FAR
from pareidolia.zoo import registry
from pareidolia.zoo.chip_model import shared_zoo_model
from pareidolia.zoo.thresholds import thresholds


@dataclass(frozen=True)
class ModelVerdict:
    """One FR model's comparison of two faces."""

    model: str
    metric: str
    score: float
    threshold: float  # at FAR 0.01
    match: bool


class FaceEmbedder:
    """The zoo's FR models (default all), each loaded once per device and shared
    (:func:`~pareidolia.zoo.chip_model.shared_zoo_model`), embedding faces of photos given their
    five landmarks."""

    def __init__(self, models: list[str] | None = None, device: str = "cpu") -> None:
        self.names = models if models is not None else registry.names("fr")
        self.models = [shared_zoo_model(n, device=device) for n in self.names]
        self.device = device

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray) -> dict[str, torch.Tensor]:
        """Embedding (1, D), on the CPU, of the face at ``landmarks`` in ``rgb`` for every
        model."""
        return {m.name: m.embed_photo(rgb, landmarks) for m in self.models}


def compare(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], far: str = FAR
) -> list[ModelVerdict]:
    """Per-model verdicts for two faces' embeddings."""
    verdicts = []
    for name in a:
        th = thresholds(name)
        score = float(th.score(a[name], b[name]).item())
        verdicts.append(
            ModelVerdict(name, th.metric, score, th.at[far], bool(th.matches(score, far)))
        )
    return verdicts
