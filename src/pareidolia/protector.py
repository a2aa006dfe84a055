"""MAP fine-tuning (METHOD.md §3) and the protector artifact that applies it (§4).

:func:`finetune` tunes a copy of a pretrained score network so that DDIM generation from the
(frozen network's) inversion latent of a face lands on a face that surrogate FR models match to
a target identity (L_A) and that shows a target emotion (L_E). Per batch:

1. x̂ = Generate_θ(x_t0), x_t0 = Invert_θ₀(x) cached in ``out_dir/latents``;
2. g_A = ∇_θ w_id·L_A and g_E = ∇_θ w_expr·L_E, separately, combined by the projection
   (:mod:`pareidolia.projection`);
3. the regulariser gradient ∇_θ (w_lap·L_lap + w_sm·L_SM + w_l1·L1) is added *after* the
   projection; Adam steps; an EMA of the weights is kept (it becomes the protector).

On several processes (``world``, :mod:`pareidolia.data_parallel`) each computes step 1–2 on
its part of the batch, and g_A, g_E and the regulariser gradient are each averaged over the
processes before the projection: every process takes the step one process would take.

Reconstruction choices (not fixed by the paper, stated here): w_id = 10, w_expr = 1, w_lap = 1,
w_sm = 1 (DiffAM has no L_SM), w_l1 = 0.3, a low-pass L1 term w_lowpass = 30 (σ = 4 px; keeps
colour and shading, which the identity loss otherwise shifts in blotches), lr = 1e-4 and 8
epochs, tuned on the offline prior
with ``benchmarks/protector_smoke.py`` (DiffAM's lr 8e-6 and w_l1 = 3 left the identity where it
was; see the README's tuning table); no LPIPS term (no weights ship); the EMA uses
the usual warm-up ``min(decay, (1 + n) / (10 + n))`` after n updates so short runs are not
dominated by the initial weights. The expression guide (``guide``) is the classifier (§3.3 b,
offline, the default) or the paper's CLIP directional loss (§3.3 a, ``guide = "clip"``: the
optional open_clip package and the weights ``pareidolia fetch clip`` downloads).

When the faces' size differs from the network's resolution, faces are resized (bilinear,
antialiased) to the resolution for inversion/generation and x̂ is resized back before the
objectives; :func:`apply_protector` does the same.

Precision and memory: ``dtype`` (:func:`finetune`, :func:`apply_protector`) is the score
network's compute dtype; bfloat16 runs its forward passes under autocast
(:func:`pareidolia.runtime.autocast`) while the weights, Adam, the EMA, the DDIM arithmetic and
the objectives stay float32. The cached inversion latents of training are always computed in
float32 (once per face; the cache is shared by runs of either dtype).
``checkpoint_gen`` recomputes activations in the backward pass instead of storing them: each
generation step (:func:`~pareidolia.diffusion.ddim.generate`) and, where the network supports
it, each of its resnet blocks (diffusers' ``enable_gradient_checkpointing``). It changes memory
and time only, so a run may be resumed with it switched.

Checkpoint (``out_dir/checkpoint.pt``, written atomically after every epoch and on Ctrl-C):
tuned weights, EMA weights, Adam state, projection state, epoch / batch position / step, the
score-matching noise generator and torch's global RNG. ``resume=True`` continues from it,
mid-epoch included (each epoch's face order is a pure function of seed and epoch). Per-step
losses go to ``out_dir/train.jsonl``.

The artifact (:func:`save_protector`) is one safetensors file holding the full EMA weights (not
a delta: exact and self-contained; the base hash still binds it to its base network) under
``unet.*``, the target's reference embeddings per FR model under ``target_embedding.*``, and a
JSON header (config, base model hash, sha256 of all tensors, training-face hashes, metrics, and
``run``: the device and dtype, and the CLIP weights' sha256 for a CLIP-guided protector).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save as st_save
from tqdm import tqdm

from pareidolia.data_parallel import SINGLE, World
from pareidolia.diffusion.cache import LatentCache, LatentKey
from pareidolia.diffusion.ddim import EpsModel, generate, guided_generate, invert, unet_eps
from pareidolia.diffusion.hashing import model_hash, tensors_sha256
from pareidolia.diffusion.schedule import ScoreModelConfig
from pareidolia.errors import OptionError, UserError
from pareidolia.io import atomic_write_bytes
from pareidolia.objectives.expression import (
    ClassifierGuide,
    ExpressionGuide,
    check_target_emotion,
    guide_record,
    open_clip_guide,
)
from pareidolia.objectives.fidelity import l1_loss, lowpass_l1_loss
from pareidolia.objectives.identity import EnsembleFactory, IdentityLoss, zoo_ensembles
from pareidolia.objectives.landmarks import LaplacianLoss
from pareidolia.objectives.score_matching import ScoreMatchingLoss
from pareidolia.projection import Combiner, GradVac, make_combiner
from pareidolia.runtime import DEFAULT_CLIP_MODEL, DEFAULT_CLIP_PRETRAINED, WORKING_SIZE, dtype_name
from pareidolia.zoo import registry

if TYPE_CHECKING:
    from diffusers.models.unets.unet_2d import UNet2DModel

__all__ = [
    "FORMAT",
    "BaseRecord",
    "Protector",
    "ProtectorConfig",
    "adapt_protector",
    "apply_protector",
    "finetune",
    "load_protector",
    "protector_base",
    "save_protector",
]

FORMAT = "pareidolia.protector/1"
CHECKPOINT_FORMAT = "pareidolia.protector-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train.jsonl"
_UNET = "unet."
_EMB = "target_embedding."
TERMS = ("L_A", "L_E", "L_lap", "L_SM", "L1", "L_lowpass")


@dataclass(frozen=True)
class ProtectorConfig:
    """Hyper-parameters of one protector (one target identity, emotion and held-out victim)."""

    t0: int = 60
    n_inv: int = 20
    n_gen: int = 6
    lr: float = 1e-4  # ours (DiffAM's 8e-6 left the identity in place on the offline prior)
    epochs: int = 8
    batch: int = 1
    w_id: float = 10.0  # ours: identity dominates; the expression guide saturates in a few steps
    w_expr: float = 1.0
    w_lap: float = 1.0
    w_sm: float = 1.0
    w_l1: float = 0.3  # ours (DiffAM: 3, which held the identity in place)
    w_lowpass: float = 30.0  # ours: L1 of the low-frequency change (fidelity.lowpass_l1_loss)
    lowpass_sigma: float = 4.0  # pixels of the 256 px working crop
    projection: Literal["gradvac", "pcgrad", "none"] = "gradvac"
    beta: float = 0.01
    guide: Literal["classifier", "clip"] = "classifier"
    # guide "clip": the open_clip model and its weights (a tag pareidolia fetches, or a file)
    clip_model: str = DEFAULT_CLIP_MODEL
    clip_pretrained: str = DEFAULT_CLIP_PRETRAINED
    surrogates: tuple[str, ...] = ("sface", "faceres", "mobileface")
    victim: str = "dlib"
    # Where surrogate and victim names come from: the offline zoo's registry, or the paper
    # protocol's FR checkpoints (pareidolia.zoo.paper_fr.PAPER_FR; their weights are the user's,
    # so finetune then needs them as ``fr``).
    fr_zoo: Literal["offline", "paper"] = "offline"
    emotion: str = "happy"
    ema_decay: float = 0.999
    checkpoint_gen: bool = False  # memory only (same results): recompute activations in backward
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "surrogates", tuple(self.surrogates))
        problems = []
        if self.fr_zoo not in ("offline", "paper"):
            problems.append(f"unknown fr_zoo {self.fr_zoo!r} (offline, paper)")
        fr = fr_model_names(self.fr_zoo)
        if self.t0 < 1 or self.n_inv < 2 or self.n_gen < 2:
            problems.append("need t0 >= 1, n_inv >= 2 and n_gen >= 2")
        if self.lr <= 0 or self.epochs < 1 or self.batch < 1:
            problems.append("need lr > 0, epochs >= 1 and batch >= 1")
        if min(self.w_id, self.w_expr, self.w_lap, self.w_sm, self.w_l1, self.w_lowpass) < 0:
            problems.append("loss weights must be non-negative")
        if self.projection not in ("gradvac", "pcgrad", "none"):
            problems.append(f"unknown projection {self.projection!r} (gradvac, pcgrad, none)")
        if self.lowpass_sigma <= 0:
            problems.append(f"lowpass_sigma must be positive, got {self.lowpass_sigma}")
        if not 0.0 < self.beta <= 1.0:
            problems.append(f"beta must be in (0, 1], got {self.beta}")
        if self.guide not in ("classifier", "clip"):
            problems.append(f"unknown expression guide {self.guide!r} (classifier, clip)")
        clip = (self.clip_model, self.clip_pretrained)
        if self.guide != "clip" and clip != (DEFAULT_CLIP_MODEL, DEFAULT_CLIP_PRETRAINED):
            problems.append("clip_model and clip_pretrained are for guide 'clip'")
        if not all(isinstance(v, str) and v.strip() for v in clip):
            problems.append("clip_model and clip_pretrained must be non-empty names")
        if not self.surrogates:
            problems.append("at least one surrogate FR model is needed")
        unknown = [m for m in (*self.surrogates, self.victim) if m not in fr]
        if unknown:
            problems.append(f"not FR models: {', '.join(unknown)} (choose from {', '.join(fr)})")
        if self.victim in self.surrogates:
            problems.append(
                f"victim {self.victim!r} is also a surrogate; the victim must be held out"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            problems.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        try:
            check_target_emotion(self.emotion)
        except ValueError as e:
            problems.append(str(e))
        if problems:
            raise UserError("invalid protector config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["surrogates"] = list(self.surrogates)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProtectorConfig:
        known = {f.name for f in fields(cls)}
        extra = set(d) - known
        if extra:
            raise UserError(f"unknown protector config keys: {', '.join(sorted(extra))}")
        return cls(**dict(d))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ProtectorConfig:
        return cls.from_dict(json.loads(text))


@dataclass
class Protector:
    """A tuned network (``unet``, the EMA weights) bound to the base network it was tuned from."""

    unet: UNet2DModel
    base_unet: UNet2DModel
    base_cfg: ScoreModelConfig
    config: ProtectorConfig
    target_embeddings: dict[str, torch.Tensor] = field(default_factory=dict)
    face_sha256: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    # how it was made, set by :func:`finetune`: ``device`` (where it was tuned), ``dtype`` (the
    # score network's compute dtype; absent in protectors made before it was recorded: float32),
    # for the CLIP guide ``clip_weights_sha256`` (the weights file's; the config names model and
    # tag), and ``world_size`` when several processes trained it (pareidolia.data_parallel)
    run: dict[str, str] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """Where the protector's networks are (and the photo pipeline runs its models)."""
        first = next(self.unet.parameters(), None)
        return torch.device("cpu") if first is None else first.device


