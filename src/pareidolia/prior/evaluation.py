"""How well a score network reproduces held-out faces through a DDIM round trip.

MAP edits a face by inverting it to t0 with the pretrained network and generating it back; a
prior that cannot even reproduce the face (fine-tuning aside) changes identity and expression
on its own. For each held-out working crop: invert (20 steps) to t0, generate (6 steps), and
measure PSNR and SSIM against the input, whether every FR model of the zoo still verifies the
round trip as the same person (FAR 0.01), and whether the face-api expression label is
unchanged. Images are compared as the uint8 pictures a user would get.

The deterministic round trip nearly inverts itself whatever the network (the same ε_θ is used
both ways), so it says little about the prior; the report adds the PSNR of a *noised* round
trip (SDEdit: fresh noise to t0, then generation), which only a network that knows faces
passes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from diffusers.models.unets.unet_2d import UNet2DModel

from pareidolia.diffusion.ddim import generate, invert, unet_eps
from pareidolia.diffusion.schedule import ScoreModelConfig
from pareidolia.faces.align import to_tensor
from pareidolia.quality import psnr, ssim
from pareidolia.runtime import FAR
from pareidolia.zoo import registry
from pareidolia.zoo.chip_model import shared_zoo_model
from pareidolia.zoo.spec import EMOTIONS
from pareidolia.zoo.thresholds import thresholds

EXPRESSION_MODEL = "faceapi_expression"


class Judges:
    """The zoo's FR models and the expression net, reading their chips from working crops of
    one resolution (at 128 px the 112–224 px chips are upsampled); each loaded once per
    resolution and device (:func:`~pareidolia.zoo.chip_model.shared_zoo_model`)."""

    def __init__(self, resolution: int, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.fr = {
            name: shared_zoo_model(name, resolution, self.device) for name in registry.names("fr")
        }
        self.expression = shared_zoo_model(EXPRESSION_MODEL, resolution, self.device)

    @torch.no_grad()
    def embeddings(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """FR embeddings of crops ``x`` (B, 3, R, R) in [0, 1], per model."""
        return {n: m(x).cpu() for n, m in self.fr.items()}

    @torch.no_grad()
    def expressions(self, x: torch.Tensor) -> list[str]:
        """The face-api expression label of each crop."""
        logp = self.expression(x)
        return [EMOTIONS[i] for i in logp.argmax(dim=1).tolist()]


def resize_crops(crops: Sequence[np.ndarray], resolution: int) -> list[np.ndarray]:
    """Working crops at the network's resolution (area averaging when shrinking)."""
    return [
        c
        if c.shape[0] == resolution
        else cv2.resize(c, (resolution, resolution), interpolation=cv2.INTER_AREA)
        for c in crops
    ]


