"""Loading score networks as diffusers ``UNet2DModel`` s, each with its :class:`ScoreModelConfig`.

Three sources, one result ``(unet, config)``:

- :func:`load_sdedit_ckpt` — the paper's network, SDEdit/DiffusionCLIP ``celeba_hq.ckpt``, stored
  in the layout of pesser's ``pytorch_diffusion`` ``Model``; :func:`convert_sdedit_ckpt` renames
  its tensors into a ``UNet2DModel`` built by :func:`build_unet`.
- :func:`load_diffusers` — a local diffusers folder, or a Hugging Face hub id such as
  ``google/ddpm-celebahq-256`` (the same weights), downloaded only when allowed.
- :func:`load_score_model` — one string names any of them (for the CLI and for configs);
  ``paper-ckpt:`` alone (or ``paper``) is the ``celeba_hq.ckpt`` that ``pareidolia fetch
  paper-unet`` put in the cache folder (:mod:`pareidolia.download`).

Every failure a user can fix raises :class:`ScoreModelError` with a message that says what to do.
"""

from __future__ import annotations

import functools
import json
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from diffusers.models.unets.unet_2d import UNet2DModel

from pareidolia.checksums import file_sha256
from pareidolia.diffusion.prior import load_prior_spec
from pareidolia.diffusion.schedule import (
    PAPER_BETA_END,
    PAPER_BETA_START,
    PAPER_NUM_TRAIN_TIMESTEPS,
    ScoreModelConfig,
)
from pareidolia.download import (
    CELEBA_HQ_CKPT,
    CELEBA_HQ_REPO,
    CELEBA_HQ_SHA256,
    PAPER_UNET,
    fetched,
)
from pareidolia.errors import ScoreModelError

PAPER_HUB_ID = "google/ddpm-celebahq-256"
CELEBA_HQ_MIRROR = f"Hugging Face repo {CELEBA_HQ_REPO}"
FETCHED_PAPER_SPEC = "paper-ckpt:"
"""The spec of the paper's network in the cache folder (``pareidolia fetch paper-unet``)."""
_PAPER_SCHEDULE = {
    "beta_start": PAPER_BETA_START,
    "beta_end": PAPER_BETA_END,
    "num_train_timesteps": PAPER_NUM_TRAIN_TIMESTEPS,
}
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class SDEditArch:
    """Hyper-parameters of a pytorch_diffusion ``Model`` (SDEdit / DDIM / DiffusionCLIP code).

    Only the variant with convolutional resampling and 1×1 ``nin_shortcut`` s is supported,
    which is what those checkpoints use. ``ch_mult[0]`` must be 1: that Model's first level
    reads ``ch`` channels from ``conv_in`` whatever ``ch_mult[0]`` says, a UNet2DModel reads
    ``ch · ch_mult[0]``.
    """

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    resolution: int = 256
    in_channels: int = 3
    out_channels: int = 3
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.ch_mult[0] != 1:
            raise ValueError(f"ch_mult must start with 1, got {self.ch_mult}")
        if self.ch % 32:
            raise ValueError(
                f"ch must be a multiple of 32 (GroupNorm with 32 groups), got {self.ch}"
            )

    def level_resolution(self, level: int) -> int:
        return self.resolution // 2**level

    def level_has_attention(self, level: int) -> bool:
        return self.level_resolution(level) in self.attn_resolutions


CELEBA_HQ_ARCH = SDEditArch()


def build_unet(arch: SDEditArch = CELEBA_HQ_ARCH) -> UNet2DModel:
    """A randomly initialised ``UNet2DModel`` computing exactly what ``arch``'s Model computes.

    The choices that make the two agree:
    - ``flip_sin_to_cos=False, freq_shift=1``: the DDPM timestep embedding is [sin, cos] with
      frequencies exp(−ln(10000)·k / (half − 1));
    - ``downsample_padding=0``: diffusers then pads (0, 1, 0, 1) and convolves with stride 2 and
      no padding, the DDPM ``Downsample``;
    - ``attention_head_dim=None``: one attention head over all channels, scaled by C^−½;
    - GroupNorm with 32 groups and eps 1e-6, SiLU, ``resnet_time_scale_shift="default"``
      (the time embedding is added, not used as scale and shift).
    """
    levels = range(len(arch.ch_mult))
    down = tuple(
        "AttnDownBlock2D" if arch.level_has_attention(i) else "DownBlock2D" for i in levels
    )
    up = tuple(
        "AttnUpBlock2D" if arch.level_has_attention(i) else "UpBlock2D" for i in reversed(levels)
    )
    return UNet2DModel(
        sample_size=arch.resolution,
        in_channels=arch.in_channels,
        out_channels=arch.out_channels,
        time_embedding_type="positional",
        flip_sin_to_cos=False,
        freq_shift=1,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(arch.ch * m for m in arch.ch_mult),
        layers_per_block=arch.num_res_blocks,
        downsample_padding=0,
        dropout=arch.dropout,
        act_fn="silu",
        attention_head_dim=None,
        norm_num_groups=32,
        norm_eps=1e-6,
        resnet_time_scale_shift="default",
    )


