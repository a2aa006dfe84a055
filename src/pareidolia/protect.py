"""The photo pipeline: every face found is edited by a protector and pasted back at full
resolution.

Per photo: read, locate the faces (large photos in full-resolution tiles too,
:mod:`pareidolia.faces.detect`), skip and list with its reason every face that cannot be edited
(too small, cut by the image border, turned away), take each other face's 256 px working crop
(small faces upscaled into it), optionally adapt the protector to this photo's faces, apply it
in batches of working crops (``ProtectOptions.batch``, :func:`batch_size`) that gather the
faces of several photos, blend each edit back at the face's own resolution
(:mod:`pareidolia.faces.blend`) and write the photo as soon as its last face is done. Photos
are read only as their faces are needed: at most a batch's worth of photos (and
:data:`WINDOW_PIXELS`) is held at once, however many a folder has. What was done is measured by
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
import time
import warnings
from collections import deque
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
    inside_mask,
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
from pareidolia.inputs import SUFFIX, check_output_folder, done_before, expand_inputs
from pareidolia.io import (
    SAVE_FORMATS,
    ImageError,
    Photo,
    encode_photo,
    output_path_for,
    read_photo,
    write_photo,
)
from pareidolia.locate import locate_faces
from pareidolia.objectives.identity import zoo_ensembles
from pareidolia.protector import Protector, adapt_protector, apply_protector, to_crop
from pareidolia.refine import STRENGTHS, RefineConfig, Refiner
from pareidolia.report import EditedFace, PhotoReport, SkippedFace, measure_faces
from pareidolia.runtime import INVERSION_STEPS, WORKING_SIZE, dtype_name
from pareidolia.zoo import registry

__all__ = [
    "Interrupted",
    "Progress",
    "ProtectOptions",
    "batch_size",
    "edit_crops",
    "edit_in_batches",
    "format_change",
    "preset",
    "protect_files",
    "protect_photo",
    "retarget",
    "run_record",
]

# The pipeline's own models (refinement, retargeting, the report's FR models and judge) run
# where the protector is (:attr:`Protector.device`): one device per run, picked by the caller.

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stages: ``photos`` (photos finished, after each),
``faces`` (faces edited of those of the open photos, the ones read and not yet finished: said
when a photo's faces join, then after each batch; a finished photo's faces leave both counts),
``adapt`` (0 of 1 when adapting starts, 1 of 1 when done), ``refine`` (face-steps of the open
photos' refinement)."""


def preset(name: str) -> tuple[Literal["refine", "fast"], RefineConfig, float]:
    """(mode, refinement, MAP strength) of a strength: a :data:`~pareidolia.refine.STRENGTHS`
    preset (``--strength``), or ``fast`` (``--fast``: the MAP protector's one pass; the
    refinement is the balanced preset's, unused)."""
    if name == "fast":
        return "fast", *STRENGTHS["balanced"]
    if name not in STRENGTHS:
        raise UserError(f"strength {name!r}: not one of {', '.join([*STRENGTHS, 'fast'])}")
    return "refine", *STRENGTHS[name]


