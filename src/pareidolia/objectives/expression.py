"""L_E, the expression objective: push the edited face toward a target emotion (METHOD.md §3.3).

Two guides share one interface, :class:`ExpressionGuide` — ``guide(x_hat, x_orig) → (B,)`` on
working crops (B, 3, W, W) in [0, 1]:

- :class:`ClassifierGuide` [ours, §3.3 (b)]: cross-entropy of the shipped face-api expression
  net toward the target emotion, on the net's own chip cut differentiably from the crop;
- :class:`ClipDirectionalGuide` [paper, §3.3 (a)]: the CLIP directional loss
  −log((1 + cos(E_I(x̂) − E_I(x), ΔT)) / 2). The encoders are injected callables, so the math is
  tested with tiny fakes; :func:`open_clip_guide` builds the real one from the optional
  ``open_clip`` package and weights that ``pareidolia fetch clip`` put in the cache (or a file
  the user gives); nothing is downloaded here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from safetensors.torch import load_file as safetensors_load
from torch import nn

from pareidolia.checksums import file_sha256
from pareidolia.download import CLIP_VIT_B16_OPENAI, Artifact, fetched
from pareidolia.errors import UserError
from pareidolia.objectives.chip_net import ChipNet
from pareidolia.runtime import DEFAULT_CLIP_MODEL, DEFAULT_CLIP_PRETRAINED, WORKING_SIZE
from pareidolia.zoo.spec import EMOTIONS

EXPRESSION_MODEL = "faceapi_expression"

ImageEncoder = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, S, S) → (B, D)
TextEncoder = Callable[[list[str]], torch.Tensor]  # N strings → (N, D)

CLIP_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Prompt templates averaged into ΔT (a short subset of CLIP's ImageNet templates, which
# StyleGAN-NADA / DiffusionCLIP average over).
PROMPT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a close-up photo of a {}.",
    "a cropped photo of a {}.",
    "a good photo of a {}.",
    "a bright photo of a {}.",
    "a photo of the {}.",
    "a low resolution photo of a {}.",
    "a {}.",
)
SOURCE_TEXT = "face"

# (1 + cos) / 2 is clamped to this floor so an exactly opposite shift gives a finite loss,
# −log(1e-6) ≈ 13.8, instead of +∞.
MIN_AGREEMENT = 1e-6


class ExpressionGuide(Protocol):
    """L_E per sample (B,) of edited crops ``x_hat`` given the originals ``x_orig``, both
    (B, 3, W, W) in [0, 1]; lower is closer to the target emotion."""

    def __call__(self, x_hat: torch.Tensor, x_orig: torch.Tensor) -> torch.Tensor: ...


def check_target_emotion(emotion: str) -> int:
    """Index in :data:`EMOTIONS` of a valid target emotion ("neutral" is not a target)."""
    targets = [e for e in EMOTIONS if e != "neutral"]
    if emotion not in targets:
        raise ValueError(f"unknown target emotion {emotion!r}; choose one of: {', '.join(targets)}")
    return EMOTIONS.index(emotion)


class ClassifierGuide(ChipNet):
    """Cross-entropy −log p(emotion | chip(x̂)) of the face-api expression net (§3.3 b).

    ``x_orig`` is not used: the classifier judges the edited face on its own. The net's weights
    are frozen by the registry; gradients flow to the crop pixels through the chip sampler.
    """

    def __init__(
        self, emotion: str, working_size: int = WORKING_SIZE, device: torch.device | str = "cpu"
    ) -> None:
        target = check_target_emotion(emotion)  # before the net is loaded
        super().__init__(EXPRESSION_MODEL, working_size, device)
        self.emotion = emotion
        self.target = target

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 7) log-probabilities in :data:`EMOTIONS` order of working crops in [0, 1]."""
        return self.model(x)

    def forward(self, x_hat: torch.Tensor, x_orig: torch.Tensor | None = None) -> torch.Tensor:
        return -self.log_probs(x_hat)[:, self.target]


