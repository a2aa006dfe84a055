"""The photo pipeline: every face found is edited by a protector and pasted back at full
resolution.

Per photo: read, locate the faces (large photos in full-resolution tiles too,
:mod:`pareidolia.faces.detect`), skip and list with its reason every face that cannot be edited
(too small, cut by the image border, turned away), take each other face's 256 px working crop
(small faces upscaled into it), optionally adapt the protector to this photo's faces, apply it
:data:`BATCH` faces at a time, blend each edit back at the face's own resolution
(:mod:`pareidolia.faces.blend`) and write. What was done is measured by
:func:`pareidolia.report.measure_faces` on the pixels exactly as they will be written (a lossy
format is encoded and decoded first) into the typed reports of :mod:`pareidolia.report`.

:func:`protect_files` runs a whole batch: folders are expanded, every output is written next to
its source (or into ``out_dir``) with a ``_protected`` suffix, atomically and never over an
existing file, and problems of single files (unreadable, no face) go into their report instead
of stopping the run. Problems of the whole run (no images in a folder, an output folder that
cannot be written) raise :class:`UserError` before any work is done. Nothing here prints.
"""

from __future__ import annotations

import io
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cache, partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from pareidolia.colour import restore_chroma_tensor
from pareidolia.errors import OptionError, UserError, os_problem
from pareidolia.faces.align import (
    Alignment,
    outside_share,
    to_tensor,
    to_uint8,
    warp_crop,
    working_alignment,
)
from pareidolia.faces.blend import blend_edit, face_mask
from pareidolia.faces.detect import (
    MAX_OUTSIDE,
    MAX_TURN,
    MIN_FACE_PX,
    SMALL_FACE_COPIES,
    SMALL_FACE_PX,
    Face,
    turn,
)
from pareidolia.io import (
    SAVE_FORMATS,
    ImageError,
    Photo,
    encode_photo,
    iter_image_files,
    output_path_for,
    read_photo,
    write_photo,
)
from pareidolia.locate import locate_faces
from pareidolia.objectives.identity import zoo_ensembles
from pareidolia.protector import Protector, adapt_protector, apply_protector, to_crop
from pareidolia.refine import RefineConfig, Refiner
from pareidolia.report import EditedFace, PhotoReport, SkippedFace, measure_faces
from pareidolia.runtime import WORKING_SIZE, dtype_name
from pareidolia.zoo import registry

__all__ = [
    "SUFFIX",
    "Interrupted",
    "Progress",
    "ProtectOptions",
    "check_output_folder",
    "edit_crops",
    "edit_in_batches",
    "expand_inputs",
    "format_change",
    "protect_files",
    "protect_photo",
    "retarget",
    "run_record",
]

