"""What a protection run did: the typed per-face and per-photo reports, the measuring that fills
them, and their one text rendering and one JSON form.

:mod:`pareidolia.protect` edits the faces and hands each edited face (:class:`EditedFace`) to
:func:`measure_faces`, which measures it on the pixels exactly as they will be written: for
each FR model its score against the original face and against the protector's target, before
and after, with the FAR 0.01 decision; the independent expression judge's probabilities;
PSNR/SSIM and colour shift of the face's working crop; and, optionally, whether the decisions
survive an upload to a social network (0.5× resize, JPEG 75), with the faces detected anew.

The ``pareidolia protect`` command, the demo and the web page all show the same typed reports:
:func:`render_text` (the command's table), :func:`table_rows` and :func:`markdown_summary` (the
page's table and status lines), and :func:`reports_json` (the ``{"far": …, "photos": …}``
document), with one set of words for decisions and scores (:func:`match_word`,
:func:`score_text`).

The types and renderers need only the standard library, so the web page and the command line
import this module cheaply; the measuring loads its models on first use.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pareidolia.runtime import FAR

if TYPE_CHECKING:
    import numpy as np
    import torch

    from pareidolia.evaluation.verification import FaceEmbedder
    from pareidolia.faces.align import Alignment
    from pareidolia.faces.detect import Face
    from pareidolia.zoo.chip_model import ChipModel

__all__ = [
    "COLUMNS",
    "INDEPENDENT",
    "ZOO_CAVEAT",
    "EditedFace",
    "FaceReport",
    "ModelScores",
    "PhotoReport",
    "RobustnessCheck",
    "SkippedFace",
    "exit_status",
    "markdown_summary",
    "match_word",
    "measure_faces",
    "render_text",
    "reports_json",
    "score_text",
    "skip_counts",
    "table_rows",
]


_DONE_TEXT = "already protected by an earlier run (--skip-done); left as it was"
Status = Literal["protected", "partial", "skipped", "no_face", "error", "done"]
SkipKind = Literal["too_small", "cut_by_border", "turned_away"]
SKIP_WORDS: dict[SkipKind, str] = {
    "too_small": "too small",
    "cut_by_border": "cut by the border",
    "turned_away": "turned away",
}

# ----------------------------------------------------------------------------- reports


def _num(x: float | None, digits: int = 4) -> float | None:
    """A JSON-safe rounded number: None for a missing or infinite value."""
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), digits)


def _box(box: Sequence[float]) -> list[float]:
    """A face box (x, y, width, height) as the reports give it: rounded to 0.1 px."""
    return [round(float(v), 1) for v in box]


@dataclass(frozen=True)
class ModelScores:
    """One FR model's view of a protected face (scores are cosine similarities or, for the
    euclidean models, distances; the decisions use the model's FAR 0.01 threshold)."""

    model: str
    metric: str
    threshold: float
    original_score: float  # protected face vs the original face
    matches_original: bool
    target_before: float | None  # original face vs the target (None: no target embedding)
    target_after: float | None  # protected face vs the target
    matches_target_before: bool | None
    matches_target_after: bool | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("threshold", "original_score", "target_before", "target_after"):
            d[k] = _num(d[k])
        return d


@dataclass(frozen=True)
class RobustnessCheck:
    """One FR model's decisions on the face after the simulated upload (0.5×, JPEG 75)."""

    model: str
    original_score: float
    matches_original: bool
    target_score: float | None
    matches_target: bool | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["original_score"] = _num(d["original_score"])
        d["target_score"] = _num(d["target_score"])
        return d


@dataclass(frozen=True)
class SkippedFace:
    """A detected face that was left unchanged, and why (``kind``, and in words ``reason``)."""

    box: tuple[float, float, float, float]
    kind: SkipKind
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"box": _box(self.box), "kind": self.kind, "reason": self.reason}


def skip_counts(kinds: Sequence[str]) -> str:
    """``2 too small, 1 turned away``: the skipped faces counted by reason."""
    return ", ".join(f"{kinds.count(k)} {words}" for k, words in SKIP_WORDS.items() if k in kinds)


