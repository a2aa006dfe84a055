"""``pareidolia prior``: build the face set, train the offline face prior, evaluate a prior.

- ``prior data --out DIR``: the aligned working crops of the project's face split
  (:mod:`pareidolia.prior.facesets`) plus the DCGAN copy, as a self-contained folder.
- ``prior train --out DIR``: train (or ``--resume``) a prior (:mod:`pareidolia.prior.train`),
  export it to ``DIR/model`` and, unless ``--no-eval``, evaluate it on the held-out faces and
  write the numbers into its model card.
- ``prior eval``: the DDIM round-trip report of any score network on the held-out faces
  (:mod:`pareidolia.prior.evaluation`).
"""

from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pareidolia.commands.options import (
    add_device_option,
    add_dtype_option,
    add_model_option,
    device_of,
    dtype_of,
)
from pareidolia.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from pareidolia.prior.config import TrainConfig

DEFAULT_SWEEP = "40,60,100,200,300,400"


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


# --- data ----------------------------------------------------------------------------------------


def _cmd_data(args: argparse.Namespace) -> int:
    from pareidolia.prior.facesets import load_faceset, make_faceset

    out = make_faceset(
        Path(args.out), Path(args.packages) if args.packages else None, not args.no_synthetic
    )
    faceset = load_faceset(out)
    counts = {
        s: sum(e["split"] == s for e in faceset.manifest["faces"]) for s in ("train", "heldout")
    }
    print(
        f"{out}: {counts['train']} training faces, {counts['heldout']} held-out faces, manifest.json"
    )
    return 0


# --- train ---------------------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> TrainConfig:
    from pareidolia.prior.config import PriorArch, TrainConfig

    try:
        arch = PriorArch(
            resolution=args.resolution,
            block_out_channels=args.channels,
            layers_per_block=args.layers_per_block,
            norm_num_groups=args.norm_groups,
            attention_head_dim=args.head_dim,
        )
    except ValueError as e:
        raise UserError(f"architecture: {e}") from None
    return TrainConfig(
        out=args.out,
        data=args.data,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        warmup=args.warmup,
        ema_decay=args.ema_decay,
        t_max=args.t_max,
        synthetic_ratio=args.synthetic_ratio,
        augment=not args.no_augment,
        arch=arch,
        seed=args.seed,
        device=args.device,
        bf16=_bf16(args),
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        max_minutes=args.max_minutes,
    )


def _bf16(args: argparse.Namespace) -> bool:
    """Whether ``--dtype`` asks for bfloat16 autocast on ``--device`` (one line, exit 2, where
    that device cannot)."""
    import torch

    return dtype_of(args, device_of(args)) == torch.bfloat16