SUFFIX = "_protected"
# The pipeline's own models (refinement, retargeting, the report's FR models and judge) run
# where the protector is (:attr:`Protector.device`): one device per run, picked by the caller.

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stages: ``photos``, ``faces`` (faces of the current photo
edited: 0 of N before the first batch, then after each batch), ``adapt`` (0 of 1 when adapting
starts, 1 of 1 when done), ``refine`` (face-steps of the current photo's refinement)."""


@dataclass(frozen=True)
class ProtectOptions:
    """How a batch is protected; the defaults are those of ``pareidolia protect``."""

    out_dir: Path | None = None  # None: next to each source photo
    keep_metadata: bool = False  # keep EXIF (GPS, camera …); stripped by default
    adapt_steps: int = 0  # fine-tuning steps on each photo's own faces before applying
    min_face: float = MIN_FACE_PX  # faces whose detection box's shorter side is below: skipped
    robustness: bool = True  # re-check the decisions after a simulated social-network upload
    quality: int = 95  # JPEG / WebP quality of the output
    # [ours] "refine": the MAP edit at ``map_strength``, chroma restored, then the per-face
    # refinement (pareidolia.refine); "fast": the MAP protector's one pass alone, as the paper.
    mode: Literal["refine", "fast"] = "refine"
    map_strength: float = 0.25  # [ours] share of the MAP protector's change kept (1: all)
    chroma: bool = True  # [ours] keep the edit's luminance, the original's chroma
    refine: RefineConfig = field(default_factory=RefineConfig)
    # FR models the refinement optimises against; None: every model the target is known to
    surrogates: tuple[str, ...] | None = None
    # [ours] EOT copies of the refinement for faces under SMALL_FACE_PX; None: refine.copies
    small_face_copies: int | None = SMALL_FACE_COPIES
    # the score network's compute dtype (adapting and the MAP pass; pareidolia.runtime.pick_dtype)
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        if self.mode not in ("refine", "fast"):
            raise OptionError(f"{{mode}} must be refine or fast, got {self.mode!r}", "mode")
        if not 0.0 <= self.map_strength <= 1.0:
            raise OptionError(
                f"{{map_strength}} must be within 0..1, got {self.map_strength}", "map_strength"
            )
        if self.adapt_steps < 0:
            raise OptionError(
                f"{{adapt_steps}} must be 0 or more steps, got {self.adapt_steps}", "adapt_steps"
            )
        if self.min_face < 1:
            raise OptionError(
                f"{{min_face}} must be at least 1 pixel, got {self.min_face}", "min_face"
            )
        if self.small_face_copies is not None and self.small_face_copies < 1:
            raise OptionError(
                f"{{small_face_copies}} must be at least 1, got {self.small_face_copies}",
                "small_face_copies",
            )
        if not 1 <= self.quality <= 100:
            raise OptionError(f"{{quality}} must be within 1..100, got {self.quality}", "quality")
        if self.dtype not in (torch.float32, torch.bfloat16):
            raise OptionError(f"{{dtype}} must be float32 or bfloat16, got {self.dtype}", "dtype")

    def check_target(self, has_target: bool) -> None:
        """Raise :class:`OptionError` when these options and a target crop of one's own (or
        its absence) do not go together: adapting needs a face to adapt toward, and the fast
        mode's one pass knows only the protector's own target."""
        if self.adapt_steps > 0 and not has_target:
            raise OptionError(
                "{adapt_steps} above 0 needs a target face to adapt toward", "adapt_steps"
            )
        if has_target and self.adapt_steps == 0 and self.mode == "fast":
            raise OptionError(
                "a target of your own in the fast mode needs {adapt_steps} above 0 (its one "
                "pass knows only the protector's target; the protector is adapted toward yours)",
                "adapt_steps",
            )


# ----------------------------------------------------------------------------- writing


def _as_written(rgb: np.ndarray, fmt: str, quality: int) -> np.ndarray:
    """The RGB pixels a reader will get back from the file written in ``fmt``."""
    if fmt not in ("JPEG", "WEBP"):
        return rgb
    data = encode_photo(rgb, fmt, quality=quality)
    with warnings.catch_warnings():  # Pillow's bomb warning starts below our own pixel limit
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB")).copy()


def _output_format(path: Path) -> str:
    """The format ``write_photo`` will use for the output of ``path`` (HEIC etc. → PNG)."""
    return SAVE_FORMATS.get(path.suffix.lower(), "PNG")


_SAME_FORMAT = {"MPO": "JPEG"}  # a camera's multi-picture file is a JPEG, written as one


def format_change(photo: Photo, output: Path) -> str | None:
    """What the report must say when ``output`` is written in another format than ``photo``
    was read in (a GIF or HEIC input written as PNG, a PNG file named ``.jpg`` written as
    JPEG), or than its name says (a transparent PNG named ``.jpg`` written as PNG, see
    :func:`pareidolia.io.output_path_for`); None when the format is kept."""
    source = _SAME_FORMAT.get(photo.format, photo.format)
    written = _output_format(output)
    suffix = photo.path.suffix.lower()
    named = SAVE_FORMATS.get(suffix)
    if named is not None and named != written:  # only to keep a transparency
        what = f"{source} input" if named == source else f"input is a {source} file named {suffix}"
        return (
            f"the {what} with transparency; written as {written} ({output.suffix}), as "
            f"{named} cannot keep it"
        )
    if source == written:
        return None
    lossy = " (lossy)" if written == "JPEG" else ""
    if suffix in SAVE_FORMATS:  # the name says another format than the content
        return (
            f"the input is a {source} file named {suffix}; written as {written}{lossy}, "
            "as its name says"
        )
    return f"{source} input written as {written}{lossy}: {source} is not an output format"


# ----------------------------------------------------------------------------- protecting


BATCH = 8  # faces per protector / refinement batch (bounds memory on photos with many faces)


def run_record(protector: Protector, options: ProtectOptions) -> dict[str, str]:
    """Where and in what dtype a run computes, and with what base network (the reports' ``run``
    entry); for a protector tuned with the CLIP guide, also that guide's model, tag and
    weights' sha256."""
    record = {
        "device": str(protector.device),
        "dtype": dtype_name(options.dtype),
        "model": protector.base_cfg.source,
    }
    c = protector.config
    if c.guide == "clip":
        record["guide"] = f"clip {c.clip_model} / {c.clip_pretrained}"
        if "clip_weights_sha256" in protector.run:
            record["clip_weights_sha256"] = protector.run["clip_weights_sha256"]
    return record


@cache
def _refiner(
    surrogates: tuple[str, ...], emotion: str, config: RefineConfig, device: torch.device
) -> Refiner:
    """The refinement's models for one (surrogates, emotion, config) on ``device``, loaded
    once per device."""
    fr = zoo_ensembles(WORKING_SIZE, device)
    return Refiner(surrogates, emotion, config, fr, WORKING_SIZE, device)


def retarget(protector: Protector, target_crop: torch.Tensor) -> Protector:
    """``protector`` aiming at ``target_crop`` (1, 3, S, S) in [0, 1]: the target embeddings of
    every zoo FR model become the crop's (what the refinement pulls toward and the report
    scores against; the protector's weights are unchanged)."""
    names = registry.names("fr")
    with torch.no_grad():
        dev = protector.device
        emb = zoo_ensembles(WORKING_SIZE, dev)(names)(target_crop.to(dev, torch.float32))
    return replace(
        protector, target_embeddings={m: e.mean(0, keepdim=True).cpu() for m, e in emb.items()}
    )


def _refine_names(protector: Protector, options: ProtectOptions) -> tuple[str, ...] | None:
    """The FR models the refinement pulls toward the protector's target; None when ``options``
    do not refine. A :class:`UserError` when the protector has no target for them (checked
    before any photo is worked on)."""
    c = options.refine
    if options.mode != "refine" or (c.steps == 0 and c.guide_steps == 0):
        return None
    names = options.surrogates or tuple(
        m for m in registry.names("fr") if m in protector.target_embeddings
    )
    if not names:
        raise UserError(
            "the protector has no target embedding of an offline FR model to refine toward "
            "(one made with --fr-zoo paper?); give --target IMG, or use --fast"
        )
    missing = [m for m in names if m not in protector.target_embeddings]
    if missing:
        raise UserError(f"the protector has no target embedding for {', '.join(missing)}")
    return names


def _refinement(
    protector: Protector, options: ProtectOptions
) -> tuple[Refiner, dict[str, torch.Tensor]] | None:
    """The refiner and its target embeddings for ``options``; None in mode ``fast``."""
    names = _refine_names(protector, options)
    if names is None:
        return None
    dev = protector.device
    refiner = _refiner(names, protector.config.emotion, options.refine, dev)
    return refiner, {m: protector.target_embeddings[m].to(dev) for m in names}


def _batches(small: Sequence[bool]) -> list[list[int]]:
    """The faces' indices per batch: at most :data:`BATCH` each, small faces apart."""
    groups = [[i for i, s in enumerate(small) if not s], [i for i, s in enumerate(small) if s]]
    return [g[lo : lo + BATCH] for g in groups for lo in range(0, len(g), BATCH)]


def _for_small_faces(options: ProtectOptions) -> ProtectOptions:
    """``options`` for faces under :data:`SMALL_FACE_PX`: fewer EOT copies (their random
    down-scales would mostly be faces below the minimum size)."""
    if options.small_face_copies is None:
        return options
    return replace(options, refine=replace(options.refine, copies=options.small_face_copies))


def _edit_batch(
    protector: Protector,
    x0: torch.Tensor,
    options: ProtectOptions,
    side: Sequence[int],
    step: Callable[[int, int], None],
) -> torch.Tensor:
    """One batch of :func:`edit_in_batches`; ``step(done, total)`` after each refinement step."""
    refinement = _refinement(protector, options)
    x0 = x0.to(protector.device)
    guide = None
    if refinement is not None and options.refine.guide_steps > 0:
        refiner, target = refinement
        guide = refiner.guide(x0, target, side, partial(to_crop, size=x0.shape[-1]))
    edited = apply_protector(protector, x0, guide, dtype=options.dtype)
    if options.mode == "refine":
        edited = x0 + options.map_strength * (edited - x0)
    if options.chroma:
        edited = restore_chroma_tensor(x0, edited)
    if refinement is not None and options.refine.steps > 0:
        refiner, target = refinement
        edited = refiner(x0, edited, target, side, step)
    return edited.cpu()


def edit_in_batches(
    protector: Protector,
    crops: torch.Tensor | Sequence[np.ndarray],
    options: ProtectOptions,
    own_side: Sequence[int],
    progress: Progress | None = None,
    small: Sequence[bool] | None = None,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Edit working crops (a float tensor (N, 3, S, S) in [0, 1], or N uint8 (S, S, 3) crops)
    as :func:`edit_crops` says, :data:`BATCH` faces at a time; yields (the faces' indices, their
    edited crops (B, 3, S, S) in [0, 1]) batch by batch, so only one batch is ever held as
    floats. Faces flagged in ``small`` are batched apart and refined with
    ``options.small_face_copies`` EOT copies. ``progress`` counts faces and face-steps over all
    N faces."""
    n = len(crops)
    flags = list(small) if small is not None else [False] * n
    done = 0
    if progress is not None:
        progress("faces", 0, n)
    for idx in _batches(flags):
        x0 = crops[idx] if isinstance(crops, torch.Tensor) else to_tensor([crops[i] for i in idx])
        opts = _for_small_faces(options) if flags[idx[0]] else options

        def step(k: int, total: int, before: int = done, size: int = len(idx)) -> None:
            if progress is not None:
                progress("refine", before * total + k * size, n * total)

        edited = _edit_batch(protector, x0, opts, [own_side[i] for i in idx], step)
        done += len(idx)
        if progress is not None:
            progress("faces", done, n)
        yield idx, edited


def edit_crops(
    protector: Protector,
    crops: torch.Tensor,
    options: ProtectOptions,
    own_side: Sequence[int],
    progress: Progress | None = None,
) -> torch.Tensor:
    """Edit working crops (N, 3, S, S) in [0, 1] as ``options`` says: the MAP protector's pass
    (identity-guided when ``refine.guide_steps`` > 0), kept at ``map_strength`` with the
    original chroma, then (mode ``refine``) the per-face refinement toward the protector's
    target. ``own_side[i]``: face i's crop side in photo pixels. Batches of :data:`BATCH`
    (:func:`edit_in_batches`)."""
    out: list[torch.Tensor] = [crops[0]] * crops.shape[0]
    for idx, edited in edit_in_batches(protector, crops, options, own_side, progress):
        for i, e in zip(idx, edited, strict=True):
            out[i] = e
    return torch.stack(out)


def _protect_faces(
    rgb: np.ndarray,
    alignments: list[Alignment],
    crops: list[np.ndarray],
    small: list[bool],
    protector: Protector,
    options: ProtectOptions,
    progress: Progress | None,
) -> tuple[np.ndarray, list[float]]:
    """Edit every face's crop (:func:`edit_in_batches`) and blend each batch's edits into a
    copy of ``rgb`` as soon as it is done; returns the photo and the seconds per face (each
    batch's time shared evenly by its faces)."""
    out = rgb.copy()
    seconds = [0.0] * len(crops)
    own_side = [max(8, round(WORKING_SIZE / a.scale)) for a in alignments]
    t = time.perf_counter()
    for idx, edited in edit_in_batches(protector, crops, options, own_side, progress, small):
        for i, e in zip(idx, to_uint8(edited), strict=True):
            blend_edit(out, crops[i], e, alignments[i], in_place=True)
        now = time.perf_counter()
        for i in idx:
            seconds[i] = (now - t) / len(idx)
        t = now
    return out, seconds


def _skip_reason(
    face: Face, alignment: Alignment, height: int, width: int, min_face: float
) -> SkippedFace | None:
    """Why ``face`` of a ``height`` × ``width`` photo is left unchanged; None to protect it."""
    cut = outside_share(alignment, height, width, face_mask(alignment.size))
    if cut > MAX_OUTSIDE:
        return SkippedFace(
            face.box,
            "cut_by_border",
            f"cut by the image border: {cut:.0%} of the face is outside the photo "
            f"(more than {MAX_OUTSIDE:.0%}), too little to align",
        )
    if face.side < min_face:
        return SkippedFace(
            face.box,
            "too_small",
            f"too small: {face.side:.0f} px (the box's shorter side), below the minimum of "
            f"{min_face:.0f} px",
        )
    turned = turn(face.landmarks)
    if turned > MAX_TURN:
        return SkippedFace(
            face.box,
            "turned_away",
            f"turned away: the nose is {turned:.2f} eye distances off the face's midline "
            f"(more than {MAX_TURN}), too far from frontal to align",
        )
    return None


def protect_photo(
    photo: Photo,
    protector: Protector,
    options: ProtectOptions,
    progress: Progress | None = None,
    *,
    target_crop: torch.Tensor | None = None,
    out_format: str | None = None,
) -> tuple[np.ndarray, PhotoReport]:
    """Protect every face of ``photo`` that can be (the others are listed in the report's
    ``skipped`` with their reason); returns (output RGB uint8, report).

    ``out_format`` is the Pillow format the output will be written in (default: the output
    format of the photo's suffix); lossy formats are measured after an encode/decode round trip
    at ``options.quality``, so the report describes the file as written. With
    ``options.adapt_steps`` > 0, ``target_crop`` (1, 3, S, S) in [0, 1] is required; the
    protector adapts to the photo's largest faces (at most one per step, faces under
    :data:`SMALL_FACE_PX` only when there is no other).
    The report's ``output`` is left unset (nothing is written here).
    """
    options.check_target(target_crop is not None)
    start = time.perf_counter()
    report = PhotoReport(path=photo.path, size=photo.size)
    found = locate_faces(photo.rgb)
    height, width = photo.rgb.shape[:2]
    keep: list[Face] = []
    alignments: list[Alignment] = []
    for f in found:
        alignment = working_alignment(f.landmarks, WORKING_SIZE)
        skip = _skip_reason(f, alignment, height, width, options.min_face)
        if skip is None:
            keep.append(f)
            alignments.append(alignment)
        else:
            report.skipped.append(skip)
    if not keep:
        report.seconds = time.perf_counter() - start
        return photo.rgb.copy(), report
    crops = [warp_crop(photo.rgb, a) for a in alignments]
    small = [f.side < SMALL_FACE_PX for f in keep]
    if options.adapt_steps > 0 and target_crop is not None:
        if progress is not None:
            progress("adapt", 0, 1)
        learn = [c for c, s in zip(crops, small, strict=True) if not s] or crops
        protector = adapt_protector(
            protector,
            to_tensor(learn[: options.adapt_steps]),
            target_crop,
            options.adapt_steps,
            dtype=options.dtype,
        )
        report.adapted_steps = int(protector.metrics.get("adapt_steps", 0))
        if progress is not None:
            progress("adapt", 1, 1)
    out, seconds = _protect_faces(photo.rgb, alignments, crops, small, protector, options, progress)
    fmt = out_format or _output_format(photo.path)
    written = _as_written(out, fmt, options.quality)
    rank = {id(f): i for i, f in enumerate(found)}
    edited = [
        EditedFace(rank[id(face)], face, alignment, crop, secs)
        for face, alignment, crop, secs in zip(keep, alignments, crops, seconds, strict=True)
    ]
    report.faces = measure_faces(
        photo.rgb,
        written,
        edited,
        protector.target_embeddings,
        robustness=options.robustness,
        device=str(protector.device),
    )
    report.seconds = time.perf_counter() - start
    return out, report


# ----------------------------------------------------------------------------- batches


def _looks_like_output(path: Path) -> bool:
    """A file an earlier run wrote (``name_protected.jpg``, ``name_protected-2.jpg``)."""
    stem = path.stem
    base, _, n = stem.rpartition("-")
    return stem.endswith(SUFFIX) or (n.isdigit() and base.endswith(SUFFIX))


def expand_inputs(paths: Sequence[Path], out_dir: Path | None = None) -> list[Path]:
    """The files to protect: files as given, folders searched recursively for images (leaving
    out earlier outputs, the files named ``*_protected*``), duplicates removed. The output
    folder may hold the inputs or be among them (``protect pics -o pics``): its other files are
    protected like any. ``out_dir`` is accepted for compatibility and not used. Raises
    :class:`UserError` for a folder without images or when nothing is left."""
    del out_dir  # outputs are recognised by their name, wherever they are
    files: list[Path] = []
    seen: set[Path] = set()
    for p in paths:
        if p.is_dir():
            images = iter_image_files([p])
            found = [f for f in images if not _looks_like_output(f)]
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


class _WriteError(Exception):
    """Writing one protected copy failed; the message is for that photo's report."""


def _write(src: Photo, rgb: np.ndarray, options: ProtectOptions) -> Path:
    """Write the protected copy under a free name; retried if the name is taken meanwhile.
    Raises :class:`_WriteError` (a full disk, a read-only or removed drive …); no temporary
    file is left then."""
    dest = output_path_for(src.path, options.out_dir, SUFFIX, like=src)
    for _ in range(5):
        dest = output_path_for(src.path, options.out_dir, SUFFIX, like=src)
        try:
            return write_photo(
                dest,
                rgb,
                like=src,
                keep_metadata=options.keep_metadata,
                quality=options.quality,
            )
        except FileExistsError:
            continue
        except OSError as e:
            raise _WriteError(f"cannot write {dest}: {os_problem(e)}") from None
    raise _WriteError(f"could not find a free output name in {dest.parent}")


def protect_files(
    paths: Sequence[Path],
    protector: Protector,
    options: ProtectOptions,
    progress: Progress | None = None,
    *,
    target_crop: torch.Tensor | None = None,
) -> list[PhotoReport]:
    """Protect every photo of ``paths`` (files or folders) and write the protected copies.

    A photo with no protected face gets no output file. Unreadable files are reported (their
    ``error``) and the run goes on; see the module docstring for what raises instead.
    """
    options.check_target(target_crop is not None)
    if target_crop is not None and options.adapt_steps == 0:
        protector = retarget(protector, target_crop)
    if options.adapt_steps == 0:
        _refine_names(protector, options)  # a protector without the targets: before any work
    files = expand_inputs(paths, options.out_dir)
    folders = [options.out_dir] if options.out_dir is not None else [f.parent for f in files]
    for folder in dict.fromkeys(folders):
        if folder.is_dir() or options.out_dir is not None:
            check_output_folder(folder)
    reports: list[PhotoReport] = []
    for i, path in enumerate(files):
        try:
            reports.append(_protect_file(path, protector, options, progress, target_crop))
        except KeyboardInterrupt:
            raise Interrupted(reports) from None
        if progress is not None:
            progress("photos", i + 1, len(files))
    return reports


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`protect_files`; ``reports`` are those of the photos finished
    (and written) before it."""

    def __init__(self, reports: list[PhotoReport]) -> None:
        super().__init__("interrupted")
        self.reports = reports


def _protect_file(
    path: Path,
    protector: Protector,
    options: ProtectOptions,
    progress: Progress | None,
    target_crop: torch.Tensor | None,
) -> PhotoReport:
    """Read, protect and write one photo; every problem of this photo (unreadable, a full
    disk, a failing drive) goes into its report."""
    try:
        photo = read_photo(path)
    except ImageError as e:
        return PhotoReport(path=path, error=e.problem)
    try:
        rgb, report = protect_photo(
            photo,
            protector,
            options,
            progress,
            target_crop=target_crop,
            out_format=_output_format(output_path_for(path, options.out_dir, SUFFIX, like=photo)),
        )
    except OSError as e:  # e.g. the adaptation's working files on a full disk
        return PhotoReport(path=path, size=photo.size, error=f"failed: {os_problem(e)}")
    if report.faces:
        try:
            report.output = _write(photo, rgb, options)
        except _WriteError as e:
            report.error = f"not written: {e}"
        else:
            report.format_change = format_change(photo, report.output)
    return report
