"""The zoo's registry: every shipped face model, found by name, loaded with a checked sha256."""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from pareidolia.checksums import file_sha256
from pareidolia.errors import WeightsError
from pareidolia.zoo.spec import ModelSpec, Role

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
JUDGE = "mini_xception"
"""The independent expression judge (role ``emotion_judge``): reports and benchmarks ask it
which expression a face shows; no objective is trained against it."""

# Modules that define ``SPECS: tuple[ModelSpec, ...]``, in listing order.
_MODULES = (
    "pareidolia.zoo.dlib_resnet",
    "pareidolia.zoo.sface",
    "pareidolia.zoo.human",
    "pareidolia.zoo.faceapi_dense",
    "pareidolia.zoo.facenet128",
    "pareidolia.zoo.mobilefacenet512",
)


@cache
def specs() -> dict[str, ModelSpec]:
    """All model specs by name."""
    out: dict[str, ModelSpec] = {}
    for mod in _MODULES:
        for spec in importlib.import_module(mod).SPECS:
            out[spec.name] = spec
    return out


def names(role: Role | None = None) -> list[str]:
    """Model names, optionally only those of one role."""
    return [n for n, s in specs().items() if role is None or s.role == role]


def get(name: str) -> ModelSpec:
    """The spec of model ``name``; a clear error lists the known names."""
    try:
        return specs()[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(specs())}") from None


def weights_path(spec: ModelSpec) -> Path:
    return WEIGHTS_DIR / spec.weights_file


def weights_status(spec: ModelSpec) -> str:
    """``ok``, ``missing`` or ``mismatch``."""
    p = weights_path(spec)
    if not p.exists():
        return "missing"
    return "ok" if file_sha256(p) == spec.sha256 else "mismatch"


def load(name: str, device: torch.device | str = "cpu") -> nn.Module:
    """Build model ``name``, load its shipped weights after checking their sha256, and return it
    in eval mode with gradients disabled for its parameters (inputs still receive gradients)."""
    spec = get(name)
    status = weights_status(spec)
    path = weights_path(spec)
    if status == "missing":
        raise WeightsError(
            f"{path}: weights of {name!r} are missing; rebuild them with tools/convert_weights.py"
        )
    if status == "mismatch":
        raise WeightsError(
            f"{path}: sha256 does not match the registry for {name!r}; the file is corrupt or from another conversion"
        )
    model = spec.factory()
    model.load_state_dict(load_file(str(path)), strict=True)
    model.eval().requires_grad_(False)
    return model.to(device)
