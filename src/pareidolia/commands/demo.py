"""``pareidolia demo``: protect the bundled public-domain astronaut photo (NASA, via
scikit-image) with the shipped default protector, offline, and show what changed.

Writes ``astronaut_protected.jpg`` and ``astronaut_side_by_side.png`` (original | protected |
difference ×8 around mid-grey, cropped to the face) into the output folder and prints the
protection report (per FR model: similarity to the original and to the target, before → after).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pareidolia.io import atomic_write_bytes, encode_photo

if TYPE_CHECKING:
    import torch

ASTRONAUT = Path(__file__).resolve().parents[1] / "data" / "astronaut.jpg"
AMPLIFY = 8.0


def side_by_side(original: np.ndarray, protected: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
    """original | protected | amplified difference, cropped to ``box`` (x, y, w, h) with a
    margin of half the box on every side."""
    x, y, w, h = box
    h_img, w_img = original.shape[:2]
    x0, y0 = max(0, int(x - w / 2)), max(0, int(y - h / 2))
    x1, y1 = min(w_img, int(x + 1.5 * w)), min(h_img, int(y + 1.5 * h))
    a, b = original[y0:y1, x0:x1], protected[y0:y1, x0:x1]
    diff = b.astype(np.float32) - a.astype(np.float32)
    amp = np.clip(128.0 + AMPLIFY * diff, 0, 255).astype(np.uint8)
    gap = np.full((a.shape[0], 8, 3), 255, np.uint8)
    return np.concatenate([a, gap, b, gap, amp], axis=1)


def run_demo(
    out_dir: Path | None = None,
    as_json: bool = False,
    device: torch.device | str = "cpu",
    model: str = "prior:",
    dtype: str = "float32",
) -> int:
    """Protect the astronaut with the default protector on ``device`` (its base network
    ``model``: the shipped prior, or a one-line refusal), the score network computing in
    ``dtype`` (a :func:`~pareidolia.runtime.pick_dtype` name); print the report; 0 on
    success."""
    import torch

    from pareidolia.default_protectors import DEFAULT_EMOTION, default_protector
    from pareidolia.io import read_photo
    from pareidolia.protect import ProtectOptions, protect_files, run_record
    from pareidolia.report import render_text, reports_json
    from pareidolia.runtime import pick_dtype

    out = out_dir or Path("pareidolia-demo")
    options = ProtectOptions(out_dir=out, dtype=pick_dtype(dtype, torch.device(device)))
    protector = default_protector(DEFAULT_EMOTION, device, model)
    reports = protect_files([ASTRONAUT], protector, options)
    report = reports[0]
    if report.output is None or not report.faces:
        raise RuntimeError(f"the demo protected no face: {report.to_dict()}")
    original, protected = read_photo(ASTRONAUT).rgb, read_photo(report.output).rgb
    panel = out / f"{ASTRONAUT.stem}_side_by_side.png"
    image = side_by_side(original, protected, report.faces[0].box)
    atomic_write_bytes(panel, encode_photo(image, "PNG"), overwrite=True)
    if as_json:
        print(reports_json([report], side_by_side=str(panel), run=run_record(protector, options)))
    else:
        print(render_text([report]))
        print(f"side by side (original | protected | difference ×{AMPLIFY:g}): {panel}")
    return 0
