"""``pareidolia protect PATH…``: protect every face of photos (files or folders).

Writes ``name_protected.ext`` next to each photo (or into ``-o OUTDIR``), prints a table per
photo and face (or the JSON report), and exits 0 when every face of every photo was protected
(with ``--skip-done``: or had been, by an earlier run into the same folder), 1 when faces were
skipped (too small, cut by the border, turned away: each listed with its reason) or photos had
no face, 2 on bad input (one line per problem on stderr; nothing is written for a bad file).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pareidolia.commands.options import (
    add_device_option,
    add_dtype_option,
    add_model_option,
    device_of,
    dtype_of,
)
from pareidolia.errors import UserError
from pareidolia.runtime import ADAPT_STEPS, INVERSION_STEPS

if TYPE_CHECKING:
    import torch

    from pareidolia.protect import Progress, ProtectOptions
    from pareidolia.protector import Protector
    from pareidolia.report import PhotoReport

DEFAULT_TARGET_ADAPT = ADAPT_STEPS
"""Adaptation steps used when ``--target`` is given with ``--fast`` and without ``--adapt``
(the default refinement retargets each face itself)."""

FLAGS = {
    "adapt_steps": "--adapt",
    "min_face": "--min-face",
    "inversion_steps": "--inversion-steps",
}
"""The flags of the options :class:`~pareidolia.protect.ProtectOptions` names (for
:meth:`~pareidolia.errors.OptionError.worded`)."""


def add_protect_parser(sub: Any) -> None:
    """Register ``pareidolia protect`` on the main parser's sub-commands."""
    p = sub.add_parser(
        "protect",
        help="protect the faces of photos (files or folders) from face recognition",
        description="Edit the expression of every face so face recognition matches it to "
        "another identity; writes NAME_protected.EXT beside each photo or into -o OUTDIR.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="photos or folders of photos")
    p.add_argument("-o", "--out", metavar="OUTDIR", help="output folder (created if missing)")
    p.add_argument("--protector", metavar="P", help="protector file (from `pareidolia train`)")
    p.add_argument("--target", metavar="IMG", help="photo of the identity to be mistaken for")
    p.add_argument("--emotion", help="expression of the shipped protector to use (default: happy)")
    p.add_argument(
        "--adapt",
        type=int,
        metavar="STEPS",
        help=f"fine-tune on each photo's faces first (default 0; {DEFAULT_TARGET_ADAPT} with "
        "--target)",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="the MAP protector's one pass alone (1-2 s per face on 2 cores; weaker protection)",
    )
    p.add_argument(
        "--strength",
        choices=("natural", "balanced", "strong"),
        help="refinement preset: natural (least visible, weakest), balanced (default) or "
        "strong (most protection, a visible change)",
    )
    p.add_argument(
        "--steps",
        type=int,
        metavar="N",
        help="refinement steps per face (default 15; 0: the MAP edit at the preset's strength alone)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        metavar="S",
        help="stop each face's refinement after about S seconds, keeping what it reached "
        "(a batch of n faces: after n·S); default: all its steps",
    )
    p.add_argument(
        "--inversion-steps",
        type=int,
        metavar="N",
        help=f"DDIM inversion steps of the MAP pass (default {INVERSION_STEPS}; 20: as the "
        "protectors were trained, the paper's setting, about 0.7 s more per face on 2 cores)",
    )
    p.add_argument(
        "--no-chroma-restore",
        action="store_true",
        help="keep the edit's colour too (default: only its luminance; the original's colour)",
    )
    p.add_argument("--keep-metadata", action="store_true", help="keep EXIF (GPS, camera, …)")
    p.add_argument(
        "--min-face",
        type=float,
        metavar="PX",
        help="skip faces whose detection box's shorter side is under PX (default 20)",
    )
    p.add_argument(
        "--no-robustness",
        action="store_true",
        help="skip the check after a simulated social-network upload",
    )
    p.add_argument(
        "--skip-done",
        action="store_true",
        help="leave alone each photo an earlier run protected into the same output folder "
        "(its NAME_protected.EXT is there): to go on after an interrupted run",
    )
    p.add_argument(
        "--batch",
        metavar="N|auto",
        default="auto",
        help="working crops edited together, faces of several photos (default auto: 8 on the "
        "CPU, from the free memory on CUDA)",
    )
    add_model_option(
        p, None, "; default: the base network the --protector records (the shipped prior "
        "for the shipped protectors)"
    )  # fmt: skip
    add_device_option(p)
    add_dtype_option(p)
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=cmd_protect, flags=FLAGS)


