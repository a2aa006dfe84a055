"""Peak memory of the web page's work when requests run on fresh threads or on one [ours].

    OMP_NUM_THREADS=1 python benchmarks/web_threads.py --threads fresh   # as Gradio's pool did
    OMP_NUM_THREADS=1 python benchmarks/web_threads.py --threads one     # web.OneWorker

Protects insightface's t1.jpg cut to its four leftmost faces (the photo of
``tests/test_web_load.py``) ``--requests`` times through :func:`pareidolia.web.protect_uploads`,
each request on a new thread (``fresh``) or all on one :class:`pareidolia.web.OneWorker`
(``one``), and prints the process's peak and current resident memory (``VmHWM`` / ``VmRSS``)
after each request. Needs ``python tools/packages.py insightface``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
from pathlib import Path

from PIL import Image

from heldout import ROOT
from pareidolia.io import read_photo
from pareidolia.web import OneWorker, copy_into, protect_uploads


def memory_gb() -> tuple[float, float]:
    """This process's peak and current resident set, GB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return tuple(int(fields[k].split()[0]) / 2**20 for k in ("VmHWM", "VmRSS"))  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", choices=("fresh", "one"), required=True)
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--packages", type=Path, default=ROOT / ".cache/packages")
    args = ap.parse_args()
    t1 = args.packages / "insightface-2.1-py3-none-any/insightface/data/images/t1.jpg"
    worker = OneWorker("bench")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        Image.fromarray(read_photo(t1).rgb[:, :875]).save(work / "group.jpg", quality=95)
        for i in range(args.requests):
            upload = work / f"upload{i}" / "group.jpg"
            upload.parent.mkdir()
            shutil.copy(work / "group.jpg", upload)

            def request(upload: Path = upload, i: int = i) -> None:
                protect_uploads([upload], "happy", publish=copy_into(work / f"published{i}"))

            if args.threads == "one":
                worker.run(request)
            else:
                thread = threading.Thread(target=request)
                thread.start()
                thread.join()
            peak, now = memory_gb()
            print(f"request {i + 1}: peak RSS {peak:.2f} GB, RSS now {now:.2f} GB", flush=True)


if __name__ == "__main__":
    main()