# --- SDEdit checkpoint → UNet2DModel -------------------------------------------------------------

# (source module, target module, 1×1 conv that becomes a Linear)
_Module = tuple[str, str, bool]


def _resnet(src: str, dst: str, in_ch: int, out_ch: int) -> list[_Module]:
    mods = [
        (f"{src}.{a}", f"{dst}.{b}", False)
        for a, b in (
            ("norm1", "norm1"),
            ("conv1", "conv1"),
            ("temb_proj", "time_emb_proj"),
            ("norm2", "norm2"),
            ("conv2", "conv2"),
        )
    ]
    if in_ch != out_ch:
        mods.append((f"{src}.nin_shortcut", f"{dst}.conv_shortcut", False))
    return mods


def _attn(src: str, dst: str) -> list[_Module]:
    return [(f"{src}.norm", f"{dst}.group_norm", False)] + [
        (f"{src}.{a}", f"{dst}.{b}", True)
        for a, b in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0"))
    ]


def _sdedit_modules(arch: SDEditArch) -> list[_Module]:
    """Every weight-carrying module of ``arch``'s Model with its UNet2DModel counterpart.

    Walks the Model's construction (channel bookkeeping included, to know which residual
    blocks carry a ``nin_shortcut``). Its ``up`` list is indexed by resolution level, 0 being
    the finest, while diffusers' ``up_blocks`` run in execution order, coarsest first.
    """
    n = len(arch.ch_mult)
    mods: list[_Module] = [
        ("temb.dense.0", "time_embedding.linear_1", False),
        ("temb.dense.1", "time_embedding.linear_2", False),
        ("conv_in", "conv_in", False),
    ]
    block_in = arch.ch
    skips = [arch.ch]
    for i in range(n):
        block_out = arch.ch * arch.ch_mult[i]
        for j in range(arch.num_res_blocks):
            mods += _resnet(
                f"down.{i}.block.{j}", f"down_blocks.{i}.resnets.{j}", block_in, block_out
            )
            if arch.level_has_attention(i):
                mods += _attn(f"down.{i}.attn.{j}", f"down_blocks.{i}.attentions.{j}")
            block_in = block_out
            skips.append(block_in)
        if i != n - 1:
            mods.append(
                (f"down.{i}.downsample.conv", f"down_blocks.{i}.downsamplers.0.conv", False)
            )
            skips.append(block_in)
    mods += _resnet("mid.block_1", "mid_block.resnets.0", block_in, block_in)
    mods += _attn("mid.attn_1", "mid_block.attentions.0")
    mods += _resnet("mid.block_2", "mid_block.resnets.1", block_in, block_in)
    for i in reversed(range(n)):
        k = n - 1 - i
        block_out = arch.ch * arch.ch_mult[i]
        for j in range(arch.num_res_blocks + 1):
            skip = skips.pop()
            mods += _resnet(
                f"up.{i}.block.{j}", f"up_blocks.{k}.resnets.{j}", block_in + skip, block_out
            )
            if arch.level_has_attention(i):
                mods += _attn(f"up.{i}.attn.{j}", f"up_blocks.{k}.attentions.{j}")
            block_in = block_out
        if i != 0:
            mods.append((f"up.{i}.upsample.conv", f"up_blocks.{k}.upsamplers.0.conv", False))
    mods += [("norm_out", "conv_norm_out", False), ("conv_out", "conv_out", False)]
    return mods


