"""The protectors shipped with the package, so ``pareidolia protect photo.jpg`` needs nothing else.

``data/protectors/index.json`` lists, per emotion, the protector file and its sha256, and
describes the default target identity (a synthetic face: see ``data/protectors/TARGET.md``).
The files are made by ``tools/train_default_protectors.py`` from the shipped offline prior.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pareidolia.checksums import file_sha256
from pareidolia.diffusion.models import SHIPPED_PRIOR_SPEC
from pareidolia.errors import OptionError, UserError
from pareidolia.protector import Protector, load_protector

SHIPPED = Path(__file__).resolve().parent / "data" / "protectors"
INDEX = SHIPPED / "index.json"
DEFAULT_EMOTION = "happy"


@cache
def _index() -> dict[str, Any]:
    if not INDEX.is_file():
        return {"protectors": {}, "target": None}
    data: dict[str, Any] = json.loads(INDEX.read_text(encoding="utf-8"))
    return data


def shipped_emotions() -> list[str]:
    """The emotions that have a shipped protector."""
    return sorted(_index()["protectors"])


def default_target_path() -> Path:
    """The default target identity's enrollment crop (a synthetic face, 256 px working crop)."""
    target = _index().get("target")
    if not target:
        raise OptionError(
            "this installation ships no default target; give a target face of your own ({target})",
            "target",
        )
    path = SHIPPED / target["file"]
    if file_sha256(path) != target["sha256"]:
        raise UserError(f"{path}: the default target fails its checksum; reinstall pareidolia")
    return path


def default_target_crop() -> np.ndarray:
    """The default target's working crop as uint8 (256, 256, 3)."""
    from pareidolia.io import read_photo

    return read_photo(default_target_path()).rgb


def default_protector(
    emotion: str = DEFAULT_EMOTION,
    device: torch.device | str = "cpu",
    model: str = SHIPPED_PRIOR_SPEC,
) -> Protector:
    """The shipped protector for ``emotion`` (checksum verified) on ``device``. The shipped
    protectors were made on the shipped offline prior: a base network ``model`` other than it
    is refused with one line (a :class:`UserError`)."""
    from pareidolia.diffusion.models import canonical_spec, shared_score_model

    entry = _index()["protectors"].get(emotion)
    if entry is None:
        have = ", ".join(shipped_emotions()) or "none"
        raise OptionError(
            f"no shipped protector for emotion {emotion!r} (shipped: {have}); give a protector "
            "of your own ({protector}), trained with `pareidolia train`",
            "protector",
        )
    path = SHIPPED / entry["file"]
    if not path.is_file() or file_sha256(path) != entry["sha256"]:
        raise UserError(f"{path}: shipped protector missing or corrupt; reinstall pareidolia")
    if canonical_spec(model) != SHIPPED_PRIOR_SPEC:
        raise OptionError(
            f"the shipped protectors were made on the shipped prior, not on {{model}} {model}; "
            f"give a protector made on it ({{protector}}, from `pareidolia train --model {model}`)",
            "model",
            "protector",
        )
    unet, cfg = shared_score_model(SHIPPED_PRIOR_SPEC, device)
    return load_protector(path, unet, cfg)
