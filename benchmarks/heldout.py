"""The protection benchmark on held-out real photos [ours]: what `pareidolia protect PHOTO` gives.

    python benchmarks/heldout.py --out out/heldout [--rows default,fast] [--quick]

Photos (none used in training the prior, the protectors or the refinement's settings):
the astronaut, insightface's t1.jpg (6 faces), and the four real photos of two men in the
``face_recognition`` 1.3.0 sdist (obama.jpg, obama2.jpg, obama3.jpg, biden.jpg); 11 faces.
``--more-faces`` adds five: insightface's Tom_Hanks_54745.png, the ``facexlib`` 0.3.0 sdist's
assets/test.jpg (grey) and test2.jpg, and face_recognition's obama_partial_face.jpg and
obama_partial_face2.jpg (obama photos cut through the face); 16 faces.
Every photo is protected whole, as the CLI does (detect, align, edit, paste back, JPEG q95 for
JPEG inputs), with the row's options and with the victim FR model left out of the refinement's
surrogates; each face is then cut from the written photo and measured (the FR models see it
black beyond the photo's border, as FR systems cut their chips; the quality numbers count only
the face oval's part inside the photo):

- dodging at FAR 0.01 (victim): the protected face matches neither its own original nor any
  *other real photo* of the same person (obama ×3);
- impersonation PSR at FAR 0.01 (victim) of the shipped synthetic target, against its test photo
  (the enrollment crop mirrored, brightened and JPEG 40: no second photo of it exists), and of a
  real target, obama (enrolled from obama.jpg, tested against obama2.jpg and obama3.jpg;
  the three obama faces are left out of that row);
- face-oval PSNR / SSIM and CIEDE2000 mean / p95; the judge's (human's mini-Xception, never
  used in any loss) share of the target emotion before → after; the landmarks' moves in
  inter-ocular units; robustness: after a 0.5× resize and JPEG 75 of the photo, the share of
  dodged (impersonating) faces that still dodge (impersonate);
- seconds per face (excluding model loading).

Leave-one-out tables rotate the victim over the four zoo models (surrogates: the other three),
and add the FR judges ``facenet128`` and ``mobilefacenet512`` (surrogates: all four, as a
user's run has them), which no surrogate, protector or setting was ever made with; the
transfer table trains on two and tests on the other two. The MAP stage is the shipped
protector (victim dlib; its surrogates were the other three) for every victim: for victims
other than dlib that stage has seen the victim, which the ``refine-only`` row (no MAP stage)
bounds. Writes ``OUT/heldout.json``, ``OUT/heldout.md`` and ``OUT/grid_<row>.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pareidolia.baselines import BASELINES
from pareidolia.colour import colour_shift
from pareidolia.default_protectors import default_protector, default_target_crop
from pareidolia.evaluation.protocol import target_test_photo
from pareidolia.evaluation.variants import jpeg, social_network
from pareidolia.faces.align import (
    ChipSampler,
    inside_mask,
    to_tensor,
    warp_crop,
    working_alignment,
)
from pareidolia.faces.blend import blend_edit, face_mask
from pareidolia.io import read_photo
from pareidolia.locate import locate_faces
from pareidolia.objectives.geometry import displacements
from pareidolia.objectives.identity import IdentityLoss, SurrogateEnsemble
from pareidolia.objectives.landmarks import LaplacianLoss
from pareidolia.protect import ProtectOptions, edit_crops
from pareidolia.protector import Protector
from pareidolia.quality import psnr, ssim
from pareidolia.refine import STRENGTHS
from pareidolia.zoo import registry
from pareidolia.zoo.spec import EMOTIONS
from pareidolia.zoo.thresholds import thresholds

ROOT = Path(__file__).resolve().parents[1]
# crops, faces' sides, their inside-the-photo masks → edited crops
Editor = Callable[[torch.Tensor, list[int], list[np.ndarray]], torch.Tensor]
FR = ["dlib", "sface", "faceres", "mobileface"]
# the zoo's FR judges (role fr_judge): FR models no surrogate, protector or setting was made
# with; victims of every row, the surrogates all four of FR
JUDGES = registry.names("fr_judge")
FACE_RECOGNITION = "face_recognition-1.3.0/face_recognition-1.3.0/tests/test_images"
SIZE = 256

ROWS: dict[str, dict[str, Any]] = {
    "none": {},
    "fast": {"mode": "fast"},
    "fast-no-chroma": {"mode": "fast", "chroma": False},
    "default": {},  # the balanced preset
    "warp2": {"refine": {"template_warp": 2.0}},  # the default with a larger smile
    # the default with less of the template warp on faces that already smile (smile_full)
    "smile-full": {"refine": {"smile_full": 0.2}},
    "smile-full3": {"refine": {"smile_full": 0.3}},
    # the default's identity warp before round 7: 10 × 10 cells at 2 px
    "coarse-warp": {"refine": {"flow_grid": 10, "max_shift": 2.0}},
    # an even finer identity warp, 32 × 32 cells at 1 px
    "finer-warp": {"refine": {"flow_grid": 32, "max_shift": 1.0}},
    # the natural preset with the default's 20 × 20 identity warp (its own: 10 × 10 at 1.5 px)
    "natural-fine-warp": {"strength": "natural", "refine": {"flow_grid": 20}},
    "natural": {"strength": "natural"},
    "strong": {"strength": "strong"},
    # no identity warp: the expression warp (2 px near the template's landmarks, answering to
    # the template alone) in its place
    "default-no-warp": {"refine": {"max_shift": 0.0, "expression_shift": 2.0, "w_geometry": 100.0}},
    # ablations of our additions, on the default (round 8): each takes one of them away
    "default-no-template-warp": {"refine": {"template_warp": 0.0}},
    "default-refine-only": {"map_strength": 0.0},  # no MAP edit: the refinement alone
    "default-no-chroma": {"chroma": False},
    "default-no-geometry": {"refine": {"w_geometry": 0.0}},
    "default-no-classifier": {"refine": {"w_classifier": 0.0}},
    "default-flat-bound": {"refine": {"lum_texture": 0.0}},  # 8/255 everywhere
    "default-no-eot": {"refine": {"copies": 1, "jpeg": False}},  # the face at its own size only
    # ablations of our additions, on the natural preset
    "natural-no-chroma": {"strength": "natural", "chroma": False},
    "natural-no-geometry": {"strength": "natural", "refine": {"w_geometry": 0.0}},
    "natural-refine-only": {"strength": "natural", "map_strength": 0.0},
    "natural-lum-only": {
        "strength": "natural",
        "map_strength": 0.0,
        "refine": {"max_shift": 0.0, "w_geometry": 0.0, "w_classifier": 0.0},
    },
    "lum-eot": {},  # the baseline (pareidolia.baselines.lumeot), ±12/255, no MAP, no warp
}


@dataclasses.dataclass
class Face:
    photo: str
    person: str | None  # identity where known (several real photos of one person)
    rgb: np.ndarray  # the photo
    landmarks: np.ndarray
    crop: np.ndarray  # original working crop
    inside: np.ndarray  # (S, S) bool: where the crop lies inside the photo


def _photos(packages: Path, more: bool = False) -> list[tuple[str, Path, str | None]]:
    fr = packages / FACE_RECOGNITION
    insight = packages / "insightface-2.1-py3-none-any/insightface/data/images"
    photos = [
        ("astronaut", ROOT / "src/pareidolia/data/astronaut.jpg", None),
        ("t1", insight / "t1.jpg", None),
        ("obama", fr / "obama.jpg", "obama"),
        ("obama2", fr / "obama2.jpg", "obama"),
        ("obama3", fr / "obama3.jpg", "obama"),
        ("biden", fr / "biden.jpg", "biden"),
    ]
    if more:  # the extended set: 5 more faces, none used in any training or tuning
        assets = packages / "facexlib-0.3.0/facexlib-0.3.0/assets"
        photos += [
            ("hanks", insight / "Tom_Hanks_54745.png", None),  # a 112 px aligned crop
            ("facexlib", assets / "test.jpg", None),  # grey
            ("facexlib2", assets / "test2.jpg", None),
            # halves of obama photos (the face cut by the photo's edge)
            ("obama_half", fr / "obama_partial_face.jpg", "obama"),
            ("obama_half2", fr / "obama_partial_face2.jpg", "obama"),
        ]
    return photos


def load_faces(packages: Path, more: bool = False) -> list[Face]:
    faces = []
    for name, path, person in _photos(packages, more):
        if not path.is_file():
            raise SystemExit(
                f"{path}: missing; run `python tools/packages.py insightface face_recognition"
                f"{' facexlib' if more else ''}`"
            )
        photo = read_photo(path)
        for i, f in enumerate(locate_faces(photo.rgb)):
            align = working_alignment(f.landmarks, SIZE)
            crop = warp_crop(photo.rgb, align)
            inside = inside_mask(align, *photo.rgb.shape[:2])
            faces.append(Face(f"{name}-{i}", person, photo.rgb, f.landmarks, crop, inside))
    return faces


class Judges:
    """The FR models (the four zoo models and the FR judge) on working crops, the landmark net
    and the emotion judge."""

    def __init__(self) -> None:
        self.nets = {m: registry.load(m, "cpu") for m in [*FR, *JUDGES]}
        self.chips = {m: ChipSampler(registry.get(m).chip, SIZE) for m in [*FR, *JUDGES]}
        self.judge = registry.load("mini_xception", "cpu")
        self.judge_chip = ChipSampler("emotion64", SIZE)
        self.points = LaplacianLoss()

    @torch.no_grad()
    def embed(self, m: str, crops: np.ndarray) -> torch.Tensor:
        return self.nets[m](self.chips[m](to_tensor(crops)))

    @torch.no_grad()
    def emotions(self, crops: np.ndarray) -> np.ndarray:
        return self.judge(self.judge_chip(to_tensor(crops))).argmax(1).numpy()

    @torch.no_grad()
    def landmarks(self, crops: np.ndarray) -> torch.Tensor:
        return self.points.landmarks(to_tensor(crops))


REAL_TARGET_ROWS = (
    "none",
    "fast",
    "default",
    "default-no-warp",
    "natural",
    "strong",
    "coarse-warp",
)  # the other rows: synthetic target only
TRANSFER_ROWS = ("none", "default", "default-no-warp", "coarse-warp")  # the others: leave one out


def _options(row: str, surrogates: tuple[str, ...]) -> ProtectOptions:
    spec = dict(ROWS[row])
    base, strength = STRENGTHS[spec.pop("strength", "balanced")]
    refine = dataclasses.replace(base, **spec.pop("refine", {}))
    spec.setdefault("map_strength", strength)
    return ProtectOptions(robustness=False, refine=refine, surrogates=surrogates, **spec)


def _map_edit(
    protector: Protector,
    options: ProtectOptions,
    crops: torch.Tensor,
    side: list[int],
    inside: list[np.ndarray],
) -> torch.Tensor:
    return edit_crops(protector, crops, options, side, inside=inside)


def lum_eot_editor(surrogates: tuple[str, ...], target_crop: np.ndarray) -> Editor:
    """The lum-eot baseline as a crop editor (its default budget, ±12/255)."""
    loss = IdentityLoss(SurrogateEnsemble(list(surrogates)), to_tensor(target_crop))
    method = BASELINES["lum-eot"]()
    # the baseline attacks the whole crop, padding included (it has no inside-the-photo mask)
    return lambda crops, side, inside: method.protect(crops, loss)


def protect_all(
    faces: list[Face], edit: Editor
) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """Protect every photo whole; returns per face the crop of the written photo, the crop of
    the photo after a social-network upload, and the seconds per face."""
    by_photo: dict[int, list[int]] = {}
    for i, f in enumerate(faces):
        by_photo.setdefault(id(f.rgb), []).append(i)
    crops: list[np.ndarray] = [faces[0].crop] * len(faces)
    uploaded: list[np.ndarray] = [faces[0].crop] * len(faces)
    seconds = 0.0
    for idx in by_photo.values():
        rgb = faces[idx[0]].rgb
        aligns = [working_alignment(faces[i].landmarks, SIZE) for i in idx]
        orig = [faces[i].crop for i in idx]
        t = time.perf_counter()
        side = [max(8, round(SIZE / a.scale)) for a in aligns]
        edited = edit(to_tensor(orig), side, [faces[i].inside for i in idx])
        out = rgb.copy()
        for a, c, e in zip(aligns, orig, edited, strict=True):
            e8 = (e.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            out = blend_edit(out, c, e8, a)
        seconds += time.perf_counter() - t
        written = jpeg(out, 95)
        after = uploaded_crops(written, [faces[i].landmarks for i in idx])
        for i, a, u in zip(idx, aligns, after, strict=True):
            crops[i] = warp_crop(written, a)
            uploaded[i] = u
    return crops, uploaded, seconds / len(faces)


def uploaded_crops(written: np.ndarray, landmarks: list[np.ndarray]) -> list[np.ndarray]:
    """The faces' working crops after a social-network upload (0.5×, JPEG 75) of the photo."""
    up = social_network(written)
    scale = up.shape[1] / written.shape[1]
    return [warp_crop(up, working_alignment(lm * scale, SIZE)) for lm in landmarks]


