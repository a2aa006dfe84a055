"""Protection of small faces [ours]: the held-out faces shrunk to 24, 32, 48 and 96 px.

    python benchmarks/small_faces.py --out docs/bench/small_faces [--sizes 24,32,48,96]
        [--victims dlib,sface,faceres,mobileface] [--rows none,default,all-copies] [--faces N]

Every held-out photo of ``benchmarks/heldout.py`` is resized whole so that its faces'
detection boxes are SIZE px wide on average (the other faces of the photo shrink with it), then
protected as ``pareidolia protect`` does it: ``protect_photo`` with the options the CLI builds
by default (``--no-robustness``: the upload check does not change the edit), detecting the faces
anew in the small photo, the victim left out of the refinement's surrogates (leave one out),
and written as JPEG q95. Each held-out face is then cut from the written photo at its place
(its working crop an upscale of the face, from which every FR model takes its chip, as
heldout.py's verifiers do) and measured as in heldout.py:

- dodging at FAR 0.01 (victim): the face matches neither its full-size original nor any other
  real photo of the same person;
- impersonation PSR at FAR 0.01 (victim) of the shipped synthetic target;
- after upload (0.5× and JPEG 75 of the written photo): the share of dodged (impersonating)
  faces that still dodge (impersonate);
- face-region PSNR: over the photo's own pixels under the face's blending oval, written photo
  against the resized original (JPEG q95 included, as in heldout.py);
- seconds per face: ``protect_photo``'s own per-face time (a batch's time shared by its faces);
- found / protected: the share of the held-out faces the detector finds in the small photo,
  and of those the share protected (the others skipped with a reason, never edited).

Rows: ``none`` (the resized photo as JPEG q95, unprotected: what the victim does at that size
anyway), ``default``, and ``all-copies`` (the default but faces under ``SMALL_FACE_PX``
refined with as many EOT copies as the others, ``small_face_copies=None``: what the cheaper
small-face refinement gives up). Writes ``OUT/small_faces.json``, resumed: finished
(size, row, victim) cells are kept, and ``OUT/small_faces.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from heldout import FR, ROOT, SIZE, Face, Judges, evaluate, load_faces, uploaded_crops
from pareidolia.cli import build_parser
from pareidolia.commands.protect import _options as cli_options
from pareidolia.default_protectors import default_protector, default_target_crop
from pareidolia.evaluation.protocol import target_test_photo
from pareidolia.evaluation.variants import jpeg, rescale
from pareidolia.faces.align import warp_crop, working_alignment
from pareidolia.faces.blend import face_mask
from pareidolia.io import Photo
from pareidolia.locate import locate_faces
from pareidolia.protect import ProtectOptions, protect_photo
from pareidolia.protector import Protector
from pareidolia.quality import psnr
from pareidolia.report import FaceReport, PhotoReport

SIZES = (24, 32, 48, 96)
ROWS: dict[str, dict[str, Any]] = {
    "none": {},
    "default": {},
    "all-copies": {"small_face_copies": None},
}


@dataclasses.dataclass
class Shrunk:
    """One held-out photo resized so its faces are about ``size`` px wide."""

    name: str
    rgb: np.ndarray
    members: list[int]  # indices of its held-out faces
    landmarks: list[np.ndarray]  # theirs, in the small photo
    widths: list[float]  # their box widths in the small photo


def shrink(faces: list[Face], members: list[int], size: int) -> Shrunk:
    """The photo of ``faces[members]`` resized so their boxes are ``size`` px wide on average."""
    rgb = faces[members[0]].rgb
    found = locate_faces(rgb)
    boxes = []
    for i in members:  # the same detection as load_faces: match by landmarks
        f = min(found, key=lambda g: float(np.abs(g.landmarks - faces[i].landmarks).max()))
        boxes.append(f.box)
    factor = size / float(np.mean([b[2] for b in boxes]))
    return Shrunk(
        faces[members[0]].photo.rsplit("-", 1)[0],
        rescale(rgb, factor),
        members,
        [faces[i].landmarks * factor for i in members],
        [b[2] * factor for b in boxes],
    )


def _match(report: PhotoReport, landmarks: np.ndarray) -> tuple[FaceReport | None, bool]:
    """(the report's protected face at ``landmarks``, whether any detected face is there)."""
    cx, cy = landmarks.mean(0)

    def near(box: tuple[float, ...]) -> bool:
        return math.hypot(box[0] + box[2] / 2 - cx, box[1] + box[3] / 2 - cy) < box[2] / 2

    protected = next((f for f in report.faces if near(f.box)), None)
    return protected, protected is not None or any(near(s.box) for s in report.skipped)


def face_psnr(original: np.ndarray, written: np.ndarray, landmarks: np.ndarray) -> float:
    """PSNR over the photo pixels under the face's blending oval (capped at 99 dB)."""
    al = working_alignment(landmarks, SIZE)
    h, w = original.shape[:2]
    oval = cv2.warpAffine(face_mask(SIZE), al.inverse, (w, h), flags=cv2.INTER_LINEAR) > 0.5
    return min(float(psnr(original[oval], written[oval])), 99.0)


def run_cell(
    shrunk: list[Shrunk], protector: Protector | None, options: ProtectOptions | None
) -> dict[str, Any]:
    """Protect (or, without a protector, only write) every small photo; per held-out face the
    crop and uploaded crop of the written photo, and the measurements that need no victim."""
    crops, uploaded, psnrs, seconds = {}, {}, [], []
    found = protected = 0
    for s in shrunk:
        if protector is None or options is None:
            written = jpeg(s.rgb, 95)
            report = None
        else:
            photo = Photo(Path(f"{s.name}.jpg"), s.rgb, "JPEG")
            out, report = protect_photo(photo, protector, options, out_format="JPEG")
            written = jpeg(out, 95)
        after = uploaded_crops(written, s.landmarks)
        for i, lm, up in zip(s.members, s.landmarks, after, strict=True):
            crops[i] = warp_crop(written, working_alignment(lm, SIZE))
            uploaded[i] = up
            psnrs.append(face_psnr(s.rgb, written, lm))
            if report is None:
                found += 1
                continue
            face, seen = _match(report, lm)
            found += seen
            if face is not None:
                protected += 1
                seconds.append(face.seconds)
    n = len(crops)
    return {
        "crops": [crops[i] for i in sorted(crops)],
        "uploaded": [uploaded[i] for i in sorted(uploaded)],
        "psnr": float(np.mean(psnrs)),
        "seconds": float(np.mean(seconds)) if seconds else 0.0,
        "found": found / n,
        "protected": protected / max(found, 1),
        "width": float(np.mean([w for s in shrunk for w in s.widths])),
    }


def _pct(x: float) -> str:
    return "–" if x != x else f"{100 * x:.0f} %"


def markdown(results: dict[str, Any]) -> str:
    cells = results["cells"]
    lines = [
        "### Dodging and impersonation by face size (leave one out: surrogates the other three)",
        "",
        "| face width | row | victim | dodging | PSR synthetic target | after upload: dodging kept / PSR kept |",
        "|---|---|---|---|---|---|",
    ]
    for key, c in cells.items():
        size, row, victim = key.split("/")
        lines.append(
            f"| {size} px | {row} | {victim} | {_pct(c['dodging'])} | {_pct(c['psr_synthetic'])} | {_pct(c['upload_keeps_dodging'])} / {_pct(c['upload_keeps_psr'])} |"
        )
    lines += [
        "",
        "### Quality and speed by face size (means over the victims' runs)",
        "",
        "| face width | row | mean box width | found | protected | face PSNR | s/face |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for key, c in cells.items():
        size, row, _ = key.split("/")
        groups.setdefault((size, row), []).append(c)
    for (size, row), cs in groups.items():
        mean = {k: float(np.mean([c[k] for c in cs])) for k in ("width", "found", "psnr")}
        prot = "–" if row == "none" else _pct(float(np.mean([c["protected"] for c in cs])))
        secs = "–" if row == "none" else f"{np.mean([c['seconds'] for c in cs]):.2f}"
        lines.append(
            f"| {size} px | {row} | {mean['width']:.1f} | {_pct(mean['found'])} | {prot} | {mean['psnr']:.1f} | {secs} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--victims", default=",".join(FR))
    ap.add_argument("--rows", default="none,default")
    ap.add_argument("--faces", type=int, help="only the first N held-out faces (smoke test)")
    ap.add_argument("--emotion", default="happy")
    ap.add_argument("--packages", type=Path, default=ROOT / ".cache/packages")
    args = ap.parse_args()
    rows = args.rows.split(",")
    if unknown := set(rows) - set(ROWS):
        raise SystemExit(f"unknown rows {', '.join(sorted(unknown))} (rows: {', '.join(ROWS)})")
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    every = load_faces(args.packages)
    faces = every[: args.faces]
    j = Judges()
    protector = default_protector(args.emotion)
    obama = np.stack([f.crop for f in every if f.photo in ("obama2-0", "obama3-0")])
    synthetic = target_test_photo(default_target_crop())[None]
    enroll = {m: {"synthetic": j.embed(m, synthetic), "obama": j.embed(m, obama)} for m in FR}
    by_photo: dict[int, list[int]] = {}
    for i, f in enumerate(faces):
        by_photo.setdefault(id(f.rgb), []).append(i)
    path = args.out / "small_faces.json"
    results: dict[str, Any] = {"faces": [f.photo for f in faces], "cells": {}}
    if path.is_file():
        results = json.loads(path.read_text())
    victims = args.victims.split(",")
    cli = cli_options(build_parser().parse_args(["protect", "photo.jpg", "--no-robustness"]))
    for size in (int(s) for s in args.sizes.split(",")):
        shrunk = [shrink(faces, members, size) for members in by_photo.values()]
        for row in rows:
            for victim in victims:
                key = f"{size}/{row}/{victim}"
                if key in results["cells"]:
                    continue
                if row == "none":
                    cell = run_cell(shrunk, None, None)
                else:
                    surrogates = tuple(m for m in FR if m != victim)
                    options = dataclasses.replace(cli, surrogates=surrogates, **ROWS[row])
                    cell = run_cell(shrunk, protector, options)
                r = evaluate(
                    j,
                    faces,
                    cell.pop("crops"),
                    cell.pop("uploaded"),
                    [victim],
                    enroll,
                    args.emotion,
                )
                v = r["victims"][victim]
                results["cells"][key] = {
                    **cell,
                    **{
                        k: v[k]
                        for k in (
                            "dodging",
                            "psr_synthetic",
                            "upload_keeps_dodging",
                            "upload_keeps_psr",
                        )
                    },
                }
                print(key, json.dumps(results["cells"][key]), flush=True)
                path.write_text(json.dumps(results, indent=1))
                (args.out / "small_faces.md").write_text(markdown(results))
    (args.out / "small_faces.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
