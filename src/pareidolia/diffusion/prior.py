"""The project's own offline face prior as a score network: its folder format, read and
written here, and the copy shipped in ``pareidolia/zoo/weights/prior/``.

No pretrained face diffusion model can be had offline, so the project trains one (the
:mod:`pareidolia.prior` package: face sets, training, evaluation, model card; its network's
shape in :mod:`pareidolia.prior.model`). What MAP needs of it is only a score network, loaded
here like any other (``prior:FOLDER`` for :func:`~pareidolia.diffusion.models.load_score_model`).

A prior folder holds ``unet.safetensors`` (the EMA weights), ``config.json`` (``format``, the
diffusers UNet config, the schedule, and what it was trained on and how) and ``MODEL_CARD.md``.
Load one with :func:`load_prior`, the shipped one with :func:`default_prior`; write one with
:func:`save_prior`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers.models.unets.unet_2d import UNet2DModel
from safetensors.torch import load_file, save_file

from pareidolia.checksums import file_sha256
from pareidolia.diffusion.schedule import (
    PAPER_BETA_END,
    PAPER_BETA_START,
    PAPER_NUM_TRAIN_TIMESTEPS,
    ScoreModelConfig,
)
from pareidolia.errors import ScoreModelError
from pareidolia.io import atomic_write_bytes

FORMAT = "pareidolia.prior/1"
WEIGHTS = "unet.safetensors"
CONFIG = "config.json"
CARD = "MODEL_CARD.md"
SCHEDULE = {
    "beta_start": PAPER_BETA_START,
    "beta_end": PAPER_BETA_END,
    "num_train_timesteps": PAPER_NUM_TRAIN_TIMESTEPS,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
}

SHIPPED_PRIOR_DIR = Path(__file__).resolve().parents[1] / "zoo" / "weights" / "prior"
SHIPPED_PRIOR_SHA256: str | None = (
    "a565dba2b4f33613b3c8ab25f2f1e8c642e48363f82a273b7373c8381449852d"
)
"""sha256 of the shipped ``unet.safetensors``; ``None`` while no prior is shipped."""


def unet_config(unet: UNet2DModel) -> dict[str, Any]:
    """The diffusers config of ``unet`` as plain JSON data (diffusers' private keys dropped)."""
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in unet.config.items()
        if not k.startswith("_")
    }


def save_prior(folder: Path, unet: UNet2DModel, info: dict[str, Any], card: str) -> Path:
    """Write a prior folder: ``unet``'s weights, ``config.json`` with ``info`` (training
    provenance) and the model card. Each file is written atomically; the weights go last but
    one, the card last, so a folder with a card is complete."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in unet.state_dict().items()
    }
    tmp = folder / f".{WEIGHTS}.part"
    save_file(state, str(tmp), metadata={"format": FORMAT})
    tmp.replace(folder / WEIGHTS)
    config = {"format": FORMAT, "unet": unet_config(unet), "schedule": SCHEDULE, **info}
    atomic_write_bytes(folder / CONFIG, json.dumps(config, indent=2).encode(), overwrite=True)
    atomic_write_bytes(folder / CARD, card.encode(), overwrite=True)
    return folder


def prior_folder(path: str | Path) -> Path:
    """The prior folder ``path`` names: the folder itself, or the ``model/`` folder of a
    training run (``pareidolia prior train --out``)."""
    path = Path(path).expanduser()
    return path / "model" if (path / "model" / CONFIG).is_file() else path


def read_config(folder: Path) -> dict[str, Any]:
    """A prior folder's ``config.json``, checked for its format."""
    path = folder / CONFIG
    if not path.is_file():
        raise ScoreModelError(
            f"{folder}: not a prior folder (no {CONFIG}); train one with "
            f"`pareidolia prior train --out DIR` and pass DIR"
        )
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT:
        raise ScoreModelError(f"{path}: format {config.get('format')!r}, expected {FORMAT!r}")
    return config


def load_prior(
    path: str | Path, expected_sha256: str | None = None
) -> tuple[UNet2DModel, ScoreModelConfig]:
    """Load a prior folder (or a training run's folder) as ``(unet, config)`` in eval mode.

    With ``expected_sha256`` the weights file must have that sha256 (the shipped prior's check).
    """
    folder = prior_folder(path)
    config = read_config(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ScoreModelError(f"{weights}: missing; the prior folder is incomplete")
    if expected_sha256 is not None:
        actual = file_sha256(weights)
        if actual != expected_sha256:
            raise ScoreModelError(
                f"{weights}: sha256 is {actual}, expected {expected_sha256}: the file is corrupt "
                f"or not the prior this version of pareidolia ships; reinstall the package"
            )
    schedule = config["schedule"]
    if schedule.get("prediction_type", "epsilon") != "epsilon":
        raise ScoreModelError(f"{folder / CONFIG}: the prior must predict ε")
    unet = UNet2DModel.from_config(config["unet"])
    try:
        unet.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as e:
        raise ScoreModelError(f"{weights}: does not match {folder / CONFIG} ({e})") from e
    unet.eval()
    return unet, ScoreModelConfig.of(unet, f"prior:{folder}", schedule)


def default_prior(
    folder: Path = SHIPPED_PRIOR_DIR, expected_sha256: str | None = SHIPPED_PRIOR_SHA256
) -> tuple[UNet2DModel, ScoreModelConfig]:
    """The prior shipped inside the package, its weights checked against the sha256 recorded
    in this module."""
    if expected_sha256 is None or not (folder / WEIGHTS).is_file():
        raise ScoreModelError(
            f"{folder}: this installation ships no offline face prior yet. Train one with "
            f"`pareidolia prior train --out DIR` and pass `--model prior:DIR`, or copy DIR/model "
            f"here and record the sha256 of its {WEIGHTS} in "
            f"pareidolia.diffusion.prior.SHIPPED_PRIOR_SHA256"
        )
    return load_prior(folder, expected_sha256)


def load_prior_spec(ref: str) -> tuple[UNet2DModel, ScoreModelConfig]:
    """The loader of ``prior:REF`` specs: ``REF`` a prior folder or training run; empty or
    ``default`` for the shipped prior."""
    return default_prior() if ref in ("", "default") else load_prior(ref)
