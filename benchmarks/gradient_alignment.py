"""How far the FR models agree on which pixels change a face's identity [ours]: a diagnostic of
the held-out wall, on the *training* faces.

    python benchmarks/gradient_alignment.py --faces out/prior-data --n 8 [--victim mobileface]
        [--robust-copy sface=X.safetensors]   # a copy from benchmarks/robust_copy.py, as a model

For each face's 256 px working crop and each zoo FR model m, the gradient g_m of the model's
identity with respect to the crop's pixels: of cos(f_m(x), f_m(x0)) at x = x0 plus a little
noise (σ 0.03, seeded: at x0 itself that cosine is at its maximum, where its gradient
vanishes), the direction that dodges fastest; and of cos(f_m(x0), f_m(target)), the
direction toward the shipped target. Then, per face, the cosine between two models' gradients,
averaged over the faces: for every pair of models, and between the held-out model's gradient
and the sum of the other three's (each scaled to unit norm first), as a transfer attack that
follows the surrogates sees it. Each is measured on R, G and B and on luminance (their mean),
after a Gaussian blur of σ 0, 1, 2, 4, 8 crop pixels (the blurred gradients: how far the
models agree at each scale). A first-order view only: a cosine c means a step along the
surrogates' direction moves the held-out model's identity c times as far as a step of the
same size along its own. Prints one JSON line per measure, channel and blur.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pareidolia.default_protectors import default_target_crop
from pareidolia.faces.align import to_tensor
from pareidolia.objectives.fidelity import gaussian_blur
from pareidolia.prior.facesets import load_faceset
from tune_refine import ensembles

MODELS = ("dlib", "sface", "faceres", "mobileface")
BLURS = (0.0, 1.0, 2.0, 4.0, 8.0)


def gradients(x0: torch.Tensor, toward: str, robust: list[str]) -> dict[str, torch.Tensor]:
    """Each model's gradient (B, 3, S, S) of the identity measure ``toward`` (dodge, target);
    the robust copies (``MODEL=FILE``) as models of their own, ``MODEL-robust``."""
    ensemble = ensembles(robust, "")(list(MODELS))
    with torch.no_grad():
        own = {m: F.normalize(e, dim=-1) for m, e in ensemble(x0).items()}
        aim = {
            m: F.normalize(e, dim=-1)
            for m, e in ensemble(to_tensor(default_target_crop()[None])).items()
        }
    if toward == "dodge":
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
        x = (x0 + 0.03 * noise).clamp(0.0, 1.0)
    else:
        x = x0.clone()
    x.requires_grad_(True)
    emb = ensemble(x)
    ref = own if toward == "dodge" else aim
    out = {}
    for m in emb:
        (g,) = torch.autograd.grad(
            (F.normalize(emb[m], dim=-1) * ref[m]).sum(), x, retain_graph=True
        )
        out[m] = g
    return out


def seen(g: torch.Tensor, channels: str, sigma: float) -> torch.Tensor:
    """The gradient on R, G and B or on luminance, blurred by ``sigma`` pixels (0: as is)."""
    g = g.mean(1, keepdim=True) if channels == "luminance" else g
    return gaussian_blur(g, sigma) if sigma > 0 else g


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten(1), b.flatten(1)).mean().item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=Path, required=True)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--victim", default="mobileface", choices=MODELS)
    ap.add_argument("--robust-copy", action="append", default=[], help="MODEL=FILE")
    args = ap.parse_args()
    faces = load_faceset(args.faces).faces("train")[: args.n]
    x0 = to_tensor(np.stack([c for _, c in faces]))
    for toward in ("dodge", "target"):
        grads = gradients(x0, toward, args.robust_copy)
        others = [m for m in grads if m != args.victim]
        for channels, sigma in itertools.product(("rgb", "luminance"), BLURS):
            g = {m: seen(v, channels, sigma) for m, v in grads.items()}
            pairs = {
                f"{a}~{b}": round(cosine(g[a], g[b]), 3)
                for a, b in itertools.combinations(grads, 2)
            }
            unit = sum(
                g[m] / g[m].flatten(1).norm(dim=1).clamp_min(1e-20).view(-1, 1, 1, 1)
                for m in others
            )
            row = {
                "toward": toward,
                "channels": channels,
                "blur_px": sigma,
                "faces": len(x0),
                "surrogates~victim": round(cosine(unit, g[args.victim]), 3),
                "victim": args.victim,
                "pairs": pairs,
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
