"""Convert face-api's landmark-68 and expression nets to ``faceapi_*.safetensors``.

Sources: ``model/face_landmark_68_model.bin`` and ``model/face_expression_model.bin`` (each with
its ``-weights_manifest.json``) of the npm package ``@vladmandic/face-api`` 1.7.15 (MIT),
fetched and checksum-checked by :mod:`packages`. The TF.js tensors are dequantised by
:mod:`pareidolia.zoo.tfjs` (uint8 codes: ``code · scale + min``), kernels go from HWIO to OIHW,
depthwise kernels from [k, k, C, 1] to [C, 1, k, k], ``fc/weights`` [256, n] becomes the
transposed ``nn.Linear`` weight, and names become state-dict keys of
:class:`pareidolia.zoo.faceapi_dense.FaceApiLandmarks` / ``FaceApiExpression``. Output is float32.

Run ``python tools/convert_faceapi_dense.py`` to write both files into
``src/pareidolia/zoo/weights/`` and print their provenance records.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(REPO / "src"))

from packages import PACKAGES, fetch, provenance_record  # noqa: E402
from pareidolia.zoo.faceapi_dense import FaceApiExpression, FaceApiLandmarks  # noqa: E402
from pareidolia.zoo.tfjs import (  # noqa: E402
    depthwise_to_torch,
    hwio_to_oihw,
    read_weights_manifest_file,
)

PACKAGE_KEY = "face-api"
LICENCE = "MIT"
# model name → (TF.js model file stem inside package/model, module class)
MODELS: dict[str, tuple[str, type[nn.Module]]] = {
    "faceapi_landmarks": ("face_landmark_68_model", FaceApiLandmarks),
    "faceapi_expression": ("face_expression_model", FaceApiExpression),
}


def tfjs_to_torch(name: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """One TF.js tensor → (state-dict key, array laid out for PyTorch).

    ``dense1/conv2/depthwise_filter`` → ``extractor.dense1.conv2.depthwise.weight``,
    ``dense0/conv0/filters`` → ``extractor.dense0.conv0.conv.weight``, ``fc/weights`` →
    ``fc.weight`` (transposed), and so on.
    """
    if name.startswith("fc/"):
        leaf = name.removeprefix("fc/")
        return {"weights": ("fc.weight", value.T), "bias": ("fc.bias", value)}[leaf]
    block, conv, leaf = name.split("/")
    prefix = f"extractor.{block}.{conv}"
    if leaf == "filters":  # full conv (dense0/conv0 only)
        return f"{prefix}.conv.weight", hwio_to_oihw(value)
    if leaf == "depthwise_filter":
        return f"{prefix}.depthwise.weight", depthwise_to_torch(value)
    if leaf == "pointwise_filter":
        return f"{prefix}.pointwise.weight", hwio_to_oihw(value)
    if leaf == "bias":
        is_full_conv = block == "dense0" and conv == "conv0"
        return f"{prefix}.{'conv' if is_full_conv else 'pointwise'}.bias", value
    raise KeyError(f"unexpected TF.js tensor {name!r}")


def state_dict_from_package(root: Path, stem: str, cls: type[nn.Module]) -> dict[str, torch.Tensor]:
    """Read ``package/model/<stem>`` below npm package ``root`` into a ``cls`` state dict."""
    weights = read_weights_manifest_file(
        root / "package" / "model" / f"{stem}-weights_manifest.json"
    )
    state: dict[str, torch.Tensor] = {}
    for name, value in weights.items():
        key, arr = tfjs_to_torch(name, value)
        state[key] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    cls().load_state_dict(state, strict=True)  # every key present, every shape right
    return state


def convert(out_dir: Path) -> list[dict]:
    """Write ``faceapi_landmarks.safetensors`` and ``faceapi_expression.safetensors`` into
    ``out_dir``; return their provenance records."""
    root = fetch(PACKAGE_KEY)
    pkg = PACKAGES[PACKAGE_KEY]
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for model, (stem, cls) in MODELS.items():
        source_file = f"package/model/{stem}.bin"
        result = out_dir / f"{model}.safetensors"
        state = state_dict_from_package(root, stem, cls)
        save_file(
            state,
            str(result),
            metadata={"source": f"npm {pkg.name}@{pkg.version} model/{stem}.bin"},
        )
        result.chmod(0o644)  # safetensors writes 0600 files
        records.append(
            provenance_record(model, PACKAGE_KEY, source_file, root / source_file, result, LICENCE)
        )
    return records


if __name__ == "__main__":
    records = convert(REPO / "src" / "pareidolia" / "zoo" / "weights")
    print(json.dumps(records, indent=2))
