"""L_A, the identity objective: pull a face's embedding toward the target's in every surrogate
FR model (METHOD.md §3.2).

Each model sees its own chip, taken differentiably from the working crop, so one loss drives
all surrogates through the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pareidolia.runtime import WORKING_SIZE
from pareidolia.zoo import registry
from pareidolia.zoo.chip_model import ChipModel, zoo_model


class SurrogateEnsemble(nn.Module):
    """FR models seen through their chips (:class:`~pareidolia.zoo.chip_model.ChipModel`):
    working crops in [0, 1] → unit embeddings per model. ``models`` are zoo model names (loaded
    for ``working_size``-pixel crops on ``device``) or models already built (the paper
    protocol's)."""

    def __init__(
        self,
        models: Sequence[str] | Sequence[ChipModel],
        working_size: int = WORKING_SIZE,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        if not models:
            raise ValueError("the surrogate ensemble needs at least one FR model")
        built = [
            m if isinstance(m, ChipModel) else zoo_model(_fr_name(m), working_size, device)
            for m in models
        ]
        self.names = [m.name for m in built]
        self.models = nn.ModuleDict({m.name: m for m in built})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unit-normalised embeddings (B, D_m) of working crops ``x`` (B, 3, W, W) in [0, 1]."""
        return {m: F.normalize(self.models[m](x), dim=-1) for m in self.names}


def _fr_name(name: str) -> str:
    """``name``, checked to be one of the zoo's FR models."""
    role = registry.get(name).role
    if role != "fr":
        raise ValueError(f"{name!r} is not an FR model (role {role})")
    return name


# FR model names → a module mapping working crops in [0, 1] to unit embeddings per name (the
# interface of SurrogateEnsemble); lets the paper protocol's FR checkpoints stand in for the zoo.
EnsembleFactory = Callable[[Sequence[str]], nn.Module]


def zoo_ensembles(working_size: int, device: torch.device | str) -> EnsembleFactory:
    """The default :data:`EnsembleFactory`: the offline zoo's FR models."""
    return lambda names: SurrogateEnsemble(list(names), working_size, device)


class IdentityLoss(nn.Module):
    """Mean over surrogates of 1 − cos(f_m(x), f_m(target)); per-sample values, shape (B,).
    ``ensemble`` maps crops to unit embeddings per model (:class:`SurrogateEnsemble` or any
    module with that interface)."""

    def __init__(self, ensemble: nn.Module, target: torch.Tensor) -> None:
        super().__init__()
        self.ensemble = ensemble
        with torch.no_grad():
            emb = ensemble(target)
        for m, e in emb.items():
            self.register_buffer(f"target_{m}", e.mean(0, keepdim=True), persistent=False)

    def target_embedding(self, model: str) -> torch.Tensor:
        """The target's unit embedding (1, D) for ``model``."""
        return getattr(self, f"target_{model}")

    def similarities(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cosine (B,) of each crop to the target, per surrogate model."""
        emb = self.ensemble(x)
        return {m: (e * self.target_embedding(m)).sum(-1) for m, e in emb.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sims = self.similarities(x)
        return torch.stack([1.0 - s for s in sims.values()]).mean(0)
