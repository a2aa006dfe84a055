"""Make the equivalence fixtures of the human ports by running the ORIGINAL TF.js graphs.

For each model, three uint8 RGB chips (the astronaut's face, its mirror image, uniform noise
with seed 0) are fed to ``tools/fixtures/human.mjs`` (Node + @tensorflow/tfjs 4.22, pure-JS CPU
backend, installed in ``tools/node``), which applies human's own input scaling and returns the
exact node the PyTorch port reproduces. Results go to ``tests/fixtures/<name>.npz`` with keys
``input`` (uint8, N×S×S×3), ``output`` (float32), ``node``, ``tfjs`` and, for the emotion net,
``labels`` (the order of ``output``: human's native order) and ``logits`` (the pre-softmax
global-average-pool node, same order). Run::

    python tools/make_fixture_human.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from skimage import data
from skimage.transform import resize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from packages import fetch
from pareidolia.zoo.human import HUMAN_EMOTIONS

REPO = Path(__file__).resolve().parents[1]
NODE_DIR = REPO / "tools" / "node"
SCRIPT = REPO / "tools" / "fixtures" / "human.mjs"
OUT = REPO / "tests" / "fixtures"

LOGITS_NODE = "StatefulPartitionedCall/model_1/global_average_pooling2d_1/Mean"

# name → (package key, model.json, preprocessing in human.mjs, node, chip size)
MODELS = {
    "faceres": ("human", "package/models/faceres.json", "x255", "global_pooling/Mean", 224),
    "mobileface": (
        "human-models",
        "package/models/mobileface.json",
        "x255",
        "batchnorm0/add_1",
        112,
    ),
    "mini_xception": ("human", "package/models/emotion.json", "grey", "Identity", 64),
}


def chips(size: int) -> np.ndarray:
    """(3, size, size, 3) uint8: astronaut face crop, its horizontal flip, uniform noise."""
    face = data.astronaut()[40:180, 160:300]  # 140×140 around Eileen Collins' face
    face = resize(face, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    face = np.clip(np.rint(face), 0, 255).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return np.stack([face, face[:, ::-1], noise])


def run_tfjs(
    model_json: Path, preprocess: str, node: str, x: np.ndarray
) -> tuple[np.ndarray, dict]:
    """Run human.mjs on ``x`` (N, S, S, 3) uint8; return (output float32, run info)."""
    n, s = x.shape[0], x.shape[1]
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.u8", Path(tmp) / "out.f32"
        inp.write_bytes(np.ascontiguousarray(x).tobytes())
        cmd = [
            "node",
            str(SCRIPT),
            str(model_json),
            preprocess,
            node,
            str(inp),
            str(n),
            str(s),
            str(out),
        ]
        res = subprocess.run(cmd, cwd=NODE_DIR, check=True, capture_output=True, text=True)
        info = json.loads(res.stdout.strip().splitlines()[-1])
        y = np.frombuffer(out.read_bytes(), dtype="<f4").reshape(info["shape"]).copy()
    return y, info


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (pkg, rel, preprocess, node, size) in MODELS.items():
        x = chips(size)
        y, info = run_tfjs(fetch(pkg) / rel, preprocess, node, x)
        extra = {}
        if name == "mini_xception":
            # The softmax saturates on real faces; keep the pre-softmax scores as well.
            logits, _ = run_tfjs(fetch(pkg) / rel, preprocess, LOGITS_NODE, x)
            extra = {"labels": np.array(HUMAN_EMOTIONS), "logits": logits.astype(np.float32)}
        np.savez_compressed(
            OUT / f"{name}.npz",
            input=x,
            output=y.astype(np.float32),
            node=np.array(node),
            tfjs=np.array(f"tfjs {info['tfjs']} {info['backend']}"),
            **extra,
        )
        print(name, info, (OUT / f"{name}.npz").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