@dataclass(frozen=True)
class FaceReport:
    """What protecting one face did."""

    index: int  # rank by size among the detected faces (0 = largest)
    box: tuple[float, float, float, float]  # x, y, width, height in photo pixels
    detector_score: float
    models: list[ModelScores]
    expression_before: dict[str, float]  # judge's probabilities, EMOTIONS order
    expression_after: dict[str, float]
    psnr: float | None  # dB, working crop of original vs output; None when identical
    ssim: float
    colour_shift: tuple[float, float]  # CIEDE2000 mean, 95th percentile over the face oval
    seconds: float  # time to protect the face (adaptation excluded)
    redetected: bool | None = None  # face found again after the upload; None: not checked
    robustness: list[RobustnessCheck] | None = None
    # (refinement steps done, steps planned); fewer done when --time-limit stopped it; None:
    # no refinement (--fast)
    steps: tuple[int, int] | None = None
    # the FR judges' view (role fr_judge: FR models no part of the edit was made against;
    # compared with the original only, the shipped target has no embedding of theirs)
    independent: list[ModelScores] = field(default_factory=list)

    @property
    def time_limited(self) -> bool:
        """Whether the time limit stopped the face's refinement before its last step."""
        return self.steps is not None and self.steps[0] < self.steps[1]

    @property
    def top_expression_before(self) -> str:
        """The judge's most likely expression on the original face."""
        return max(self.expression_before, key=self.expression_before.__getitem__)

    @property
    def top_expression_after(self) -> str:
        """The judge's most likely expression on the protected face."""
        return max(self.expression_after, key=self.expression_after.__getitem__)

    def upload(self, model: str) -> RobustnessCheck | str:
        """``model``'s decisions after the simulated upload, or why there are none (``not
        checked``, ``face not found``)."""
        if self.redetected is None:
            return "not checked"
        for r in self.robustness or []:
            if r.model == model:
                return r
        return "face not found"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "box": _box(self.box),
            "detector_score": _num(self.detector_score),
            "models": [m.to_dict() for m in self.models],
            "expression_before": {k: _num(v) for k, v in self.expression_before.items()},
            "expression_after": {k: _num(v) for k, v in self.expression_after.items()},
            "top_expression_before": self.top_expression_before,
            "top_expression_after": self.top_expression_after,
            "psnr": _num(self.psnr, 2),
            "ssim": _num(self.ssim),
            "colour_shift": {
                "mean": _num(self.colour_shift[0], 3),
                "p95": _num(self.colour_shift[1], 3),
            },
            "seconds": _num(self.seconds, 3),
            "refinement_steps": None
            if self.steps is None
            else {"done": self.steps[0], "planned": self.steps[1]},
            "redetected": self.redetected,
            "robustness": None
            if self.robustness is None
            else [r.to_dict() for r in self.robustness],
            "independent": [m.to_dict() for m in self.independent],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


@dataclass
class PhotoReport:
    """What happened to one input file."""

    path: Path
    output: Path | None = None  # the protected copy; None when nothing was written
    size: tuple[int, int] | None = None  # (width, height)
    faces: list[FaceReport] = field(default_factory=list)
    skipped: list[SkippedFace] = field(default_factory=list)
    error: str | None = None  # why the file could not be processed
    adapted_steps: int = 0
    seconds: float = 0.0
    # the output's format differs from the input's (protect.format_change); None when kept
    format_change: str | None = None
    # ``output`` is an earlier run's (ProtectOptions.skip_done): the photo was not opened
    done_before: bool = False

    @property
    def status(self) -> Status:
        """``protected`` (every face), ``partial`` (some skipped), ``skipped`` (every face
        skipped), ``no_face``, ``error`` or ``done`` (an earlier run's output was found and
        the photo left alone)."""
        if self.error is not None:
            return "error"
        if self.done_before:
            return "done"
        if not self.faces:
            return "skipped" if self.skipped else "no_face"
        return "partial" if self.skipped else "protected"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "output": None if self.output is None else str(self.output),
            "status": self.status,
            "size": None if self.size is None else list(self.size),
            "faces_found": len(self.faces) + len(self.skipped),
            "faces_protected": len(self.faces),
            "faces": [f.to_dict() for f in self.faces],
            "skipped": [s.to_dict() for s in self.skipped],
            "error": self.error,
            "adapted_steps": self.adapted_steps,
            "seconds": _num(self.seconds, 3),
            "format_change": self.format_change,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def exit_status(reports: Sequence[PhotoReport]) -> int:
    """0 when every face of every photo was protected (now or by an earlier run), 2 when a
    file could not be used, else 1 (faces skipped: too small, cut by the border or turned
    away; or photos without a face)."""
    if any(r.status == "error" for r in reports):
        return 2
    return 0 if all(r.status in ("protected", "done") for r in reports) else 1


