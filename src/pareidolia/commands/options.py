"""The options every command that runs networks shares, spelled and defaulted once.

- ``--device auto|cpu|cuda|cuda:N`` (default ``auto``: CUDA when present, else the CPU), resolved
  by :func:`pareidolia.runtime.pick_device` — the one place a device is chosen;
- ``--dtype float32|bfloat16|auto`` (default ``float32``): the score network's compute dtype,
  resolved for the device by :func:`pareidolia.runtime.pick_dtype` (bfloat16 is autocast; the
  weights stay float32);
- ``--model SPEC``: MAP's base score network, ``prior`` / ``prior:FOLDER`` (the offline prior;
  ``prior:`` alone the shipped one), ``diffusers:ID_OR_DIR``, ``paper-ckpt:PATH`` or ``paper``
  (the ``celeba_hq.ckpt`` that ``pareidolia fetch paper-unet`` put in the cache)
  (:func:`pareidolia.diffusion.models.load_score_model`).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

DEFAULT_DEVICE = "auto"
DEVICE_HELP = "auto (the default: CUDA when present, else the CPU), cpu, cuda or cuda:N"
DEFAULT_DTYPE = "float32"
DTYPE_HELP = (
    "the score network's compute dtype: float32 (the default), bfloat16 (autocast; faster and "
    "lighter on a recent GPU, results differ slightly) or auto (bfloat16 on a CUDA GPU that "
    "supports it, else float32)"
)
MODEL_HELP = (
    "MAP's base score network: prior (the shipped offline prior), prior:FOLDER, "
    "diffusers:HUB_ID_OR_FOLDER (e.g. diffusers:google/ddpm-celebahq-256, read from the Hugging "
    "Face cache), paper-ckpt:PATH/celeba_hq.ckpt or paper (the one `pareidolia fetch "
    "paper-unet` downloaded)"
)


def add_device_option(parser: Any, default: str = DEFAULT_DEVICE) -> None:
    """``--device``, as every command spells it."""
    parser.add_argument("--device", default=default, metavar="DEVICE", help=DEVICE_HELP)


def add_dtype_option(parser: Any, default: str = DEFAULT_DTYPE) -> None:
    """``--dtype``, as every command that runs the score network spells it (next to
    ``--device``; checked against the device by :func:`dtype_of`)."""
    parser.add_argument("--dtype", default=default, metavar="DTYPE", help=DTYPE_HELP)


def add_model_option(parser: Any, default: str | None, extra_help: str = "") -> None:
    """``--model SPEC``; ``default`` None: the command picks (e.g. from a protector's record)."""
    parser.add_argument(
        "--model", default=default, metavar="SPEC", help=MODEL_HELP + (extra_help or "")
    )


def device_of(args: argparse.Namespace) -> torch.device:
    """The device ``--device`` names (an :class:`~pareidolia.errors.OptionError` for a bad name,
    or CUDA where there is none: one line, exit 2)."""
    from pareidolia.runtime import pick_device

    return pick_device(args.device)


def dtype_of(args: argparse.Namespace, device: torch.device) -> torch.dtype:
    """The compute dtype ``--dtype`` names for ``device`` (an
    :class:`~pareidolia.errors.OptionError` for a bad name, or bfloat16 where the device cannot
    compute in it: one line, exit 2)."""
    from pareidolia.runtime import pick_dtype

    return pick_dtype(args.dtype, device)
