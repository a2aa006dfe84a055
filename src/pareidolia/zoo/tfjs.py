"""Read TF.js weight files (the format of the face-api and human npm packages).

A manifest is a list of groups ``{"paths": [...], "weights": [{name, shape, dtype,
quantization?}, ...]}``; each group's binary files are concatenated and the tensors lie in it
back to back, in manifest order. Quantised tensors store uint8/uint16 codes with
``value = code * scale + min``, or float16 values; both become float32 here exactly as TF.js
dequantises them. Used only by the conversion scripts in ``tools/``; nothing at run time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_NP_DTYPES = {
    "float32": np.float32,
    "int32": np.int32,
    "bool": np.bool_,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "float16": np.float16,
}


def read_manifest(manifest: list[dict], folder: Path) -> dict[str, np.ndarray]:
    """Decode every tensor of a TF.js weights manifest whose binaries lie in ``folder``."""
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        buf = b"".join((folder / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            shape = tuple(w["shape"])
            count = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            dtype = np.dtype(_NP_DTYPES[q["dtype"] if q else w["dtype"]])
            nbytes = count * dtype.itemsize
            raw = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
            offset += nbytes
            if q and q["dtype"] in ("uint8", "uint16"):
                # TF.js computes code·scale + min in double precision, then rounds once to float32
                arr = (raw.astype(np.float64) * q["scale"] + q["min"]).astype(np.float32)
            elif q and q["dtype"] == "float16":
                arr = raw.astype(np.float32)
            else:
                arr = raw.astype(_NP_DTYPES[w["dtype"]])
            out[w["name"]] = arr.reshape(shape).copy()
        if offset != len(buf):
            raise ValueError(
                f"{folder}: manifest describes {offset} bytes but binaries hold {len(buf)}"
            )
    return out


def read_weights_manifest_file(path: Path) -> dict[str, np.ndarray]:
    """face-api style: ``*-weights_manifest.json`` beside its ``.bin`` files."""
    return read_manifest(json.loads(path.read_text()), path.parent)


def read_graph_model(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """human style graph model ``model.json``: returns (topology, weights by node name)."""
    model = json.loads(path.read_text())
    return model["modelTopology"], read_manifest(model["weightsManifest"], path.parent)


def hwio_to_oihw(w: np.ndarray) -> np.ndarray:
    """TF conv kernel [kh, kw, in, out] → PyTorch [out, in, kh, kw]."""
    return np.ascontiguousarray(w.transpose(3, 2, 0, 1))


def depthwise_to_torch(w: np.ndarray) -> np.ndarray:
    """TF depthwise kernel [kh, kw, C, mult] → PyTorch grouped conv [C·mult, 1, kh, kw]."""
    kh, kw, c, m = w.shape
    return np.ascontiguousarray(w.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw))