def _batch(value: str) -> int | Literal["auto"]:
    """``--batch``: ``auto`` or a whole number (checked by :class:`ProtectOptions`)."""
    if value == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError:
        raise UserError(f"--batch must be auto or a number of faces, got {value!r}") from None


def _options(args: argparse.Namespace, device: torch.device) -> ProtectOptions:
    from pareidolia.faces.detect import MIN_FACE_PX
    from pareidolia.protect import ProtectOptions, preset

    if args.protector and args.emotion:
        raise UserError("use either --protector or --emotion, not both")
    adapt = args.adapt
    if adapt is None:
        adapt = DEFAULT_TARGET_ADAPT if args.target and args.fast else 0
    if args.steps is not None and args.steps < 0:
        raise UserError(f"--steps must be 0 or more, got {args.steps}")
    if args.fast and (args.steps is not None or args.strength or args.time_limit is not None):
        raise UserError(
            "--fast is the one-pass MAP edit; it takes neither --steps, --strength nor --time-limit"
        )
    mode, refine, map_strength = preset("fast" if args.fast else args.strength or "balanced")
    if args.steps is not None:
        refine = replace(refine, steps=args.steps)
    if args.time_limit is not None:
        refine = replace(refine, max_seconds=args.time_limit)  # checked by RefineConfig
    options = ProtectOptions(
        mode=mode,
        refine=refine,
        map_strength=map_strength,
        chroma=not args.no_chroma_restore,
        inversion_steps=INVERSION_STEPS if args.inversion_steps is None else args.inversion_steps,
        out_dir=Path(args.out) if args.out else None,
        keep_metadata=args.keep_metadata,
        adapt_steps=adapt,
        min_face=args.min_face if args.min_face is not None else MIN_FACE_PX,
        robustness=not args.no_robustness,
        skip_done=args.skip_done,
        dtype=dtype_of(args, device),
        batch=_batch(args.batch),
    )
    # before any work: without --target, adapting aims at the shipped target (see _target)
    options.check_target(has_target=bool(args.target) or options.adapt_steps > 0)
    return options


def protector_for(args: argparse.Namespace, device: torch.device) -> Protector:
    """The protector the flags name, on ``device``: ``--protector FILE`` on the base network
    ``--model`` names, or (without ``--model``) on the one the file records; else the shipped
    protector for ``--emotion`` (on the shipped prior; another ``--model`` is refused)."""
    if args.protector:
        from pareidolia.diffusion.models import recorded_spec, shared_score_model
        from pareidolia.protector import load_protector, protector_base

        path = Path(args.protector)
        if path.is_dir():
            raise UserError(
                f"{path}: is a folder; --protector takes a protector file (.safetensors)"
            )
        if not path.exists():
            raise UserError(f"{path}: no such protector file")
        spec = args.model or recorded_spec(protector_base(path).source or "prior:")
        return load_protector(path, *shared_score_model(spec, device))
    from pareidolia.default_protectors import DEFAULT_EMOTION, default_protector
    from pareidolia.diffusion.models import SHIPPED_PRIOR_SPEC

    emotion = args.emotion or DEFAULT_EMOTION
    return default_protector(emotion, device, args.model or SHIPPED_PRIOR_SPEC)


def _target(args: argparse.Namespace, adapt: int) -> torch.Tensor | None:
    """The target crop: ``--target``; else, when adapting, the shipped default target."""
    if args.target:
        from pareidolia.locate import target_face

        return target_face(Path(args.target))
    if adapt <= 0:
        return None
    from pareidolia.default_protectors import default_target_crop
    from pareidolia.faces.align import to_tensor

    return to_tensor(default_target_crop())