# ----------------------------------------------------------------------------- helpers


def fr_model_names(fr_zoo: str) -> list[str]:
    """The FR models a protector of ``fr_zoo`` may name as surrogates or victim."""
    if fr_zoo == "paper":
        from pareidolia.zoo.paper_fr import PAPER_FR

        return list(PAPER_FR)
    return registry.names("fr")


def _to_net(x01: torch.Tensor, resolution: int) -> torch.Tensor:
    """[0, 1] crops at any size → [−1, 1] at the network's resolution."""
    if x01.shape[-1] != resolution or x01.shape[-2] != resolution:
        x01 = F.interpolate(
            x01, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
        )
    return x01 * 2.0 - 1.0


def to_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """[−1, 1] network output → [0, 1] crops of ``size`` (differentiable; clamped)."""
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def _check_faces(faces: torch.Tensor, name: str) -> None:
    if faces.ndim != 4 or faces.shape[1] != 3 or faces.shape[2] != faces.shape[3]:
        raise ValueError(f"{name} must be (N, 3, S, S), got {tuple(faces.shape)}")


def _latents(
    base: UNet2DModel, cfg: ScoreModelConfig, faces_net: torch.Tensor, t0: int, n: int, root: Path
) -> torch.Tensor:
    """Inversion latents of ``faces_net`` ([−1, 1]) with the frozen base, cached per face."""
    cache = LatentCache(root)
    eps, ac = unet_eps(base), cfg.alphas_cumprod()
    out = []
    for x in faces_net:
        x = x.unsqueeze(0).detach()
        key = LatentKey.for_image(x.cpu(), cfg.content_hash, t0, n)
        out.append(cache.get_or_compute(key, partial(invert, eps, ac, x, t0, n), x.device))
    return torch.cat(out)


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def _batches(order: list[int], batch: int) -> list[list[int]]:
    return [order[i : i + batch] for i in range(0, len(order), batch)]


