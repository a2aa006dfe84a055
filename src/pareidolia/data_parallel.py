"""Training on several processes (GPUs) at once: the world a process is in, and the collectives
fine-tuning needs (issue 15, item 7).

A launcher (``accelerate launch`` or ``torchrun``) starts one process per GPU and says so in
the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``); :func:`join_world` then lets
Hugging Face accelerate (``PartialState``, the optional ``multi-gpu`` extra) set up
``torch.distributed``: NCCL and ``cuda:LOCAL_RANK`` on GPUs, gloo on the CPU. Without a launcher
nothing is set up and accelerate is never imported: one process, as before.

Every process holds the same network and the same global batch; it computes the loss on its
own contiguous part of the batch (:meth:`World.rows`), and :meth:`World.batch_mean` sums over
the processes each part's means weighted by its share of the batch, which is the mean over the
whole batch: the gradients every process then holds are those one process computes, up to
float rounding.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from pareidolia.errors import UserError

__all__ = ["SINGLE", "World", "join_world"]


@dataclass(frozen=True)
class World:
    """This process's place among the ``size`` processes that train together."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Whether this process is the one that writes (the log, checkpoints, the protector)."""
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This process's part of a batch of ``n``: rows ⌊r·n/W⌋ to ⌊(r+1)·n/W⌋, so the parts
        of the processes, in rank order, are the batch (a part is empty when n < W)."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def batch_mean(self, tensors: Sequence[torch.Tensor], share: float) -> list[torch.Tensor]:
        """Σ over the processes of ``share · tensors``: with ``tensors`` the means over this
        process's part of a batch and ``share`` that part's fraction of the batch, the means
        over the whole batch, the same on every process. One process: ``tensors`` as they are.
        One all-reduce of the tensors flattened together."""
        if self.size == 1:
            return list(tensors)
        flat = torch.cat([t.detach().reshape(-1) for t in tensors]) * share
        torch.distributed.all_reduce(flat)
        parts = flat.split([t.numel() for t in tensors])
        return [p.view(t.shape).to(t.dtype) for p, t in zip(parts, tensors, strict=True)]

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """The block runs on the main process first, then on the others together (so what the
        main one writes in it, such as a cache, is only read by the others)."""
        if not self.main:
            torch.distributed.barrier()
        yield
        if self.main and self.size > 1:
            torch.distributed.barrier()

    def record(self) -> dict[str, str]:
        """What a protector's run record says of the world: ``world_size`` when several
        processes trained it (nothing for one, so a one-process record stays as it was)."""
        return {"world_size": str(self.size)} if self.size > 1 else {}


SINGLE = World()
"""The world of a process started without a launcher."""


def join_world(device: torch.device) -> tuple[World, torch.device]:
    """This process's world and the device it trains on: ``device`` alone without a launcher;
    under one, ``cuda:LOCAL_RANK`` (``device`` on CUDA) or the CPU (gloo), the process group
    closed when the process exits. A launcher without accelerate installed is one
    :class:`UserError`."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return SINGLE, device
    try:
        from accelerate import PartialState
    except ImportError:
        raise UserError(
            "training on several processes needs Hugging Face accelerate: "
            "pip install 'pareidolia[multi-gpu]'"
        ) from None
    state = PartialState(cpu=device.type == "cpu")
    atexit.register(torch.distributed.destroy_process_group)
    here = state.device if device.type == "cuda" else device
    return World(state.process_index, state.num_processes), here
