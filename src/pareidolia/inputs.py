"""The photos a ``protect`` run is given, before any model is loaded: folders expanded, the
output folder checked, and the photos settled without a model (an earlier run's outputs with
``--skip-done``; files that are plainly no photo). Torch-free, so the command line answers these
cases at once."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from pareidolia.errors import UserError
from pareidolia.io import ImageError, check_file, earlier_outputs, iter_image_files, output_ext
from pareidolia.report import PhotoReport

__all__ = [
    "SUFFIX",
    "check_output_folder",
    "done_before",
    "expand_inputs",
    "looks_like_output",
    "settled_before",
]

SUFFIX = "_protected"


def looks_like_output(path: Path) -> bool:
    """A file an earlier run wrote (``name_protected.jpg``, ``name_protected-2.jpg``)."""
    stem = path.stem
    base, _, n = stem.rpartition("-")
    return stem.endswith(SUFFIX) or (n.isdigit() and base.endswith(SUFFIX))


def expand_inputs(paths: Sequence[Path]) -> list[Path]:
    """The files to protect: files as given, folders searched recursively for images (leaving
    out earlier outputs, the files named ``*_protected*``), duplicates removed. The output
    folder may hold the inputs or be among them (``protect pics -o pics``): its other files are
    protected like any: outputs are recognised by their name, wherever they are. Raises
    :class:`UserError` for a folder without images or when nothing is left."""
    files: list[Path] = []
    seen: set[Path] = set()
    for p in paths:
        if p.is_dir():
            images = iter_image_files([p])
            found = [f for f in images if not looks_like_output(f)]
            if not images:
                raise UserError(f"{p}: no image files in this folder (jpg, png, webp, tiff, …)")
            if not found:
                raise UserError(f"{p}: this folder holds only earlier outputs ({SUFFIX} files)")
        else:
            found = [p]
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                files.append(f)
    if not files:
        raise UserError("no photos given")
    return files


def check_output_folder(folder: Path) -> None:
    """Create ``folder`` if missing and make sure a file can be written in it; raise
    :class:`UserError` naming the folder otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".pareidolia-write-test-"):
            pass
    except OSError as e:
        reason = e.strerror or str(e)
        raise UserError(f"{folder}: cannot write the output here ({reason})") from None


def done_before(files: Sequence[Path], out_dir: Path | None) -> dict[int, PhotoReport]:
    """The reports (by index; status ``done``) of the photos of ``files`` that an earlier run
    into ``out_dir`` (None: beside each photo) already protected: the k-th photo of one output name
    (stem and suffix) in one folder is done when that folder holds at least k outputs of it
    (:func:`~pareidolia.io.earlier_outputs`), as a run over the same files in the same order
    names them."""
    listings: dict[Path, list[Path]] = {}  # each output folder's files, listed once
    rank: dict[tuple[Path, str], int] = {}
    done: dict[int, PhotoReport] = {}
    for index, path in enumerate(files):
        folder = out_dir if out_dir is not None else path.parent
        where = folder.resolve()
        if where not in listings:
            try:
                listings[where] = [p for p in folder.iterdir() if p.is_file()]
            except OSError:  # no such folder yet, or one that cannot be listed: nothing done
                listings[where] = []
        key = (where, (path.stem + output_ext(path)).casefold())
        k = rank[key] = rank.get(key, -1) + 1
        earlier = earlier_outputs(path, listings[where], SUFFIX)
        if k < len(earlier):
            done[index] = PhotoReport(path=path, output=earlier[k], done_before=True)
    return done


def settled_before(
    files: Sequence[Path], out_dir: Path | None, skip_done: bool
) -> dict[int, PhotoReport]:
    """The reports (by index) of the photos of ``files`` that need no model: those an earlier
    run protected (with ``skip_done``, :func:`done_before`), and files that are plainly no
    photo (missing, a folder, empty: :func:`~pareidolia.io.check_file`), with their problem."""
    settled = done_before(files, out_dir) if skip_done else {}
    for index, path in enumerate(files):
        if index not in settled:
            try:
                check_file(path)
            except ImageError as e:
                settled[index] = PhotoReport(path=path, error=e.problem)
    return settled
