"""Tune the per-face refinement [ours] on the *training* faces (never the held-out ones).

    python benchmarks/tune_refine.py --faces out/prior-data --n 8 [--set steps=20 --set w_dodge=2]
        [--side 190]   # every crop first held at 190 photo px: a small face, as in a group photo
        [--robust-copy sface=X.safetensors]   # an extra surrogate (benchmarks/robust_copy.py)
        [--extra-surrogate facenet128]   # a fifth surrogate from the zoo

Crop level: each training face's 256 px working crop is edited by the shipped protector (victim
dlib, surrogates sface / faceres / mobileface), refined against those surrogates, and measured
against dlib (held out): dodging (no longer matched to its own original at FAR 0.01),
impersonation of the shipped target's test photo, face-oval PSNR / SSIM / CIEDE2000, the
landmark moves, and seconds per face. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from pareidolia.colour import colour_shift, restore_chroma_tensor
from pareidolia.default_protectors import default_protector, default_target_crop
from pareidolia.evaluation.protocol import target_test_photo, zoo_verifiers
from pareidolia.faces.align import to_tensor, to_uint8, working_alignment
from pareidolia.faces.blend import face_mask
from pareidolia.objectives.geometry import displacements
from pareidolia.objectives.identity import EnsembleFactory, SurrogateEnsemble, zoo_ensembles
from pareidolia.objectives.landmarks import LaplacianLoss
from pareidolia.prior.facesets import load_faceset
from pareidolia.protector import apply_protector, to_crop
from pareidolia.quality import psnr, ssim
from pareidolia.refine import RefineConfig, Refiner
from pareidolia.zoo.chip_model import zoo_model
from pareidolia.zoo.thresholds import thresholds


def ensembles(robust: list[str], victim: str, judges: bool = False) -> EnsembleFactory:
    """The zoo's surrogates, plus a robust copy (``MODEL=FILE``) of each model in ``robust``;
    with ``judges``, names may also be the zoo's FR judge (which the pipeline refuses as a
    surrogate)."""
    copies = []
    for spec in robust:
        name, path = spec.split("=", 1)
        if name == victim:
            raise SystemExit(f"--robust-copy {name}: a copy of the victim is not black-box")
        model = copy.deepcopy(zoo_model(name, 256, "cpu"))
        model.net.load_state_dict(load_file(path))
        model.net.requires_grad_(False)
        model.name = f"{name}-robust"
        copies.append(model)
    if not copies and not judges:
        return zoo_ensembles(256, "cpu")
    return lambda names: SurrogateEnsemble(
        [zoo_model(n, 256, "cpu") for n in names] + copies, 256, "cpu"
    )


def _value(text: str) -> int | float | str:
    """A ``--set`` value: a whole number, a number, or else the word itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=Path, required=True)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--emotion", default="happy")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--save", type=Path)
    ap.add_argument("--victim", default="dlib", help="the FR model left out of the refinement")
    ap.add_argument("--alpha", type=float, default=1.0, help="strength of the MAP edit")
    ap.add_argument(
        "--side",
        type=int,
        help="simulate small faces: every crop first held at this many photo px (its own size)",
    )
    ap.add_argument(
        "--guide-delta",
        type=float,
        help="with guide_steps: keep the unguided edit at --alpha plus this share of the "
        "guidance's own change (guided − unguided)",
    )
    ap.add_argument(
        "--extra-surrogate",
        action="append",
        default=[],
        metavar="MODEL",
        help="add a zoo FR model outside the four to the surrogates (and to the measured "
        "models), e.g. the FR judge facenet128, to see what a fifth surrogate does",
    )
    ap.add_argument(
        "--robust-copy",
        action="append",
        default=[],
        metavar="MODEL=FILE",
        help="add a surrogate: MODEL's network with the weights of FILE "
        "(benchmarks/robust_copy.py); MODEL must not be the victim",
    )
    ap.add_argument(
        "--prior-only",
        action="store_true",
        help="the untuned prior in place of the protector (the shipped one saw these faces)",
    )
    args = ap.parse_args()
    overrides = {}
    for kv in args.set:
        k, v = kv.split("=")
        overrides[k] = _value(v)
    cfg = RefineConfig(**overrides)  # type: ignore[arg-type]
    fs = load_faceset(args.faces)
    manifest = json.loads((args.faces / "manifest.json").read_text())
    side = {
        f["name"]: round(256 / working_alignment(np.array(f["landmarks"]), 256).scale)
        for f in manifest["faces"]
    }
    faces = fs.faces("train")[: args.n]
    names = [n for n, _ in faces]
    crops = np.stack([c for _, c in faces])
    if args.side:  # the crop a face of this size in a photo gives: resampled up to 256 px
        small = torch.nn.functional.interpolate(
            to_tensor(crops), size=(args.side,) * 2, mode="bilinear", antialias=True
        )
        up = torch.nn.functional.interpolate(small, size=(256, 256), mode="bicubic")
        crops = to_uint8(up.clamp(0, 1))
    x0 = to_tensor(crops)
    protector = default_protector(args.emotion)
    surrogates = [m for m in ("dlib", "sface", "faceres", "mobileface") if m != args.victim]
    surrogates += args.extra_surrogate
    if args.prior_only:
        protector = dataclasses.replace(protector, unet=protector.base_unet)
    factory = ensembles(args.robust_copy, args.victim, bool(args.extra_surrogate))
    refiner = Refiner(surrogates, args.emotion, cfg, factory)
    t_emb = refiner.embed(to_tensor(default_target_crop()[None]))
    own_side = [args.side or min(256, side[n]) for n in names]
    t = time.perf_counter()
    if cfg.guide_steps > 0:
        guide = refiner.guide(x0, t_emb, own_side, lambda x: to_crop(x, 256))
        mapped = apply_protector(protector, x0, guide)
    else:
        with torch.no_grad():
            mapped = apply_protector(protector, x0)
    if cfg.guide_steps > 0 and args.guide_delta is not None:
        # the guidance's own change (guided − unguided generation) at this weight, on top of
        # the unguided edit at --alpha: the blur of the 128 px network output cancels out
        with torch.no_grad():
            plain = apply_protector(protector, x0)
        mapped = x0 + args.alpha * (plain - x0) + args.guide_delta * (mapped - plain)
    else:
        mapped = x0 + args.alpha * (mapped - x0)
    t_map = (time.perf_counter() - t) / len(x0)
    mapped = restore_chroma_tensor(x0, mapped.clamp(0, 1))  # as the pipeline does
    t = time.perf_counter()
    out = refiner(x0, mapped, t_emb, own_side)
    t_ref = (time.perf_counter() - t) / len(x0)
    mask = face_mask(256)
    pasted = x0 + torch.from_numpy(np.array(mask))[None, None] * (out - x0)
    prot = to_uint8(pasted)
    ver = {v.name: v for v in zoo_verifiers(size=256)}
    ver.update({m: zoo_model(m, 256, "cpu") for m in args.extra_surrogate})
    test = to_tensor(target_test_photo(default_target_crop()))
    res: dict[str, object] = {"config": cfg.to_dict(), "s_map": t_map, "s_refine": t_ref}
    for m, v in ver.items():
        th = thresholds(m)
        e_p, e_o, e_t = v.embed_crops(to_tensor(prot)), v.embed_crops(x0), v.embed_crops(test)
        still = th.matches(th.score(e_p, e_o), "0.01")
        hit = th.matches(th.score(e_p, e_t), "0.01")
        res[m] = {
            "dodge": float((~torch.as_tensor(still)).float().mean()),
            "psr": float(torch.as_tensor(hit).float().mean()),
            # continuous: the mean score to the own original and to the target (the rates
            # move in steps of one face)
            "own": float(torch.as_tensor(th.score(e_p, e_o)).float().mean()),
            "target": float(torch.as_tensor(th.score(e_p, e_t)).float().mean()),
        }
    box = mask > 0.5
    res["psnr"] = float(np.mean([psnr(a[box], b[box]) for a, b in zip(crops, prot, strict=True)]))
    res["ssim"] = float(np.mean([ssim(a, b) for a, b in zip(crops, prot, strict=True)]))
    luma = np.array([0.299, 0.587, 0.114])
    res["dy_mean"] = float(  # the face's mean luminance change, in /255 (paleness)
        np.mean(
            [((b.astype(float) - a) @ luma)[box].mean() for a, b in zip(crops, prot, strict=True)]
        )
    )
    shifts = [colour_shift(a, b, mask) for a, b in zip(crops, prot, strict=True)]
    res["de_mean"], res["de_p95"] = (
        float(np.mean([s[0] for s in shifts])),
        float(np.mean([s[1] for s in shifts])),
    )
    lm = LaplacianLoss()
    with torch.no_grad():
        mv = displacements(lm.landmarks(to_tensor(prot)), lm.landmarks(x0))
    res["mouth_corner_up"] = float(-(mv[:, [48, 54], 1]).mean())
    res["mouth_corner_out"] = float(((mv[:, 54, 0] - mv[:, 48, 0]) / 2).mean())
    res["brow_up"] = float(-(mv[:, 17:27, 1]).mean())
    res["mouth_open"] = float((mv[:, 66, 1] - mv[:, 62, 1]).mean())
    from pareidolia.evaluation.protocol import judge_rate

    res["judge_before"] = judge_rate(x0, args.emotion)
    res["judge_after"] = judge_rate(to_tensor(prot), args.emotion)
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()}))
    if args.save:
        from PIL import Image

        diff = np.clip(128 + 8 * (prot.astype(int) - crops.astype(int)), 0, 255).astype(np.uint8)
        rows = [np.concatenate([a, b, d], 1) for a, b, d in zip(crops, prot, diff, strict=True)]
        Image.fromarray(np.concatenate(rows, 0)).save(args.save)


if __name__ == "__main__":
    main()