# ----------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class EditedFace:
    """One face as the pipeline edited it: all :func:`measure_faces` needs to report it."""

    index: int  # rank by size among the photo's detected faces (0 = largest)
    face: Face
    alignment: Alignment  # the face's working crop in the photo
    crop: np.ndarray  # the original's working crop, uint8 (S, S, 3)
    seconds: float  # time spent editing this face
    steps: tuple[int, int] | None = None  # refinement steps (done, planned); None: none


def _expression(judge: ChipModel, crop: np.ndarray) -> dict[str, float]:
    """The judge's probability of each expression (EMOTIONS order) on a working crop."""
    from pareidolia.faces.align import to_tensor
    from pareidolia.zoo.spec import EMOTIONS

    logp = judge.embed_crops(to_tensor(crop))[0].cpu()
    return {e: float(p) for e, p in zip(EMOTIONS, logp.exp().tolist(), strict=True)}


def measure_faces(
    original: np.ndarray,
    written: np.ndarray,
    faces: Sequence[EditedFace],
    target: dict[str, torch.Tensor],
    *,
    robustness: bool = True,
    device: str = "cpu",
) -> list[FaceReport]:
    """The report of every edited face: ``original`` is the photo as read, ``written`` the
    output's pixels as a reader will get them back (RGB uint8); ``target`` the protector's
    target embeddings per FR model. With ``robustness`` the decisions are checked again after
    a simulated social-network upload. The FR models and the judge run on ``device``."""
    from pareidolia.colour import colour_shift
    from pareidolia.faces.align import warp_crop
    from pareidolia.faces.blend import face_mask
    from pareidolia.quality import psnr, ssim

    if not faces:
        return []
    size = faces[0].crop.shape[0]
    from pareidolia.evaluation.verification import FaceEmbedder
    from pareidolia.zoo.chip_model import shared_zoo_model
    from pareidolia.zoo.registry import JUDGE, names

    embedder, judge = FaceEmbedder(device=device), shared_zoo_model(JUDGE, size, device)
    fr_judges = FaceEmbedder(names("fr_judge"), device)
    target = {m: e.detach().cpu() for m, e in target.items()}  # the embedder's are on the CPU
    originals = [embedder.embed(original, f.face.landmarks) for f in faces]
    robust = (
        _robustness(written, [f.face for f in faces], originals, target, embedder)
        if robustness
        else [(None, None)] * len(faces)
    )
    reports = []
    for f, orig_emb, (again, checks) in zip(faces, originals, robust, strict=True):
        after_crop = warp_crop(written, f.alignment)
        reports.append(
            FaceReport(
                index=f.index,
                box=f.face.box,
                detector_score=f.face.score,
                models=_model_scores(orig_emb, embedder.embed(written, f.face.landmarks), target),
                expression_before=_expression(judge, f.crop),
                expression_after=_expression(judge, after_crop),
                psnr=float(psnr(f.crop, after_crop)),
                ssim=ssim(f.crop, after_crop),
                colour_shift=colour_shift(f.crop, after_crop, face_mask(size)),
                seconds=f.seconds,
                redetected=again,
                robustness=checks,
                steps=f.steps,
                independent=_model_scores(
                    fr_judges.embed(original, f.face.landmarks),
                    fr_judges.embed(written, f.face.landmarks),
                    {},
                ),
            )
        )
    return reports


