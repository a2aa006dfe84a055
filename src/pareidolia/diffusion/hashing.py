"""Content hashes of tensors: model identities and cache keys that depend only on the numbers."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch


def _raw_bytes(t: torch.Tensor) -> memoryview:
    """The bytes of ``t`` in row-major order on the CPU, without a copy when it is already there
    (viewing as uint8 works for every dtype, bfloat16 included, which numpy lacks)."""
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().data


def tensors_sha256(named: Mapping[str, torch.Tensor]) -> str:
    """sha256 over name, dtype, shape and bytes of every tensor, in sorted name order.

    Device and memory layout do not change the hash; names, shapes, dtypes and values do.
    """
    h = hashlib.sha256()
    for name in sorted(named):
        t = named[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(_raw_bytes(t))
    return h.hexdigest()


def model_hash(net: torch.nn.Module) -> str:
    """Content hash of a network's weights (see :class:`~pareidolia.diffusion.schedule.ScoreModelConfig`)."""
    return tensors_sha256(net.state_dict())
