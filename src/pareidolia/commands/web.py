"""``pareidolia web [--host H] [--port P] [--keep-minutes M]``: serve the photo-protection
page (Gradio).

Listens on loopback by default; any other address lets others on the network protect photos
with this computer (and see nothing of each other's, but use its CPU), so it is said out loud.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Any

from pareidolia.commands.options import (
    add_device_option,
    add_dtype_option,
    add_model_option,
    device_of,
    dtype_of,
)
from pareidolia.web import DEFAULT_HOST, DEFAULT_PORT, KEEP_SECONDS

MAX_KEEP_MINUTES = 24 * 60


def add_web_parser(sub: Any) -> None:
    """Register ``pareidolia web`` on the main parser's sub-commands."""
    p = sub.add_parser(
        "web",
        help="serve a local web page to protect photos (needs pareidolia[web])",
        description="Serve a web page to protect photos: drop photos, pick an expression, "
        "optionally give a target face, download the protected copies and the report.",
    )
    p.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})"
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument(
        "--keep-minutes",
        type=float,
        default=KEEP_SECONDS / 60,
        metavar="M",
        help="delete uploads and results M minutes after they were made "
        f"(default {KEEP_SECONDS / 60:g}; everything is deleted when the server stops)",
    )
    add_model_option(p, "prior:", " (default prior: the shipped protectors were made on it)")
    add_device_option(p)
    add_dtype_option(p)
    p.set_defaults(func=cmd_web)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_web(args: argparse.Namespace) -> int:
    """Run ``pareidolia web`` until Ctrl-C; returns the exit status."""
    from functools import partial

    from pareidolia.default_protectors import DEFAULT_EMOTION, default_protector, shipped_emotions
    from pareidolia.errors import UserError
    from pareidolia.runtime import dtype_name
    from pareidolia.web import serve

    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be within 1..65535, got {args.port}")
    if not 0 < args.keep_minutes <= MAX_KEEP_MINUTES:
        raise UserError(
            f"--keep-minutes must be above 0 and at most {MAX_KEEP_MINUTES}, "
            f"got {args.keep_minutes:g}"
        )
    device = device_of(args)
    dtype = dtype_name(dtype_of(args, device))  # a bad --dtype: one line now, "auto" resolved
    factory = partial(default_protector, device=device, model=args.model)
    factory(DEFAULT_EMOTION)  # a bad --model or --device: one line now, not on the first request
    if not _is_loopback(args.host):
        print(
            f"pareidolia: warning: listening on {args.host}, not loopback: anyone who can reach "
            "this address can use the page",
            file=sys.stderr,
        )
    print(f"pareidolia web: http://{args.host}:{args.port}  (Ctrl-C to stop)", file=sys.stderr)
    emotions = shipped_emotions() or [DEFAULT_EMOTION]
    keep = args.keep_minutes * 60
    serve(args.host, args.port, factory, keep_seconds=keep, emotions=emotions, dtype=dtype)
    return 0