class _Bar:
    """tqdm bars on stderr: one over the photos, and under it one over the faces of the photos
    open (advancing as each batch is pasted, the refinement's share done beside it; a new one
    after each photo written)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.faces: Any = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None and stage == "photos":
            self.bar = tqdm(total=total, unit="photo", file=sys.stderr, disable=None)
        if stage == "photos":
            self._end_faces()
            if self.bar is not None:
                self.bar.update(done - self.bar.n)
        elif stage == "faces":
            if self.faces is None:
                self.faces = tqdm(
                    total=total, unit="face", file=sys.stderr, disable=None, leave=False
                )
            self.faces.total = total  # grows as the faces of another photo join
            self.faces.update(done - self.faces.n)
        elif stage == "refine" and self.faces is not None:
            self.faces.set_postfix_str(f"refining {100 * done / max(total, 1):.0f} %")
        elif stage == "adapt" and self.bar is not None:
            self.bar.set_postfix_str("adapting" if done == 0 else "")
        elif stage == "batch":  # the accelerator ran out of memory at ``total`` faces a batch
            tqdm.write(
                f"pareidolia: GPU memory full at {total} faces a batch; going on with {done}",
                file=sys.stderr,
            )

    def _end_faces(self) -> None:
        if self.faces is not None:
            self.faces.close()
            self.faces = None

    def close(self) -> None:
        self._end_faces()
        if self.bar is not None:
            self.bar.close()


def _problems(reports: list[PhotoReport]) -> list[str]:
    """One line per photo that was not fully protected, for stderr."""
    from pareidolia.report import skip_counts

    lines = []
    for r in reports:
        if r.status == "error":
            lines.append(f"{r.path}: {r.error}")
        elif r.status == "no_face":
            lines.append(f"{r.path}: no face found; nothing written")
        elif r.skipped:
            what = "nothing written" if not r.faces else "those faces are left unchanged"
            why = skip_counts([s.kind for s in r.skipped])
            lines.append(f"{r.path}: {len(r.skipped)} face(s) not protected ({why}); {what}")
    return lines


def cmd_protect(args: argparse.Namespace) -> int:
    """Run ``pareidolia protect``; returns the exit status (see the module docstring)."""
    from pareidolia.inputs import check_output_folder, expand_inputs, settled_before
    from pareidolia.report import exit_status
    from pareidolia.stale import remove_stale

    remove_stale()  # face data a killed `--adapt` or web server left in the temporary folder
    out_dir = Path(args.out) if args.out else None
    files = expand_inputs([Path(p) for p in args.paths])  # bad inputs end the run at once
    if out_dir is not None:
        check_output_folder(out_dir)
    settled = settled_before(files, out_dir, args.skip_done)
    if len(settled) == len(files):  # nothing left to protect: said without loading a model
        reports = [settled[i] for i in range(len(files))]
        _print_reports(reports, args.json)
        return exit_status(reports)

    from pareidolia.protect import Interrupted, protect_files, run_record

    device = device_of(args)
    options = _options(args, device)
    protector = protector_for(args, device)
    target = _target(args, options.adapt_steps)
    bar = _Bar()
    progress: Progress = bar
    try:
        reports = protect_files(files, protector, options, progress, target_crop=target)
    except Interrupted as stop:  # Ctrl-C: say what was done (and written) before it
        bar.close()
        _print_reports(
            stop.reports, args.json, interrupted=True, run=run_record(protector, options)
        )
        raise
    finally:
        bar.close()
    _print_reports(reports, args.json, run=run_record(protector, options))
    return exit_status(reports)


def _print_reports(
    reports: list[PhotoReport],
    as_json: bool,
    *,
    interrupted: bool = False,
    run: dict[str, str] | None = None,
) -> None:
    """The report on stdout (a table or JSON), then one line per problem on stderr."""
    from pareidolia.report import render_text, reports_json

    if as_json:
        extra: dict[str, Any] = {"run": run} if run else {}
        if interrupted:
            extra["interrupted"] = True
        print(reports_json(reports, **extra))
    else:
        print(render_text(reports))
        if interrupted:
            print(
                "interrupted: the photos above were finished; the rest were not started "
                "(the same command with --skip-done goes on with them)"
            )
    for line in _problems(reports):
        print(f"pareidolia: {line}", file=sys.stderr)
