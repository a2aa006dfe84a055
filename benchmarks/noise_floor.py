"""What random luminance noise alone does to the FR models [ours]: the floor a transfer attack
must beat, on the *training* faces.

    python benchmarks/noise_floor.py --faces out/prior-data --n 8 [--db 30 27 25.6 24 22]
        [--grid 64]   # the noise's grid: 64 as the refinement's field, 8 for coarse noise

Each training face's 256 px working crop gets random luminance noise shaped like the
refinement's luminance field (a ``--grid`` × ``--grid`` grid of normal draws, 64 as the field,
bilinearly upsampled, the same on R, G and B, seeded), under the paste mask, scaled to about
each face PSNR of ``--db``. Every
FR model then scores the noisy crop against its original as ``benchmarks/tune_refine.py``
measures a refined one: the mean score, and the share of faces no longer matched at FAR 0.01
(dodging), with the face PSNR and SSIM it measured. Prints one JSON line per level: compare the
held-out model's score with that of an edit at the same PSNR.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pareidolia.evaluation.protocol import zoo_verifiers
from pareidolia.faces.align import to_tensor, to_uint8
from pareidolia.faces.blend import face_mask
from pareidolia.prior.facesets import load_faceset
from pareidolia.quality import psnr, ssim
from pareidolia.zoo.thresholds import thresholds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=Path, required=True)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--db", type=float, nargs="+", default=[30.0, 27.0, 25.6, 24.0, 22.0])
    ap.add_argument("--grid", type=int, default=64, help="noise grid (the field's: 64)")
    args = ap.parse_args()
    crops = np.stack([c for _, c in load_faceset(args.faces).faces("train")[: args.n]])
    x0 = to_tensor(crops)
    mask = np.array(face_mask(256))
    paste = torch.from_numpy(mask)[None, None]
    box = mask > 0.5
    verifiers = zoo_verifiers(size=256)
    own = {v.name: v.embed_crops(x0) for v in verifiers}
    draws = torch.randn(
        len(x0), 1, args.grid, args.grid, generator=torch.Generator().manual_seed(0)
    )
    shape = F.interpolate(draws, size=(256, 256), mode="bilinear", align_corners=False) * paste
    rms = (shape.pow(2).flatten(1).sum(1) / float(box.sum())).sqrt().view(-1, 1, 1, 1)
    for db in args.db:
        noisy = to_uint8((x0 + shape * (10.0 ** (-db / 20.0)) / rms).clamp(0.0, 1.0))
        row: dict[str, object] = {
            "target_db": db,
            "grid": args.grid,
            "psnr": round(
                float(np.mean([psnr(a[box], b[box]) for a, b in zip(crops, noisy, strict=True)])), 3
            ),
            "ssim": round(
                float(np.mean([ssim(a, b) for a, b in zip(crops, noisy, strict=True)])), 3
            ),
        }
        for v in verifiers:
            th = thresholds(v.name)
            score = th.score(v.embed_crops(to_tensor(noisy)), own[v.name])
            still = torch.as_tensor(th.matches(score, "0.01"))
            row[v.name] = {
                "own": round(float(torch.as_tensor(score).float().mean()), 3),
                "dodge": float((~still).float().mean()),
            }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
