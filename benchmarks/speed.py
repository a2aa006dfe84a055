"""Seconds per face of ``pareidolia protect`` on held-out photos, models already loaded [ours].

    OMP_NUM_THREADS=2 python benchmarks/speed.py --out docs/bench/speed.json \
        [--modes refine,fast,refine-no-template-warp]

Each mode protects every held-out photo of ``benchmarks/heldout.py`` (the astronaut, t1.jpg's
six faces, obama ×3, biden: 11 faces) with the options the CLI builds for it (no flags, and
``--fast``; ``refine-no-template-warp``: the default with its template warp off, to see the
warp's cost on the same machine; ``refine-inversion-20`` and ``fast-inversion-20``: the MAP
pass inverting in the protectors' own 20 steps in place of the default 8), end to end as ``pareidolia protect`` does: detection and landmarks, the edit, the
paste-back, the report's FR scores and the simulated-upload re-check; only reading and writing
the file are left out. The models are loaded, and every code path warmed up, on a first photo
that is not timed. Prints and writes, per mode: each photo's seconds and faces, and the mean
seconds per face (total seconds / total faces). Run it alone on the machine: other processes
sharing the cores slow it several times.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from heldout import ROOT, _photos
from pareidolia.cli import build_parser
from pareidolia.commands.protect import _options as cli_options
from pareidolia.default_protectors import default_protector
from pareidolia.io import read_photo
from pareidolia.protect import protect_photo

MODES = {
    "refine": [],
    "fast": ["--fast"],
    "refine-no-template-warp": [],
    # the MAP pass with the 20 inversion steps the protectors were trained on (DiffAM's)
    "refine-inversion-20": ["--inversion-steps", "20"],
    "fast-inversion-20": ["--fast", "--inversion-steps", "20"],
}


def time_mode(mode: str, photos: list[Path]) -> dict[str, Any]:
    args = build_parser().parse_args(["protect", "photo.jpg", *MODES[mode]])
    options = cli_options(args, torch.device("cpu"))
    if mode == "refine-no-template-warp":  # the default without its template warp
        options = dataclasses.replace(
            options, refine=dataclasses.replace(options.refine, template_warp=0.0)
        )
    protector = default_protector()
    warm = read_photo(ROOT / "src/pareidolia/data/astronaut.jpg")
    protect_photo(warm, protector, options)  # loads every model; not timed
    rows = []
    for path in photos:
        photo = read_photo(path)
        began = time.perf_counter()
        _, report = protect_photo(photo, protector, options)
        rows.append(
            {"photo": path.name, "faces": len(report.faces), "seconds": time.perf_counter() - began}
        )
        print(mode, rows[-1], flush=True)
    faces = sum(r["faces"] for r in rows)
    return {
        "photos": rows,
        "faces": faces,
        "seconds_per_face": sum(r["seconds"] for r in rows) / faces,
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" elsewhere): the same code ran up to
    twice as fast on one machine as on another."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown"
    names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    return names[0] if names else "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--packages", type=Path, default=ROOT / ".cache/packages")
    args = ap.parse_args()
    photos = [p for _, p, _ in _photos(args.packages)]
    missing = [p for p in photos if not p.is_file()]
    if missing:
        raise SystemExit(
            f"{missing[0]}: missing; run `python tools/packages.py insightface face_recognition`"
        )
    results: dict[str, Any] = {
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        }
    }
    for mode in args.modes.split(","):
        results[mode] = time_mode(mode, photos)
    # other processes on the cores during the run show here
    results["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    for mode in args.modes.split(","):
        print(
            f"{mode}: {results[mode]['seconds_per_face']:.2f} s per face over {results[mode]['faces']} faces"
        )


if __name__ == "__main__":
    main()