class _Ema:
    """EMA of floating-point weights with warm-up min(decay, (1 + n) / (10 + n))."""

    def __init__(self, net: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in net.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.mul_(d).add_(v.detach(), alpha=1.0 - d)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.updates = int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)


def expression_guide(config: ProtectorConfig, size: int, dev: Any) -> ExpressionGuide:
    """The L_E guide ``config.guide`` names, for crops of ``size`` on ``dev``."""
    if config.guide == "clip":
        return open_clip_guide(config.emotion, config.clip_model, config.clip_pretrained, dev)
    return ClassifierGuide(config.emotion, size, dev)


class _Objectives:
    def __init__(
        self,
        config: ProtectorConfig,
        target01: torch.Tensor,
        size: int,
        dev: Any,
        fr: EnsembleFactory,
        guide: ExpressionGuide,
    ) -> None:
        self.identity = IdentityLoss(fr(config.surrogates), target01.to(dev))
        self.guide = guide
        self.laplacian = LaplacianLoss(size, dev) if config.w_lap > 0 else None


def _grads(loss: torch.Tensor, params: list[torch.Tensor], retain: bool) -> list[torch.Tensor]:
    if not loss.requires_grad:
        return [torch.zeros_like(p) for p in params]
    gs = torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs, strict=True)]


def _open_log(path: Path, keep_until: int | None) -> TextIO:
    """The JSONL log, opened for appending: emptied for a fresh run; on resume, cut back to the
    records of the steps the checkpoint holds (steps logged after it will be redone)."""
    if keep_until is None or not path.is_file():
        return path.open("w", encoding="utf-8")
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line)["step"]) <= keep_until:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash
    atomic_write_bytes(path, "".join(kept).encode(), overwrite=True)
    return path.open("a", encoding="utf-8")


@contextlib.contextmanager
def _deferred_sigint() -> Iterator[None]:
    """Hold a Ctrl-C that arrives inside the block until it ends (main thread only), so the
    optimiser step, the EMA update and the step counters change together."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        caught.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        if callable(previous):
            previous(signal.SIGINT, None)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt


_FREE_ON_RESUME = ("epochs", "checkpoint_gen")
"""Config fields a resumed run may change: the number of epochs (it may grow) and the memory
options (they change neither the results nor the state a checkpoint holds)."""


def _resume_key(config: ProtectorConfig) -> dict[str, Any]:
    """The config fields a resumed run must share with the checkpoint."""
    return {k: v for k, v in config.to_dict().items() if k not in _FREE_ON_RESUME}


def _same_run(stored: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Whether a checkpoint's resume key allows resuming with ``current``: the same values,
    where a field the checkpoint predates (added to the config since) must be at its default.
    Fields free on resume that an older checkpoint's key still holds are ignored."""
    defaults = _resume_key(ProtectorConfig())
    stored = {k: v for k, v in stored.items() if k not in _FREE_ON_RESUME}
    return set(stored) <= set(current) and all(
        stored[k] == v if k in stored else v == defaults[k] for k, v in current.items()
    )


# ----------------------------------------------------------------------------- training state


def _zero_sums() -> dict[str, float]:
    return dict.fromkeys(TERMS, 0.0)


