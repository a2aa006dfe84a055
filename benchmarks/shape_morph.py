"""How far does face *shape* alone move the FR models? (a probe [ours], training faces only)

    python benchmarks/shape_morph.py --faces out/prior-data --n 8 --frac 0.3 0.6 1.0 [--save X.png]

Each training face's 68 landmarks (the landmark net, in the 256 px working crop) are moved a
share ``--frac`` of the way toward the shipped target's landmarks (the target's shape, brought
onto the face by a similarity, so pose and size stay the face's own), and the crop is warped by
the thin-plate spline through those moves (zero on a ring outside the face oval, faded out
before the paste seam by the refinement's own ``warp_fade``). No optimisation: this measures
what a purely geometric identity change buys. Prints one JSON line per share: face-oval PSNR, the largest
shift in pixels, and per FR model the mean score to the face's own original and the share of
faces no longer matched at FAR 0.01.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from pareidolia.default_protectors import default_target_crop
from pareidolia.evaluation.protocol import zoo_verifiers
from pareidolia.faces.align import to_tensor, to_uint8
from pareidolia.faces.blend import face_mask
from pareidolia.faces.templates import CHIPS, chip_affine, umeyama, working_template
from pareidolia.faces.tps import tps_morph
from pareidolia.objectives.landmarks import LaplacianLoss
from pareidolia.prior.facesets import load_faceset
from pareidolia.quality import psnr
from pareidolia.refine import identity_grid, warp_fade
from pareidolia.zoo.thresholds import thresholds

SIZE = 256


def crop_points(net: LaplacianLoss, x: torch.Tensor) -> np.ndarray:
    """(B, 68, 2) landmarks in working-crop pixels."""
    to_chip = chip_affine(working_template(SIZE), CHIPS[net.sampler.chip])
    with torch.no_grad():
        p = net.landmarks(x).numpy().astype(np.float64)
    return (p - to_chip[:, 2]) @ np.linalg.inv(to_chip[:, :2]).T


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=Path, required=True)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--frac", type=float, nargs="+", default=[0.3, 0.6, 1.0])
    ap.add_argument("--save", type=Path, help="originals, then one row per share")
    args = ap.parse_args()
    crops = np.stack([c for _, c in load_faceset(args.faces).faces("train")[: args.n]])
    x0 = to_tensor(crops)
    net = LaplacianLoss()
    points = crop_points(net, x0)
    target = crop_points(net, to_tensor(default_target_crop()[None]))[0]
    mask = np.array(face_mask(SIZE))
    fade = warp_fade(SIZE)
    grid = identity_grid(SIZE)
    verifiers = zoo_verifiers(size=SIZE)
    originals = {v.name: v.embed_crops(x0) for v in verifiers}
    rows = [crops]
    for frac in args.frac:
        moved = []
        for i, p in enumerate(points):
            sim = umeyama(target, p)  # the target's shape, in this face's pose and size
            aim = target @ sim[:, :2].T + sim[:, 2]
            moved.append(tps_morph(x0[i : i + 1], p, p + frac * (aim - p), fade, grid))
        out = to_uint8(torch.cat(moved).clamp(0, 1))
        box = mask > 0.5
        face_psnr = [psnr(a[box], b[box]) for a, b in zip(crops, out, strict=True)]
        res: dict[str, object] = {"frac": frac, "psnr": round(float(np.mean(face_psnr)), 2)}
        for v in verifiers:
            th = thresholds(v.name)
            score = torch.as_tensor(th.score(v.embed_crops(to_tensor(out)), originals[v.name]))
            still = torch.as_tensor(th.matches(score, "0.01"))
            res[v.name] = {
                "own": round(float(score.float().mean()), 3),
                "dodge": round(float((~still).float().mean()), 3),
            }
        print(json.dumps(res), flush=True)
        rows.append(out)
    if args.save:
        from PIL import Image

        Image.fromarray(np.concatenate([np.concatenate(list(r), 1) for r in rows], 0)).save(
            args.save
        )


if __name__ == "__main__":
    main()
