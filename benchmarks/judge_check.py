"""What the FR judges (role ``fr_judge``, in no ensemble) score on the held-out faces [ours], per face.

    python benchmarks/judge_check.py --out docs/bench/heldout/judge-check.json \
        [--rows default,natural,fast] [--more-faces]

Each row of ``benchmarks/heldout.py`` protects the held-out photos whole as a user's run does
(surrogates: all four zoo FR models, the synthetic target); each judge (``facenet128``,
``mobilefacenet512``) then scores every protected face, cut from the written photo, against
its own original and every other real photo of the same person (obama), and the share of faces
it no longer matches is given at each calibrated FAR (0.1, 0.01, 0.001), so the dodging rate
can be read against the threshold it rests on. Writes per judge, row and face the judge's
highest score to a real photo of the person, and per judge and row the rates and the mean
score.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heldout import FR, ROOT, Judges, _map_edit, _options, load_faces, protect_all, seen
from pareidolia.default_protectors import default_protector
from pareidolia.zoo import registry
from pareidolia.zoo.thresholds import thresholds

JUDGES = registry.names("fr_judge")


def best_scores(j: Judges, judge: str, faces: list[Any], crops: list[np.ndarray]) -> list[float]:
    """Per face: ``judge``'s highest cosine between the protected face and any real photo of
    the same person (its own original included)."""
    e = torch.nn.functional.normalize(j.embed(judge, seen(faces, crops)), dim=-1)
    o = torch.nn.functional.normalize(j.embed(judge, seen(faces, [f.crop for f in faces])), dim=-1)
    out = []
    for i, f in enumerate(faces):
        refs = [k for k, g in enumerate(faces) if k == i or (f.person and g.person == f.person)]
        out.append(float((o[refs] @ e[i]).max()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rows", default="none,fast,default")
    ap.add_argument("--packages", type=Path, default=ROOT / ".cache/packages")
    ap.add_argument("--more-faces", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    faces = load_faces(args.packages, args.more_faces)
    j = Judges()
    protector = default_protector()
    results: dict[str, Any] = {
        "thresholds": {m: thresholds(m).at for m in JUDGES},
        "faces": [f.photo for f in faces],
        "judges": {m: {} for m in JUDGES},
    }
    for row in args.rows.split(","):
        if row == "none":
            crops = [f.crop for f in faces]
        else:
            edit = functools.partial(_map_edit, protector, _options(row, tuple(FR)))
            crops, _, _ = protect_all(faces, edit)
        for m in JUDGES:
            scores = best_scores(j, m, faces, crops)
            results["judges"][m][row] = {
                "mean_best_score": round(float(np.mean(scores)), 4),
                "dodging": {
                    far: round(float(np.mean([s <= t for s in scores])), 4)
                    for far, t in thresholds(m).at.items()
                },
                "best_scores": [round(s, 4) for s in scores],
            }
            print(m, row, json.dumps(results["judges"][m][row]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