@dataclass(frozen=True)
class ProtectOptions:
    """How a batch is protected; the defaults are those of ``pareidolia protect``."""

    out_dir: Path | None = None  # None: next to each source photo
    keep_metadata: bool = False  # keep EXIF (GPS, camera …); stripped by default
    adapt_steps: int = 0  # fine-tuning steps on each photo's own faces before applying
    min_face: float = MIN_FACE_PX  # faces whose detection box's shorter side is below: skipped
    robustness: bool = True  # re-check the decisions after a simulated social-network upload
    # leave alone a photo whose output an earlier run wrote (done_before), to go on after an
    # interrupted run
    skip_done: bool = False
    quality: int = 95  # JPEG / WebP quality of the output
    # [ours] "refine": the MAP edit at ``map_strength``, chroma restored, then the per-face
    # refinement (pareidolia.refine); "fast": the MAP protector's one pass alone, as the paper.
    mode: Literal["refine", "fast"] = "refine"
    map_strength: float = 0.25  # [ours] share of the MAP protector's change kept (1: all)
    chroma: bool = True  # [ours] keep the edit's luminance, the original's chroma
    # [ours] DDIM inversion steps of the MAP pass (runtime.INVERSION_STEPS); None: the
    # protector's own (20, as it was trained, DiffAM's setting)
    inversion_steps: int | None = INVERSION_STEPS
    refine: RefineConfig = field(default_factory=RefineConfig)
    # FR models the refinement optimises against; None: every model the target is known to
    surrogates: tuple[str, ...] | None = None
    # [ours] EOT copies of the refinement for faces under SMALL_FACE_PX; None: refine.copies
    small_face_copies: int | None = SMALL_FACE_COPIES
    # the score network's compute dtype (adapting and the MAP pass; pareidolia.runtime.pick_dtype)
    dtype: torch.dtype = torch.float32
    # working crops per batch of the network stages, faces of several photos together;
    # "auto": batch_size picks it from the device (BATCH on the CPU)
    batch: int | Literal["auto"] = "auto"

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
        if self.batch != "auto" and (
            isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1
        ):
            raise OptionError(
                f"{{batch}} must be auto or at least 1 face, got {self.batch!r}", "batch"
            )
        if self.inversion_steps is not None and self.inversion_steps < 2:
            raise OptionError(
                f"{{inversion_steps}} must be at least 2, got {self.inversion_steps}",
                "inversion_steps",
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


BATCH = 8  # working crops per batch on the CPU (``batch="auto"`` there)
# [derived] memory one working crop adds to a batch at its peak. Measured on the CPU (peak
# resident set, 4 faces against 1): 360 MB a face for the refinement (defaults: 3 EOT copies
# through the surrogates, backward), 380 MB for a no-grad pass of the paper's 256 px UNet (the
# shipped prior needs less); taken 2.5 times for the CUDA allocator's rounding and the kernels'
# workspaces, not measured on a GPU.
FACE_GPU_BYTES = 1 << 30
# kept free beside a batch: the models not loaded yet (the refinement's and the report's, about
# 0.1 GB of weights) and their workspaces
GPU_RESERVE_BYTES = 4 << 30
MAX_AUTO_BATCH = 64  # "auto" never batches more faces (the window of open photos grows with it)
WINDOW_PIXELS = 200_000_000  # no photo is read while the open ones hold more pixels (~1.2 GB)


def batch_size(batch: int | Literal["auto"], device: torch.device) -> int:
    """The working crops per batch ``batch`` stands for on ``device``: itself, or for
    ``auto`` :data:`BATCH` on the CPU and, on CUDA, as many faces as this process's free
    memory holds at :data:`FACE_GPU_BYTES` a face beside :data:`GPU_RESERVE_BYTES` (1 to
    :data:`MAX_AUTO_BATCH`)."""
    if batch != "auto":
        return batch
    if device.type != "cuda":
        return BATCH
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return max(1, min(MAX_AUTO_BATCH, (free - GPU_RESERVE_BYTES) // FACE_GPU_BYTES))


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


def _inside_tensor(inside: Sequence[np.ndarray]) -> torch.Tensor | None:
    """(B, 1, S, S) float of the faces' (S, S) bool inside-the-photo masks; None when every
    crop lies wholly inside its photo."""
    if all(m.all() for m in inside):
        return None
    return torch.from_numpy(np.stack(inside)[:, None].astype(np.float32))


def _edit_batch(
    protector: Protector,
    x0: torch.Tensor,
    options: ProtectOptions,
    side: Sequence[int],
    step: Callable[[int, int], None],
    inside: torch.Tensor | None = None,
) -> torch.Tensor:
    """One batch of :func:`edit_in_batches`; ``step(done, total)`` after each refinement step;
    ``inside`` (:func:`_inside_tensor`): the faces' parts inside their photos, the only parts
    the refinement changes and measures."""
    refinement = _refinement(protector, options)
    x0 = x0.to(protector.device)
    guide = None
    if refinement is not None and options.refine.guide_steps > 0:
        refiner, target = refinement
        guide = refiner.guide(x0, target, side, partial(to_crop, size=x0.shape[-1]), inside)
    edited = apply_protector(
        protector, x0, guide, dtype=options.dtype, n_inv=options.inversion_steps
    )
    if options.mode == "refine":
        edited = x0 + options.map_strength * (edited - x0)
    if options.chroma:
        edited = restore_chroma_tensor(x0, edited)
    if refinement is not None and options.refine.steps > 0:
        refiner, target = refinement
        edited = refiner(x0, edited, target, side, step, inside)
    return edited.cpu()


def edit_in_batches(
    protector: Protector,
    crops: torch.Tensor | Sequence[np.ndarray],
    options: ProtectOptions,
    own_side: Sequence[int],
    progress: Progress | None = None,
    small: Sequence[bool] | None = None,
    inside: Sequence[np.ndarray] | None = None,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Edit working crops (a float tensor (N, 3, S, S) in [0, 1], or N uint8 (S, S, 3) crops)
    as :func:`edit_crops` says, :data:`BATCH` faces at a time; yields (the faces' indices, their
    edited crops (B, 3, S, S) in [0, 1]) batch by batch, so only one batch is ever held as
    floats. Faces flagged in ``small`` are batched apart and refined with
    ``options.small_face_copies`` EOT copies. ``inside[i]`` (S, S) bool: where face i's crop
    lies inside its photo (None: everywhere). ``progress`` counts faces and face-steps over
    all N faces."""
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

        masks = None if inside is None else _inside_tensor([inside[i] for i in idx])
        edited = _edit_batch(protector, x0, opts, [own_side[i] for i in idx], step, masks)
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
    inside: Sequence[np.ndarray] | None = None,
) -> torch.Tensor:
    """Edit working crops (N, 3, S, S) in [0, 1] as ``options`` says: the MAP protector's pass
    (identity-guided when ``refine.guide_steps`` > 0), kept at ``map_strength`` with the
    original chroma, then (mode ``refine``) the per-face refinement toward the protector's
    target. ``own_side[i]``: face i's crop side in photo pixels; ``inside[i]``: where its
    crop lies inside its photo (None: everywhere). Batches of :data:`BATCH`
    (:func:`edit_in_batches`)."""
    out: list[torch.Tensor] = [crops[0]] * crops.shape[0]
    batches = edit_in_batches(protector, crops, options, own_side, progress, inside=inside)
    for idx, edited in batches:
        for i, e in zip(idx, edited, strict=True):
            out[i] = e
    return torch.stack(out)


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


def _faces_to_protect(
    found: list[Face], height: int, width: int, min_face: float, report: PhotoReport
) -> tuple[list[Face], list[Alignment]]:
    """The faces of ``found`` that can be protected, with their working alignments; the others
    go into ``report.skipped`` with their reason."""
    keep: list[Face] = []
    alignments: list[Alignment] = []
    for f in found:
        alignment = working_alignment(f.landmarks, WORKING_SIZE)
        skip = _skip_reason(f, alignment, height, width, min_face)
        if skip is None:
            keep.append(f)
            alignments.append(alignment)
        else:
            report.skipped.append(skip)
    return keep, alignments


@dataclass(eq=False)
class _Open:
    """A photo read, its faces located and cut into working crops, waiting for their edits
    (blended into ``out`` batch by batch)."""

    index: int  # the photo's place in the run
    photo: Photo
    report: PhotoReport
    found: list[Face]
    keep: list[Face]  # the faces to protect, with their alignments, crops, …
    alignments: list[Alignment]
    crops: list[np.ndarray]
    small: list[bool]  # under SMALL_FACE_PX (batched apart)
    own_side: list[int]  # the crop's side in photo pixels
    inside: list[np.ndarray]  # (S, S) bool: where the crop lies inside the photo
    protector: Protector  # adapted to this photo's faces when options.adapt_steps > 0
    out: np.ndarray
    busy: float  # seconds spent on this photo alone (locating, adapting)
    seconds: list[float] = field(default_factory=list)  # per face: its share of its batch
    # per face: refinement steps (done, planned), None without refinement
    steps: list[tuple[int, int] | None] = field(default_factory=list)
    left: int = 0  # faces not edited yet

    def __post_init__(self) -> None:
        self.seconds = [0.0] * len(self.keep)
        self.steps = [None] * len(self.keep)
        self.left = len(self.keep)


def _adapted(
    protector: Protector,
    crops: list[np.ndarray],
    small: list[bool],
    options: ProtectOptions,
    target_crop: torch.Tensor,
    report: PhotoReport,
    progress: Progress | None,
) -> Protector:
    """``protector`` adapted toward ``target_crop`` on the photo's largest faces (at most one
    per step, faces under :data:`SMALL_FACE_PX` only when there is no other); the steps taken
    go into ``report``."""
    if progress is not None:
        progress("adapt", 0, 1)
    learn = [c for c, s in zip(crops, small, strict=True) if not s] or crops
    steps = options.adapt_steps
    adapted = adapt_protector(
        protector, to_tensor(learn[:steps]), target_crop, steps, dtype=options.dtype
    )
    report.adapted_steps = int(adapted.metrics.get("adapt_steps", 0))
    if progress is not None:
        progress("adapt", 1, 1)
    return adapted


def _open(
    index: int,
    photo: Photo,
    protector: Protector,
    options: ProtectOptions,
    progress: Progress | None,
    target_crop: torch.Tensor | None,
) -> _Open:
    """``photo`` with its faces located and those that can be protected cut into working crops
    (the others in the report with their reason); with ``options.adapt_steps`` > 0 the
    protector is adapted to them."""
    start = time.perf_counter()
    report = PhotoReport(path=photo.path, size=photo.size)
    found = locate_faces(photo.rgb)
    height, width = photo.rgb.shape[:2]
    keep, alignments = _faces_to_protect(found, height, width, options.min_face, report)
    crops = [warp_crop(photo.rgb, a) for a in alignments]
    small = [f.side < SMALL_FACE_PX for f in keep]
    if keep and options.adapt_steps > 0 and target_crop is not None:
        protector = _adapted(protector, crops, small, options, target_crop, report, progress)
    own_side = [max(8, round(WORKING_SIZE / a.scale)) for a in alignments]
    inside = [inside_mask(a, height, width) for a in alignments]
    out = photo.rgb.copy()
    busy = time.perf_counter() - start
    return _Open(
        index,
        photo,
        report,
        found,
        keep,
        alignments,
        crops,
        small,
        own_side,
        inside,
        protector,
        out,
        busy,
    )


def _measured(
    opened: _Open, options: ProtectOptions, out_format: str
) -> tuple[np.ndarray, PhotoReport]:
    """The protected photo and its report, measured on the pixels as written in
    ``out_format``; its seconds: its own work and its faces' shares of their batches."""
    start = time.perf_counter()
    report = opened.report
    if opened.keep:
        written = _as_written(opened.out, out_format, options.quality)
        rank = {id(f): i for i, f in enumerate(opened.found)}
        edited = [
            EditedFace(rank[id(face)], face, alignment, crop, secs, steps)
            for face, alignment, crop, secs, steps in zip(
                opened.keep,
                opened.alignments,
                opened.crops,
                opened.seconds,
                opened.steps,
                strict=True,
            )
        ]
        report.faces = measure_faces(
            opened.photo.rgb,
            written,
            edited,
            opened.protector.target_embeddings,
            robustness=options.robustness,
            device=str(opened.protector.device),
        )
    report.seconds = opened.busy + sum(opened.seconds) + time.perf_counter() - start
    return opened.out, report


class _Window:
    """The open photos (read, not finished) and their faces waiting for an edit, in two
    queues: faces under :data:`SMALL_FACE_PX` are batched apart (fewer EOT copies).
    ``finish(photo)`` is called as soon as a photo's last face is blended in; the photo leaves
    the window then."""

    def __init__(
        self,
        options: ProtectOptions,
        progress: Progress | None,
        finish: Callable[[_Open], None],
    ) -> None:
        self.options = options
        self.progress = progress
        self.finish = finish
        self.open: list[_Open] = []
        self.queues: dict[bool, deque[tuple[_Open, int]]] = {False: deque(), True: deque()}
        self.done = 0  # faces of the open photos edited
        self.cap: int | None = None  # the batch, halved each time the accelerator ran out

    def read(self, photos: Iterator[_Open]) -> bool:
        """Open the next photo of ``photos``; False when none is left."""
        photo = next(photos, None)
        if photo is None:
            return False
        self.open.append(photo)
        for i, small in enumerate(photo.small):
            self.queues[small].append((photo, i))
        self._say()
        return True

    def full(self, batch: int, window: int) -> bool:
        """Whether a batch is edited before the next photo is read: a queue holds ``batch``
        faces, or ``window`` photos (or :data:`WINDOW_PIXELS`) are open."""
        pixels = sum(p.photo.rgb.shape[0] * p.photo.rgb.shape[1] for p in self.open)
        return (
            any(len(q) >= batch for q in self.queues.values())
            or len(self.open) >= window
            or pixels >= WINDOW_PIXELS
        )

    def waiting(self) -> bool:
        return any(self.queues.values())

    def edit(self, batch: int) -> None:
        """Edit one batch: ``batch`` faces of a queue that holds as many, else the faces of the
        queue the oldest open photo waits in; each edit is blended into its photo, and the
        photos done are finished."""
        queue = self._next_queue(batch)
        batch = min(batch, self.cap or batch)
        items = [queue.popleft() for _ in range(min(batch, len(queue)))]
        first, i = items[0]
        options = _for_small_faces(self.options) if first.small[i] else self.options
        before, total, size = self.done, self._total(), len(items)
        reached: list[tuple[int, int]] = []  # the last (step, steps) the refinement reported

        def step(k: int, steps: int) -> None:
            reached[:] = [(k, steps)]
            if self.progress is not None:
                self.progress("refine", before * steps + k * size, total * steps)

        start = time.perf_counter()
        # one protector per batch: a photo with its own adapted protector is open alone
        x0 = to_tensor([p.crops[j] for p, j in items])
        sides = [p.own_side[j] for p, j in items]
        inside = _inside_tensor([p.inside[j] for p, j in items])
        try:
            edited = _edit_batch(first.protector, x0, options, sides, step, inside)
        except torch.OutOfMemoryError:
            self._smaller(queue, items)
            return
        for (p, j), e in zip(items, to_uint8(edited), strict=True):
            blend_edit(p.out, p.crops[j], e, p.alignments[j], in_place=True)
            p.left -= 1
        share = (time.perf_counter() - start) / size
        for p, j in items:
            p.seconds[j] = share
            p.steps[j] = reached[0] if reached else None
        self.done += size
        self._say()
        self._release()

    def _smaller(self, queue: deque[tuple[_Open, int]], items: list[tuple[_Open, int]]) -> None:
        """The accelerator ran out of memory on ``items``: they go back to the front of their
        queue and every later batch is half as large (a face's result does not depend on its
        batch); one face that does not fit is the user's error."""
        if len(items) == 1:
            raise UserError(
                "the GPU ran out of memory on a single face: free it, or run with "
                "--dtype bfloat16 or --device cpu"
            )
        queue.extendleft(reversed(items))
        self.cap = len(items) // 2
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if self.progress is not None:
            self.progress("batch", self.cap, len(items))

    def _next_queue(self, batch: int) -> deque[tuple[_Open, int]]:
        full = [q for q in self.queues.values() if len(q) >= batch]
        if full:
            return full[0]
        return min((q for q in self.queues.values() if q), key=lambda q: q[0][0].index)

    def _total(self) -> int:
        return sum(len(p.keep) for p in self.open)

    def _say(self) -> None:
        if self.progress is not None:
            self.progress("faces", self.done, self._total())

    def _release(self) -> None:
        for photo in [p for p in self.open if p.left == 0]:
            self.open.remove(photo)
            self.done -= len(photo.keep)
            self.finish(photo)


def _protect_stream(
    photos: Iterator[_Open],
    batch: int,
    window: int,
    options: ProtectOptions,
    progress: Progress | None,
    finish: Callable[[_Open], None],
) -> None:
    """Edit every face of ``photos`` ``batch`` working crops at a time, faces of several photos
    together (:class:`_Window`). A photo is read only while fewer than ``window`` are open
    (and fewer than :data:`WINDOW_PIXELS` pixels), so a folder of any size holds at most
    ``window`` photos in memory; each is finished as soon as its last face is done."""
    faces = _Window(options, progress, finish)
    while faces.read(photos):
        while faces.full(batch, window):
            faces.edit(batch)
    while faces.waiting():
        faces.edit(batch)


def _window(batch: int, options: ProtectOptions) -> int:
    """The photos open at once: ``batch`` (each has a face at least), or one when every photo
    adapts a protector of its own (its faces cannot share a batch with another's)."""
    return 1 if options.adapt_steps > 0 else batch


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
    :data:`SMALL_FACE_PX` only when there is no other). Faces are edited
    ``options.batch`` at a time (:func:`batch_size`).
    The report's ``output`` is left unset (nothing is written here).
    """
    options.check_target(target_crop is not None)
    opened = _open(0, photo, protector, options, progress, target_crop)
    batch = batch_size(options.batch, protector.device)
    _protect_stream(iter([opened]), batch, 1, options, progress, lambda _: None)
    return _measured(opened, options, out_format or _output_format(photo.path))


# ----------------------------------------------------------------------------- batches


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
    """Protect every photo of ``paths`` (files or folders) and write the protected copies;
    returns their reports in the order of the files.

    The faces of several photos are edited together, ``options.batch`` working crops at a
    time (:func:`batch_size`); photos are read as their faces are needed and each is written
    as soon as its faces are done, so at most a batch's worth of photos is held in memory (one
    when adapting: each photo's faces then have a protector of their own). A photo with no
    protected face gets no output file. Unreadable files are reported (their ``error``) and the
    run goes on; see the module docstring for what raises instead. With ``skip_done`` the
    photos an earlier run protected (:func:`done_before`) are reported as done, unread.
    """
    options.check_target(target_crop is not None)
    if target_crop is not None and options.adapt_steps == 0:
        protector = retarget(protector, target_crop)
    if options.adapt_steps == 0:
        _refine_names(protector, options)  # a protector without the targets: before any work
    files = expand_inputs(paths)
    folders = [options.out_dir] if options.out_dir is not None else [f.parent for f in files]
    for folder in dict.fromkeys(folders):
        if folder.is_dir() or options.out_dir is not None:
            check_output_folder(folder)
    batch = batch_size(options.batch, protector.device)
    run = _Run(len(files), progress)
    if options.skip_done:
        for index, report in done_before(files, options.out_dir).items():
            run.record(index, report)
    todo = [i for i in range(len(files)) if i not in run.finished]
    photos = _Files(files, todo, protector, options, progress, target_crop, run)

    def finish(photo: _Open) -> None:
        run.record(photo.index, _finish_file(photo, options))

    try:
        _protect_stream(photos, batch, _window(batch, options), options, progress, finish)
    except KeyboardInterrupt:
        raise Interrupted(run.reports()) from None
    return run.reports()


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`protect_files`; ``reports`` are those of the photos finished
    (and written) before it."""

    def __init__(self, reports: list[PhotoReport]) -> None:
        super().__init__("interrupted")
        self.reports = reports


class _Run:
    """The reports of a run's photos as they finish (in any order), given back in the order
    of the files; ``progress("photos", finished, total)`` after each."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total = total
        self.progress = progress
        self.finished: dict[int, PhotoReport] = {}

    def record(self, index: int, report: PhotoReport) -> None:
        self.finished[index] = report
        if self.progress is not None:
            self.progress("photos", len(self.finished), self.total)

    def reports(self) -> list[PhotoReport]:
        return [self.finished[i] for i in sorted(self.finished)]


class _Files:
    """The photos of ``files`` opened (:func:`_open_file`) one at a time, when the next is asked
    for; those with nothing to edit (unreadable, no face to protect) are finished on the way
    and recorded in ``run``."""

    def __init__(
        self,
        files: Sequence[Path],
        todo: Sequence[int],
        protector: Protector,
        options: ProtectOptions,
        progress: Progress | None,
        target_crop: torch.Tensor | None,
        run: _Run,
    ) -> None:
        self.todo = deque((i, files[i]) for i in todo)
        self.protector = protector
        self.options = options
        self.progress = progress
        self.target_crop = target_crop
        self.run = run

    def __iter__(self) -> Iterator[_Open]:
        return self

    def __next__(self) -> _Open:
        while self.todo:
            opened = self._open_next()
            if opened is not None:
                return opened
        raise StopIteration

    def _open_next(self) -> _Open | None:
        """The next file opened; None when it had nothing to edit (and is recorded)."""
        index, path = self.todo.popleft()
        opened = _open_file(
            path, index, self.protector, self.options, self.progress, self.target_crop
        )
        if isinstance(opened, PhotoReport):
            self.run.record(index, opened)
        elif not opened.keep:
            self.run.record(index, _finish_file(opened, self.options))
        else:
            return opened
        return None


def _open_file(
    path: Path,
    index: int,
    protector: Protector,
    options: ProtectOptions,
    progress: Progress | None,
    target_crop: torch.Tensor | None,
) -> _Open | PhotoReport:
    """Read and open one photo (:func:`_open`); a photo that cannot be read or opened (the
    adaptation's working files on a full disk) is its report, with the problem."""
    try:
        photo = read_photo(path)
    except ImageError as e:
        return PhotoReport(path=path, error=e.problem)
    try:
        return _open(index, photo, protector, options, progress, target_crop)
    except OSError as e:
        return PhotoReport(path=path, size=photo.size, error=f"failed: {os_problem(e)}")


def _finish_file(opened: _Open, options: ProtectOptions) -> PhotoReport:
    """Measure and write one photo whose faces are all edited; every problem of this photo (a
    full disk, a failing drive) goes into its report."""
    photo = opened.photo
    out_format = _output_format(output_path_for(photo.path, options.out_dir, SUFFIX, like=photo))
    try:
        rgb, report = _measured(opened, options, out_format)
    except OSError as e:
        return PhotoReport(path=photo.path, size=photo.size, error=f"failed: {os_problem(e)}")
    if report.faces:
        try:
            report.output = _write(photo, rgb, options)
        except _WriteError as e:
            report.error = f"not written: {e}"
        else:
            report.format_change = format_change(photo, report.output)
    return report
