"""``pareidolia fetch [NAME…] [--cache DIR] [--offline] [--quiet]``: download what the
full-strength path needs into the cache folder (:mod:`pareidolia.download`).

- ``paper-unet``: the paper's DDPM CelebA-HQ network, then ``--model paper``;
- ``clip``: the CLIP ViT-B/16 (OpenAI) weights, then ``train --guide clip``;
- ``paper-fr``: the paper's FR models have no public address with a checksum: one line says
  where to get them and what ``--fr-weights DIR`` must hold.

Without a name it lists what can be fetched and whether it is in the cache. Nothing else in
pareidolia downloads; ``--offline`` (or ``PAREIDOLIA_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``)
forbids it here too.
"""

from __future__ import annotations

import argparse
import importlib.util
from typing import Any

from pareidolia.download import (
    ARTIFACTS,
    CACHE_ENV,
    artifact_path,
    cache_dir,
    download,
    is_fetched,
)
from pareidolia.errors import UserError

PAPER_FR = "paper-fr"


def paper_fr_line() -> str:
    """Where the paper's FR weights come from and what ``--fr-weights DIR`` holds."""
    from pareidolia.zoo.paper_fr import PAPER_FR as SPECS

    files = ", ".join(s.checkpoint for s in SPECS.values())
    return (
        f"{PAPER_FR}: the paper's FR weights (IR152, IRSE50, FaceNet, MobileFace) have no public "
        "address with a published checksum, so pareidolia does not fetch them: get them from "
        "the FR-model download the AMT-GAN and DiffAM READMEs link, and pass their folder as "
        f"--fr-weights DIR holding {files}"
    )


def _listing(cache: str | None) -> list[str]:
    lines = [f"cache folder: {cache_dir(cache)} (--cache DIR, or ${CACHE_ENV})"]
    for a in ARTIFACTS.values():
        state = "fetched" if is_fetched(a, cache) else "not fetched"
        lines.append(f"{a.name:<11} {state:<12} {a.size:>7}  {artifact_path(a, cache)}")
        lines.append(f"{'':<11} {a.url}")
        lines.append(f"{'':<11} {a.note}")
    lines.append(paper_fr_line())
    return lines


def _cmd_fetch(args: argparse.Namespace) -> int:
    if not args.names:
        print("\n".join(_listing(args.cache)))
        return 0
    known = [*ARTIFACTS, PAPER_FR]
    unknown = [n for n in args.names if n not in known]
    if unknown:
        raise UserError(f"nothing to fetch called {', '.join(unknown)} (choose {', '.join(known)})")
    for name in dict.fromkeys(args.names):
        if name == PAPER_FR:
            print(paper_fr_line())
            continue
        artifact = ARTIFACTS[name]
        there = is_fetched(artifact, args.cache)
        path = download(artifact, args.cache, offline=args.offline, progress=not args.quiet)
        print(f"{name}: {path} ({'already there, ' if there else 'downloaded, '}sha256 verified)")
        if name == "clip" and importlib.util.find_spec("open_clip") is None:
            print("clip: train --guide clip also needs the package open_clip_torch (pip install)")
    if args.cache and cache_dir(args.cache) != cache_dir():
        print(f"set {CACHE_ENV}={cache_dir(args.cache)} for train and protect to find it there")
    return 0


def add_fetch_parser(sub: Any) -> None:
    """Register ``fetch`` on the top-level sub-parser action."""
    f = sub.add_parser(
        "fetch", help="download the paper's score network and CLIP weights into the cache"
    )
    f.add_argument(
        "names", nargs="*", metavar="NAME",
        help=f"what to fetch: {', '.join([*ARTIFACTS, PAPER_FR])} (none: list them)",
    )  # fmt: skip
    f.add_argument("--cache", metavar="DIR", help=f"cache folder (default: ${CACHE_ENV}, else "
                   "$XDG_CACHE_HOME/pareidolia, i.e. ~/.cache/pareidolia)")  # fmt: skip
    f.add_argument("--offline", action="store_true", help="download nothing (verify only)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=_cmd_fetch)
