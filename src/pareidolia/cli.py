"""The ``pareidolia`` command.

Every sub-command reports problems a user can act on as one line ``pareidolia: <file>: <what>``
and exit status 2, without a traceback; nothing is written when the input is bad.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pareidolia import __version__
from pareidolia.errors import OptionError, PareidoliaError, os_error_line


def _cmd_verify(args: argparse.Namespace) -> int:
    from pareidolia.commands.verify import render_verify, verify_files

    result = verify_files(Path(args.a), Path(args.b))
    print(json.dumps(result, indent=2) if args.json else render_verify(result))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from pareidolia.commands.models import list_models, render_models

    rows = list_models()
    print(json.dumps(rows, indent=2) if args.json else render_models(rows))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pareidolia.commands.demo import run_demo
    from pareidolia.commands.options import device_of

    out_dir = Path(args.out) if args.out else None
    return run_demo(
        out_dir, as_json=args.json, device=device_of(args), model=args.model, dtype=args.dtype
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    p = argparse.ArgumentParser(
        prog="pareidolia",
        description="Protect face photos from face recognition by editing expressions (MAP).",
    )
    p.add_argument("--version", action="version", version=f"pareidolia {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("verify", help="compare the largest face of two photos with every FR model")
    v.add_argument("a", help="first photo")
    v.add_argument("b", help="second photo")
    v.add_argument("--json", action="store_true", help="print JSON instead of a table")
    v.set_defaults(func=_cmd_verify)

    m = sub.add_parser(
        "models", help="list the face models and score networks, with checksum status"
    )
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m.set_defaults(func=_cmd_models)

    d = sub.add_parser("demo", help="run the demo on the bundled public-domain astronaut photo")
    d.add_argument("--out", help="folder for the demo's files (default: ./pareidolia-demo)")
    d.add_argument("--json", action="store_true", help="print the report as JSON")
    from pareidolia.commands.options import add_device_option, add_dtype_option, add_model_option

    add_model_option(d, "prior:", " (default prior: the shipped protector was made on it)")
    add_device_option(d)
    add_dtype_option(d)
    d.set_defaults(func=_cmd_demo)

    from pareidolia.commands.bench import add_bench_parser
    from pareidolia.commands.fetch import add_fetch_parser
    from pareidolia.commands.prior import add_prior_parser
    from pareidolia.commands.protect import add_protect_parser
    from pareidolia.commands.train import add_train_parsers
    from pareidolia.commands.web import add_web_parser

    add_bench_parser(sub)
    add_fetch_parser(sub)
    add_prior_parser(sub)
    add_protect_parser(sub)
    add_train_parsers(sub)
    add_web_parser(sub)
    _name_flags(p)
    return p


def _name_flags(parser: argparse.ArgumentParser) -> None:
    """Give every sub-command the default ``flags``: each option's destination (the name the
    library uses, ``t_max``) → its flag (``--t-max``), plus the command's own additions (its
    ``flags`` default), so :func:`main` can word an :class:`OptionError` with the flags."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in dict.fromkeys(action.choices.values()):
            own = {
                a.dest: max(a.option_strings, key=len)
                for a in child._actions
                if a.option_strings and a.dest != "help"
            }
            child.set_defaults(flags={**own, **(child.get_default("flags") or {})})
            _name_flags(child)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn expected errors (any :class:`PareidoliaError`,
    any :class:`OSError`) into one line and exit 2. An :class:`OptionError` names the option
    by the sub-command's flag (its ``flags`` default: the library's name → the flag)."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except OptionError as e:
        print(f"pareidolia: {e.worded(getattr(args, 'flags', {}))}", file=sys.stderr)
        return 2
    except PareidoliaError as e:
        print(f"pareidolia: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a removed drive, a read-only folder …: one line, no trace
        print(f"pareidolia: {os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pareidolia: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