def command_line(cfg: TrainConfig) -> str:
    """The ``pareidolia prior train`` command that reproduces ``cfg`` (every setting that
    differs from the defaults, spelled out)."""
    from pareidolia.prior.config import PriorArch, TrainConfig

    flags = {
        "data": "--data", "steps": "--steps", "batch": "--batch", "lr": "--lr",
        "warmup": "--warmup", "ema_decay": "--ema-decay", "t_max": "--t-max",
        "synthetic_ratio": "--synthetic-ratio", "seed": "--seed", "device": "--device",
        "checkpoint_every": "--checkpoint-every", "log_every": "--log-every",
        "max_minutes": "--max-minutes",
    }  # fmt: skip
    arch_flags = {
        "resolution": "--resolution", "block_out_channels": "--channels",
        "layers_per_block": "--layers-per-block", "norm_num_groups": "--norm-groups",
        "attention_head_dim": "--head-dim",
    }  # fmt: skip
    default, default_arch = TrainConfig(out=cfg.out), PriorArch()
    words = ["pareidolia", "prior", "train", "--out", cfg.out]
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in flags and value != getattr(default, f.name):
            words += [flags[f.name], str(value)]
    for name, flag in arch_flags.items():
        value = getattr(cfg.arch, name)
        if value != getattr(default_arch, name):
            words += [flag, ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    words += ["--no-augment"] if not cfg.augment else []
    words += ["--dtype", "bfloat16"] if cfg.bf16 else []
    return shlex.join(words)


def _cmd_train(args: argparse.Namespace) -> int:
    from pareidolia.diffusion.prior import load_prior
    from pareidolia.prior.facesets import load_faceset
    from pareidolia.prior.model import parameter_count
    from pareidolia.prior.train import train

    cfg = _config(args)
    result = train(cfg, resume=args.resume, progress=not args.quiet, command=command_line(cfg))
    unet, _ = load_prior(result.model_dir)
    print(
        f"{result.model_dir}: prior at step {result.step} ({parameter_count(unet):,} parameters, "
        f"{result.wall_s:.0f} s on {result.device})"
    )
    if not args.no_eval:
        data = Path(cfg.out) / "data" if cfg.data == "default" else Path(cfg.data)
        faces = load_faceset(data).faces("heldout")
        report = _evaluate(
            f"prior:{result.model_dir}", faces, args.eval_t0, _ints(DEFAULT_SWEEP), cfg.device
        )
        _write_card(result.model_dir, report)
        print(render_report(report))
    return 0


# --- eval ----------------------------------------------------------------------------------------


def _faces(spec: str | None, packages: str | None) -> list[tuple[str, np.ndarray]]:
    """Held-out faces: a face set folder's held-out split, a folder of crops, or (default) the
    held-out split built from the photos."""
    from pareidolia.io import iter_image_files, read_photo
    from pareidolia.prior.facesets import MANIFEST, build_faces, load_faceset

    if spec is None:
        return [
            (f.name, f.crop) for f in build_faces(["heldout"], Path(packages) if packages else None)
        ]
    folder = Path(spec)
    if (folder / MANIFEST).is_file():
        return load_faceset(folder).faces("heldout")
    files = iter_image_files([folder]) if folder.is_dir() else []
    if not files:
        raise UserError(f"{folder}: no face set (manifest.json) and no images of aligned crops")
    return [(p.stem, read_photo(p).rgb) for p in files]


def _evaluate(
    model: str, faces: list[tuple[str, np.ndarray]], t0: int, sweep: tuple[int, ...], device: str
) -> dict[str, Any]:
    from pareidolia.diffusion.models import load_score_model
    from pareidolia.prior.evaluation import EvalSettings, evaluate
    from pareidolia.runtime import pick_device

    unet, config = load_score_model(model)
    unet = unet.to(pick_device(device))  # type: ignore[arg-type]
    return evaluate(unet, config, faces, EvalSettings(t0=t0), sweep)


def _write_card(folder: Path, report: dict[str, Any]) -> None:
    from pareidolia.diffusion.prior import CARD, read_config
    from pareidolia.io import atomic_write_bytes
    from pareidolia.prior.card import render_card

    info = read_config(folder)
    atomic_write_bytes(folder / "eval.json", json.dumps(report, indent=2).encode(), overwrite=True)
    atomic_write_bytes(folder / CARD, render_card(info, report).encode(), overwrite=True)


def render_report(report: dict[str, Any]) -> str:
    """A readable table of an evaluation report (``noised``: PSNR of the SDEdit round trip)."""
    s = report["summary"]
    models = list(s["fr_pass_rate"])
    fr_head = " ".join(f"{m[:10]:>10}" for m in models)
    head = f"{'face':<24} {'PSNR':>6} {'SSIM':>6} {'noised':>6}  {fr_head}  expression"
    lines = [
        f"{report['model']} at {report['resolution']} px: invert {report['invert_steps']} steps to "
        f"t0 = {report['t0']}, generate {report['generate_steps']} steps; FR at FAR {report['far']}",
        head,
        "-" * len(head),
    ]
    for r in report["faces"]:
        fr = " ".join(
            f"{('ok ' if v['match'] else 'NO ') + format(v['score'], '.3f'):>10}"
            for v in r["fr"].values()
        )
        lines.append(
            f"{r['name'][:24]:<24} {r['psnr']:>6.2f} {r['ssim']:>6.3f} {r['noised_psnr']:>6.2f}  "
            f"{fr}  {r['expression_before']} -> {r['expression_after']}"
        )
    rates = " ".join(f"{s['fr_pass_rate'][m]:>10.2f}" for m in models)
    lines += [
        "-" * len(head),
        f"{'mean / pass rate':<24} {s['psnr_mean']:>6.2f} {s['ssim_mean']:>6.3f} "
        f"{s['noised_psnr_mean']:>6.2f}  {rates}  {s['expression_unchanged_rate']:.2f} unchanged",
        f"all FR models verify: {s['fr_all_pass_rate']:.2f}; {s['seconds_per_face']:.2f} s per face",
    ]
    if report["sweep"]:
        lines += ["", f"{'t0':>5} {'PSNR':>7} {'SSIM':>6} {'noised':>7} {'all FR':>7} {'expr':>6}"]
        lines += [
            f"{r['t0']:>5} {r['psnr_mean']:>7.2f} {r['ssim_mean']:>6.3f} {r['noised_psnr_mean']:>7.2f} "
            f"{r['fr_all_pass_rate']:>7.2f} {r['expression_unchanged_rate']:>6.2f}"
            for r in report["sweep"]
        ]
    return "\n".join(lines)


def _cmd_eval(args: argparse.Namespace) -> int:
    from pareidolia.diffusion.prior import prior_folder

    report = _evaluate(
        args.model, _faces(args.faces, args.packages), args.t0, args.sweep_t0, args.device
    )
    if args.write_card:
        scheme, _, ref = args.model.partition(":")
        if scheme != "prior":
            raise UserError(
                f"--write-card needs a prior folder (--model prior:FOLDER), got {args.model!r}"
            )
        from pareidolia.diffusion.prior import SHIPPED_PRIOR_DIR

        _write_card(prior_folder(ref) if ref not in ("", "default") else SHIPPED_PRIOR_DIR, report)
    print(json.dumps(report, indent=2) if args.json else render_report(report))
    return 0


# --- parser --------------------------------------------------------------------------------------


def add_prior_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``pareidolia prior {data,train,eval}`` on the main parser's sub-commands.

    The defaults repeat those of :class:`~pareidolia.prior.config.TrainConfig` as
    literals (importing it would load torch and diffusers for every command); a test checks
    that they agree.
    """
    p = sub.add_parser(
        "prior", help="build the face set, train and evaluate the offline face prior"
    )
    psub = p.add_subparsers(dest="prior_command", required=True)

    data = psub.add_parser("data", help="write the aligned training / held-out face crops")
    data.add_argument("--out", required=True, help="folder for the face set (must not hold one)")
    data.add_argument("--packages", help="unpacked registry packages (default: .cache/packages)")
    data.add_argument("--no-synthetic", action="store_true", help="leave out the DCGAN copy")
    data.set_defaults(func=_cmd_data)

    t = psub.add_parser(
        "train",
        help="train (or resume) the prior; export OUT/model",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    t.add_argument("--out", required=True, help="run folder: log, checkpoint, model/")
    t.add_argument(
        "--data", default="default", help="face set folder, or 'default' (built in OUT/data)"
    )
    t.add_argument("--steps", type=int, default=20_000, help="total optimizer steps")
    t.add_argument("--batch", type=int, default=16, help="batch size")
    t.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate")
    t.add_argument("--warmup", type=int, default=200, help="linear learning-rate warm-up steps")
    t.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay of the weights")
    t.add_argument("--t-max", type=int, default=500, help="largest timestep trained on")
    t.add_argument(
        "--synthetic-ratio", type=float, default=0.4, help="expected share of DCGAN faces per batch"
    )
    t.add_argument("--no-augment", action="store_true", help="no flip / geometric / colour jitter")
    t.add_argument("--resolution", type=int, default=128, help="crop size in pixels")
    t.add_argument(
        "--channels", type=_ints, default=(16, 32, 64, 128, 128), help="UNet widths per level"
    )
    t.add_argument("--layers-per-block", type=int, default=1, help="residual blocks per level")
    t.add_argument(
        "--norm-groups", type=int, default=8, help="group-norm groups (divide every width)"
    )
    t.add_argument("--head-dim", type=int, default=32, help="attention head width")
    t.add_argument("--seed", type=int, default=0, help="seed of the init, data and noise")
    add_device_option(t)
    add_dtype_option(t)
    t.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    t.add_argument("--log-every", type=int, default=10, help="steps per log.jsonl line")
    t.add_argument("--max-minutes", type=float, help="stop (and export) after this much time")
    t.add_argument("--resume", action="store_true", help="continue the run in OUT exactly")
    t.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation at the end")
    t.add_argument("--eval-t0", type=int, default=60, help="t0 of the final evaluation")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)

    e = psub.add_parser(
        "eval", help="DDIM round trip of the held-out faces: PSNR, SSIM, FR, expression"
    )
    add_model_option(e, "prior:", " (default prior)")
    e.add_argument(
        "--faces", help="face set folder or folder of aligned crops (default: held-out split)"
    )
    e.add_argument("--packages", help="unpacked registry packages, to build the held-out split")
    e.add_argument("--t0", type=int, default=60, help="inversion depth (default 60)")
    e.add_argument(
        "--sweep-t0",
        type=_ints,
        default=(),
        help=f"also report means at these t0, e.g. {DEFAULT_SWEEP}",
    )
    add_device_option(e)
    e.add_argument(
        "--write-card", action="store_true", help="store eval.json and update MODEL_CARD.md"
    )
    e.add_argument("--json", action="store_true", help="print the report as JSON")
    e.set_defaults(func=_cmd_eval)