@dataclass
class _Progress:
    """Where a run stands: epoch, batch position in it and optimiser steps; the mean loss terms
    of the last finished epoch and the running sums of the current one."""

    epoch: int = 0
    pos: int = 0
    step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=_zero_sums)
    seen: int = 0

    def add(self, terms: Mapping[str, float]) -> None:
        """Count one finished step with loss terms ``terms``."""
        self.step += 1
        self.pos += 1
        for k in TERMS:
            self.sums[k] += terms[k]
        self.seen += 1

    def end_epoch(self) -> None:
        if self.seen:
            self.metrics = {k: v / self.seen for k, v in self.sums.items()}
        self.epoch, self.pos = self.epoch + 1, 0
        self.sums, self.seen = _zero_sums(), 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "pos": self.pos,
            "step": self.step,
            "metrics": self.metrics,
            "epoch_sums": self.sums,
            "epoch_seen": self.seen,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch, self.pos, self.step = state["epoch"], state["pos"], state["step"]
        self.metrics = dict(state["metrics"])
        self.sums, self.seen = dict(state["epoch_sums"]), int(state["epoch_seen"])


@dataclass
class _TrainState:
    """What a run changes as it trains, all of it kept in the checkpoint: the tuned network, its
    EMA, Adam, the projection's state, the score-matching noise generator, torch's global RNG
    and the progress."""

    tuned: UNet2DModel
    ema: _Ema
    opt: torch.optim.Optimizer
    combiner: Combiner
    sm_gen: torch.Generator
    progress: _Progress = field(default_factory=_Progress)

    def take_step(self) -> None:
        """Apply the gradients that :func:`_step` set and update the EMA."""
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update(self.tuned)

    def state_dict(self) -> dict[str, Any]:
        gradvac = self.combiner if isinstance(self.combiner, GradVac) else None
        return {
            "tuned": self.tuned.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "projection": gradvac.state_dict() if gradvac is not None else None,
            "sm_rng": self.sm_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            **self.progress.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.tuned.load_state_dict(state["tuned"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        if isinstance(self.combiner, GradVac) and state["projection"] is not None:
            self.combiner.load_state_dict(state["projection"])
        self.sm_gen.set_state(state["sm_rng"].cpu())  # map_location may have moved the RNG states
        torch.set_rng_state(state["torch_rng"].cpu())
        self.progress.load_state_dict(state)


@dataclass(frozen=True)
class _RunKey:
    """What a checkpoint must share with the run that resumes it: the base network, the config
    (but for the number of epochs) and the training faces."""

    base_hash: str
    config: ProtectorConfig
    face_sha256: tuple[str, ...]

    def header(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "base_hash": self.base_hash,
            "resume_key": _resume_key(self.config),
            "config": self.config.to_dict(),
            "face_sha256": list(self.face_sha256),
        }

    def check(self, path: Path, state: Mapping[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"{path}: not a protector checkpoint")
        if state["base_hash"] != self.base_hash:
            raise UserError(f"{path}: checkpoint was made from another base network")
        if not _same_run(state["resume_key"], _resume_key(self.config)):
            raise UserError(f"{path}: checkpoint was made with another config")
        if state["face_sha256"] != list(self.face_sha256):
            raise UserError(f"{path}: checkpoint was made on other training faces")


def _save_checkpoint(path: Path, key: _RunKey, state: _TrainState) -> None:
    buf = io.BytesIO()
    torch.save({**key.header(), **state.state_dict()}, buf)
    atomic_write_bytes(path, buf.getvalue(), overwrite=True)


def _load_checkpoint(path: Path, key: _RunKey, state: _TrainState, dev: torch.device) -> None:
    try:
        saved = torch.load(path, map_location=dev, weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: cannot read the checkpoint ({e})") from e
    key.check(path, saved)
    state.load_state_dict(saved)


@dataclass(frozen=True)
class _Faces:
    """Training faces (or a batch of them): in [0, 1] at the objectives' size, in [−1, 1] at the
    network's resolution, and their inversion latents."""

    x01: torch.Tensor
    x_net: torch.Tensor
    latents: torch.Tensor

    def __len__(self) -> int:
        return int(self.x01.shape[0])

    def __getitem__(self, idx: list[int] | slice) -> _Faces:
        return _Faces(self.x01[idx], self.x_net[idx], self.latents[idx])

    def sha256(self) -> tuple[str, ...]:
        return tuple(tensors_sha256({"image": f}) for f in self.x01.cpu())


@dataclass(frozen=True)
class _StepContext:
    """What every step of a run shares: the config, the objectives' crop size, the schedule,
    the tuned network (as ε and as its parameters), the objectives and the processes that
    train together."""

    config: ProtectorConfig
    size: int
    ac: torch.Tensor
    eps: EpsModel
    params: list[torch.Tensor]
    obj: _Objectives
    sm: ScoreMatchingLoss
    world: World


# ----------------------------------------------------------------------------- training


def finetune(
    unet: UNet2DModel,
    score_cfg: ScoreModelConfig,
    faces_0_1: torch.Tensor,
    target_0_1: torch.Tensor,
    config: ProtectorConfig,
    out_dir: str | Path,
    progress: bool = True,
    resume: bool = False,
    init: UNet2DModel | None = None,
    fr: EnsembleFactory | None = None,
    guide: ExpressionGuide | None = None,
    world: World = SINGLE,
    dtype: torch.dtype = torch.float32,
) -> Protector:
    """Tune a copy of ``unet`` into a protector on training faces (N, 3, S, S) in [0, 1] toward
    the target face(s) (1, 3, S, S). ``unet`` itself is never modified (it is the frozen base
    used for inversion). ``init`` (same architecture, e.g. an existing protector's network)
    starts the tuned weights from there instead of from ``unet``: continued fine-tuning.
    ``fr`` builds the surrogate (and victim) FR models from their names; default: the offline
    zoo's, and required when ``config.fr_zoo`` is ``"paper"``. ``guide`` is L_E's guide
    (default: the one ``config.guide`` names, :func:`expression_guide`). ``world``: the
    processes that train together (:mod:`pareidolia.data_parallel`), each on its part of
    every batch, the main one alone writing the latent cache first, the log and checkpoints.
    ``dtype``: the score network's compute dtype in the training steps
    (:func:`pareidolia.runtime.pick_dtype`).
    See the module docstring for the loop, checkpoint, log and precision."""
    _check_inputs(unet, score_cfg, faces_0_1, target_0_1)
    _check_world(config, world)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = next(unet.parameters()).device
    size = faces_0_1.shape[-1]
    fr = fr if fr is not None else _offline_fr(config, size, dev)
    guide = guide if guide is not None else expression_guide(config, size, dev)
    faces01 = faces_0_1.detach().to(dev, torch.float32)
    with world.main_first():  # the others read the latents the main process cached
        faces = _training_faces(unet.eval(), score_cfg, faces01, config, out / "latents")
    target01 = target_0_1.detach().to(dev, torch.float32)
    start = init if init is not None else unet
    ctx, state = _start(start, score_cfg, config, size, target01, fr, guide, world, dtype)
    key = _RunKey(score_cfg.content_hash, config, faces.sha256())
    ckpt_path = out / CHECKPOINT_NAME
    resumed = resume and ckpt_path.is_file()
    if resumed:
        _load_checkpoint(ckpt_path, key, state, dev)
    log, checkpoint = _writers(out, key, state, resumed, world)
    _train(ctx, state, faces, log, checkpoint, progress and world.main)
    return Protector(
        unet=_ema_net(state),
        base_unet=unet,
        base_cfg=score_cfg,
        config=config,
        target_embeddings=_target_embeddings(ctx, fr, target01),
        face_sha256=list(key.face_sha256),
        metrics={**state.progress.metrics, "steps": float(state.progress.step)},
        run={
            "device": str(dev),
            "dtype": dtype_name(dtype),
            **guide_record(guide),
            **world.record(),
        },
    )


def _check_inputs(
    unet: UNet2DModel, score_cfg: ScoreModelConfig, faces_0_1: torch.Tensor, target: torch.Tensor
) -> None:
    _check_faces(faces_0_1, "faces_0_1")
    _check_faces(target, "target_0_1")
    if faces_0_1.shape[0] < 1:
        raise ValueError("need at least one training face")
    if model_hash(unet) != score_cfg.content_hash:
        raise UserError("the base network's weights do not match score_cfg.content_hash")


def _check_world(config: ProtectorConfig, world: World) -> None:
    if config.batch < world.size:
        raise OptionError(
            f"{{batch}} {config.batch} is smaller than the {world.size} processes: each needs a "
            "face of every batch",
            "batch",
        )


def _writers(
    out: Path, key: _RunKey, state: _TrainState, resumed: bool, world: World
) -> tuple[TextIO, Callable[[], None]]:
    """The JSONL log and the checkpoint writer; on processes other than the main one, a log to
    nowhere and no checkpoint."""
    if not world.main:
        return open(os.devnull, "w", encoding="utf-8"), lambda: None
    log = _open_log(out / LOG_NAME, state.progress.step if resumed else None)
    return log, partial(_save_checkpoint, out / CHECKPOINT_NAME, key, state)


def _offline_fr(config: ProtectorConfig, size: int, dev: torch.device) -> EnsembleFactory:
    if config.fr_zoo != "offline":
        raise UserError(
            f"a protector against the {config.fr_zoo} FR models needs those models: "
            "pass their checkpoints"
        )
    return zoo_ensembles(size, dev)


def _training_faces(
    base: UNet2DModel,
    score_cfg: ScoreModelConfig,
    faces01: torch.Tensor,
    config: ProtectorConfig,
    latent_root: Path,
) -> _Faces:
    faces_net = _to_net(faces01, score_cfg.resolution)
    latents = _latents(base, score_cfg, faces_net, config.t0, config.n_inv, latent_root)
    return _Faces(faces01, faces_net, latents)


def _start(
    start: UNet2DModel,
    score_cfg: ScoreModelConfig,
    config: ProtectorConfig,
    size: int,
    target01: torch.Tensor,
    fr: EnsembleFactory,
    guide: ExpressionGuide,
    world: World,
    dtype: torch.dtype,
) -> tuple[_StepContext, _TrainState]:
    """A fresh run from the weights of ``start``: what its steps share, and its state."""
    tuned = copy.deepcopy(start).eval().requires_grad_(True)
    _activation_checkpointing(tuned, config.checkpoint_gen)
    params: list[torch.Tensor] = [p for p in tuned.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr)
    ema = _Ema(tuned, config.ema_decay)
    combiner = make_combiner(config.projection, config.beta)
    obj = _Objectives(config, target01, size, target01.device, fr, guide)
    ac = score_cfg.alphas_cumprod()
    sm = ScoreMatchingLoss(ac, config.t0)
    state = _TrainState(tuned, ema, opt, combiner, torch.Generator().manual_seed(config.seed))
    return _StepContext(config, size, ac, unet_eps(tuned, dtype), params, obj, sm, world), state


def _activation_checkpointing(net: UNet2DModel, on: bool) -> None:
    """Switch the network's own activation checkpointing (diffusers, per resnet block) where
    the network supports it."""
    if not getattr(net, "_supports_gradient_checkpointing", False):
        return
    if on:
        net.enable_gradient_checkpointing()
    else:
        net.disable_gradient_checkpointing()


def _train(
    ctx: _StepContext,
    state: _TrainState,
    faces: _Faces,
    log: TextIO,
    checkpoint: Callable[[], None],
    progress: bool,
) -> None:
    """Train the remaining epochs; ``checkpoint()`` after each one and on Ctrl-C. Closes
    ``log``."""
    epochs, p = ctx.config.epochs, state.progress
    n_batches = math.ceil(len(faces) / ctx.config.batch)
    bar = tqdm(
        total=epochs * n_batches,
        initial=min(p.epoch * n_batches + p.pos, epochs * n_batches),
        disable=not progress,
        desc="finetune",
    )
    try:
        while p.epoch < epochs:
            _train_epoch(ctx, state, faces, log, bar)
            p.end_epoch()
            checkpoint()
    except KeyboardInterrupt:
        checkpoint()
        raise
    finally:
        log.close()
        bar.close()


def _train_epoch(
    ctx: _StepContext, state: _TrainState, faces: _Faces, log: TextIO, bar: tqdm
) -> None:
    """The current epoch's batches from the progress's position on."""
    p = state.progress
    batches = _batches(_epoch_order(len(faces), ctx.config.seed, p.epoch), ctx.config.batch)
    while p.pos < len(batches):
        terms = _step(ctx, state, faces[batches[p.pos]])
        with _deferred_sigint():  # the step is applied whole or not at all
            state.take_step()
            p.add(terms)
            rec = {"epoch": p.epoch, "step": p.step, "time": time.time(), **terms}
            log.write(json.dumps(rec) + "\n")
            log.flush()
        bar.set_postfix({k: f"{v:.4f}" for k, v in terms.items()})
        bar.update(1)


def _ema_net(state: _TrainState) -> UNet2DModel:
    ema_net = copy.deepcopy(state.tuned).requires_grad_(False).eval()
    _activation_checkpointing(ema_net, False)
    ema_net.load_state_dict(state.ema.shadow)
    return ema_net


def _target_embeddings(
    ctx: _StepContext, fr: EnsembleFactory, target01: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The target's reference embedding per surrogate and for the victim."""
    config = ctx.config
    with torch.no_grad():
        emb = {m: ctx.obj.identity.target_embedding(m).detach().cpu() for m in config.surrogates}
        v_emb = fr([config.victim])(target01)[config.victim]
        emb[config.victim] = v_emb.mean(0, keepdim=True).cpu()
    return emb


def _loss_terms(
    ctx: _StepContext, batch: _Faces, noise: tuple[torch.Tensor, torch.Tensor] | None
) -> dict[str, torch.Tensor]:
    """The loss terms (batch means, with their graphs) of one batch; ``noise``: L_SM's
    timesteps and noise for it (None when L_SM is off)."""
    c, size, x01, lap = ctx.config, ctx.size, batch.x01, ctx.obj.laplacian
    x_hat = generate(ctx.eps, ctx.ac, batch.latents, c.t0, c.n_gen, checkpoint=c.checkpoint_gen)
    x_hat01 = to_crop(x_hat, size)
    zero = x_hat01.new_zeros(())
    t = {"L_A": ctx.obj.identity(x_hat01).mean(), "L_E": ctx.obj.guide(x_hat01, x01).mean()}
    t["L_lap"] = lap(x_hat01, x01).mean() if lap is not None else zero
    t["L1"] = l1_loss(x_hat01, x01).mean() if c.w_l1 > 0 else zero
    sigma = c.lowpass_sigma * size / WORKING_SIZE
    t["L_lowpass"] = lowpass_l1_loss(x_hat01, x01, sigma).mean() if c.w_lowpass > 0 else zero
    t["L_SM"] = ctx.sm.at(ctx.eps, batch.x_net, *noise).mean() if noise is not None else zero
    return t


def _step(ctx: _StepContext, state: _TrainState, batch: _Faces) -> dict[str, float]:
    """Set ``.grad`` of the tuned parameters for one batch; returns the loss terms (batch
    means). This process computes its part of the batch (``ctx.world.rows``); g_A, g_E and the
    regulariser's gradient are each averaged over the processes before the projection, so it
    sees the whole batch's gradients. L_SM's noise is drawn for the whole batch."""
    c, params, world = ctx.config, ctx.params, ctx.world
    noise = ctx.sm.draw(batch.x_net, state.sm_gen) if c.w_sm > 0 else None
    rows = world.rows(len(batch))
    part = batch[rows]
    part_noise = None if noise is None else (noise[0][rows], noise[1][rows])
    grads = _part_grads(ctx, part, part_noise)
    g_a, g_e, g_r, terms = (world.batch_mean(g, len(part) / len(batch)) for g in grads)
    for p, g, r in zip(params, state.combiner(g_a, g_e), g_r, strict=True):
        p.grad = (g + r).to(p.dtype)
    return dict(zip(TERMS, (float(v) for v in terms), strict=True))


def _part_grads(
    ctx: _StepContext, part: _Faces, noise: tuple[torch.Tensor, torch.Tensor] | None
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """g_A, g_E and the regulariser's gradient of the means over ``part``, and the loss terms
    in :data:`TERMS` order; zeros for an empty part."""
    c, params = ctx.config, ctx.params
    if len(part) == 0:
        zeros = [[torch.zeros_like(p) for p in params] for _ in range(3)]
        return zeros[0], zeros[1], zeros[2], [params[0].new_zeros(()) for _ in TERMS]
    t = _loss_terms(ctx, part, noise)
    g_a = _grads(c.w_id * t["L_A"], params, retain=True)
    g_e = _grads(c.w_expr * t["L_E"], params, retain=True)
    reg = (
        c.w_lap * t["L_lap"] + c.w_l1 * t["L1"] + c.w_lowpass * t["L_lowpass"] + c.w_sm * t["L_SM"]
    )
    g_r = _grads(reg, params, False)
    return g_a, g_e, g_r, [t[k].detach() for k in TERMS]


# ----------------------------------------------------------------------------- artifact


def save_protector(
    path: str | Path, protector: Protector, overwrite: bool = False, delta_fp16: bool = False
) -> Path:
    """Write ``protector`` as one safetensors file (atomic; refuses to overwrite unless asked).

    ``delta_fp16`` stores the floating-point weights as a float16 difference from the base
    network (half the size; used for the protectors shipped in the package) instead of the
    full float32 weights.
    """
    path = Path(path)
    base = protector.base_unet.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for k, v in protector.unet.state_dict().items():
        v = v.detach().cpu()
        if delta_fp16 and v.is_floating_point():
            v = (v - base[k].detach().cpu()).half()
        tensors[_UNET + k] = v.contiguous()
    for m, e in protector.target_embeddings.items():
        tensors[_EMB + m] = e.detach().cpu().contiguous()
    info = {
        "config": protector.config.to_dict(),
        "base_model_hash": protector.base_cfg.content_hash,
        "base_source": protector.base_cfg.source,
        "weights": "delta-fp16" if delta_fp16 else "full",
        "tensors_sha256": tensors_sha256(tensors),
        "emotion": protector.config.emotion,
        "surrogates": list(protector.config.surrogates),
        "victim": protector.config.victim,
        "face_sha256": protector.face_sha256,
        "metrics": protector.metrics,
        "run": protector.run,
    }
    data = st_save(tensors, metadata={"format": FORMAT, "protector": json.dumps(info)})
    atomic_write_bytes(path, data, overwrite=overwrite)
    return path


def _read(path: Path, with_tensors: bool = True) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The file's metadata and (``with_tensors``) its tensors; one :class:`UserError` line for
    a folder, a missing file or a damaged one."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder; a protector is one file (.safetensors)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            names = list(f.keys()) if with_tensors else []
            tensors = {k: f.get_tensor(k) for k in names}
    except FileNotFoundError:
        raise UserError(f"{path}: no such protector file") from None
    except Exception as e:  # safetensors reports damage with several exception types
        raise UserError(
            f"{path}: not a readable protector (corrupt or not safetensors): {e}"
        ) from e
    return meta, tensors


_SHOWN_NAMES = 3
"""Tensor names shown in a message about wrong names (the rest are counted)."""


def _names(names: list[str]) -> str:
    shown = ", ".join(_UNET + n for n in names[:_SHOWN_NAMES])
    more = len(names) - _SHOWN_NAMES
    return shown + (f", … {more} more" if more > 0 else "")


def _check_weights(
    path: Path, weights: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]
) -> None:
    """Refuse weights that do not fit the base network with one short line: how many names
    are missing or unexpected (a few of them shown), or the first tensor whose shape or kind
    (floating point or not) differs from the base network's."""
    missing = sorted(set(base) - set(weights))
    unexpected = sorted(set(weights) - set(base))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} of the base network's tensors missing ({_names(missing)})"
            )
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
        raise UserError(
            f"{path}: protector weights do not fit the base network: {'; '.join(parts)}"
        )
    for k, v in weights.items():
        b = base[k]
        if v.shape != b.shape:
            raise UserError(
                f"{path}: protector tensor {_UNET}{k} has shape {tuple(v.shape)}, but the base "
                f"network's is {tuple(b.shape)} (a damaged protector, or one for another network)"
            )
        if v.is_floating_point() != b.is_floating_point() or (
            not b.is_floating_point() and v.dtype != b.dtype
        ):
            raise UserError(
                f"{path}: protector tensor {_UNET}{k} is {str(v.dtype).removeprefix('torch.')}, "
                f"but the base network's is {str(b.dtype).removeprefix('torch.')}"
            )


@dataclass(frozen=True)
class BaseRecord:
    """The base network a protector file records: its weights' hash and its source (the spec
    it was loaded from, :attr:`ScoreModelConfig.source`)."""

    model_hash: str
    source: str


def _header(path: Path, meta: Mapping[str, str]) -> dict[str, Any]:
    if meta.get("format") != FORMAT or "protector" not in meta:
        raise UserError(f"{path}: not a pareidolia protector (format {meta.get('format')!r})")
    try:
        info: dict[str, Any] = json.loads(meta["protector"])
        str(info["base_model_hash"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: protector header is damaged: {e}") from e
    return info


def protector_base(path: str | Path) -> BaseRecord:
    """The base network recorded in the protector file ``path`` (header only; nothing loaded).
    Raises :class:`UserError` for a missing, unreadable or damaged file."""
    path = Path(path)
    meta, _ = _read(path, with_tensors=False)
    info = _header(path, meta)
    return BaseRecord(str(info["base_model_hash"]), str(info.get("base_source", "")))


def load_protector(
    path: str | Path, base_unet: UNet2DModel, base_cfg: ScoreModelConfig
) -> Protector:
    """Read a protector written by :func:`save_protector` for use with ``base_unet``.

    Raises :class:`UserError` if the file is missing, corrupt or not a protector, if its weights
    fail their checksum, if it was tuned from a different base network, or if its tensors'
    names, shapes or kinds do not fit ``base_unet``.
    """
    path = Path(path)
    meta, tensors = _read(path)
    info = _header(path, meta)
    try:
        config = ProtectorConfig.from_dict(info["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: protector header is damaged: {e}") from e
    base_hash = info["base_model_hash"]
    actual = model_hash(base_unet)
    if base_hash != actual or base_hash != base_cfg.content_hash:
        from pareidolia.diffusion.models import canonical_spec

        made_on = canonical_spec(str(info.get("base_source") or "")) or "another network"
        raise UserError(
            f"{path}: this protector was tuned from base model {made_on} ({base_hash[:12]}…), "
            f"not from {base_cfg.source} ({actual[:12]}…); use it with the base network it "
            f"was made from (--model {made_on})"
        )
    if tensors_sha256(tensors) != info.get("tensors_sha256"):
        raise UserError(f"{path}: protector tensors fail their checksum (corrupt file)")
    weights = {k[len(_UNET) :]: v for k, v in tensors.items() if k.startswith(_UNET)}
    base = base_unet.state_dict()
    _check_weights(path, weights, base)
    if info.get("weights", "full") == "delta-fp16":
        weights = {
            k: (base[k].detach().cpu() + v.float()).to(base[k].dtype)
            if v.is_floating_point()
            else v
            for k, v in weights.items()
        }
    unet = copy.deepcopy(base_unet).requires_grad_(False).eval()
    try:
        unet.load_state_dict(weights, strict=True)
    except RuntimeError as e:  # not expected after _check_weights; kept to one short line
        reason = " ".join(str(e).split())[:300]
        raise UserError(f"{path}: protector weights do not fit the base network: {reason}") from e
    emb = {k[len(_EMB) :]: v for k, v in tensors.items() if k.startswith(_EMB)}
    return Protector(
        unet=unet,
        base_unet=base_unet,
        base_cfg=base_cfg,
        config=config,
        target_embeddings=emb,
        face_sha256=list(info.get("face_sha256", [])),
        metrics=dict(info.get("metrics", {})),
        run={str(k): str(v) for k, v in dict(info.get("run") or {}).items()},
    )


def adapt_protector(
    protector: Protector,
    faces_0_1: torch.Tensor,
    target_0_1: torch.Tensor,
    steps: int,
    fr: EnsembleFactory | None = None,
    dtype: torch.dtype = torch.float32,
) -> Protector:
    """A copy of ``protector`` adapted to ``faces_0_1`` (N, 3, S, S) by about ``steps`` more
    fine-tuning steps, started from the protector's own weights, toward the target crop
    ``target_0_1`` (1, 3, S, S). The target embeddings become those of ``target_0_1``.
    ``fr`` and ``dtype`` as in :func:`finetune`."""
    if steps <= 0:
        return protector
    cfg = protector.config
    per_epoch = math.ceil(faces_0_1.shape[0] / cfg.batch)
    config = replace(cfg, epochs=max(1, round(steps / per_epoch)))
    with tempfile.TemporaryDirectory(prefix="pareidolia-adapt-") as tmp:
        adapted = finetune(
            protector.base_unet,
            protector.base_cfg,
            faces_0_1,
            target_0_1,
            config,
            out_dir=tmp,
            progress=False,
            init=protector.unet,
            fr=fr,
            dtype=dtype,
        )
    unet = adapted.unet
    return replace(
        protector,
        unet=unet,
        target_embeddings={**protector.target_embeddings, **adapted.target_embeddings},
        metrics={**protector.metrics, "adapt_steps": float(adapted.metrics.get("steps", 0.0))},
    )


def apply_protector(
    protector: Protector,
    faces_0_1: torch.Tensor,
    guide: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    dtype: torch.dtype = torch.float32,
    n_inv: int | None = None,
) -> torch.Tensor:
    """Protect faces (N, 3, S, S) in [0, 1]: invert with the base network in ``n_inv`` steps
    (None: the protector's own, those it was trained on), generate with the protector (no grad
    through the networks), both computing in ``dtype`` (:func:`pareidolia.runtime.pick_dtype`).
    Returns (N, 3, S, S) in [0, 1] as float32.

    With ``guide`` [ours], every generation step's clean estimate x̂₀ (network space,
    [−1, 1]) is corrected by ``guide(x̂₀, t)`` before it is re-noised
    (:func:`~pareidolia.diffusion.ddim.guided_generate`), so the score network carries the
    correction on through the remaining steps."""
    _check_faces(faces_0_1, "faces_0_1")
    cfg, c = protector.base_cfg, protector.config
    dev = next(protector.unet.parameters()).device
    ac = cfg.alphas_cumprod()
    x = _to_net(faces_0_1.detach().to(dev, torch.float32), cfg.resolution)
    eps = unet_eps(protector.unet, dtype)
    with torch.no_grad():
        steps = c.n_inv if n_inv is None else n_inv
        x_t0 = invert(unet_eps(protector.base_unet, dtype), ac, x, c.t0, steps)
        if guide is None:
            x_hat = generate(eps, ac, x_t0, c.t0, c.n_gen)
    if guide is not None:
        x_hat = guided_generate(eps, ac, x_t0, c.t0, c.n_gen, guide)
    return to_crop(x_hat, faces_0_1.shape[-1])


def iter_log(out_dir: str | Path) -> Iterator[dict[str, Any]]:
    """The records of ``out_dir/train.jsonl``."""
    with (Path(out_dir) / LOG_NAME).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
