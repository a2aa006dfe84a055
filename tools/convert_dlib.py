"""Convert face-api's recognition net (dlib ResNet-29) to ``dlib.safetensors``.

Source: ``model/face_recognition_model.bin`` + ``-weights_manifest.json`` of the npm package
``@vladmandic/face-api`` 1.7.15 (fetched and checksum-checked by :mod:`packages`). The TF.js
tensors are dequantised exactly as TF.js does (:mod:`pareidolia.zoo.tfjs`), kernels go from HWIO
to OIHW, ``fc`` [256, 128] becomes the transposed ``nn.Linear`` weight, and names become
:class:`pareidolia.zoo.dlib_resnet.DlibResNet` state-dict keys. Output is float32.

Run ``python tools/convert_dlib.py`` to write ``src/pareidolia/zoo/weights/dlib.safetensors``
and print its provenance record.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(REPO / "src"))

from packages import PACKAGES, fetch, provenance_record  # noqa: E402
from pareidolia.zoo.dlib_resnet import DlibResNet  # noqa: E402
from pareidolia.zoo.tfjs import hwio_to_oihw, read_weights_manifest_file  # noqa: E402

PACKAGE_KEY = "face-api"
SOURCE_FILE = "package/model/face_recognition_model.bin"
MANIFEST_FILE = "package/model/face_recognition_model-weights_manifest.json"
RESULT_FILE = "dlib.safetensors"
LICENCE = "MIT (face-api port of dlib, CC0 weights)"


def tfjs_name_to_torch(name: str) -> str:
    """``conv32_1/conv1/conv/filters`` → ``conv32_1.conv1.conv.weight`` etc."""
    if name == "fc":
        return "fc.weight"
    prefix, _, leaf = name.rpartition("/")
    layer = prefix.rsplit("/", 1)[0].replace("/", ".")  # strip the trailing conv|scale part
    kind = prefix.rsplit("/", 1)[1]
    suffix = {
        ("conv", "filters"): "conv.weight",
        ("conv", "bias"): "conv.bias",
        ("scale", "weights"): "scale_weight",
        ("scale", "biases"): "scale_bias",
    }[(kind, leaf)]
    return f"{layer}.{suffix}"


def to_torch_array(name: str, value: np.ndarray) -> np.ndarray:
    """Lay a TF.js tensor out as PyTorch expects it."""
    if name.endswith("/filters"):
        return hwio_to_oihw(value)
    if name == "fc":  # tf.matMul(x, fc) with fc [256, 128] == x @ weight.T with weight [128, 256]
        return np.ascontiguousarray(value.T)
    return value


def state_dict_from_package(root: Path) -> dict[str, torch.Tensor]:
    """Read the TF.js weights below npm package ``root`` into a DlibResNet state dict."""
    weights = read_weights_manifest_file(root / MANIFEST_FILE)
    state = {
        tfjs_name_to_torch(k): torch.from_numpy(to_torch_array(k, v).astype(np.float32))
        for k, v in weights.items()
    }
    expected = DlibResNet().state_dict()
    missing, extra = set(expected) - set(state), set(state) - set(expected)
    if missing or extra:
        raise ValueError(
            f"weight names do not map: missing {sorted(missing)}, extra {sorted(extra)}"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ValueError(f"{k}: shape {tuple(v.shape)} != expected {tuple(expected[k].shape)}")
    return {k: state[k].contiguous() for k in expected}  # module order, stable file


def convert(out_dir: Path) -> list[dict]:
    """Write ``out_dir/dlib.safetensors``; return its provenance record (a one-element list)."""
    root = fetch(PACKAGE_KEY)
    state = state_dict_from_package(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / RESULT_FILE
    pkg = PACKAGES[PACKAGE_KEY]
    save_file(state, str(out), metadata={"source": f"npm {pkg.name}@{pkg.version} {SOURCE_FILE}"})
    out.chmod(0o644)  # safetensors writes 0600; the file ships inside the package
    return [provenance_record("dlib", PACKAGE_KEY, SOURCE_FILE, root / SOURCE_FILE, out, LICENCE)]


if __name__ == "__main__":
    records = convert(REPO / "src" / "pareidolia" / "zoo" / "weights")
    print(json.dumps(records, indent=2))