def clip_preprocess(x: torch.Tensor) -> torch.Tensor:
    """Working crops in [0, 1] → CLIP input: bicubic resize to 224 and CLIP's mean/std."""
    x = F.interpolate(
        x, size=(CLIP_SIZE, CLIP_SIZE), mode="bicubic", align_corners=False, antialias=True
    )
    mean = x.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def text_direction(
    text_encoder: TextEncoder,
    emotion: str,
    templates: Sequence[str] = PROMPT_TEMPLATES,
    source: str = SOURCE_TEXT,
) -> torch.Tensor:
    """ΔT (D,): unit vector of the mean over templates of E_T("<emotion> face") − E_T("face").

    Each text embedding is unit-normalised before the difference, as in StyleGAN-NADA.
    """
    check_target_emotion(emotion)
    target = F.normalize(text_encoder([t.format(f"{emotion} {source}") for t in templates]), dim=-1)
    base = F.normalize(text_encoder([t.format(source) for t in templates]), dim=-1)
    return F.normalize((target - base).mean(0), dim=-1)


class ClipDirectionalGuide(nn.Module):
    """CLIP directional loss −log((1 + cos(ΔI, ΔT)) / 2), ΔI = E_I(x̂) − E_I(x) (§3.3 a).

    Image embeddings are unit-normalised before the difference (StyleGAN-NADA, DiffusionCLIP).
    Values: 0 for a shift along ΔT, log 2 for an orthogonal one (also for no shift at all,
    where cos is taken as 0), and −log(``MIN_AGREEMENT``) ≈ 13.8 for an exactly opposite one.
    """

    weights_sha256: str | None = None  # the CLIP weights file's, set by open_clip_guide

    def __init__(
        self,
        image_encoder: ImageEncoder,
        text_direction: torch.Tensor,
        preprocess: Callable[[torch.Tensor], torch.Tensor] | None = clip_preprocess,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.preprocess = preprocess
        self.direction: torch.Tensor
        self.register_buffer(
            "direction", F.normalize(text_direction.detach().flatten(), dim=0), persistent=False
        )

    @classmethod
    def from_text_encoder(
        cls,
        image_encoder: ImageEncoder,
        text_encoder: TextEncoder,
        emotion: str,
        templates: Sequence[str] = PROMPT_TEMPLATES,
        preprocess: Callable[[torch.Tensor], torch.Tensor] | None = clip_preprocess,
    ) -> ClipDirectionalGuide:
        """The guide for ``emotion`` with ΔT computed once from ``text_encoder``."""
        with torch.no_grad():
            delta_t = text_direction(text_encoder, emotion, templates)
        return cls(image_encoder, delta_t, preprocess)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Unit image embeddings (B, D) of working crops in [0, 1]."""
        if self.preprocess is not None:
            x = self.preprocess(x)
        return F.normalize(self.image_encoder(x), dim=-1)

    def forward(self, x_hat: torch.Tensor, x_orig: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            e_orig = self.embed(x_orig)
        shift = self.embed(x_hat) - e_orig
        cos = F.cosine_similarity(shift, self.direction.to(shift.dtype).unsqueeze(0), dim=-1)
        return -torch.log(((1.0 + cos) / 2.0).clamp_min(MIN_AGREEMENT))


@dataclass(frozen=True)
class ClipSource:
    """The weights pareidolia fetches for one open_clip (model, pretrained tag)."""

    artifact: Artifact
    quick_gelu: bool  # OpenAI's CLIP models were trained with QuickGELU activations


CLIP_SOURCES: dict[tuple[str, str], ClipSource] = {
    (DEFAULT_CLIP_MODEL, DEFAULT_CLIP_PRETRAINED): ClipSource(CLIP_VIT_B16_OPENAI, True),
}
"""(model, tag) → the fetchable weights (``pareidolia fetch clip``)."""


@dataclass(frozen=True)
class ClipWeights:
    """A CLIP weights file, its sha256 and whether its model uses QuickGELU."""

    path: Path
    sha256: str
    quick_gelu: bool


def clip_weights(model_name: str, pretrained: str, cache: str | Path | None = None) -> ClipWeights:
    """The weights ``pretrained`` names for ``model_name``: a tag of :data:`CLIP_SOURCES`
    (the file ``pareidolia fetch clip`` put in the cache, sha256-checked), or a weights file
    (``.safetensors``, or a state dict ``torch.load`` reads with ``weights_only=True``; for
    OpenAI weights name the model ``<model>-quickgelu``). Nothing is downloaded; one
    :class:`UserError` line says what is missing and which command fetches it."""
    source = CLIP_SOURCES.get((model_name, pretrained))
    if source is not None:
        path, sha256 = fetched(source.artifact, cache)
        return ClipWeights(path, sha256, source.quick_gelu)
    file = Path(pretrained).expanduser()
    if file.is_file():
        return ClipWeights(file, file_sha256(file), quick_gelu=False)
    known = ", ".join(f"{m} / {t}" for m, t in CLIP_SOURCES)
    raise UserError(
        f"CLIP weights {model_name} / {pretrained}: not a file, and pareidolia fetches only "
        f"{known} (`pareidolia fetch clip`); give the weights file as clip_pretrained"
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return safetensors_load(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors and torch report damage with several types
        raise UserError(f"{path}: not readable CLIP weights ({_first_line(e)})") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a state dict of CLIP weights")
    return state


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


@functools.cache
def _open_clip_model(
    model_name: str, weights: ClipWeights, device: torch.device
) -> tuple[Any, Callable[[list[str]], torch.Tensor]]:
    """open_clip's ``model_name`` holding ``weights`` (frozen, eval) and its tokenizer, loaded
    once per process, weights and device."""
    try:
        import open_clip  # type: ignore[import-not-found]
    except Exception as e:  # not installed, or its torchvision not built for this torch
        raise UserError(
            "the CLIP expression guide needs the optional package open_clip (`pip install "
            "open_clip_torch`, with a torchvision built for this torch); importing it failed "
            f"({_first_line(e)}); or use the classifier guide"
        ) from None
    try:
        model = open_clip.create_model(
            model_name, pretrained=None, force_quick_gelu=weights.quick_gelu, device="cpu"
        )
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as e:  # open_clip raises RuntimeError (and others) for unknown names
        raise UserError(f"open_clip cannot build model {model_name!r} ({_first_line(e)})") from e
    try:
        model.load_state_dict(_read_state_dict(weights.path), strict=True)
    except RuntimeError as e:
        raise UserError(
            f"{weights.path}: not weights of open_clip's {model_name} ({_first_line(e)})"
        ) from e
    model = model.to(device).eval().requires_grad_(False)
    return model, tokenizer


def open_clip_guide(
    emotion: str,
    model_name: str = DEFAULT_CLIP_MODEL,
    pretrained: str = DEFAULT_CLIP_PRETRAINED,
    device: torch.device | str = "cpu",
    cache: str | Path | None = None,
) -> ClipDirectionalGuide:
    """The CLIP directional guide with an ``open_clip`` model (an optional extra) and the
    weights :func:`clip_weights` finds (never downloaded here); its ``weights_sha256`` is the
    weights file's. A missing package, file or model name is one :class:`UserError` line."""
    check_target_emotion(emotion)
    weights = clip_weights(model_name, pretrained, cache)
    model, tokenizer = _open_clip_model(model_name, weights, torch.device(device))

    def encode_image(x: torch.Tensor) -> torch.Tensor:
        return model.encode_image(x)

    def encode_text(texts: list[str]) -> torch.Tensor:
        return model.encode_text(tokenizer(texts).to(device))

    guide = ClipDirectionalGuide.from_text_encoder(encode_image, encode_text, emotion)
    guide.weights_sha256 = weights.sha256
    return guide


def guide_record(guide: ExpressionGuide) -> dict[str, str]:
    """What a protector records of the guide it was tuned with: the CLIP weights' sha256."""
    sha256 = getattr(guide, "weights_sha256", None)
    return {"clip_weights_sha256": sha256} if sha256 else {}
