"""Verification thresholds of each FR model at FAR 0.1 / 0.01 / 0.001.

The table lives in ``thresholds.json`` beside this file and is written by
``tools/calibrate_thresholds.py``, which says for every number how it was obtained (a documented
operating point, or calibration on impostor pairs of the real faces available offline).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from pareidolia.errors import WeightsError
from pareidolia.runtime import FAR

TABLE = Path(__file__).resolve().parent / "thresholds.json"
FARS = ("0.1", "0.01", "0.001")
Metric = Literal["cosine", "euclidean"]


@dataclass(frozen=True)
class Thresholds:
    """One FR model's decision rule: ``metric`` and a threshold per FAR level."""

    model: str
    metric: Metric
    at: dict[str, float]  # FAR ("0.1", "0.01", "0.001") → threshold
    how: dict[str, str]  # FAR → how the number was obtained

    def score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Similarity (cosine) or distance (euclidean) between embeddings, batched on dim 0."""
        if self.metric == "cosine":
            return F.cosine_similarity(a, b, dim=-1)
        return (a - b).norm(dim=-1)

    def matches(self, score: torch.Tensor | float, far: str = FAR) -> torch.Tensor | bool:
        """Same-person decision at ``far``: cosine above, or distance below, the threshold."""
        t = self.at[far]
        return score > t if self.metric == "cosine" else score < t


@cache
def load_table() -> dict[str, Thresholds]:
    """All thresholds by model name."""
    if not TABLE.exists():
        raise WeightsError(f"{TABLE}: threshold table missing; run tools/calibrate_thresholds.py")
    raw = json.loads(TABLE.read_text())
    return {
        name: Thresholds(
            name, entry["metric"], {k: float(v) for k, v in entry["at"].items()}, entry["how"]
        )
        for name, entry in raw["models"].items()
    }


def thresholds(model: str) -> Thresholds:
    """Thresholds of one FR model."""
    table = load_table()
    if model not in table:
        raise KeyError(f"no thresholds for {model!r}; run tools/calibrate_thresholds.py")
    return table[model]
