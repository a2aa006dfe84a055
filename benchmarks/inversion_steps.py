"""How many DDIM inversion steps the MAP pass needs [ours]: the shipped protector's one pass
with a shorter inversion against the 20 steps it was trained on.

    OMP_NUM_THREADS=2 python benchmarks/inversion_steps.py --faces out/prior-data \
        [--split train] [--steps 12 8 6 4] [--out docs/bench/inversion-steps.json]

For every face of ``--split`` of the prior's data (256 px working crops), the protector's
output with ``--steps`` inversion steps is compared with its output with the protector's own
(20): the PSNR between the two outputs, and the cosine and norm ratio of the two edits
(output − original), over all faces together. The seconds per face of each pass are measured
one face at a time, after a warm-up pass; run it alone on the machine for those. Choose on
``train``, then check on ``heldout``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pareidolia.default_protectors import default_protector
from pareidolia.faces.align import to_tensor
from pareidolia.prior.facesets import load_faceset
from pareidolia.protector import Protector, apply_protector


def one_pass(protector: Protector, x: torch.Tensor, n_inv: int) -> tuple[torch.Tensor, float]:
    """The protector's output on every face with ``n_inv`` inversion steps, and the mean
    seconds per face (one face at a time)."""
    out, began = [], time.perf_counter()
    for face in x.split(1):
        out.append(apply_protector(protector, face, n_inv=n_inv))
    return torch.cat(out), (time.perf_counter() - began) / len(x)


def compare(x: torch.Tensor, ref: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """PSNR of ``y`` against ``ref``, and the cosine and norm ratio of their edits from ``x``."""
    mse = float((y - ref).pow(2).mean())
    d_ref, d = (ref - x).flatten(), (y - x).flatten()
    return {
        "psnr_to_own": round(10.0 * math.log10(1.0 / mse), 2) if mse > 0 else math.inf,
        "edit_cosine": round(float(d @ d_ref / (d.norm() * d_ref.norm())), 4),
        "edit_norm_ratio": round(float(d.norm() / d_ref.norm()), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", type=Path, required=True, help="the prior's data folder")
    ap.add_argument("--split", default="train", choices=("train", "heldout"))
    ap.add_argument("--steps", type=int, nargs="+", default=[12, 8, 6, 4])
    ap.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = ap.parse_args()
    crops = np.stack([c for _, c in load_faceset(args.faces).faces(args.split)])
    x = to_tensor(crops)
    protector = default_protector()
    own = protector.config.n_inv
    one_pass(protector, x[:1], own)  # warm-up, not timed
    with torch.no_grad():
        ref, own_seconds = one_pass(protector, x, own)
        rows: list[dict[str, Any]] = [{"inversion_steps": own, "seconds_per_face": own_seconds}]
        for n in args.steps:
            y, seconds = one_pass(protector, x, n)
            rows.append({"inversion_steps": n, "seconds_per_face": seconds, **compare(x, ref, y)})
    for row in rows:
        row["seconds_per_face"] = round(row["seconds_per_face"], 3)
        print(json.dumps(row), flush=True)
    if args.out:
        result = {"split": args.split, "faces": len(x), "protector_steps": own, "rows": rows}
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
