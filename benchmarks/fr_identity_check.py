"""Identity sanity check of the zoo's FR models on the *training* faces: does a model see one face
and a lightly edited copy of it as closer than that face and anyone else?

    python benchmarks/fr_identity_check.py --faces out/prior-data [--model faceres-deep ...]

Every training face (aligned 256 px working crop) is compared with three copies of itself
(mirrored, JPEG quality 50, shifted by (4, 3) px) and with every other training face. The two
pairs of faces that show one person in two photos (``SAME_PERSON`` of
``tools/calibrate_thresholds.py``) are left out of the "others". Cosine on each model's raw
embedding (dlib is decided on Euclidean distance; its cosines are compressed near 1). Prints one
JSON line per model: same-pair cosine per edit and the lowest, this-face-vs-others max (mean
and max over faces) and mean, others-vs-others p99, and how many faces have every edited copy
closer than every other face. Default models: the default FR set plus the opt-in ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pareidolia.evaluation.variants import jpeg
from pareidolia.faces.align import to_tensor
from pareidolia.prior.facesets import load_faceset
from pareidolia.zoo import registry
from pareidolia.zoo.chip_model import zoo_model

SAME_PERSON = {
    frozenset(("faceapi-sample1-0", "faceapi-sample3-0")),
    frozenset(("faceapi-sample1-1", "faceapi-sample4-3")),
}


def edits(crops: np.ndarray) -> dict[str, np.ndarray]:
    """The "same face" copies of (N, S, S, 3) uint8 crops."""
    return {
        "mirror": np.ascontiguousarray(crops[:, :, ::-1]),
        "jpeg50": np.stack([jpeg(c, 50) for c in crops]),
        "shift4": np.roll(crops, (3, 4), axis=(1, 2)),
    }


def check(name: str, crops: np.ndarray, labels: list[str]) -> dict[str, object]:
    model = zoo_model(name, working_size=crops.shape[1])

    def embed(x: np.ndarray) -> torch.Tensor:
        return F.normalize(model.embed_crops(to_tensor(x)), dim=1)

    e = embed(crops)
    same = {k: (e * embed(x)).sum(1) for k, x in edits(crops).items()}
    same_min = torch.stack(list(same.values())).min(0).values.numpy()
    n = len(labels)
    other = np.array(
        [
            [i != j and frozenset((labels[i], labels[j])) not in SAME_PERSON for j in range(n)]
            for i in range(n)
        ]
    )
    s = (e @ e.T).numpy()
    vs_max = np.where(other, s, -np.inf).max(1)
    pairs = s[np.triu(other, 1)]
    return {
        "model": name,
        "dim": int(e.shape[1]),
        "same": {k: round(float(v.mean()), 3) for k, v in same.items()},
        "same_min": round(float(same_min.min()), 3),
        "vs_others_max_mean": round(float(vs_max.mean()), 3),
        "vs_others_max_max": round(float(vs_max.max()), 3),
        "others_mean": round(float(pairs.mean()), 3),
        "others_p99": round(float(np.quantile(pairs, 0.99)), 3),
        "separated": f"{int((same_min > vs_max).sum())}/{n}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, required=True)
    ap.add_argument("--model", action="append", help="zoo FR model (repeatable)")
    args = ap.parse_args()
    faces = load_faceset(args.faces).faces("train")
    labels = [n for n, _ in faces]
    crops = np.stack([c for _, c in faces])
    for name in args.model or registry.names("fr", opt_in=True):
        print(json.dumps(check(name, crops, labels)), flush=True)


if __name__ == "__main__":
    main()