def _target_decision(
    emb: torch.Tensor, model: str, target: dict[str, torch.Tensor]
) -> tuple[float | None, bool | None]:
    """``model``'s score and FAR decision of ``emb`` against the target; None without one."""
    from pareidolia.zoo.thresholds import thresholds

    if model not in target:
        return None, None
    th = thresholds(model)
    score = float(th.score(emb, target[model]).item())
    return score, bool(th.matches(score, FAR))


def _model_scores(
    original: dict[str, torch.Tensor],
    protected: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
) -> list[ModelScores]:
    from pareidolia.evaluation.verification import compare

    rows = []
    for v in compare(protected, original, FAR):
        before, match_before = _target_decision(original[v.model], v.model, target)
        after, match_after = _target_decision(protected[v.model], v.model, target)
        rows.append(
            ModelScores(
                model=v.model,
                metric=v.metric,
                threshold=v.threshold,
                original_score=v.score,
                matches_original=v.match,
                target_before=before,
                target_after=after,
                matches_target_before=match_before,
                matches_target_after=match_after,
            )
        )
    return rows


def _nearest_face(faces: list[Face], box: tuple[float, ...], factor: float) -> Face | None:
    """The face of ``faces`` whose centre is nearest the centre of ``box`` scaled by ``factor``,
    if within half the box's width."""
    cx = (box[0] + box[2] / 2) * factor
    cy = (box[1] + box[3] / 2) * factor
    best, best_d = None, box[2] * factor / 2
    for f in faces:
        d = math.hypot(f.box[0] + f.box[2] / 2 - cx, f.box[1] + f.box[3] / 2 - cy)
        if d <= best_d:
            best, best_d = f, d
    return best


def _robustness(
    written: np.ndarray,
    faces: list[Face],
    original: list[dict[str, torch.Tensor]],
    target: dict[str, torch.Tensor],
    embedder: FaceEmbedder,
) -> list[tuple[bool, list[RobustnessCheck] | None]]:
    """Per face: (found again after the upload, the models' decisions there)."""
    from pareidolia.evaluation.variants import social_network
    from pareidolia.evaluation.verification import compare
    from pareidolia.locate import locate_faces

    uploaded = social_network(written)
    factor = uploaded.shape[1] / written.shape[1]
    found = locate_faces(uploaded)
    out: list[tuple[bool, list[RobustnessCheck] | None]] = []
    for face, orig_emb in zip(faces, original, strict=True):
        again = _nearest_face(found, face.box, factor)
        if again is None:
            out.append((False, None))
            continue
        emb = embedder.embed(uploaded, again.landmarks)
        checks = []
        for v in compare(emb, orig_emb, FAR):
            t_score, t_match = _target_decision(emb[v.model], v.model, target)
            checks.append(RobustnessCheck(v.model, v.score, v.match, t_score, t_match))
        out.append((True, checks))
    return out


# ----------------------------------------------------------------------------- rendering


def match_word(x: bool | None) -> str:
    """A decision in words: ``match``, ``no match``, or ``-`` when not made."""
    return "-" if x is None else ("match" if x else "no match")


def score_text(x: float | None) -> str:
    """A score as shown (3 decimals of the reported value), ``-`` when missing."""
    x = _num(x)
    return "-" if x is None else f"{x:.3f}"


def _psnr_text(face: FaceReport) -> str:
    x = _num(face.psnr, 2)
    return "∞" if x is None else f"{x:.1f}"


def _expression_change(face: FaceReport) -> str:
    """``happy 0.61 → sad 0.80``: the judge's top expression before and after."""
    top_b, top_a = face.top_expression_before, face.top_expression_after
    before, after = _num(face.expression_before[top_b]), _num(face.expression_after[top_a])
    return f"{top_b} {before:.2f} → {top_a} {after:.2f}"


def _box_text(box: Sequence[float]) -> str:
    x, y, w, h = _box(box)
    return f"box x={x:.0f} y={y:.0f} {w:.0f}×{h:.0f}"