def _to_uint8(y: torch.Tensor) -> list[np.ndarray]:
    return list(
        ((y.float().cpu() + 1.0) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    )


@torch.no_grad()
def round_trip(
    unet: UNet2DModel,
    config: ScoreModelConfig,
    crops: Sequence[np.ndarray],
    t0: int,
    invert_steps: int = 20,
    generate_steps: int = 6,
    batch: int = 8,
) -> list[np.ndarray]:
    """uint8 crops after DDIM inversion to ``t0`` and generation back (crops at the network's
    resolution)."""
    device = next(unet.parameters()).device
    ac = config.alphas_cumprod()
    eps = unet_eps(unet.eval())
    out: list[np.ndarray] = []
    for i in range(0, len(crops), batch):
        x = to_tensor(list(crops[i : i + batch])).to(device) * 2.0 - 1.0
        latent = invert(eps, ac, x, t0, invert_steps)
        y = generate(eps, ac, latent, t0, generate_steps)
        out += _to_uint8(y)
    return out


@torch.no_grad()
def noised_round_trip(
    unet: UNet2DModel,
    config: ScoreModelConfig,
    crops: Sequence[np.ndarray],
    t0: int,
    generate_steps: int = 6,
    seed: int = 0,
    batch: int = 8,
) -> list[np.ndarray]:
    """uint8 crops after noising to ``t0`` with fresh Gaussian noise (seeded) and generation
    back (SDEdit). Unlike the deterministic round trip, which any network nearly inverts
    (a network predicting ε ≡ 0 inverts exactly), this only reproduces a face as well as the
    network knows faces: the measure of the prior itself."""
    device = next(unet.parameters()).device
    ac = config.alphas_cumprod()
    a = float(ac[t0])
    eps = unet_eps(unet.eval())
    gen = torch.Generator().manual_seed(seed)
    out: list[np.ndarray] = []
    for i in range(0, len(crops), batch):
        x = to_tensor(list(crops[i : i + batch])) * 2.0 - 1.0
        noise = torch.randn(x.shape, generator=gen)
        xt = (a**0.5 * x + (1.0 - a) ** 0.5 * noise).to(device)
        out += _to_uint8(generate(eps, ac, xt, t0, generate_steps))
    return out


@dataclass(frozen=True)
class EvalSettings:
    """The round trip evaluated: DiffAM's protocol by default (t0 60, 20 + 6 steps)."""

    t0: int = 60
    invert_steps: int = 20
    generate_steps: int = 6


def _face_rows(
    names: Sequence[str],
    crops: Sequence[np.ndarray],
    outs: Sequence[np.ndarray],
    noised: Sequence[np.ndarray],
    judges: Judges,
) -> list[dict[str, Any]]:
    x = to_tensor(list(crops)).to(judges.device)
    y = to_tensor(list(outs)).to(judges.device)
    ea, eb = judges.embeddings(x), judges.embeddings(y)
    la, lb = judges.expressions(x), judges.expressions(y)
    rows = []
    for i, name in enumerate(names):
        fr = {}
        for m in judges.fr:
            th = thresholds(m)
            score = float(th.score(ea[m][i : i + 1], eb[m][i : i + 1]).item())
            fr[m] = {
                "score": round(score, 4),
                "threshold": th.at[FAR],
                "match": bool(th.matches(score, FAR)),
            }
        rows.append(
            {
                "name": name,
                "psnr": round(psnr(crops[i], outs[i]), 3),
                "ssim": round(ssim(crops[i], outs[i]), 4),
                "noised_psnr": round(psnr(crops[i], noised[i]), 3),
                "fr": fr,
                "fr_all_match": all(v["match"] for v in fr.values()),
                "expression_before": la[i],
                "expression_after": lb[i],
                "expression_same": la[i] == lb[i],
            }
        )
    return rows


def _summary(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    n = len(rows)
    models = list(rows[0]["fr"]) if rows else []
    return {
        "faces": n,
        "psnr_mean": round(float(np.mean([r["psnr"] for r in rows])), 3),
        "ssim_mean": round(float(np.mean([r["ssim"] for r in rows])), 4),
        "noised_psnr_mean": round(float(np.mean([r["noised_psnr"] for r in rows])), 3),
        "fr_pass_rate": {m: round(sum(r["fr"][m]["match"] for r in rows) / n, 4) for m in models},
        "fr_all_pass_rate": round(sum(r["fr_all_match"] for r in rows) / n, 4),
        "expression_unchanged_rate": round(sum(r["expression_same"] for r in rows) / n, 4),
        "seconds_per_face": round(seconds / n, 3),
    }


def evaluate(
    unet: UNet2DModel,
    config: ScoreModelConfig,
    faces: Sequence[tuple[str, np.ndarray]],
    settings: EvalSettings = EvalSettings(),
    sweep_t0: Sequence[int] = (),
    judges: Judges | None = None,
) -> dict[str, Any]:
    """The round-trip report of ``faces`` (name, uint8 working crop of any size): per face and
    summarised at ``settings.t0``, plus one summary per t0 of ``sweep_t0``."""
    if not faces:
        raise ValueError("no faces to evaluate")
    device = next(unet.parameters()).device
    judges = judges or Judges(config.resolution, device)
    names = [n for n, _ in faces]
    crops = resize_crops([c for _, c in faces], config.resolution)

    def at(t0: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        start = time.perf_counter()
        outs = round_trip(unet, config, crops, t0, settings.invert_steps, settings.generate_steps)
        seconds = time.perf_counter() - start
        noised = noised_round_trip(unet, config, crops, t0, settings.generate_steps)
        rows = _face_rows(names, crops, outs, noised, judges)
        return rows, _summary(rows, seconds)

    rows, summary = at(settings.t0)
    sweep = []
    for t0 in sweep_t0:
        summary_t0 = summary if t0 == settings.t0 else at(t0)[1]
        sweep.append({"t0": t0, **summary_t0})
    return {
        "model": config.source,
        "content_hash": config.content_hash,
        "resolution": config.resolution,
        "device": str(device),
        "t0": settings.t0,
        "invert_steps": settings.invert_steps,
        "generate_steps": settings.generate_steps,
        "far": FAR,
        "faces": rows,
        "summary": summary,
        "sweep": sweep,
    }
