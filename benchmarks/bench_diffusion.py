"""Speed and peak memory of the score network and of the DDIM passes MAP runs through it.

Measures, per architecture (random weights; speed does not depend on them):
- ``forward``: one UNet call without autograd;
- ``forward+backward``: one UNet call and the backward pass of a scalar loss to every weight;
- ``protect``: protecting a face: inversion (``--n-inv`` grid points, frozen network) then
  generation (``--n-gen`` grid points), no autograd;
- ``finetune-step``: one training step's generation (``--n-gen`` grid points, per-step
  checkpointing) and its backward pass to every weight; the loss networks are not included.

Peak memory is CUDA's ``max_memory_allocated`` on a GPU, and the process's peak resident set
(``VmHWM``, reset before each measure through ``/proc/self/clear_refs``) on a CPU: the whole
process (libraries, weights, the allocator's reserve) and therefore an upper bound; run one
``--measures`` per process for the cleanest CPU numbers.

    python benchmarks/bench_diffusion.py --device cpu --repeats 1 --out bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers.models.unets.unet_2d import UNet2DModel

from pareidolia.diffusion.ddim import generate, invert, timestep_grid, unet_eps
from pareidolia.diffusion.models import CELEBA_HQ_ARCH, SDEditArch, build_unet
from pareidolia.diffusion.schedule import alphas_cumprod, linear_betas
from pareidolia.prior.model import build_prior_unet

_SMALL = SDEditArch(
    ch=64, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,), resolution=128
)
ARCHS: dict[str, Callable[[], UNet2DModel]] = {
    "paper": lambda: build_unet(CELEBA_HQ_ARCH),  # celeba_hq.ckpt / ddpm-celebahq-256: 113.7 M
    "small": lambda: build_unet(_SMALL),
    "prior": build_prior_unet,  # the shipped offline prior's architecture (128 px)
}


@dataclass
class Row:
    """One measure of one architecture."""

    arch: str
    parameters: int
    measure: str
    unet_calls: int
    seconds: list[float]
    peak_mib: float | None

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)


MEASURES = ("forward", "forward+backward", "protect", "finetune-step")


class PeakMemory:
    """Peak memory of one measure, in MiB, on CUDA or (Linux) CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            # Hand freed heap back to the system (glibc), so the peak starts from what is live,
            # then reset the peak (Linux). Elsewhere the peak covers the whole run so far.
            gc.collect()
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")

    def read(self) -> float | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None


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


def bench_arch(name: str, args: argparse.Namespace, device: torch.device) -> list[Row]:
    """All measures of one architecture."""
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    unet = ARCHS[name]().to(device)
    if dtype != torch.float32:
        unet = unet.to(dtype)
    params = sum(p.numel() for p in unet.parameters())
    eps = unet_eps(unet)
    ac = alphas_cumprod(linear_betas(1e-4, 0.02, 1000))
    size = int(unet.config["sample_size"])
    x = (
        torch.rand(args.batch, unet.config["in_channels"], size, size, device=device, dtype=dtype)
        * 2
        - 1
    )
    t = torch.full((args.batch,), args.t0, dtype=torch.long, device=device)
    latent = torch.randn_like(x)  # speed does not depend on the latent's values

    def forward() -> None:
        with torch.no_grad():
            eps(x, t)

    def forward_backward() -> None:
        unet.zero_grad(set_to_none=True)
        eps(x, t).float().square().mean().backward()

    def protect() -> None:
        with torch.no_grad():
            generate(eps, ac, invert(eps, ac, x, args.t0, args.n_inv), args.t0, args.n_gen)

    def finetune_step() -> None:
        unet.zero_grad(set_to_none=True)
        y = generate(eps, ac, latent, args.t0, args.n_gen, checkpoint=True)
        y.float().square().mean().backward()

    inv_calls = len(timestep_grid(args.t0, args.n_inv)) - 1
    gen_calls = len(timestep_grid(args.t0, args.n_gen))
    cases: list[tuple[str, Callable[[], None], int, int, int]] = [
        # name, function, UNet calls, timed runs, warm-up runs
        ("forward", forward, 1, args.repeats, 1),
        ("forward+backward", forward_backward, 1, args.repeats, 1),
        ("protect", protect, inv_calls + gen_calls, args.pass_repeats, 0),
        ("finetune-step", finetune_step, gen_calls, args.pass_repeats, 0),
    ]
    mem = PeakMemory(device)
    rows = []
    for measure_name, fn, calls, repeats, warmup in cases:
        if measure_name not in args.measures:
            continue
        seconds, peak = measure(fn, repeats, warmup, device, mem)
        rows.append(Row(name, params, measure_name, calls, seconds, peak))
        print(
            f"  {name} {measure_name}: {rows[-1].median_s:.3f} s, peak {peak} MiB", file=sys.stderr
        )
    return rows


def markdown(rows: list[Row], env: dict[str, object]) -> str:
    """The results as a markdown table under a line describing the run."""
    lines = [
        f"device {env['device_name']}, {env['dtype']}, batch {env['batch']}, t0 {env['t0']}, "
        f"torch {env['torch']}, {env['threads']} threads, load average {env['load_average_at_start']}",
        "",
        "| arch | params (M) | measure | UNet calls | median s | min s | median s per call | peak MiB |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        peak = "n/a" if r.peak_mib is None else f"{r.peak_mib:.0f}"
        lines.append(
            f"| {r.arch} | {r.parameters / 1e6:.1f} | {r.measure} | {r.unet_calls} "
            f"| {r.median_s:.3f} | {min(r.seconds):.3f} | {r.median_s / r.unet_calls:.3f} | {peak} |"
        )
    return "\n".join(lines) + "\n"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device(name)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--archs", nargs="+", choices=sorted(ARCHS), default=["paper"])
    p.add_argument("--repeats", type=int, default=3, help="timed runs of forward, forward+backward")
    p.add_argument(
        "--pass-repeats", type=int, default=1, help="timed runs of protect, finetune-step"
    )
    p.add_argument("--measures", nargs="+", choices=MEASURES, default=list(MEASURES))
    p.add_argument("--t0", type=int, default=60)
    p.add_argument("--n-inv", type=int, default=20)
    p.add_argument("--n-gen", type=int, default=6)
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)

    device = pick_device(args.device)
    env = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({os.cpu_count()} cores)",
        "dtype": args.dtype,
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
    print(markdown(rows, env))
    if args.out:
        results = [
            {**asdict(r), "median_s": r.median_s, "arch_config": dict(ARCHS[r.arch]().config)}
            for r in rows
        ]
        args.out.write_text(json.dumps({"env": env, "results": results}, indent=2))


if __name__ == "__main__":
    main()
