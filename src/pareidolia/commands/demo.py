"""``pareidolia demo``: the bundled public-domain astronaut photo (NASA, via scikit-image), its
faces, and what every FR model says of it against an edited copy of itself."""

from __future__ import annotations

import json
from pathlib import Path

from pareidolia.commands.verify import render_verify, verify_files
from pareidolia.evaluation.variants import strong_variant
from pareidolia.faces.detect import detect_faces
from pareidolia.io import read_photo, write_photo

ASTRONAUT = Path(__file__).resolve().parents[1] / "data" / "astronaut.jpg"


def run_demo(out_dir: Path | None = None, as_json: bool = False) -> int:
    """Detect the astronaut's face, write an edited copy (mirrored, rotated 8°, brightened,
    JPEG q40) and print the verification report of the original against the copy."""
    out = out_dir or Path("pareidolia-demo")
    out.mkdir(parents=True, exist_ok=True)
    photo = read_photo(ASTRONAUT)
    faces = detect_faces(photo.rgb)
    variant_path = out / "astronaut_variant.jpg"
    if not variant_path.exists():
        write_photo(variant_path, strong_variant(photo.rgb), like=photo)
    report = verify_files(ASTRONAUT, variant_path)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{ASTRONAUT.name}: {len(faces)} face(s) found")
        for i, f in enumerate(faces):
            x, y, w, h = f.box
            print(f"  face {i}: box x={x:.0f} y={y:.0f} w={w:.0f} h={h:.0f}, score {f.score:.2f}")
        print(f"edited copy written to {variant_path}\n")
        print(render_verify(report))
    return 0
