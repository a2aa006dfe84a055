"""The base of the objectives that read one frozen zoo network through its chip."""

from __future__ import annotations

from typing import Self, cast

import torch
from torch import nn

from pareidolia.faces.align import ChipSampler
from pareidolia.runtime import WORKING_SIZE
from pareidolia.zoo.chip_model import ChipModel, zoo_model

__all__ = ["ChipNet"]


class ChipNet(nn.Module):
    """The zoo's network ``name`` read through its chip from working crops of ``working_size``
    (a :class:`~pareidolia.zoo.chip_model.ChipModel`, ``model``; ``model(x)`` is the network's
    output), with ``net`` and ``sampler`` naming its two parts. The network's weights are frozen
    and it stays in eval mode even when a parent module switches to training."""

    def __init__(
        self, name: str, working_size: int = WORKING_SIZE, device: torch.device | str = "cpu"
    ) -> None:
        super().__init__()
        self.model: ChipModel = zoo_model(name, working_size, device)

    @property
    def net(self) -> nn.Module:
        """The frozen network."""
        return self.model.net

    @property
    def sampler(self) -> ChipSampler:
        """The differentiable cut of the network's chip from working crops."""
        return cast(ChipSampler, self.model.chip)  # zoo_model's chip is a ChipSampler

    def train(self, mode: bool = True) -> Self:
        super().train(mode)
        self.net.eval()
        return self
