"""Speed and peak memory of the score network and of the DDIM passes MAP runs through it.

Measures, per architecture (random weights; speed does not depend on them), compute dtype
(``--dtype``: float32, or bfloat16 autocast as ``pareidolia --dtype bfloat16`` runs it) and
gradient checkpointing (``--grad-checkpoint off on``: as ``pareidolia train --grad-checkpoint``,
per generation step and the UNet's own per-block checkpointing):
- ``forward``: one UNet call without autograd;
- ``forward+backward``: one UNet call and the backward pass of a scalar loss to every weight;
- ``protect``: protecting a face: inversion (``--n-inv`` grid points, frozen network) then
  generation (``--n-gen`` grid points), no autograd;
- ``finetune-step``: one training step's generation (``--n-gen`` grid points) and its backward
  pass to every weight; the loss networks are not included;
- ``train-step``: one whole MAP training step (:func:`pareidolia.protector.finetune` on random
  256 px faces: generation, the default objectives with the offline zoo's models, their
  backward pass, the projection, Adam and the EMA), timed from the run's log after one warm-up
  step.

``forward`` and ``protect`` run without autograd, where checkpointing changes nothing: they are
measured with the first ``--grad-checkpoint`` setting only. After the table per measure comes
one per configuration: seconds per face of a training step and of protecting, and their peaks.

Peak memory is CUDA's ``max_memory_allocated`` on a GPU (everything allocated, the weights
included), and on a CPU the growth of the process's resident set during the measure: the peak
(``VmHWM``, reset before each measure through ``/proc/self/clear_refs``, after freed heap is
handed back with ``malloc_trim``) minus the resident set at that reset (Linux only).

    python benchmarks/bench_diffusion.py --device cpu --archs prior --threads 1 --out bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.models.unets.unet_2d import UNet2DModel

from pareidolia.diffusion.ddim import generate, invert, timestep_grid, unet_eps
from pareidolia.diffusion.hashing import model_hash
from pareidolia.diffusion.models import CELEBA_HQ_ARCH, SDEditArch, build_unet
from pareidolia.diffusion.schedule import ScoreModelConfig, alphas_cumprod, linear_betas
from pareidolia.errors import OptionError
from pareidolia.prior.model import build_prior_unet
from pareidolia.protector import ProtectorConfig, finetune, iter_log
from pareidolia.runtime import WORKING_SIZE, dtype_name, pick_device, pick_dtype

_SMALL = SDEditArch(
    ch=64, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,), resolution=128
)
ARCHS: dict[str, Callable[[], UNet2DModel]] = {
    "paper": lambda: build_unet(CELEBA_HQ_ARCH),  # celeba_hq.ckpt / ddpm-celebahq-256: 113.7 M
    "small": lambda: build_unet(_SMALL),
    "prior": build_prior_unet,  # the shipped offline prior's architecture (128 px)
}
MEASURES = ("forward", "forward+backward", "protect", "finetune-step", "train-step")
NO_GRAD = ("forward", "protect")  # checkpointing changes nothing without autograd


@dataclass(frozen=True)
class Setting:
    """One configuration: the score network's compute dtype and gradient checkpointing."""

    dtype: torch.dtype
    grad_checkpoint: bool


@dataclass
class Row:
    """One measure of one architecture in one setting."""

    arch: str
    parameters: int
    dtype: str
    grad_checkpoint: bool
    measure: str
    unet_calls: int
    seconds: list[float]
    peak_mib: float | None

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)


