"""Training the offline face prior: DDPM ε-matching on augmented faces, restricted to t ≤ t_max.

MAP only ever denoises from t ≤ t0 (at most 400 in the protector's sweeps), so the prior is
trained on t drawn uniformly from {0, …, t_max} (500 by default): all its capacity goes to the
noise levels that are used. Loss: ‖ε_θ(√ᾱ_t x + √(1−ᾱ_t) ε, t) − ε‖², AdamW with linear warm-up,
gradient clipping, and an exponential moving average (EMA) of the weights, which is what the
exported prior holds.

A run folder (``--out``) holds ``log.jsonl`` (one JSON line per ``log_every`` steps),
``checkpoint.pt`` (model, EMA, optimizer, step and every RNG state; written atomically every
``checkpoint_every`` steps, at the end and on Ctrl-C) and ``model/``, the exported prior. On
the CPU a resumed run reproduces the uninterrupted one bit for bit, log included: all
randomness comes from two generators whose states are checkpointed, and a Ctrl-C is only acted
on between steps. (On CUDA, cuDNN's kernels are not bitwise deterministic.)
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from diffusers.models.unets.unet_2d import UNet2DModel
from tqdm import tqdm

from pareidolia.diffusion.prior import save_prior
from pareidolia.diffusion.schedule import (
    PAPER_BETA_END,
    PAPER_BETA_START,
    PAPER_NUM_TRAIN_TIMESTEPS,
    alphas_cumprod,
    linear_betas,
)
from pareidolia.errors import OptionError, UserError
from pareidolia.prior.card import render_card
from pareidolia.prior.config import TrainConfig
from pareidolia.prior.data import NO_AUGMENT, Augment, FaceSampler
from pareidolia.prior.dcgan import load_generator
from pareidolia.prior.facesets import Faceset, ensure_faceset, load_faceset
from pareidolia.prior.model import build_prior_unet, parameter_count
from pareidolia.runtime import autocast, pick_device

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
MODEL_DIR = "model"


@dataclass
class TrainResult:
    """What a run did: steps reached, the exported prior's folder, per-step losses of this
    invocation, wall time and the device used."""

    step: int
    model_dir: Path
    losses: list[float]
    wall_s: float
    device: str


def _faceset(cfg: TrainConfig) -> Faceset:
    if cfg.data == "default":
        return ensure_faceset(Path(cfg.out) / "data")
    return load_faceset(cfg.data)


@contextmanager
def _deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Turn the first Ctrl-C into a flag the loop checks between steps (so a checkpoint never
    holds a half-applied optimizer step); a second Ctrl-C interrupts at once."""
    requested = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal requested
        if requested:
            raise KeyboardInterrupt
        requested = True
        print(
            "\ninterrupt: saving a checkpoint after this step (Ctrl-C again to abort)",
            file=sys.stderr,
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: requested
    finally:
        signal.signal(signal.SIGINT, previous)


def _save_atomic(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.part")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _trim_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint a run resumes from)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text("".join(f"{ln}\n" for ln in keep))
    os.replace(tmp, path)


class _Run:
    """The state of one training run: networks, optimizer, generators, step."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        torch.manual_seed(cfg.seed)
        # diffusers' decorated ``.to`` confuses mypy about its argument
        self.unet: UNet2DModel = build_prior_unet(cfg.arch).to(device)  # type: ignore[arg-type]
        self.ema: UNet2DModel = copy.deepcopy(self.unet).requires_grad_(False).eval()
        self.opt = torch.optim.AdamW(
            self.unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.rng = np.random.default_rng(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.wall_s = 0.0  # training time over every invocation of the run
        self.window: list[float] = []  # losses since the last log line
        ac = alphas_cumprod(
            linear_betas(PAPER_BETA_START, PAPER_BETA_END, PAPER_NUM_TRAIN_TIMESTEPS)
        )
        self.sqrt_ac = ac.sqrt().float().to(device)
        self.sqrt_1m_ac = (1.0 - ac).sqrt().float().to(device)

    def state(self) -> dict[str, Any]:
        return {
            "config": asdict(self.cfg),
            "step": self.step,
            "wall_s": self.wall_s,
            "window": self.window,
            "unet": self.unet.state_dict(),
            "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": self.gen.get_state(),
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        self.unet.load_state_dict(ckpt["unet"])
        self.ema.load_state_dict(ckpt["ema"])
        self.opt.load_state_dict(ckpt["opt"])
        self.rng.bit_generator.state = ckpt["numpy_rng"]
        self.gen.set_state(ckpt["torch_rng"].cpu())  # map_location may have moved it
        self.step = int(ckpt["step"])
        self.wall_s = float(ckpt["wall_s"])
        self.window = list(ckpt["window"])

    def lr_at(self, step: int) -> float:
        return self.cfg.lr * min(1.0, (step + 1) / max(1, self.cfg.warmup))

    def train_step(self, sampler: FaceSampler) -> tuple[float, float]:
        """One optimizer step; returns (loss, gradient norm before clipping)."""
        cfg = self.cfg
        x0 = sampler.batch(cfg.batch, self.rng, self.gen).to(self.device)
        t = torch.randint(0, cfg.t_max + 1, (cfg.batch,), generator=self.gen)
        noise = torch.randn(x0.shape, generator=self.gen).to(self.device)
        t = t.to(self.device)
        xt = self.sqrt_ac[t].view(-1, 1, 1, 1) * x0 + self.sqrt_1m_ac[t].view(-1, 1, 1, 1) * noise
        with autocast(self.device, torch.bfloat16 if cfg.bf16 else torch.float32):
            pred = self.unet(xt, t).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.unet.parameters(), cfg.grad_clip)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.opt.step()
        self._update_ema()
        self.step += 1
        return loss.item(), norm.item()

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Warm-up of the decay so a short run's EMA is not dominated by the random init.
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        for e, p in zip(self.ema.parameters(), self.unet.parameters(), strict=True):
            e.lerp_(p, 1.0 - decay)


def _final_loss(log_path: Path, step: int, window: int = 100) -> float | None:
    """Mean logged loss over the last ``window`` steps of the run (all invocations)."""
    rows = [json.loads(ln) for ln in log_path.read_text().splitlines() if ln]
    tail = [r["loss"] for r in rows if r["step"] > step - window] or [r["loss"] for r in rows[-1:]]
    return round(float(np.mean(tail)), 5) if tail else None


def _provenance(
    cfg: TrainConfig, faceset: Faceset, run: _Run, log_path: Path, command: str
) -> dict[str, Any]:
    """The ``training`` and ``data`` records of the exported prior's config.json."""
    train_faces = [e for e in faceset.manifest["faces"] if e["split"] == "train"]
    sources = sorted(
        {(e["source"]["path"], e["source"]["sha256"], e["source"]["licence"]) for e in train_faces}
    )
    device = torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else "cpu"
    return {
        "training": {
            "config": asdict(cfg),
            "steps_done": run.step,
            "wall_time_s": round(run.wall_s, 1),
            "device": device,
            "final_loss": _final_loss(log_path, run.step),
            "parameters": parameter_count(run.ema),
            "command": command,
            "torch": torch.__version__,
        },
        "data": {
            "real_train_faces": len(train_faces),
            "real_sources": [{"path": p, "sha256": s, "licence": lic} for p, s, lic in sources],
            "synthetic": faceset.manifest.get("dcgan") if cfg.synthetic_ratio > 0 else None,
            "split_rule": faceset.manifest.get("split_rule"),
        },
    }


def _sampler(cfg: TrainConfig, faceset: Faceset, device: torch.device) -> FaceSampler:
    dcgan_path = faceset.dcgan_path if cfg.synthetic_ratio > 0 else None
    if cfg.synthetic_ratio > 0 and dcgan_path is None:
        raise OptionError(
            f"{faceset.root}: the face set has no DCGAN copy; set {{synthetic_ratio}} to 0",
            "synthetic_ratio",
        )
    return FaceSampler(
        [crop for _, crop in faceset.faces("train")],
        cfg.arch.resolution,
        load_generator(dcgan_path, device) if dcgan_path is not None else None,
        cfg.synthetic_ratio,
        Augment() if cfg.augment else NO_AUGMENT,
        device,
    )


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    command: str = "",
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Run (or, with ``resume``, continue) training and export the EMA prior to ``OUT/model``.

    ``on_step(step, loss)`` is called after every step (a hook for callers and tests). A Ctrl-C
    saves a checkpoint after the current step and re-raises :class:`KeyboardInterrupt`.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out / CHECKPOINT, out / LOG
    if ckpt_path.exists() and not resume:
        raise OptionError(
            f"{ckpt_path}: a run is already there; pass {{resume}} to continue it, or another "
            "{out}",
            "resume",
            "out",
        )
    if resume and not ckpt_path.exists():
        raise UserError(f"{ckpt_path}: nothing to resume")
    if cfg.t_max >= PAPER_NUM_TRAIN_TIMESTEPS:
        raise OptionError(
            f"{{t_max}} must be below T = {PAPER_NUM_TRAIN_TIMESTEPS}, got {cfg.t_max}", "t_max"
        )
    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    faceset = _faceset(cfg)
    sampler = _sampler(cfg, faceset, device)
    run = _Run(cfg, device)
    if resume:
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        bad = cfg.resumable_from(TrainConfig.from_dict(ckpt["config"]))
        if bad:
            raise UserError(f"{ckpt_path}: cannot resume with a different {', '.join(bad)}")
        run.restore(ckpt)
    _trim_log(log_path, run.step)
    losses: list[float] = []
    start, wall0 = time.monotonic(), run.wall_s

    def save() -> None:
        run.wall_s = wall0 + time.monotonic() - start
        _save_atomic(run.state(), ckpt_path)

    bar = tqdm(
        total=cfg.steps, initial=run.step, disable=not progress, unit="step", dynamic_ncols=True
    )
    try:
        with _deferred_interrupt() as interrupted, open(log_path, "a") as log:
            while run.step < cfg.steps:
                run.unet.train()
                loss, norm = run.train_step(sampler)
                losses.append(loss)
                run.window.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if on_step is not None:
                    on_step(run.step, loss)
                if run.step % cfg.log_every == 0 or run.step == cfg.steps:
                    elapsed = time.monotonic() - start
                    row = {
                        "step": run.step,
                        "loss": round(float(np.mean(run.window)), 6),
                        "grad_norm": round(norm, 4),
                        "lr": run.lr_at(run.step - 1),
                        "elapsed_s": round(wall0 + elapsed, 2),
                        "steps_per_s": round(len(losses) / max(elapsed, 1e-9), 3),
                    }
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    run.window = []
                if interrupted():
                    save()
                    print(
                        f"{ckpt_path}: saved at step {run.step}; continue with --resume",
                        file=sys.stderr,
                    )
                    raise KeyboardInterrupt
                if run.step % cfg.checkpoint_every == 0:
                    save()
                if cfg.max_minutes is not None and time.monotonic() - start > 60 * cfg.max_minutes:
                    break
    finally:
        bar.close()
    save()
    info = _provenance(cfg, faceset, run, log_path, command)
    model_dir = save_prior(out / MODEL_DIR, run.ema, info, render_card(info, None))
    return TrainResult(run.step, model_dir, losses, run.wall_s, str(device))
