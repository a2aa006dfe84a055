"""Convert human's TF.js graph models (faceres, mobileface, emotion) to the zoo's safetensors.

Fetches the pinned npm packages (``tools/packages.py``), decodes the weights with
:mod:`pareidolia.zoo.tfjs`, maps graph constants onto the hand-written modules of
:mod:`pareidolia.zoo.human` (folding the batch-norm multipliers the graph kept separate), checks
the result loads strictly, and writes float32 safetensors. Run::

    python tools/convert_human.py [OUT_DIR]

(default ``src/pareidolia/zoo/weights``); prints one provenance record per model.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from packages import PACKAGES, fetch, provenance_record
from pareidolia.zoo import human
from pareidolia.zoo.tfjs import depthwise_to_torch, hwio_to_oihw, read_graph_model

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "pareidolia" / "zoo" / "weights"

Weights = dict[str, np.ndarray]


def _node_inputs(topology: dict, name: str) -> list[str]:
    """Input names of graph node ``name`` (used to find anonymous ``unknown_N`` constants)."""
    for node in topology["node"]:
        if node["name"] == name:
            return list(node.get("input", []))
    raise KeyError(f"graph has no node {name!r}")


def map_faceres(topology: dict, w: Weights) -> Weights:
    """MobileNet-v1: conv1 and pointwise convs come BN-folded (``merged_input`` + ``sub``);
    depthwise convs keep a separate BN ``mul`` that is folded into the kernel here."""
    sd: Weights = {
        "conv1.weight": hwio_to_oihw(w["conv1/convolution/merged_input"]),
        "conv1.bias": w["conv1_bn/batchnorm_1/sub"],
    }
    for i in range(1, 14):
        dw = depthwise_to_torch(w[f"conv_dw_{i}/depthwise_kernel"])
        scale = w[f"conv_dw_{i}_bn/batchnorm_1/mul"]
        sd[f"blocks.{i - 1}.dw.weight"] = dw * scale[:, None, None, None]
        sd[f"blocks.{i - 1}.dw.bias"] = w[f"conv_dw_{i}_bn/batchnorm_1/sub"]
        sd[f"blocks.{i - 1}.pw.weight"] = hwio_to_oihw(w[f"conv_pw_{i}/convolution/merged_input"])
        sd[f"blocks.{i - 1}.pw.bias"] = w[f"conv_pw_{i}_bn/batchnorm_1/sub"]
    return sd


def map_mobileface(topology: dict, w: Weights) -> Weights:
    """PReLU gammas map one to one; the final BN (``batchnorm0`` mul/sub) folds into the dense
    layer, whose kernel is [in, out] and becomes PyTorch's [out, in]."""
    sd: Weights = {
        "conv1.weight": hwio_to_oihw(w["conv1_weight"]),
        "act1.weight": w["prelu1_gamma"],
    }
    for k in range(1, 5):
        p, s = f"stage{k}_unit1_", f"stages.{k - 1}."
        sd[s + "expand.weight"] = hwio_to_oihw(w[p + "conv0_0_weight"])
        sd[s + "down.weight"] = depthwise_to_torch(w[p + "conv0_1_df"])
        sd[s + "act0.weight"] = w[p + "prelu0_gamma"]
        sd[s + "dw1.weight"] = depthwise_to_torch(w[p + "conv1_df"])
        sd[s + "act1.weight"] = w[p + "prelu1_gamma"]
        sd[s + "dw2.weight"] = depthwise_to_torch(w[p + "conv2_df"])
        sd[s + "act2.weight"] = w[p + "prelu2_gamma"]
    kernel = w["dense/kernel"] * w["batchnorm0/mul"][None, :]
    sd["fc.weight"] = np.ascontiguousarray(kernel.T)
    sd["fc.bias"] = w["batchnorm0/sub"]
    return sd


def map_emotion(topology: dict, w: Weights) -> Weights:
    """Keras-converted graph: convs are ``_FusedConv2D`` with BN folded into weights and a
    ``bn_offset`` bias; separable depthwise kernels are anonymous (``unknown_N``) and are found
    through the depthwise nodes' inputs."""
    m = "StatefulPartitionedCall/model_1/"

    def conv(node: str) -> tuple[np.ndarray, np.ndarray]:
        _, kernel, bias = _node_inputs(topology, m + node)
        return hwio_to_oihw(w[kernel]), w[bias]

    sd: Weights = {}
    sd["conv1.weight"], sd["conv1.bias"] = conv("block1_conv1_act/Relu")
    sd["conv2.weight"], sd["conv2.bias"] = conv("block1_conv2_act/Relu")
    sd["block1.shortcut.weight"], sd["block1.shortcut.bias"] = conv(
        "batch_normalization_1/FusedBatchNormV3"
    )
    sd["block2.shortcut.weight"], sd["block2.shortcut.bias"] = conv(
        "batch_normalization_2/FusedBatchNormV3"
    )
    sd["classifier.weight"], sd["classifier.bias"] = conv("conv2d_5/BiasAdd")
    for k, target in enumerate(
        ("block1.sep1", "block1.sep2", "block2.sep1", "block2.sep2"), start=1
    ):
        sep = f"{m}separable_conv2d_{k}/separable_conv2d"
        dw_name = _node_inputs(topology, sep + "/depthwise")[1]
        sd[target + ".dw.weight"] = depthwise_to_torch(w[dw_name])
        sd[target + ".pw.weight"] = hwio_to_oihw(w[sep + "_weights"])
        sd[target + ".pw.bias"] = w[sep + "_bn_offset"]
    return sd


# spec name → (package key, model.json inside the package, mapper)
MODELS: dict[str, tuple[str, str, Callable[[dict, Weights], Weights]]] = {
    "faceres": ("human", "package/models/faceres.json", map_faceres),
    "mobileface": ("human-models", "package/models/mobileface.json", map_mobileface),
    "mini_xception": ("human", "package/models/emotion.json", map_emotion),
}


def convert(out_dir: Path) -> list[dict]:
    """Write every model's safetensors into ``out_dir``; return provenance records."""
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = {s.name: s for s in human.SPECS}
    records: list[dict] = []
    for name, (pkg_key, rel_json, mapper) in MODELS.items():
        spec = specs[name]
        model_json = fetch(pkg_key) / rel_json
        topology, weights = read_graph_model(model_json)
        sd = {
            k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
            for k, v in mapper(topology, weights).items()
        }
        spec.factory().load_state_dict(sd, strict=True)  # names and shapes must match exactly
        result = out_dir / spec.weights_file
        save_file(sd, str(result))
        result.chmod(0o644)  # safetensors creates files owner-only
        manifest = json.loads(model_json.read_text())["weightsManifest"]
        bins = [p for group in manifest for p in group["paths"]]
        if len(bins) != 1:
            raise ValueError(f"{model_json}: expected one weights file, found {bins}")
        source = model_json.parent / bins[0]
        records.append(
            provenance_record(
                name,
                pkg_key,
                str(source.relative_to(fetch(pkg_key))),
                source,
                result,
                PACKAGES[pkg_key].licence,
            )
        )
    return records


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    print(json.dumps(convert(out), indent=2))
