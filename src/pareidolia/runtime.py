"""Where and at what size pareidolia computes: the device, and the constants every layer shares.

This module is the bottom of the import graph (it imports nothing of pareidolia but
:mod:`pareidolia.errors`, and torch only when a device is picked), so any module may use it:

- :data:`WORKING_SIZE`: the side of a face's working crop, the image every protector, objective
  and metric sees (the paper's 256 px aligned faces);
- :data:`FAR`: the false-accept rate of every headline decision ("does this FR model match the
  two faces?"), one of :data:`pareidolia.zoo.thresholds.FARS`;
- :data:`ADAPT_STEPS`: the default number of fine-tuning steps when a protector is adapted to a
  photo's faces (``protect --target`` with ``--fast``, the web page, the benchmark's
  ``map-adapt``);
- :data:`DEFAULT_CLIP_MODEL` and :data:`DEFAULT_CLIP_PRETRAINED`: the open_clip model and weights
  of the paper's CLIP expression guide (``--guide clip``);
- :func:`pick_device`: ``auto`` = CUDA when present, else the CPU;
- :func:`pick_dtype` and :func:`autocast`: the score network's compute dtype (``float32``, the
  default, or ``bfloat16`` autocast; master weights, optimiser and EMA stay float32) and the one
  context that applies it.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from pareidolia.errors import OptionError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ADAPT_STEPS",
    "DEFAULT_CLIP_MODEL",
    "DEFAULT_CLIP_PRETRAINED",
    "DTYPES",
    "FAR",
    "INVERSION_STEPS",
    "WORKING_SIZE",
    "autocast",
    "dtype_name",
    "pick_device",
    "pick_dtype",
]

WORKING_SIZE = 256
FAR = "0.01"
ADAPT_STEPS = 20
INVERSION_STEPS = 8
"""[ours] DDIM inversion steps of ``pareidolia protect``'s MAP pass (the protectors are trained
on 20, DiffAM's setting). At t0 = 60 the shorter walk lands on nearly the same latent: the
shipped protector's output lies 52.2 dB from the 20-step one on the prior's training crops and
51.2 dB on its held-out crops, its edit at cosine 0.998 (``benchmarks/inversion_steps.py``), and
the inversion takes 7 network calls in place of 19."""
DEFAULT_CLIP_MODEL = "ViT-B-16"
DEFAULT_CLIP_PRETRAINED = "openai"
DTYPES = ("float32", "bfloat16", "auto")
"""The names :func:`pick_dtype` takes (``float32`` is the default everywhere)."""


def pick_device(name: str = "auto") -> torch.device:
    """The device called ``name``: ``auto`` → CUDA when present, else CPU; otherwise the device
    named (``cpu``, ``cuda``, ``cuda:N``). Raises :class:`OptionError` (option ``device``) for
    a name that is not a device, or CUDA where there is none."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise OptionError(
            f"{{device}} {name!r}: not a device (auto, cpu, cuda, cuda:N)", "device"
        ) from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"{{device}} {name}: no CUDA device is available here", "device")
    return device


def _bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively: any CPU, a CUDA GPU of compute
    capability 8.0 or more (not by emulation)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu"


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype called ``name`` for ``device``: ``float32``, ``bfloat16`` (autocast),
    or ``auto`` → bfloat16 on a CUDA device that supports it, else float32. Raises
    :class:`OptionError` (option ``dtype``) for another name, or bfloat16 where ``device``
    cannot compute in it."""
    import torch

    if name not in DTYPES:
        raise OptionError(f"{{dtype}} {name!r}: not a dtype ({', '.join(DTYPES)})", "dtype")
    if name == "auto":
        fast = device.type == "cuda" and _bf16_supported(device)
        return torch.bfloat16 if fast else torch.float32
    if name == "bfloat16" and not _bf16_supported(device):
        raise OptionError(f"{{dtype}} bfloat16: {device} cannot compute in bfloat16", "dtype")
    return torch.bfloat16 if name == "bfloat16" else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """``float32`` for ``torch.float32``: the name records and reports use."""
    return str(dtype).removeprefix("torch.")


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[None]:
    """The context the score network's forward passes run in: nothing for float32, else
    ``torch.autocast`` to ``dtype`` on ``device``'s type (the weights stay float32)."""
    import torch

    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
