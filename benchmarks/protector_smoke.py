"""A first, small end-to-end measure of MAP with the offline prior (not the issue-7 benchmark).

Trains one protector on the face set's training faces, applies it to the held-out faces other
than the target, and reports, before → after, the impersonation rate (PSR at FAR 0.01) of every
FR model — the held-out victim included — plus PSNR to the original and the independent judge's
rate of the target emotion.

Target: one held-out face (default insightface t1.jpg's first face) is the enrollment photo;
its test photo is a *different* image made from it (mirrored, brightness ×1.2, JPEG q40),
because no second photo of anyone exists offline.

    python benchmarks/protector_smoke.py --faces out/prior-data --out out/smoke --epochs 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from pareidolia.diffusion.prior import default_prior
from pareidolia.diffusion.prior_eval import psnr
from pareidolia.evaluation.variants import jpeg
from pareidolia.faces.align import ChipSampler, to_tensor, to_uint8
from pareidolia.facesets import load_faceset
from pareidolia.protector import ProtectorConfig, apply_protector, finetune
from pareidolia.zoo import registry
from pareidolia.zoo.spec import EMOTIONS
from pareidolia.zoo.thresholds import thresholds


def target_test_photo(crop: np.ndarray) -> np.ndarray:
    """The target's second photo: mirrored, brightened ×1.2, JPEG quality 40."""
    out = np.clip(crop[:, ::-1].astype(np.float32) * 1.2, 0, 255).astype(np.uint8)
    return jpeg(np.ascontiguousarray(out), 40)


@torch.no_grad()
def psr(faces: torch.Tensor, target_test: torch.Tensor) -> dict[str, float]:
    """Share of faces each FR model matches to the target's test photo at FAR 0.01."""
    out = {}
    for name in registry.names("fr"):
        net, chip = registry.load(name), ChipSampler(registry.get(name).chip, faces.shape[-1])
        th = thresholds(name)
        scores = th.score(net(chip(faces)), net(chip(target_test)))
        out[name] = float(torch.as_tensor(th.matches(scores, "0.01")).float().mean())
    return out


@torch.no_grad()
def judge_rate(faces: torch.Tensor, emotion: str) -> float:
    """Share of faces the independent judge (human's emotion net) labels ``emotion``."""
    judge, chip = registry.load("mini_xception"), ChipSampler("emotion64", faces.shape[-1])
    labels = judge(chip(faces)).argmax(1)
    return float((labels == EMOTIONS.index(emotion)).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, required=True, help="face set (pareidolia prior data)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--target", default="insightface-t1-0", help="held-out face used as target")
    ap.add_argument("--emotion", default="happy")
    ap.add_argument("--victim", default="dlib")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=8e-6)
    ap.add_argument("--t0", type=int, default=60)
    args = ap.parse_args()

    fs = load_faceset(args.faces)
    train = to_tensor([c for _, c in fs.faces("train")])
    held = dict(fs.faces("heldout"))
    target = to_tensor(held.pop(args.target))
    target_test = to_tensor(target_test_photo(to_uint8(target)[0]))
    test = to_tensor(list(held.values()))
    surrogates = tuple(m for m in registry.names("fr") if m != args.victim)
    config = ProtectorConfig(
        t0=args.t0, epochs=args.epochs, lr=args.lr, emotion=args.emotion,
        victim=args.victim, surrogates=surrogates,
    )  # fmt: skip
    unet, score_cfg = default_prior()
    start = time.perf_counter()
    protector = finetune(unet, score_cfg, train, target, config, args.out)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    protected = apply_protector(protector, test)
    apply_s = (time.perf_counter() - start) / len(test)
    report = {
        "config": config.to_dict(),
        "train_faces": len(train),
        "test_faces": len(test),
        "train_seconds": round(train_s, 1),
        "apply_seconds_per_face": round(apply_s, 2),
        "psr_far_0.01_before": psr(test, target_test),
        "psr_far_0.01_after": psr(protected, target_test),
        "judge_target_emotion_before": judge_rate(test, args.emotion),
        "judge_target_emotion_after": judge_rate(protected, args.emotion),
        "psnr_mean": round(
            float(
                np.mean(
                    [psnr(a, b) for a, b in zip(to_uint8(test), to_uint8(protected), strict=True)]
                )
            ),
            2,
        ),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
