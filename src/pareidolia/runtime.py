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
- :func:`pick_device`: ``auto`` = CUDA when present, else the CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pareidolia.errors import OptionError

if TYPE_CHECKING:
    import torch

__all__ = ["ADAPT_STEPS", "FAR", "WORKING_SIZE", "pick_device"]

WORKING_SIZE = 256
FAR = "0.01"
ADAPT_STEPS = 20


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
