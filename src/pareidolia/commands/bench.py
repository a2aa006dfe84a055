"""``pareidolia bench``: MAP against the noise-based baselines, every method × held-out victim.

    pareidolia bench --protocol offline [--quick] [--out DIR] [--resume]
    pareidolia bench --protocol paper --celeba DIR [--ladn DIR] --fr-weights DIR
                     [--fr-preprocess resize|crop] [--model paper-ckpt:PATH]

Writes ``results.json``, ``results.md`` and PNG figures into ``--out`` (see
:mod:`pareidolia.evaluation.bench`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pareidolia.commands.options import add_device_option, add_dtype_option, add_model_option
from pareidolia.errors import UserError

DEFAULT_OUT = "pareidolia-bench"


def parse_protectors(pairs: list[str]) -> dict[str, Path]:
    """``VICTIM=PATH`` strings → {victim: path}; a :class:`UserError` for malformed ones."""
    out: dict[str, Path] = {}
    for pair in pairs:
        victim, sep, path = pair.partition("=")
        if not sep or not victim or not path:
            raise UserError(
                f"--protector {pair!r}: expected VICTIM=PATH, e.g. dlib=prot.safetensors"
            )
        if not Path(path).is_file():
            raise UserError(f"{path}: protector file not found (--protector {victim}=…)")
        out[victim] = Path(path)
    return out


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def run(args: argparse.Namespace) -> int:
    """Build the config from the flags, run the benchmark, print where the results are."""
    from pareidolia.evaluation.bench import BenchConfig, run_bench
    from pareidolia.evaluation.protocol import OFFLINE_TARGET

    if args.map_epochs is not None and args.map_epochs < 1:
        raise UserError(f"--map-epochs must be at least 1, got {args.map_epochs}")
    cfg = BenchConfig(
        protocol=args.protocol,
        out=Path(args.out).expanduser(),
        quick=args.quick,
        resume=args.resume,
        faces=_path(args.faces),
        target=args.target or OFFLINE_TARGET,
        emotion=args.emotion,
        victims=_csv(args.victims),
        methods=_csv(args.methods),
        map_epochs=args.map_epochs,
        protectors=parse_protectors(args.protector),
        model=args.model,
        fid_weights=_path(args.fid_weights),
        lpips_weights=_path(args.lpips_weights),
        celeba=_path(args.celeba),
        ladn=_path(args.ladn),
        fr_weights=_path(args.fr_weights),
        fr_preprocess=args.fr_preprocess,
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
        progress=not args.quiet,
    )
    results = run_bench(cfg)
    print(
        f"bench: {len(results['cells'])} results in {results['wall_seconds']} s → {cfg.out}/results.md"
    )
    return 0


def add_bench_parser(sub: Any) -> None:
    """Register ``bench`` on the CLI's sub-parsers."""
    b = sub.add_parser("bench", help="benchmark MAP against the noise-based baselines")
    b.add_argument("--protocol", choices=("offline", "paper"), default="offline")
    b.add_argument("--out", default=DEFAULT_OUT, help=f"results folder (default ./{DEFAULT_OUT})")
    b.add_argument("--quick", action="store_true",
                   help="3 faces, 2 victims, MAP 1 epoch on 4 faces, 2 baseline iterations")  # fmt: skip
    b.add_argument("--resume", action="store_true", help="continue a run in a non-empty --out")
    b.add_argument("--faces", help="offline face set (default .cache/faceset, built if missing)")
    b.add_argument(
        "--target",
        help="offline target: 'default' (the default: the shipped synthetic face; every held-out face is "
        "then a test face) or a held-out face's name, e.g. insightface-t1-0",
    )
    b.add_argument("--emotion", default="happy", help="MAP's target emotion (judge rate)")
    b.add_argument("--victims", help="comma-separated victims (default: every FR model)")
    b.add_argument("--methods", help="comma-separated methods (default: all)")
    b.add_argument("--map-epochs", type=int, help="epochs of the MAP protectors trained here")
    add_model_option(b, "prior:", " (default prior; the paper's: paper-ckpt:PATH/celeba_hq.ckpt)")
    b.add_argument("--protector", action="append", default=[], metavar="VICTIM=PATH",
                   help="use this protector for VICTIM instead of training one (repeatable)")  # fmt: skip
    b.add_argument(
        "--fid-weights", help="TorchScript Inception (clean-fid's inception-2015-12-05.pt)"
    )
    b.add_argument("--lpips-weights", help="TorchScript LPIPS module (a, b in [-1, 1] → distance)")
    b.add_argument("--celeba",
                   help="paper: folder with test/ faces, targets/<id>.png|jpg and, for MAP, "
                   "train/ faces")  # fmt: skip
    b.add_argument("--ladn", help="paper: folder of LADN test faces")
    b.add_argument(
        "--fr-weights", help="paper: folder with ir152.pth irse50.pth facenet.pth mobile_face.pth"
    )
    b.add_argument("--fr-preprocess", choices=("resize", "crop"), default="resize",
                   help="paper: resize the whole 256 crop, or crop the face first")  # fmt: skip
    add_device_option(b)
    add_dtype_option(b)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--quiet", action="store_true", help="no progress output")
    b.set_defaults(func=run, flags={"protectors": "--protector"})
