"""Make ``tests/fixtures/dlib.npz``: face-api's own TF.js recognition net on three chips.

Inputs (stored as uint8 HWC so the fixture stays small; the JS runner and the test both turn
them into float32 as ``u8 / 255``):

0. the astronaut's face from ``skimage.data.astronaut()`` (crop x 170..290, y 40..180, resized
   to 150×150 with Pillow's bicubic filter);
1. the same chip mirrored left-right;
2. uniform random pixels (``numpy.random.default_rng(0)``).

Outputs are the 128-D descriptors from ``tools/fixtures/dlib.mjs`` (face-api 1.7.15's
``FaceRecognitionNet`` on tfjs 4.22 CPU). Needs Node 20 and ``tools/node/node_modules``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(TOOLS))

from packages import fetch  # noqa: E402

SIZE = 150
OUT = REPO / "tests" / "fixtures" / "dlib.npz"


def fixture_chips() -> np.ndarray:
    """The three fixture chips, (3, 150, 150, 3) uint8 RGB."""
    from skimage import data

    face = data.astronaut()[40:180, 170:290]
    chip = np.asarray(Image.fromarray(face).resize((SIZE, SIZE), Image.Resampling.BICUBIC))
    noise = np.random.default_rng(0).integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    return np.stack([chip, chip[:, ::-1], noise]).astype(np.uint8)


def run_faceapi(chips: np.ndarray) -> np.ndarray:
    """Descriptors of ``chips`` (N, 150, 150, 3) uint8 from face-api's JS code, (N, 128)."""
    pkg = fetch("face-api") / "package"
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "input.u8", Path(tmp) / "output.f32"
        src.write_bytes(np.ascontiguousarray(chips).tobytes())
        subprocess.run(
            [
                "node",
                str(TOOLS / "fixtures" / "dlib.mjs"),
                str(pkg),
                str(src),
                str(len(chips)),
                str(dst),
            ],
            check=True,
            cwd=TOOLS / "node",
        )
        return np.frombuffer(dst.read_bytes(), dtype="<f4").reshape(len(chips), 128).copy()


def main() -> None:
    chips = fixture_chips()
    output = run_faceapi(chips)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, input=chips, output=output)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
