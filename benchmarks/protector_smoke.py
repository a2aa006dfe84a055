"""A small end-to-end measure of MAP with the offline prior, and its ablations.

Trains one protector on the face set's training faces, applies it to the held-out faces other
than the target, and reports, before → after, the impersonation rate (PSR at FAR 0.01) of every
FR model — the held-out victim included — plus PSNR to the original and the independent judge's
rate of the target emotion.

Target: one held-out face (default insightface t1.jpg's first face) is the enrollment photo;
its test photo is a *different* image made from it (mirrored, brightness ×1.2, JPEG q40),
because no second photo of anyone exists offline.

    python benchmarks/protector_smoke.py --faces out/prior-data --out out/smoke [--set K=V ...]
    python benchmarks/protector_smoke.py --faces out/prior-data --out out/ablation --ablation

``--ablation`` trains the projection / L_lap / L_SM variants of METHOD.md with the same
settings and writes ``OUT/ablation.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pareidolia.diffusion.prior import default_prior
from pareidolia.evaluation.protocol import judge_rate, psr, target_test_photo
from pareidolia.faces.align import to_tensor, to_uint8
from pareidolia.io import atomic_write_bytes, encode_photo
from pareidolia.prior.data import FaceSampler
from pareidolia.prior.dcgan import load_generator
from pareidolia.prior.facesets import Faceset, load_faceset
from pareidolia.protector import ProtectorConfig, adapt_protector, apply_protector, finetune
from pareidolia.quality import psnr, ssim
from pareidolia.zoo import registry


def synthetic_faces(fs: Faceset, real: list[np.ndarray], n: int) -> torch.Tensor:
    """``n`` DCGAN faces (seeded) warped to 256 px working crops, in [0, 1]."""
    dcgan_path = fs.dcgan_path
    if dcgan_path is None:
        raise SystemExit(f"{fs.root}: face set has no DCGAN copy")
    sampler = FaceSampler(real, 256, load_generator(dcgan_path), synthetic_ratio=1.0)
    x = sampler.batch(n, np.random.default_rng(0), torch.Generator().manual_seed(0))
    return (x + 1.0) / 2.0


def overrides(pairs: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` strings → config overrides, values parsed as JSON when they parse."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


ABLATIONS: dict[str, dict[str, object]] = {
    "gradvac (default)": {},
    "pcgrad": {"projection": "pcgrad"},
    "none": {"projection": "none"},
    "gradvac, no L_lap": {"w_lap": 0.0},
    "gradvac, no L_SM": {"w_sm": 0.0},
    "gradvac, no L_lap, no L_SM": {"w_lap": 0.0, "w_sm": 0.0},
}


def measure(
    config: ProtectorConfig,
    train: torch.Tensor,
    target: torch.Tensor,
    test: torch.Tensor,
    out: Path,
    train_psr: bool = False,
    adapt: int = 0,
) -> dict[str, object]:
    """Train one protector, apply it to ``test`` and report (also written to OUT/report.json,
    with the faces before/after in OUT/faces.png)."""
    target_test = to_tensor(target_test_photo(to_uint8(target)[0]))
    unet, score_cfg = default_prior()
    start = time.perf_counter()
    protector = finetune(unet, score_cfg, train, target, config, out, resume=True)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    protected = apply_protector(protector, test)
    apply_s = (time.perf_counter() - start) / len(test)
    pairs = list(zip(to_uint8(test), to_uint8(protected), strict=True))
    report: dict[str, object] = {
        "config": config.to_dict(),
        "train_faces": len(train),
        "test_faces": len(test),
        "train_seconds": round(train_s, 1),
        "apply_seconds_per_face": round(apply_s, 2),
        "psr_far_0.01_before": psr(test, target_test),
        "psr_far_0.01_after": psr(protected, target_test),
        "judge_target_emotion_before": judge_rate(test, config.emotion),
        "judge_target_emotion_after": judge_rate(protected, config.emotion),
        "psnr_mean": round(float(np.mean([psnr(a, b) for a, b in pairs])), 2),
        "ssim_mean": round(float(np.mean([ssim(a, b) for a, b in pairs])), 4),
    }
    rows = [np.concatenate(list(to_uint8(t)), axis=1) for t in (test, protected)]
    atomic_write_bytes(
        out / "faces.png", encode_photo(np.concatenate(rows, axis=0), "PNG"), overwrite=True
    )
    if train_psr:
        report["psr_far_0.01_train_after"] = psr(apply_protector(protector, train), target_test)
    if adapt:
        start = time.perf_counter()
        adapted = torch.cat(
            [
                apply_protector(adapt_protector(protector, face[None], target, adapt), face[None])
                for face in test
            ]
        )
        report["adapt_steps"] = adapt
        report["adapt_seconds_per_face"] = round((time.perf_counter() - start) / len(test), 1)
        report["psr_far_0.01_after_adapt"] = psr(adapted, target_test)
        report["psnr_mean_after_adapt"] = round(
            float(
                np.mean(
                    [psnr(a, b) for a, b in zip(to_uint8(test), to_uint8(adapted), strict=True)]
                )
            ),
            2,
        )
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=2).encode(), overwrite=True)
    return report


def ablation_table(reports: dict[str, dict[str, Any]], victim: str) -> str:
    """Markdown: one row per variant."""
    lines = [
        f"| variant | PSR victim {victim} | PSR surrogates (mean) | judge before → after | "
        "PSNR | SSIM |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in reports.items():
        after = r["psr_far_0.01_after"]
        sur = [v for k, v in after.items() if k != victim]
        lines.append(
            f"| {name} | {100 * after[victim]:.0f} % | {100 * float(np.mean(sur)):.0f} % | "
            f"{100 * r['judge_target_emotion_before']:.0f} → "
            f"{100 * r['judge_target_emotion_after']:.0f} % | {r['psnr_mean']:.1f} dB | "
            f"{r['ssim_mean']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, required=True, help="face set (pareidolia prior data)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--target", default="insightface-t1-0", help="held-out face used as target")
    ap.add_argument("--emotion", default="happy")
    ap.add_argument("--victim", default="dlib")
    ap.add_argument("--epochs", type=int, help="default: ProtectorConfig's")
    ap.add_argument("--lr", type=float, help="default: ProtectorConfig's")
    ap.add_argument("--t0", type=int, help="default: ProtectorConfig's")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="any other ProtectorConfig field, e.g. --set w_id=10 (repeatable)",
    )  # fmt: skip
    ap.add_argument("--synthetic", type=int, default=0, help="add N DCGAN faces to training")
    ap.add_argument("--adapt", type=int, default=0, help="also: adapt N steps per test face")
    ap.add_argument("--train-psr", action="store_true", help="also measure on training faces")
    ap.add_argument(
        "--ablation", action="store_true",
        help="train every variant of ABLATIONS (projection, L_lap, L_SM) into OUT/<n>/ and "
        "write OUT/ablation.md",
    )  # fmt: skip
    args = ap.parse_args()

    fs = load_faceset(args.faces)
    real = [c for _, c in fs.faces("train")]
    train = to_tensor(real)
    if args.synthetic:
        train = torch.cat([train, synthetic_faces(fs, real, args.synthetic)])
    held = dict(fs.faces("heldout"))
    target = to_tensor(held.pop(args.target))
    test = to_tensor(list(held.values()))
    surrogates = tuple(m for m in registry.names("fr") if m != args.victim)
    given = {"t0": args.t0, "epochs": args.epochs, "lr": args.lr}
    config = ProtectorConfig(
        emotion=args.emotion, victim=args.victim, surrogates=surrogates,
        **{k: v for k, v in given.items() if v is not None}, **overrides(args.set),
    )  # fmt: skip
    if not args.ablation:
        report = measure(config, train, target, test, args.out, args.train_psr, args.adapt)
        print(json.dumps(report, indent=2))
        return
    reports = {}
    for i, (name, change) in enumerate(ABLATIONS.items()):
        variant = ProtectorConfig.from_dict({**config.to_dict(), **change})
        reports[name] = measure(variant, train, target, test, args.out / str(i))
        table = ablation_table(reports, args.victim)
        atomic_write_bytes(args.out / "ablation.md", table.encode(), overwrite=True)
        print(table)


if __name__ == "__main__":
    main()