def _error_text(r: PhotoReport) -> str:
    return f"{r.error}" if r.faces else f"not processed: {r.error}"


def _face_lines(face: FaceReport) -> list[str]:
    """The text table of one protected face: a summary line, then one row per FR model."""
    mean, p95 = _num(face.colour_shift[0], 3), _num(face.colour_shift[1], 3)
    width = max([11, *(len(m.model) for m in [*face.models, *face.independent])])  # names
    lines = [
        f"  face {face.index}: {_box_text(face.box)}  "
        f"expression {_expression_change(face)}  "
        f"PSNR {_psnr_text(face)} dB  SSIM {_num(face.ssim):.3f}  "
        f"ΔE00 {mean:.2f} (p95 {p95:.1f})  "
        f"{_num(face.seconds, 3):.1f} s"
        + (
            f"  (time limit: {face.steps[0]} of {face.steps[1]} refinement steps)"
            if face.steps is not None and face.time_limited
            else ""
        ),
        f"    {'model':<{width}} {'vs original':<21} {'vs target before → after':<36} after upload",
    ]
    for m in face.models:
        orig = f"{score_text(m.original_score)} {match_word(m.matches_original)}"
        tgt = (
            f"{score_text(m.target_before)} → {score_text(m.target_after)} "
            f"({match_word(m.matches_target_before)} → {match_word(m.matches_target_after)})"
        )
        up = face.upload(m.model)
        if not isinstance(up, str):
            up = f"target {match_word(up.matches_target)}, original {match_word(up.matches_original)}"
        lines.append(f"    {m.model:<{width}} {orig:<21} {tgt:<36} {up}")
    for m in face.independent:
        orig = f"{score_text(m.original_score)} {match_word(m.matches_original)}"
        lines.append(f"    {m.model:<{width}} {orig:<21} {INDEPENDENT}")
    return lines


INDEPENDENT = "(independent check: no part of the edit was made against it)"
"""What the report says beside an FR judge's row."""


ZOO_CAVEAT = (
    "The matches in this report are those of this tool's own FR models, which the edit was "
    "made against, except the independent check's; some FR systems it was not made against "
    "still recognised most faces protected with the default settings in our held-out tests "
    "(see the README's Limitations)."
)
"""Said under every report with a protected face, in the terminal and on the web page."""


def render_text(reports: Sequence[PhotoReport]) -> str:
    """A readable table of the photo reports (``pareidolia protect`` and the demo)."""
    lines: list[str] = []
    for r in reports:
        if r.status == "error":
            lines.append(f"{r.path}: {_error_text(r)}")
            continue
        if r.status == "done":
            lines.append(f"{r.path} → {r.output}: {_DONE_TEXT}")
            continue
        head = f"{r.path}"
        head += f" → {r.output}" if r.output is not None else ": nothing written"
        head += (
            f"  ({len(r.faces)} face(s) protected, {len(r.skipped)} skipped, "
            f"{_num(r.seconds, 3):.1f} s)"
        )
        lines.append(head)
        if r.format_change:
            lines.append(f"  format changed: {r.format_change}")
        if r.status == "no_face":
            lines.append("  no face found")
        for face in r.faces:
            lines += _face_lines(face)
        for s in r.skipped:
            lines.append(f"  skipped: {_box_text(s.box)}: {s.reason}")
        lines.append("")
    protected = sum(len(r.faces) for r in reports if r.output is not None)  # written ones
    kinds = [s.kind for r in reports for s in r.skipped]
    why = f" ({skip_counts(kinds)})" if kinds else ""
    errors = sum(r.status == "error" for r in reports)
    done = sum(r.status == "done" for r in reports)
    lines.append(
        f"{len(reports)} photo(s): {protected} face(s) protected, {len(kinds)} skipped{why}, "
        f"{errors} with errors" + (f", {done} photo(s) done by an earlier run" if done else "")
    )
    check = independent_summary(reports)
    if check:
        lines.append(check)
    if protected:
        lines.append(ZOO_CAVEAT)
    return "\n".join(lines)


