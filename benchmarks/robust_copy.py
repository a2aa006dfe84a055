"""A slightly robust copy of a zoo FR model, for a transfer try [ours] (training faces only).

    python benchmarks/robust_copy.py --faces out/prior-data --model sface --out X.safetensors
        [--steps 300] [--eps 2] [--lr 1e-4]

Attacks made on a slightly adversarially robust surrogate are reported to transfer better
between classifiers. The copy starts from the zoo model's weights and is self-distilled: at each
step, a batch of 12 augmented training crops (40 % DCGAN faces, as the prior is trained) gets a
two-step PGD perturbation of at most ``--eps``/255 that turns the copy's embedding away from the
original model's, and the copy learns to keep both the clean and the perturbed crop's
embedding on the original's (1 − cosine each; batch norm keeps its statistics). Prints the
clean and perturbed cosines every 20 steps; writes the copy's network weights as safetensors,
for ``benchmarks/tune_refine.py --robust-copy MODEL=FILE``.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pareidolia.prior.data import Augment, FaceSampler
from pareidolia.prior.dcgan import load_generator
from pareidolia.prior.facesets import load_faceset
from pareidolia.zoo.chip_model import zoo_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=Path, required=True)
    ap.add_argument("--model", required=True, help="zoo FR model to copy")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eps", type=float, default=2.0, help="PGD bound, in /255")
    ap.add_argument("--lr", type=float, default=1e-4)
    args = ap.parse_args()
    torch.manual_seed(0)
    fs = load_faceset(args.faces)
    if fs.dcgan_path is None:
        raise SystemExit(f"{args.faces}: no DCGAN weights (run `pareidolia prior data`)")
    sampler = FaceSampler(
        [c for _, c in fs.faces("train")], 256, load_generator(fs.dcgan_path), 0.4, Augment()
    )
    teacher = zoo_model(args.model, 256, "cpu").eval()
    student = copy.deepcopy(teacher)
    student.net.requires_grad_(True)
    opt = torch.optim.Adam(student.net.parameters(), lr=args.lr)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    eps = args.eps / 255.0
    began = time.time()
    for step in range(args.steps):
        x = (sampler.batch(12, rng, gen) + 1.0) / 2.0
        with torch.no_grad():
            aim = F.normalize(teacher(x), dim=-1)
        delta = (torch.rand_like(x) * 2.0 - 1.0) * eps
        for _ in range(2):
            delta.requires_grad_(True)
            cos = (F.normalize(student((x + delta).clamp(0, 1)), dim=-1) * aim).sum(-1).mean()
            (grad,) = torch.autograd.grad(cos, delta)
            delta = (delta.detach() - 0.75 * eps * grad.sign()).clamp(-eps, eps)
        adv = (F.normalize(student((x + delta).clamp(0, 1)), dim=-1) * aim).sum(-1)
        clean = (F.normalize(student(x), dim=-1) * aim).sum(-1)
        loss = (1.0 - adv).mean() + (1.0 - clean).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0:
            print(
                f"step {step}: perturbed cos {float(adv.mean()):.4f}, "
                f"clean cos {float(clean.mean()):.4f}, {time.time() - began:.0f} s",
                flush=True,
            )
    weights = {k: v.detach().contiguous() for k, v in student.net.state_dict().items()}
    save_file(weights, str(args.out))


if __name__ == "__main__":
    main()
