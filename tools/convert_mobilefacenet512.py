"""Convert faceplugin's ONNX MobileFaceNet to ``mobilefacenet512.safetensors``.

Source: ``package/model/fr_feature.onnx`` in the npm package ``faceplugin-face-recognition-js``
0.0.1 (MIT by its metadata), fetched and checksum-checked by :mod:`packages`. The graph is a
512-D MobileFaceNet exported from PyTorch with its batch norms folded: 50 ``Conv`` nodes with
bias, 33 ``PRelu`` (slopes (C, 1, 1)), 12 ``Add`` and a final ``Reshape``. Its convs, in graph
order, are the convs of :class:`pareidolia.zoo.mobilefacenet.MobileFaceNet` in module order
(the last is the 512 → 512 ``linear``, exported as a 1 × 1 conv); each folded bias becomes the
shift of its batch norm, whose statistics are set to mean 0, variance 1 − ε and scale 1, so the
norm adds the bias and nothing else. The PReLU slopes follow in order likewise.

Run ``python tools/convert_mobilefacenet512.py`` to write it into
``src/pareidolia/zoo/weights/`` and print its provenance record.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from safetensors.torch import save_file
from torch import nn

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(REPO / "src"))

from packages import PACKAGES, fetch, provenance_record  # noqa: E402
from pareidolia.zoo.mobilefacenet512 import MobileFaceNet512  # noqa: E402

PACKAGE_KEY = "faceplugin"
SOURCE_FILE = "package/model/fr_feature.onnx"
RESULT_FILE = "mobilefacenet512.safetensors"
LICENCE = "MIT (the package's metadata; the weights' origin is not documented)"


def _unit_norm(bn: nn.Module, prefix: str, bias: np.ndarray) -> dict[str, torch.Tensor]:
    """A batch norm that adds ``bias`` and nothing else."""
    n = len(bias)
    return {
        f"{prefix}.weight": torch.ones(n),
        f"{prefix}.bias": torch.from_numpy(bias.astype(np.float32)),
        f"{prefix}.running_mean": torch.zeros(n),
        f"{prefix}.running_var": torch.full((n,), 1.0 - bn.eps),
        f"{prefix}.num_batches_tracked": torch.zeros((), dtype=torch.long),
    }


def state_dict_from_onnx(model: onnx.ModelProto) -> dict[str, torch.Tensor]:
    """The :class:`MobileFaceNet512` state dict of the graph, float32."""
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    slopes = [init[n.input[1]] for n in model.graph.node if n.op_type == "PRelu"]
    target = MobileFaceNet512()
    ours = [(k, m) for k, m in target.named_modules() if isinstance(m, nn.Conv2d)]
    prelus = [k for k, m in target.named_modules() if isinstance(m, nn.PReLU)]
    if (len(convs), len(slopes)) != (len(ours) + 1, len(prelus)):
        raise ValueError(f"{len(convs)} convs and {len(slopes)} PReLUs: not this MobileFaceNet")
    state: dict[str, torch.Tensor] = {}
    for node, (name, conv) in zip(convs, ours, strict=False):
        weight, bias = init[node.input[1]], init[node.input[2]]
        if tuple(weight.shape) != tuple(conv.weight.shape):
            raise ValueError(
                f"{name}: {weight.shape} in the graph, {tuple(conv.weight.shape)} here"
            )
        state[f"{name}.weight"] = torch.from_numpy(weight.astype(np.float32))
        prefix = name.removesuffix(".conv") + ".bn"
        state.update(_unit_norm(target.get_submodule(prefix), prefix, bias))
    last = convs[-1]  # the linear layer as a 1 x 1 conv, its batch norm folded into the bias
    state["net.linear.weight"] = torch.from_numpy(
        init[last.input[1]][:, :, 0, 0].astype(np.float32)
    )
    state.update(_unit_norm(target.net.bn, "net.bn", init[last.input[2]]))
    for name, slope in zip(prelus, slopes, strict=True):
        state[f"{name}.weight"] = torch.from_numpy(slope.reshape(-1).astype(np.float32))
    target.load_state_dict(state, strict=True)  # every name and shape matches the module
    return state


def convert(out_dir: Path) -> list[dict]:
    """Write ``mobilefacenet512.safetensors`` into ``out_dir``; return its provenance record."""
    root = fetch(PACKAGE_KEY)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = root / SOURCE_FILE
    state = state_dict_from_onnx(onnx.load(str(src)))
    result = out_dir / RESULT_FILE
    pkg = PACKAGES[PACKAGE_KEY]
    save_file(
        state, str(result), metadata={"source": f"npm {pkg.name}@{pkg.version} {SOURCE_FILE}"}
    )
    result.chmod(0o644)  # safetensors writes 0600 files
    return [provenance_record("mobilefacenet512", PACKAGE_KEY, SOURCE_FILE, src, result, LICENCE)]


if __name__ == "__main__":
    records = convert(REPO / "src" / "pareidolia" / "zoo" / "weights")
    print(json.dumps(records, indent=2))