def _listing(keys: list[str], limit: int = 20) -> str:
    more = f" … and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def convert_sdedit_ckpt(
    state_dict: Mapping[str, torch.Tensor], arch: SDEditArch = CELEBA_HQ_ARCH
) -> UNet2DModel:
    """Build a ``UNet2DModel`` holding the weights of a pytorch_diffusion ``Model`` state dict.

    Renames every tensor and turns the 1×1 attention convolutions into Linear weights. Keys the
    layout does not have, keys it lacks and shape mismatches raise :class:`ScoreModelError`
    naming them. A ``module.`` prefix on every key (a checkpoint saved from ``DataParallel``,
    as DiffusionCLIP's fine-tuned models are) is dropped first.
    """
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    plan = {
        f"{src}.{p}": (f"{dst}.{p}", linear and p == "weight")
        for src, dst, linear in _sdedit_modules(arch)
        for p in ("weight", "bias")
    }
    missing = sorted(set(plan) - set(state_dict))
    unknown = sorted(set(state_dict) - set(plan))
    if missing or unknown:
        raise ScoreModelError(
            f"state dict does not match the DDPM Model layout of {arch}: "
            f"missing keys [{_listing(missing)}]; unknown keys [{_listing(unknown)}]"
        )
    unet = build_unet(arch)
    target = unet.state_dict()
    converted: dict[str, torch.Tensor] = {}
    bad_shapes = []
    for key, (dst, to_linear) in plan.items():
        t = state_dict[key]
        if to_linear and t.dim() == 4:
            t = t.reshape(t.shape[0], t.shape[1])
        if t.shape != target[dst].shape:
            bad_shapes.append(f"{key} {tuple(t.shape)} (expected {tuple(target[dst].shape)})")
        converted[dst] = t
    if bad_shapes:
        raise ScoreModelError(f"tensor shapes do not match {arch}: {_listing(bad_shapes)}")
    unet.load_state_dict(converted, strict=True)
    return unet


def load_sdedit_ckpt(
    path: str | Path,
    arch: SDEditArch = CELEBA_HQ_ARCH,
    expected_sha256: str | None = CELEBA_HQ_SHA256,
) -> tuple[UNet2DModel, ScoreModelConfig]:
    """Load a pytorch_diffusion checkpoint (by default the paper's ``celeba_hq.ckpt``).

    The file's sha256 must equal ``expected_sha256``; ``None`` skips the check, for test files
    and for other checkpoints of this layout (e.g. DiffusionCLIP fine-tunes, with their ``arch``).
    The schedule is DDPM's linear one, which all of these checkpoints were trained with.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ScoreModelError(
            f"{path}: no such file. The paper's score network is {CELEBA_HQ_CKPT} from SDEdit / "
            f"DiffusionCLIP (455 MB, sha256 {CELEBA_HQ_SHA256}), mirrored in the {CELEBA_HQ_MIRROR}; "
            f"`pareidolia fetch paper-unet` downloads it into the cache (spec 'paper-ckpt:'), or "
            f"download it and pass its path as 'paper-ckpt:PATH', or load the same weights in "
            f"diffusers format as 'diffusers:{PAPER_HUB_ID}'."
        )
    if expected_sha256 is not None:
        actual = file_sha256(path)
        if actual != expected_sha256:
            raise ScoreModelError(
                f"{path}: sha256 is {actual}, expected {expected_sha256}: the file is truncated, "
                f"corrupt or a different checkpoint; download {CELEBA_HQ_CKPT} again"
            )
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a file it cannot unpickle safely
        raise ScoreModelError(f"{path}: not a loadable PyTorch state dict ({e})") from e
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise ScoreModelError(f"{path}: expected a state dict (a mapping of names to tensors)")
    unet = convert_sdedit_ckpt(state_dict, arch)
    return unet, ScoreModelConfig.of(unet, f"paper-ckpt:{path}", _PAPER_SCHEDULE)


# --- diffusers folders and hub ids ---------------------------------------------------------------


def _schedule(scheduler_config: Path | None, where: str) -> Mapping[str, Any]:
    """The linear schedule a diffusers scheduler config describes; DDPM's when there is none."""
    if scheduler_config is None:
        return _PAPER_SCHEDULE
    cfg = json.loads(scheduler_config.read_text())
    if cfg.get("beta_schedule", "linear") != "linear" or cfg.get("trained_betas") is not None:
        raise ScoreModelError(
            f"{where}: only the linear β schedule is supported, found {cfg.get('beta_schedule')!r}"
        )
    if cfg.get("prediction_type", "epsilon") != "epsilon":
        raise ScoreModelError(
            f"{where}: the network must predict ε, it predicts {cfg['prediction_type']!r}"
        )
    return {k: cfg.get(k, v) for k, v in _PAPER_SCHEDULE.items()}