def _status_mib(field: str) -> float | None:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory of one measure in MiB: CUDA's ``max_memory_allocated``, or on a (Linux) CPU
    the growth of the peak resident set over the resident set at :meth:`reset`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start_mib: float | None = None

    @property
    def what(self) -> str:
        """What :meth:`read` measures, for the tables."""
        if self.device.type == "cuda":
            return "CUDA max_memory_allocated (weights included)"
        return "CPU resident set growth (VmHWM after clear_refs, minus VmRSS at the start)"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        # Hand freed heap back to the system (glibc), so the peak starts from what is live,
        # then reset the peak (Linux).
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
        self.start_mib = _status_mib("VmRSS")

    def read(self) -> float | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        peak = _status_mib("VmHWM")
        return None if peak is None or self.start_mib is None else peak - self.start_mib


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    fn: Callable[[], object], repeats: int, warmup: int, device: torch.device, mem: PeakMemory
) -> tuple[list[float], float | None]:
    """Seconds of each of ``repeats`` timed calls of ``fn`` after ``warmup`` untimed ones, and the
    peak memory over the timed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    mem.reset()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds, mem.read()


def train_step(
    unet: UNet2DModel, args: argparse.Namespace, setting: Setting, mem: PeakMemory
) -> tuple[list[float], float | None]:
    """Seconds of each of ``--pass-repeats`` whole MAP training steps after one warm-up step
    (batches of random faces in one epoch, so no checkpoint is written between them; a step's
    time is the gap between its log record and the one before), and the peak memory over the
    run."""
    device = next(unet.parameters()).device
    g = torch.Generator().manual_seed(0)
    n = (1 + args.pass_repeats) * args.batch
    faces = torch.rand(n, 3, WORKING_SIZE, WORKING_SIZE, generator=g).to(device)
    target = torch.rand(1, 3, WORKING_SIZE, WORKING_SIZE, generator=g).to(device)
    size = int(unet.config["sample_size"])
    score_cfg = ScoreModelConfig(1e-4, 0.02, 1000, size, "bench", model_hash(unet))
    config = ProtectorConfig(
        t0=args.t0,
        n_inv=args.n_inv,
        n_gen=args.n_gen,
        epochs=1,
        batch=args.batch,
        checkpoint_gen=setting.grad_checkpoint,
    )
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        mem.reset()
        finetune(unet, score_cfg, faces, target, config, tmp, progress=False, dtype=setting.dtype)
        peak = mem.read()
        times = [float(r["time"]) for r in iter_log(tmp)]
    return [b - a for a, b in itertools.pairwise(times)], peak


def bench_setting(
    name: str, unet: UNet2DModel, args: argparse.Namespace, setting: Setting, first: bool
) -> list[Row]:
    """The measures of one architecture in one setting (those without autograd only when
    ``first``)."""
    device = next(unet.parameters()).device
    eps = unet_eps(unet, setting.dtype)
    ckpt = setting.grad_checkpoint
    ac = alphas_cumprod(linear_betas(1e-4, 0.02, 1000))
    size = int(unet.config["sample_size"])
    x = torch.rand(args.batch, unet.config["in_channels"], size, size, device=device) * 2 - 1
    t = torch.full((args.batch,), args.t0, dtype=torch.long, device=device)
    latent = torch.randn_like(x)  # speed does not depend on the latent's values

    def forward() -> None:
        with torch.no_grad():
            eps(x, t)

    def forward_backward() -> None:
        unet.zero_grad(set_to_none=True)
        eps(x, t).square().mean().backward()

    def protect() -> None:
        with torch.no_grad():
            generate(eps, ac, invert(eps, ac, x, args.t0, args.n_inv), args.t0, args.n_gen)

    def finetune_step() -> None:
        unet.zero_grad(set_to_none=True)
        generate(eps, ac, latent, args.t0, args.n_gen, checkpoint=ckpt).square().mean().backward()

    inv_calls = len(timestep_grid(args.t0, args.n_inv)) - 1
    gen_calls = len(timestep_grid(args.t0, args.n_gen))
    cases: list[tuple[str, Callable[[], None], int, int, int]] = [
        # name, function, UNet calls, timed runs, warm-up runs
        ("forward", forward, 1, args.repeats, 1),
        ("forward+backward", forward_backward, 1, args.repeats, 1),
        ("protect", protect, inv_calls + gen_calls, args.pass_repeats, 0),
        ("finetune-step", finetune_step, gen_calls, args.pass_repeats, 0),
    ]
    wanted = [m for m in args.measures if first or m not in NO_GRAD]
    mem = PeakMemory(device)
    results: list[tuple[str, int, list[float], float | None]] = []
    if ckpt:
        unet.enable_gradient_checkpointing()
    for measure_name, fn, calls, repeats, warmup in cases:
        if measure_name in wanted:
            results.append((measure_name, calls, *measure(fn, repeats, warmup, device, mem)))
    unet.disable_gradient_checkpointing()  # finetune switches it on its own copy
    if "train-step" in wanted:
        results.append(("train-step", gen_calls, *train_step(unet, args, setting, mem)))
    params = sum(p.numel() for p in unet.parameters())
    rows = [
        Row(name, params, dtype_name(setting.dtype), ckpt, m, calls, seconds, peak)
        for m, calls, seconds, peak in results
    ]
    for r in rows:
        what = f"{r.arch} {r.dtype} checkpoint {'on' if ckpt else 'off'} {r.measure}"
        print(f"  {what}: {r.median_s:.3f} s, peak {_mib(r.peak_mib)} MiB", file=sys.stderr)
    return rows


def bench_arch(name: str, args: argparse.Namespace, device: torch.device) -> list[Row]:
    """All measures of one architecture in every setting."""
    torch.manual_seed(0)
    unet = ARCHS[name]().to(device).eval()
    rows = []
    for dtype in args.dtypes:
        for i, ckpt in enumerate(args.grad_checkpoint):
            rows += bench_setting(name, unet, args, Setting(dtype, ckpt == "on"), first=i == 0)
    return rows


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _header(env: dict[str, Any]) -> str:
    return (
        f"device {env['device_name']}, batch {env['batch']}, t0 {env['t0']}, "
        f"torch {env['torch']}, {env['threads']} threads, load average "
        f"{env['load_average_at_start']}; peak MiB: {env['peak_memory']}"
    )


def markdown(rows: list[Row], env: dict[str, Any]) -> str:
    """The results per measure as a markdown table under a line describing the run."""
    lines = [
        _header(env),
        "",
        "| arch | params (M) | dtype | grad checkpoint | measure | UNet calls | median s | min s "
        "| median s per call | peak MiB |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ckpt = "on" if r.grad_checkpoint else "off"
        lines.append(
            f"| {r.arch} | {r.parameters / 1e6:.1f} | {r.dtype} | {ckpt} | {r.measure} "
            f"| {r.unet_calls} | {r.median_s:.3f} | {min(r.seconds):.3f} "
            f"| {r.median_s / r.unet_calls:.3f} | {_mib(r.peak_mib)} |"
        )
    return "\n".join(lines) + "\n"


def configurations(rows: list[Row], batch: int) -> list[dict[str, Any]]:
    """Per architecture, dtype and checkpointing: seconds per face of a whole training step
    (``train-step``) and of protecting (``protect``: measured once per dtype, no autograd),
    and their peak memory (None where not measured)."""

    def find(key: tuple[str, str, bool], measure: str) -> Row | None:
        arch, dtype, ckpt = key
        for r in rows:
            same = (r.arch, r.dtype, r.measure) == (arch, dtype, measure)
            if same and (measure in NO_GRAD or r.grad_checkpoint == ckpt):
                return r
        return None

    out = []
    for key in dict.fromkeys((r.arch, r.dtype, r.grad_checkpoint) for r in rows):
        train, protect = find(key, "train-step"), find(key, "protect")
        out.append(
            {
                "arch": key[0],
                "dtype": key[1],
                "grad_checkpoint": key[2],
                "train_step_s_per_face": train and train.median_s / batch,
                "protect_s_per_face": protect and protect.median_s / batch,
                "train_step_peak_mib": train and train.peak_mib,
                "protect_peak_mib": protect and protect.peak_mib,
            }
        )
    return out


def configurations_markdown(configs: list[dict[str, Any]], env: dict[str, Any]) -> str:
    """:func:`configurations` as a markdown table under the line describing the run."""
    lines = [
        _header(env),
        "",
        "| arch | dtype | grad checkpoint | train step s/face | protect s/face "
        "| peak MiB train step | peak MiB protect |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for c in configs:
        lines.append(
            f"| {c['arch']} | {c['dtype']} | {'on' if c['grad_checkpoint'] else 'off'} "
            f"| {_seconds(c['train_step_s_per_face'])} | {_seconds(c['protect_s_per_face'])} "
            f"| {_mib(c['train_step_peak_mib'])} | {_mib(c['protect_peak_mib'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="auto", help="auto (the default), cpu, cuda or cuda:N")
    p.add_argument(
        "--dtype", nargs="+", choices=("float32", "bfloat16"), default=["float32", "bfloat16"]
    )
    p.add_argument("--grad-checkpoint", nargs="+", choices=("off", "on"), default=["off", "on"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--archs", nargs="+", choices=sorted(ARCHS), default=["paper"])
    p.add_argument("--repeats", type=int, default=3, help="timed runs of forward, forward+backward")
    p.add_argument(
        "--pass-repeats",
        type=int,
        default=1,
        help="timed runs of protect, finetune-step and train-step",
    )
    p.add_argument("--measures", nargs="+", choices=MEASURES, default=list(MEASURES))
    p.add_argument("--t0", type=int, default=60)
    p.add_argument("--n-inv", type=int, default=20)
    p.add_argument("--n-gen", type=int, default=6)
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument(
        "--threads", type=int, help="torch threads (default torch's; 1 is steadier on busy cores)"
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        device = pick_device(args.device)
        args.dtypes = [pick_dtype(d, device) for d in args.dtype]
    except OptionError as e:
        raise SystemExit(e.worded({"device": "--device", "dtype": "--dtype"})) from None
    env = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({os.cpu_count()} cores)",
        "dtypes": args.dtype,
        "dtype_policy": "bfloat16: autocast around the UNet; weights and DDIM in float32",
        "grad_checkpoint": args.grad_checkpoint,
        "peak_memory": PeakMemory(device).what,
        "batch": args.batch,
        "t0": args.t0,
        "n_inv": args.n_inv,
        "n_gen": args.n_gen,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
    }
    rows = [r for name in args.archs for r in bench_arch(name, args, device)]
    configs = configurations(rows, args.batch)
    print(markdown(rows, env))
    print(configurations_markdown(configs, env))
    if args.out:
        results = [
            {**asdict(r), "median_s": r.median_s, "arch_config": dict(ARCHS[r.arch]().config)}
            for r in rows
        ]
        record = {"env": env, "results": results, "configurations": configs}
        args.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
