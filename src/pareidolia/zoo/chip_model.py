"""A face model seen through its chip: the one type every user of a face model holds.

A face model reads its own chip (its input crop: an aligned face of its size, framing and
resolution). Everything in pareidolia works on the *working crop* of a face instead (a 256 px
aligned crop, :data:`~pareidolia.runtime.WORKING_SIZE`), so each model comes with the module
that takes its chip from working crops, differentiably (:class:`~pareidolia.faces.align.ChipSampler`
for the zoo; a resize or a face box for the paper's FR models,
:func:`pareidolia.zoo.paper_fr.paper_chip_model`), and, for an FR model, with the thresholds
that turn two embeddings into a decision. The surrogates of the identity loss, the verifiers of
the benchmark and the embedder that scores photos are all :class:`ChipModel` s.
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import torch
from torch import nn

from pareidolia.faces.align import ChipSampler, crop_chip, to_tensor, warp_crop, working_alignment
from pareidolia.runtime import WORKING_SIZE
from pareidolia.zoo import registry
from pareidolia.zoo.thresholds import Thresholds, thresholds

__all__ = ["ChipModel", "shared_zoo_model", "zoo_model"]


class ChipModel(nn.Module):
    """A face model seen through its chip: ``net`` reads what ``chip`` takes from working crops;
    ``thresholds`` decide whether two embeddings are the same person (None: not an FR model).
    Called on working crops (B, 3, S, S) in [0, 1] it returns the network's output (B, D),
    differentiably (gradients reach the crops; the network's parameters are frozen)."""

    def __init__(
        self,
        name: str,
        net: nn.Module,
        chip: nn.Module,
        rule: Thresholds | None = None,
        *,
        working_size: int = WORKING_SIZE,
        photo_chip: str | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.net = net
        self.chip = chip
        self.thresholds = rule
        self.working_size = working_size
        self.photo_chip = photo_chip  # the chip's template, to cut it straight from a photo

    @property
    def device(self) -> torch.device:
        """Where the network's weights are."""
        first = next(itertools.chain(self.parameters(), self.buffers()), None)
        return torch.device("cpu") if first is None else first.device

    @property
    def rule(self) -> Thresholds:
        """The decision thresholds of an FR model (:class:`ValueError` for another model)."""
        if self.thresholds is None:
            raise ValueError(f"{self.name}: not an FR model (no decision thresholds)")
        return self.thresholds

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.net(self.chip(crops))

    @torch.no_grad()
    def embed_crops(self, crops: torch.Tensor, batch: int = 16) -> torch.Tensor:
        """The outputs (N, D) of working crops (N, 3, S, S), ``batch`` at a time, without
        autograd."""
        return torch.cat(
            [self(crops[i : i + batch].to(self.device)) for i in range(0, len(crops), batch)]
        )

    @torch.no_grad()
    def embed_photo(self, rgb: np.ndarray, landmarks: np.ndarray) -> torch.Tensor:
        """The output (1, D), on the CPU, for the face at five-point ``landmarks`` of an RGB
        uint8 photo: the chip cut straight from the photo when the model has a chip template
        (as sharp as the photo allows), else read from the face's working crop; black beyond the
        photo's border either way."""
        if self.photo_chip is not None:
            chip = to_tensor(crop_chip(rgb, landmarks, self.photo_chip))
            return self.net(chip.to(self.device)).cpu()
        crop = warp_crop(rgb, working_alignment(landmarks, self.working_size), zero_border=True)
        return self(to_tensor(crop).to(self.device)).cpu()


def zoo_model(
    name: str, working_size: int = WORKING_SIZE, device: torch.device | str = "cpu"
) -> ChipModel:
    """The zoo's model ``name`` (weights checked) reading its chip from ``working_size``-pixel
    working crops on ``device``; with its calibrated thresholds when it is an FR model."""
    spec = registry.get(name)
    return ChipModel(
        name,
        registry.load(name, device),
        ChipSampler(spec.chip, working_size).to(device),
        thresholds(name) if spec.role in ("fr", "fr_judge") else None,
        working_size=working_size,
        photo_chip=spec.chip,
    )


def shared_zoo_model(
    name: str, working_size: int = WORKING_SIZE, device: torch.device | str = "cpu"
) -> ChipModel:
    """:func:`zoo_model`, loaded once per (name, size, device) and shared by its users (for
    models only ever run without gradients: the judges, the photo embedder); never moved to
    another device."""
    return _shared(name, working_size, str(torch.device(device)))


@cache
def _shared(name: str, working_size: int, device: str) -> ChipModel:
    return zoo_model(name, working_size, device)
