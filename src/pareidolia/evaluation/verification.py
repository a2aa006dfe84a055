"""Face verification with the zoo's FR models: embed faces of photos, compare, decide."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pareidolia.faces.align import crop_chip, to_tensor
from pareidolia.runtime import FAR
from pareidolia.zoo import registry
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
    """Loads the FR models once and embeds faces of photos given their five landmarks."""

    def __init__(self, models: list[str] | None = None, device: str = "cpu") -> None:
        self.names = models if models is not None else registry.names("fr")
        self.models = {n: registry.load(n, device) for n in self.names}
        self.device = device

    @torch.no_grad()
    def embed(self, rgb: np.ndarray, landmarks: np.ndarray) -> dict[str, torch.Tensor]:
        """Embedding (1, D) of the face at ``landmarks`` in ``rgb`` for every model."""
        out = {}
        for name, model in self.models.items():
            chip = crop_chip(rgb, landmarks, registry.get(name).chip)
            out[name] = model(to_tensor(chip).to(self.device)).cpu()
        return out


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
