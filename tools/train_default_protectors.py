"""Make the protectors shipped in the package: the default target face and one protector per
emotion, written to ``src/pareidolia/data/protectors/`` with ``index.json`` (sha256 of each
file, the config, the command).

The default target is a *synthetic* face, so no real person's identity is the default: the
DCGAN of ``gan-face-generate`` 1.1.1 (trained on the synthetic DigiFace-1M) draws 64 faces from
a fixed seed; each is warped to the 256 px working crop; a face qualifies when YuNet finds it
in the crop and all four FR models match it to its own "other photo" (mirrored, ×1.2
brightness, JPEG q40) at FAR 0.01; the qualifying face with the largest smallest margin over
the four models is chosen (the most stable identity, so the target is well defined).

    python tools/train_default_protectors.py --faces out/prior-data [--emotions happy,surprised]

``--emotions ""`` only makes the target; ``--from-bench OUT`` ships the protector the offline
benchmark trained for the victim dlib (same faces, target and config) instead of training it
again.

Protector settings come from ``tools/default_protector.toml`` (ProtectorConfig fields).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pareidolia.checksums import file_sha256
from pareidolia.default_protectors import INDEX, SHIPPED
from pareidolia.diffusion.prior import default_prior
from pareidolia.evaluation.protocol import judge_rate, psr, target_test_photo
from pareidolia.faces.align import to_tensor, to_uint8
from pareidolia.faces.detect import detect_faces
from pareidolia.io import atomic_write_bytes, encode_photo, read_photo
from pareidolia.prior.data import FaceSampler
from pareidolia.prior.dcgan import load_generator
from pareidolia.prior.facesets import Faceset, load_faceset
from pareidolia.protector import (
    Protector,
    ProtectorConfig,
    apply_protector,
    finetune,
    load_protector,
    save_protector,
)
from pareidolia.quality import psnr, ssim
from pareidolia.runtime import FAR, WORKING_SIZE
from pareidolia.zoo import registry
from pareidolia.zoo.chip_model import shared_zoo_model

CONFIG = Path(__file__).resolve().parent / "default_protector.toml"
TARGET_FILE = "target.png"
CANDIDATES = 64
SEED = 0


def _margins(crop: np.ndarray) -> list[float]:
    """Per FR model, how far the crop's match to its own other photo clears the threshold
    (as a fraction of the threshold; negative: no match)."""
    a, b = to_tensor(crop), to_tensor(target_test_photo(crop))
    out = []
    for model in (shared_zoo_model(name) for name in registry.names("fr")):
        th = model.rule
        s = float(th.score(model.embed_crops(a), model.embed_crops(b)))
        t = th.at[FAR]
        out.append((s - t) / t if th.metric == "cosine" else (t - s) / t)
    return out


def make_target(faceset: Faceset) -> tuple[np.ndarray, dict[str, object]]:
    """The chosen synthetic target crop and how it was chosen."""
    dcgan = faceset.dcgan_path
    if dcgan is None:
        raise SystemExit(f"{faceset.root}: the face set has no DCGAN copy")
    real = [c for _, c in faceset.faces("train")][:1]  # FaceSampler needs one; unused at ratio 1
    sampler = FaceSampler(real, WORKING_SIZE, load_generator(dcgan), synthetic_ratio=1.0)
    x = sampler.batch(CANDIDATES, np.random.default_rng(SEED), torch.Generator().manual_seed(SEED))
    crops = to_uint8((x + 1.0) / 2.0)
    best, best_margin = -1, -np.inf
    for i, crop in enumerate(crops):
        if not detect_faces(crop):
            continue
        m = min(_margins(crop))
        if m > best_margin:
            best, best_margin = i, m
    if best < 0 or best_margin <= 0:
        raise SystemExit("no DCGAN face qualified as a target")
    how = {
        "generator": "gan-face-generate 1.1.1 DCGAN (DigiFace-1M, synthetic faces)",
        "candidates": CANDIDATES,
        "seed": SEED,
        "index": best,
        "min_margin": round(float(best_margin), 4),
    }
    return crops[best], how


def heldout_metrics(
    protector: Protector, faceset: Faceset, target: torch.Tensor
) -> dict[str, float]:
    """What the protector does to the face set's held-out real faces (none seen in training):
    PSR at FAR 0.01 per FR model toward the target's other photo, before → after, the judge's
    rate of the emotion, and PSNR / SSIM of the working crops (flat keys ``heldout_*``)."""
    faces = to_tensor([c for _, c in faceset.faces("heldout")])
    protected = apply_protector(protector, faces)
    target_test = to_tensor(target_test_photo(to_uint8(target)[0]))
    emotion = protector.config.emotion
    pairs = list(zip(to_uint8(faces), to_uint8(protected), strict=True))
    out = {
        "heldout_faces": float(len(faces)),
        "heldout_judge_rate_before": judge_rate(faces, emotion),
        "heldout_judge_rate_after": judge_rate(protected, emotion),
        "heldout_psnr": round(float(np.mean([psnr(a, b) for a, b in pairs])), 2),
        "heldout_ssim": round(float(np.mean([ssim(a, b) for a, b in pairs])), 4),
    }
    for when, x in (("before", faces), ("after", protected)):
        for model, rate in psr(x, target_test).items():
            out[f"heldout_psr_{when}_{model}"] = rate
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, required=True, help="face set (pareidolia prior data)")
    ap.add_argument("--emotions", default="happy,surprised")
    ap.add_argument("--work", type=Path, default=Path("out/default-protectors"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--from-bench",
        type=Path,
        help="ship OUT/protectors/dlib.safetensors of `pareidolia bench --out OUT` (victim dlib, "
        "default target, these settings) as the first emotion's protector instead of training",
    )
    args = ap.parse_args()

    faceset = load_faceset(args.faces)
    SHIPPED.mkdir(parents=True, exist_ok=True)
    index = json.loads(INDEX.read_text()) if INDEX.is_file() else {"protectors": {}}
    target_path = SHIPPED / TARGET_FILE
    if not target_path.is_file():
        crop, how = make_target(faceset)
        atomic_write_bytes(target_path, encode_photo(crop, "PNG"))
        index["target"] = {"file": TARGET_FILE, "sha256": file_sha256(target_path), "how": how}
        atomic_write_bytes(INDEX, (json.dumps(index, indent=2) + "\n").encode(), overwrite=True)
        print(f"{target_path}: target chosen ({how})")
    target = to_tensor(read_photo(target_path).rgb)
    train = to_tensor([c for _, c in faceset.faces("train")])
    settings = tomllib.loads(CONFIG.read_text())
    unet, score_cfg = default_prior()
    nn.Module.to(unet, torch.device(args.device))
    for i, emotion in enumerate([e for e in args.emotions.split(",") if e]):
        config = ProtectorConfig.from_dict({**settings, "emotion": emotion})
        start = time.perf_counter()
        if i == 0 and args.from_bench is not None:
            protector = load_protector(
                args.from_bench / "protectors" / "dlib.safetensors", unet, score_cfg
            )
            if protector.config != config:
                raise SystemExit(f"{args.from_bench}: its dlib protector has another config")
        else:
            protector = finetune(
                unet, score_cfg, train.to(args.device), target.to(args.device), config,
                args.work / emotion, resume=True,
            )  # fmt: skip
            protector.metrics["train_seconds"] = round(time.perf_counter() - start, 1)
        protector.metrics.update(heldout_metrics(protector, faceset, target))
        out = SHIPPED / f"{emotion}.safetensors"
        save_protector(out, protector, overwrite=True, delta_fp16=True)
        index["protectors"][emotion] = {
            "file": out.name,
            "sha256": file_sha256(out),
            "config": config.to_dict(),
            "train_faces": int(train.shape[0]),
            "metrics": protector.metrics,
            "command": " ".join(["python", *sys.argv]),
        }
        atomic_write_bytes(INDEX, (json.dumps(index, indent=2) + "\n").encode(), overwrite=True)
        print(f"{out}: {json.dumps(protector.metrics)}")


if __name__ == "__main__":
    main()