def _load_folder(folder: Path) -> tuple[UNet2DModel, ScoreModelConfig]:
    unet_dir = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
    if not (unet_dir / "config.json").is_file():
        raise ScoreModelError(
            f"{folder}: not a diffusers model folder (no config.json, nor unet/config.json)"
        )
    try:
        unet = UNet2DModel.from_pretrained(unet_dir, low_cpu_mem_usage=False)
    except (OSError, ValueError) as e:
        raise ScoreModelError(f"{unet_dir}: cannot load the UNet ({e})") from e
    candidates = (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json")
    sched = next((p for p in candidates if p.is_file()), None)
    return unet, ScoreModelConfig.of(unet, f"diffusers:{folder}", _schedule(sched, str(folder)))


def _load_hub(
    repo_id: str, allow_download: bool, cache_dir: Path | None
) -> tuple[UNet2DModel, ScoreModelConfig]:
    from huggingface_hub import constants, hf_hub_download

    try:
        with warnings.catch_warnings():
            # diffusers passes an argument huggingface_hub has deprecated: not the user's concern
            warnings.filterwarnings(
                "ignore", message=".*local_dir_use_symlinks", category=UserWarning
            )
            unet = UNet2DModel.from_pretrained(
                repo_id,
                subfolder="unet",
                local_files_only=not allow_download,
                cache_dir=cache_dir,
                low_cpu_mem_usage=False,
            )
        sched = hf_hub_download(
            repo_id,
            "scheduler/scheduler_config.json",
            cache_dir=cache_dir,
            local_files_only=not allow_download,
        )
    except OSError as e:
        cache = cache_dir or constants.HF_HUB_CACHE
        how = (
            "the download failed"
            if allow_download
            else f"it is not in the Hugging Face cache ({cache}) and downloading is off"
        )
        raise ScoreModelError(
            f"{repo_id}: {how}. Fetch unet/config.json, unet/diffusion_pytorch_model.safetensors "
            f"(or .bin) and scheduler/scheduler_config.json from https://huggingface.co/{repo_id} "
            f"into a folder, keeping the unet/ and scheduler/ subfolders, and pass that folder; "
            f"or allow the download (about 455 MB for {PAPER_HUB_ID}). Cause: {_one_line(e)}"
        ) from e
    return unet, ScoreModelConfig.of(unet, f"diffusers:{repo_id}", _schedule(Path(sched), repo_id))


def _one_line(e: BaseException, limit: int = 300) -> str:
    """``e``'s message on one line, at most ``limit`` characters (hub errors span many)."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_diffusers(
    path_or_hub_id: str | Path, allow_download: bool = False, cache_dir: str | Path | None = None
) -> tuple[UNet2DModel, ScoreModelConfig]:
    """Load a ``UNet2DModel`` from a local diffusers folder or a hub id.

    A folder may be a pipeline (``unet/`` and ``scheduler/`` subfolders) or a bare UNet folder
    (``config.json`` + weights, optionally ``scheduler_config.json``; without one the DDPM
    linear schedule is assumed). A hub id must have the pipeline layout (as
    ``google/ddpm-celebahq-256`` does); it is read from the Hugging Face cache (``cache_dir``,
    default the HF cache) and downloaded into it only when ``allow_download`` is true.
    """
    folder = Path(path_or_hub_id).expanduser()
    if folder.is_dir():
        return _load_folder(folder)
    ref = str(path_or_hub_id)
    if not _HUB_ID.match(ref):
        raise ScoreModelError(f"{ref}: no such folder, and not a hub id of the form owner/name")
    return _load_hub(ref, allow_download, Path(cache_dir) if cache_dir else None)


# --- one string for any source -------------------------------------------------------------------

Loader = Callable[[str, bool], tuple[UNet2DModel, ScoreModelConfig]]


def load_fetched_paper_ckpt() -> tuple[UNet2DModel, ScoreModelConfig]:
    """The paper's ``celeba_hq.ckpt`` from the cache folder, its source the portable spec
    :data:`FETCHED_PAPER_SPEC`; one line naming ``pareidolia fetch paper-unet`` when it is
    not there."""
    path, _ = fetched(PAPER_UNET)
    unet, config = load_sdedit_ckpt(path)
    return unet, replace(config, source=FETCHED_PAPER_SPEC)


# Scheme → loader. ``prior:FOLDER`` is the project's own offline face prior (``prior:`` alone:
# the one shipped in the package); ``paper-ckpt:`` alone, the fetched paper network.
SCORE_MODEL_SCHEMES: dict[str, Loader] = {
    "paper-ckpt": lambda ref, allow_download: (
        load_sdedit_ckpt(ref) if ref else load_fetched_paper_ckpt()
    ),
    "diffusers": lambda ref, allow_download: load_diffusers(ref, allow_download),
    "prior": lambda ref, allow_download: load_prior_spec(ref),
}


def load_score_model(
    spec: str, allow_download: bool = False
) -> tuple[UNet2DModel, ScoreModelConfig]:
    """Load the score network named by ``spec``: ``SCHEME:REF`` with a scheme of
    :data:`SCORE_MODEL_SCHEMES` (``paper-ckpt:PATH``, ``diffusers:FOLDER_OR_HUB_ID``,
    ``prior:FOLDER``), or a bare folder / hub id, read as ``diffusers:``."""
    scheme, sep, ref = canonical_spec(spec).partition(":")
    if sep and scheme in SCORE_MODEL_SCHEMES:
        return SCORE_MODEL_SCHEMES[scheme](ref, allow_download)
    return load_diffusers(spec, allow_download)


SHIPPED_PRIOR_SPEC = "prior:"
"""The spec of the offline prior shipped in the package (the default ``--model``)."""


def canonical_spec(spec: str) -> str:
    """``spec`` with the shipped prior's spellings (``prior``, ``prior:``, ``prior:default``,
    ``prior:`` + the shipped folder) made one, :data:`SHIPPED_PRIOR_SPEC`, and ``paper`` said
    as :data:`FETCHED_PAPER_SPEC`, so networks loaded once per spec are loaded once for all of
    them."""
    from pareidolia.diffusion.prior import SHIPPED_PRIOR_DIR

    spec = spec.strip()
    if spec in ("prior", "prior:", "prior:default"):
        return SHIPPED_PRIOR_SPEC
    if spec == "paper":
        return FETCHED_PAPER_SPEC
    scheme, _, ref = spec.partition(":")
    if scheme == "prior" and Path(ref).expanduser().resolve() == SHIPPED_PRIOR_DIR.resolve():
        return SHIPPED_PRIOR_SPEC
    return spec


def recorded_spec(source: str) -> str:
    """The spec to load the base network a protector records as its ``source`` (its
    :attr:`ScoreModelConfig.source`): the source itself, except that a ``prior:`` folder that
    is not on this machine (the shipped prior of another installation) is the shipped prior,
    and a ``paper-ckpt:`` file that is not on this machine is the fetched one; the protector's
    base-network hash then decides whether it is the same network."""
    spec = canonical_spec(source)
    scheme, _, ref = spec.partition(":")
    if scheme == "prior" and ref and not Path(ref).expanduser().is_dir():
        return SHIPPED_PRIOR_SPEC
    if scheme == "paper-ckpt" and ref and not Path(ref).expanduser().is_file():
        return FETCHED_PAPER_SPEC
    return spec


@functools.cache
def _shared(spec: str, device: torch.device) -> tuple[UNet2DModel, ScoreModelConfig]:
    unet, config = load_score_model(spec)
    return torch.nn.Module.to(unet.eval(), device), config  # diffusers types .to oddly


def shared_score_model(
    spec: str, device: torch.device | str = "cpu"
) -> tuple[UNet2DModel, ScoreModelConfig]:
    """The score network ``spec`` names (as :func:`load_score_model`, no download) on
    ``device``, loaded once per process, spec and device and shared: callers must not modify
    it (a protector tunes a copy; ``finetune`` leaves its base unchanged)."""
    return _shared(canonical_spec(spec), torch.device(device))