def seen(faces: list[Face], crops: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """The faces' crops as an FR system sees them: black beyond the photo's border."""
    return np.stack([c * f.inside[..., None] for f, c in zip(faces, crops, strict=True)])


def _decisions(
    j: Judges, m: str, faces: list[Face], crops: np.ndarray, enroll: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Per face: dodged (matches no real photo of the person), and the target matches."""
    th = thresholds(m)
    e = j.embed(m, seen(faces, crops))
    originals = j.embed(m, seen(faces, [f.crop for f in faces]))
    dodged = []
    for i, f in enumerate(faces):
        refs = [k for k, g in enumerate(faces) if k == i or (f.person and g.person == f.person)]
        hit = torch.as_tensor(th.matches(th.score(e[i : i + 1], originals[refs]), "0.01"))
        dodged.append(not bool(hit.any()))
    out = {"dodged": np.array(dodged)}
    for name, tests in enroll[m].items():
        cols = [torch.as_tensor(th.matches(th.score(e, t[None]), "0.01")) for t in tests]
        out[name] = torch.stack(cols, 1).all(1).numpy()
    return out


def evaluate(
    j: Judges,
    faces: list[Face],
    crops: list[np.ndarray],
    uploaded: list[np.ndarray],
    victims: list[str],
    enroll: dict[str, Any],
    emotion: str,
) -> dict[str, Any]:
    orig = np.stack([f.crop for f in faces])
    prot, up = np.stack(crops), np.stack(uploaded)
    obama = np.array([f.person != "obama" for f in faces])
    per_victim = {}
    for v in victims:
        d = _decisions(j, v, faces, prot, enroll)
        # the uploaded photo's crops take the written photo's masks: the same face, scaled
        du = _decisions(j, v, faces, up, enroll)
        kept_d = du["dodged"][d["dodged"]].mean() if d["dodged"].any() else float("nan")
        imp = d["synthetic"]
        kept_i = du["synthetic"][imp].mean() if imp.any() else float("nan")
        per_victim[v] = {
            "dodging": float(d["dodged"].mean()),
            "psr_synthetic": float(imp.mean()),
            "psr_obama": float(d["obama"][obama].mean()),
            "upload_keeps_dodging": float(kept_d),
            "upload_keeps_psr": float(kept_i),
        }
    # the quality numbers: over the face oval's part inside the photo
    masks = [face_mask(SIZE) * f.inside for f in faces]
    shifts = [colour_shift(a, b, w) for a, b, w in zip(orig, prot, masks, strict=True)]
    pairs = list(zip(seen(faces, orig), seen(faces, prot), masks, strict=True))
    want = EMOTIONS.index(emotion)
    moves = displacements(j.landmarks(prot), j.landmarks(orig))
    return {
        "victims": per_victim,
        "psnr": float(np.mean([min(psnr(a[w > 0.5], b[w > 0.5]), 99.0) for a, b, w in pairs])),
        "ssim": float(np.mean([ssim(a, b) for a, b, _ in pairs])),
        "de_mean": float(np.mean([s[0] for s in shifts])),
        "de_p95": float(np.mean([s[1] for s in shifts])),
        "judge_before": float((j.emotions(orig) == want).mean()),
        "judge_after": float((j.emotions(prot) == want).mean()),
        "mouth_corners_up": float(-(moves[:, [48, 54], 1]).mean()),
        "mouth_corners_out": float(((moves[:, 54, 0] - moves[:, 48, 0]) / 2).mean()),
        "brows_up": float(-(moves[:, 17:27, 1]).mean()),
        "mouth_open": float((moves[:, 66, 1] - moves[:, 62, 1]).mean()),
    }


def grid(faces: list[Face], crops: list[np.ndarray], path: Path) -> None:
    """original | protected | difference ×8 per face, two faces per row; black beyond the
    photo's border (where the working crop holds only padding)."""
    tiles = []
    for f, o, c in zip(
        faces, seen(faces, [f.crop for f in faces]), seen(faces, crops), strict=True
    ):
        diff = np.clip(128 + 8 * (c.astype(int) - o.astype(int)), 0, 255).astype(np.uint8)
        diff[~f.inside] = 0
        tiles.append(np.concatenate([o, c, diff], 1))
    if len(tiles) % 2:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i : i + 2], 1) for i in range(0, len(tiles), 2)]
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def _pct(x: float) -> str:
    return "–" if x != x else f"{100 * x:.0f} %"


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for table, title in (
        ("leave_one_out", "Leave one out (surrogates: the other three; the FR judges: all four)"),
        ("transfer", "Transfer (surrogates: the other pair)"),
    ):
        if not results.get(table):
            continue
        lines += [
            f"### {title}",
            "",
            "| row | victim | dodging | PSR synthetic target | PSR obama | after upload: dodging kept / PSR kept |",
            "|---|---|---|---|---|---|",
        ]
        for row, r in results[table].items():
            for v, d in r["victims"].items():
                lines.append(
                    f"| {row} | {v} | {_pct(d['dodging'])} | {_pct(d['psr_synthetic'])} | {_pct(d['psr_obama'])} | {_pct(d['upload_keeps_dodging'])} / {_pct(d['upload_keeps_psr'])} |"
                )
        lines.append("")
    lines += [
        "### Quality, expression and speed (from the leave-one-out run with victim dlib)",
        "",
        "| row | face PSNR | SSIM | ΔE00 mean / p95 | judge: target emotion before → after | mouth corners up / out (IOD) | brows up | mouth open | s/face |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row, r in results["leave_one_out"].items():
        lines.append(
            f"| {row} | {r['psnr']:.1f} | {r['ssim']:.3f} | {r['de_mean']:.2f} / {r['de_p95']:.1f} | {_pct(r['judge_before'])} → {_pct(r['judge_after'])} | {r['mouth_corners_up']:+.3f} / {r['mouth_corners_out']:+.3f} | {r['brows_up']:+.3f} | {r['mouth_open']:+.3f} | {r['seconds']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--emotion", default="happy")
    ap.add_argument("--packages", type=Path, default=ROOT / ".cache/packages")
    ap.add_argument("--no-transfer", action="store_true")
    ap.add_argument(
        "--more-faces",
        action="store_true",
        help="the extended set of 16 faces (adds Tom Hanks, facexlib's two, two half obamas)",
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    faces = load_faces(args.packages, args.more_faces)
    j = Judges()
    protector = default_protector(args.emotion)
    synthetic = default_target_crop()
    obama_enroll = next(f.crop for f in faces if f.photo == "obama-0")
    enroll = {
        m: {
            "synthetic": j.embed(m, target_test_photo(synthetic)[None]),
            "obama": j.embed(
                m, np.stack([f.crop for f in faces if f.photo in ("obama2-0", "obama3-0")])
            ),
        }
        for m in [*FR, *JUDGES]
    }
    obama_target = {
        m: torch.nn.functional.normalize(j.embed(m, obama_enroll[None]), dim=-1) for m in FR
    }
    rows = args.rows.split(",")
    results: dict[str, Any] = {
        "faces": [f.photo for f in faces],
        "leave_one_out": {},
        "transfer": {},
    }
    path = args.out / "heldout.json"
    if path.is_file():
        results = json.loads(path.read_text())
    loo = [(tuple(m for m in FR if m != v), [v]) for v in FR]
    splits = [("leave_one_out", [*loo, (tuple(FR), JUDGES)])]
    if not args.no_transfer:
        splits.append(
            (
                "transfer",
                [
                    (("sface", "mobileface"), ["dlib", "faceres"]),
                    (("dlib", "faceres"), ["sface", "mobileface"]),
                ],
            )
        )
    for table, runs in splits:
        for row in rows:
            if table == "transfer" and row not in TRANSFER_ROWS:
                continue
            if row in results[table]:
                continue
            # a row's passes are saved as they finish, so a stopped run resumes mid-row
            partial = results.setdefault("partial", {}).setdefault(table, {})
            state = partial.setdefault(row, {"merged": {"victims": {}}, "secs": [], "done": []})
            merged, secs = state["merged"], state["secs"]
            n_targets = 2 if row in REAL_TARGET_ROWS else 1
            targets = [("synthetic", protector.target_embeddings), ("obama", obama_target)]
            # every victim against the synthetic target first, then the real one
            for target_name, target in targets[:n_targets]:
                for surrogates, victims in runs:
                    key = f"{'+'.join(surrogates)}:{target_name}"
                    if key in state["done"]:
                        continue
                    opts = _options(row, surrogates)
                    p = dataclasses.replace(protector, target_embeddings=dict(target))
                    if row == "lum-eot":
                        crop = synthetic if target_name == "synthetic" else obama_enroll
                        edit = lum_eot_editor(surrogates, crop)
                    else:
                        edit = functools.partial(_map_edit, p, opts)
                    if row == "none":
                        crops = [f.crop for f in faces]
                        uploaded = [
                            uploaded_crops(jpeg(f.rgb, 95), [f.landmarks])[0] for f in faces
                        ]
                        s = 0.0
                    else:
                        crops, uploaded, s = protect_all(faces, edit)
                    r = evaluate(j, faces, crops, uploaded, victims, enroll, args.emotion)
                    secs.append(s)
                    for v, d in r["victims"].items():
                        slot = merged["victims"].setdefault(v, {})
                        if target_name == "synthetic":
                            slot.update(
                                {
                                    k: d[k]
                                    for k in (
                                        "dodging",
                                        "psr_synthetic",
                                        "upload_keeps_dodging",
                                        "upload_keeps_psr",
                                    )
                                }
                            )
                        else:
                            slot["psr_obama"] = d["psr_obama"]
                    for d in merged["victims"].values():
                        d.setdefault("psr_obama", float("nan"))
                    if target_name == "synthetic" and "psnr" not in merged:
                        merged.update({k: v for k, v in r.items() if k != "victims"})
                        if table == "leave_one_out":
                            grid(faces, crops, args.out / f"grid_{row}.png")
                    state["done"].append(key)
                    path.write_text(json.dumps(results, indent=1))
                    print(table, row, surrogates, target_name, json.dumps(r["victims"]), flush=True)
            del partial[row]
            merged["seconds"] = float(np.mean(secs))
            results[table][row] = merged
            path.write_text(json.dumps(results, indent=1))
            (args.out / "heldout.md").write_text(markdown(results))
    (args.out / "heldout.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