def independent_summary(reports: Sequence[PhotoReport]) -> str:
    """``Independent check, faces no longer matching their original: facenet128 3 of 4, …``
    over the faces of the written photos; "" when no face has an FR judge's row."""
    counts: dict[str, list[int]] = {}  # judge → [faces no longer matched, faces checked]
    written = [face for r in reports if r.output is not None for face in r.faces]
    for face in written:
        for m in face.independent:
            c = counts.setdefault(m.model, [0, 0])
            c[0] += not m.matches_original
            c[1] += 1
    if not counts:
        return ""
    parts = [f"{model} {n} of {total}" for model, (n, total) in counts.items()]
    return "Independent check, faces no longer matching their original: " + ", ".join(parts)


COLUMNS = [
    "photo",
    "face",
    "model",
    "metric",
    "threshold",
    "vs original",
    "still matches original",
    "vs target: before → after",
    "matches target: before → after",
    "after upload (target / original)",
]
"""Headers of the web page's report table (:func:`table_rows`)."""


def table_rows(report: PhotoReport) -> list[list[str]]:
    """The report table's rows (:data:`COLUMNS`) of one photo: one per face and FR model."""
    rows = []
    for face in report.faces:
        for m in face.models:
            up = face.upload(m.model)
            if not isinstance(up, str):
                up = f"{match_word(up.matches_target)} / {match_word(up.matches_original)}"
            rows.append(
                [
                    str(report.path),
                    str(face.index),
                    m.model,
                    m.metric,
                    score_text(m.threshold),
                    score_text(m.original_score),
                    match_word(m.matches_original),
                    f"{score_text(m.target_before)} → {score_text(m.target_after)}",
                    f"{match_word(m.matches_target_before)} → {match_word(m.matches_target_after)}",
                    up,
                ]
            )
        for m in face.independent:
            rows.append(
                [
                    str(report.path),
                    str(face.index),
                    f"{m.model} {INDEPENDENT}",
                    m.metric,
                    score_text(m.threshold),
                    score_text(m.original_score),
                    match_word(m.matches_original),
                    "-",
                    "-",
                    "not checked",
                ]
            )
    return rows


def markdown_summary(report: PhotoReport) -> str:
    """What happened to one photo, in markdown: a line, then one item per protected face."""
    name = report.path
    if report.status == "error":
        return f"**{name}**: {_error_text(report)}"
    if report.status == "no_face":
        return f"**{name}**: no face found; nothing to protect"
    if report.status == "done":
        return f"**{name}**: {_DONE_TEXT} ({report.output})"
    kinds = [s.kind for s in report.skipped]
    if report.status == "skipped":
        return f"**{name}**: no face could be protected ({skip_counts(kinds)}); nothing written"
    faces = []
    for f in report.faces:
        fooled = sum(bool(m.matches_target_after) for m in f.models)
        kept = sum(bool(m.matches_original) for m in f.models)
        n = len(f.models)
        judged = "".join(
            f"; independent check {m.model}: {match_word(m.matches_original)} to the original"
            for m in f.independent
        )
        faces.append(
            f"face {f.index}: expression {_expression_change(f)}, PSNR {_psnr_text(f)} dB, "
            f"SSIM {_num(f.ssim):.3f}; "
            f"matches the target for {fooled} of {n} models, the original for {kept} of {n}"
            + judged
        )
    line = f"**{name}**: {len(report.faces)} face(s) protected in {_num(report.seconds, 3):.1f} s"
    if kinds:
        line += f", {len(kinds)} left unchanged ({skip_counts(kinds)})"
    if report.format_change:
        line += f"; format changed: {report.format_change}"
    return line + "".join(f"\n  - {f}" for f in faces)


# ----------------------------------------------------------------------------- JSON


def reports_json(reports: Sequence[PhotoReport], **extra: Any) -> str:
    """The JSON report document: ``{"far": "0.01", "photos": [...], **extra}``, indented."""
    doc: dict[str, Any] = {"far": FAR, "photos": [r.to_dict() for r in reports], **extra}
    return json.dumps(doc, indent=2)
