"""``pareidolia web``: a local web page to protect photos, built with Gradio.

The page lets a user drop photos, pick the expression of a shipped protector and the strength
(``pareidolia protect --strength`` natural / balanced / strong, or ``--fast``), optionally give a
target face (the protector is then adapted toward it for a chosen number of steps), and shows
for each photo the original beside the protected copy, download links, and the report table (per
face and FR model: scores against the original face and the target, before → after, with the
FAR 0.01 match decisions).

Design, and why:

* The work is done by :func:`protect_uploads`, a plain function with no Gradio in it, so it can
  be tested without a browser; :func:`build_app` only wires it to components. Gradio is imported
  lazily (it is the optional extra ``pareidolia[web]``), with telemetry off
  (``GRADIO_ANALYTICS_ENABLED=False``, set before the import), no share link, no server-side
  rendering, and the default theme's local fonts, so the page loads nothing from the internet.
* Privacy of the uploads: each request works in its own ``tempfile.TemporaryDirectory`` (inputs
  copied in, outputs written, previews rendered) that is deleted before the handler returns.
  Only what the page must serve (previews, the protected files, the JSON report) is first copied
  into Gradio's cache through ``publish`` (``Block.move_resource_to_block_cache``). That cache is
  a private folder per server (``GRADIO_TEMP_DIR`` set by :func:`serve`); :func:`sweep_cache`
  removes every file in it :data:`KEEP_SECONDS` after it was made (checked every
  :data:`SWEEP_SECONDS`, or more often for a shorter ``keep_seconds``), except the uploads of
  requests still in the queue, which go when their request is done; :func:`serve` deletes the
  whole folder when the server stops. We chose this over a follow-up ``.then()`` clean-up
  event because the latter never runs when the browser disconnects mid-request, and over
  Gradio's ``delete_cache``, which knows only the files Gradio handed out and would delete
  the upload of a request still waiting in the queue.
* Load: requests wait in Gradio's queue (at most :data:`MAX_QUEUE`) and are protected one at
  a time, each using every core; a waiting user sees their place in the queue. Every request
  is protected on the same thread (:class:`OneWorker`), whichever of Gradio's worker threads
  took it: the C allocator keeps a separate heap (arena) per thread, so requests on fresh
  threads each grew a heap of their own (``benchmarks/web_threads.py``: peak RSS 2.20, 2.33,
  3.40 GB after 3 requests on fresh threads, 2.29, 2.36, 2.37 GB on one), where one thread
  reuses what the last request freed.
* Limits are enforced on the server: :data:`MAX_UPLOAD_MB` per file (also given to Gradio as
  ``max_file_size``, which refuses larger uploads before they are stored) and
  :data:`MAX_FILES` photos per request; the server listens on loopback unless told otherwise.
* Problems a user can fix (not an image, no face, file too large, no shipped protector) come
  back as a clear message in the page's status box, never a traceback; an unexpected error is
  logged on the server and shown as one line.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import itertools
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from pareidolia.errors import NoFaceError, PareidoliaError, UserError, os_problem
from pareidolia.report import COLUMNS
from pareidolia.runtime import ADAPT_STEPS
from pareidolia.stale import WEB_CACHE, WEB_WORK, pid_prefix, remove_stale

if TYPE_CHECKING:
    from pareidolia.protector import Protector
    from pareidolia.report import PhotoReport

__all__ = [
    "COLUMNS",
    "DEFAULT_ADAPT",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_STRENGTH",
    "KEEP_SECONDS",
    "MAX_CACHE_BYTES",
    "MAX_FILES",
    "MAX_QUEUE",
    "MAX_UPLOAD_MB",
    "STRENGTH_CHOICES",
    "OneWorker",
    "Pair",
    "WebResult",
    "build_app",
    "copy_into",
    "private_cache",
    "protect_uploads",
    "serve",
    "sweep_cache",
]

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_UPLOAD_MB = 50
"""Largest file accepted, per photo or target (checked by Gradio on upload and again here)."""
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
MAX_FILES = 20
"""Most photos protected in one request (CPU time per photo is seconds to minutes)."""
DEFAULT_ADAPT = ADAPT_STEPS
"""Adaptation steps proposed when a target face is given (as ``pareidolia protect --target``)."""
MAX_ADAPT = 200
STRENGTH_CHOICES: dict[str, str] = {
    "natural": "Natural: least visible, weakest",
    "balanced": "Balanced (default)",
    "strong": "Strong: most protection, a visible change",
    "fast": "Fast: MAP's one pass alone, seconds a face, weakest",
}
"""The strengths offered, with their labels: ``pareidolia protect --strength`` and ``--fast``."""
DEFAULT_STRENGTH = "balanced"
PREVIEW_SIDE = 1600
"""Longest side of the side-by-side previews (PNG); the downloads are full resolution."""
KEEP_SECONDS = 600
"""How long uploads and results stay in the server's cache after they were made."""
SWEEP_SECONDS = 60
"""How often the cache is checked for files older than :data:`KEEP_SECONDS` (a tenth of a
shorter expiry, at least every second: :func:`sweep_every`)."""
MAX_CACHE_BYTES = 1_000_000_000
"""Most bytes the server's cache may hold (uploads and results); uploads are refused beyond."""
MAX_QUEUE = 20
"""Most requests waiting in the queue (one is protected at a time, using every core); further
users are told the queue is full. A photo of 4 faces took about a minute on 2 shared cores in
``tests/test_web_load.py``, so the last of 20 such requests waits about 20 minutes."""


def sweep_every(keep_seconds: float) -> int:
    """Seconds between two checks of the cache for uploads older than ``keep_seconds``."""
    return max(1, min(SWEEP_SECONDS, int(keep_seconds // 10)))


def duration_text(seconds: float) -> str:
    """``10 minutes``, ``1 minute``, ``30 seconds``: an expiry in words."""
    if seconds < 60:
        n, unit = float(round(seconds)), "second"
    else:
        n, unit = round(seconds / 60, 1), "minute"
    return f"{n:g} {unit}{'' if n == 1 else 's'}"


def cache_full(keep_seconds: float = KEEP_SECONDS) -> str:
    """What a refused upload is answered when the cache is full."""
    return (
        f"The server's upload space is full ({MAX_CACHE_BYTES // 10**9} GB); try again soon, "
        f"when older uploads have expired ({duration_text(keep_seconds)} after upload)."
    )


Publisher = Callable[[Path], str]
"""Makes a file of the request folder servable and returns the path to hand to the page (the
request folder is deleted right after the handler returns)."""
ProtectorFactory = Callable[[str], "Protector"]
"""The protector for an emotion (default: the shipped one, :func:`default_protector`)."""
ProgressFn = Callable[[float, str], None]
"""``progress(fraction_done, description)``."""


class Pair(NamedTuple):
    """One photo's previews: the original and its protected copy (servable paths)."""

    name: str
    original: str
    protected: str


class WebResult(NamedTuple):
    """What the page shows after a request."""

    pairs: list[Pair]  # original / protected previews, one per protected photo
    rows: list[list[str]]  # the report table, columns :data:`COLUMNS`
    files: list[str]  # downloads: the protected photos, then the JSON report
    message: str  # markdown: what happened to every file, problems first


def copy_into(folder: Path) -> Publisher:
    """A :data:`Publisher` that copies each file into its own sub-folder of ``folder`` (for use
    without Gradio, e.g. in tests)."""
    counter = itertools.count()

    def publish(path: Path) -> str:
        dest = folder / str(next(counter))
        dest.mkdir(parents=True, exist_ok=True)
        return str(shutil.copy2(path, dest / path.name))

    return publish


# ----------------------------------------------------------------------------- the handler


class _Progress:
    """Turns :data:`pareidolia.protect.Progress` calls into one fraction over the whole batch."""

    def __init__(self, report: ProgressFn | None, names: Sequence[str]) -> None:
        self.report = report
        self.names = names
        self.photo = 0

    def start(self) -> None:
        self._say(0.0, "finding faces")

    def _say(self, fraction: float, what: str) -> None:
        if self.report is None:
            return
        n = len(self.names)
        i = min(self.photo, n - 1)
        self.report(min(fraction, 1.0), f"photo {i + 1} of {n} ({self.names[i]}): {what}")

    def __call__(self, stage: str, done: int, total: int) -> None:
        n = len(self.names)
        if stage == "photos":
            self.photo = done
            if done < n:
                self._say(done / n, "finding faces")
        elif stage == "faces":
            self._say((self.photo + done / max(total, 1)) / n, f"face {done} of {total} done")
        elif stage == "adapt":
            what = "adapting the protector to the target face" if done == 0 else "adapted"
            self._say(self.photo / n, what)


def _display_name(upload: str | Path) -> str:
    """The name the user gave the file (Gradio keeps it as the last part of the path)."""
    return Path(upload).name or "upload"


def _scrub(message: str, folders: Sequence[Path]) -> str:
    """``message`` without the server's temporary folders (users see only their file names)."""
    for folder in folders:
        message = message.replace(f"{folder}{os.sep}", "").replace(str(folder), "")
    return message


def _too_large(path: Path) -> str | None:
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        return f"{size / 2**20:.1f} MB is over the {MAX_UPLOAD_MB} MB limit per file"
    return None


def _preview(rgb: np.ndarray, dest: Path) -> Path:
    """A PNG preview of ``rgb`` no larger than :data:`PREVIEW_SIDE` (browsers can show any
    input format then, HEIC and TIFF included)."""
    img = Image.fromarray(rgb)
    img.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
    img.save(dest, format="PNG", optimize=False, compress_level=3)
    return dest


def _load_target(path: Path, name: str) -> Any:
    """The target's working crop as a tensor; problems become :class:`UserError` naming
    ``name`` (not the server's path)."""
    from pareidolia.io import ImageError
    from pareidolia.locate import target_face

    if (problem := _too_large(path)) is not None:
        raise UserError(f"target {name}: {problem}")
    try:
        return target_face(path)
    except ImageError as e:
        raise UserError(f"target {name}: {e.problem}") from None
    except NoFaceError:
        raise UserError(f"target {name}: no face found in the target photo") from None


def protect_uploads(
    files: Sequence[str | Path] | None,
    emotion: str,
    target: str | Path | None = None,
    adapt: int = DEFAULT_ADAPT,
    progress: ProgressFn | None = None,
    *,
    publish: Publisher,
    protector_factory: ProtectorFactory | None = None,
    robustness: bool = True,
    workroot: Path | None = None,
    dtype: str = "float32",
    strength: str = DEFAULT_STRENGTH,
) -> WebResult:
    """Protect uploaded photos; never raises for a problem a user can fix.

    ``files`` are the uploads (paths whose last part is the user's file name); ``emotion``
    picks the protector from ``protector_factory`` (default: the shipped protectors);
    ``target``, when given, is a photo of the identity to be mistaken for, and the protector
    is adapted toward it for ``adapt`` steps (ignored without a target); the score network
    computes in ``dtype`` (a :func:`~pareidolia.runtime.pick_dtype` name); ``strength`` is one
    of :data:`STRENGTH_CHOICES` (``pareidolia protect --strength``, or ``fast`` for
    ``--fast``). The work happens in a
    fresh temporary folder under ``workroot`` (default: the system's), deleted before this
    returns: everything the result refers to went through ``publish`` first.
    """
    uploads = [Path(f) for f in files or []]
    if not uploads:
        return WebResult([], [], [], "Add one or more photos first.")
    if len(uploads) > MAX_FILES:
        return WebResult(
            [], [], [], f"At most {MAX_FILES} photos per request; {len(uploads)} were given."
        )
    request = _Request(
        uploads=tuple(uploads),
        names=tuple(_display_name(u) for u in uploads),
        emotion=emotion,
        target=Path(target) if target else None,
        adapt=adapt,
        robustness=robustness,
        dtype=dtype,
        strength=strength,
    )
    scrub = [*{u.parent for u in uploads}, *([Path(target).parent] if target else [])]
    with tempfile.TemporaryDirectory(prefix=pid_prefix(WEB_WORK), dir=workroot) as tmp:
        work = Path(tmp)
        try:
            return _protect(
                request,
                work,
                progress=progress,
                publish=publish,
                protector_factory=protector_factory,
            )
        except PareidoliaError as e:
            return WebResult([], [], [], f"**Problem:** {_scrub(str(e), [work, *scrub])}")
        except OSError as e:  # the server's own disk: full, failing, read-only
            log.warning("pareidolia web: cannot write working files: %s", e)
            return WebResult(
                [],
                [],
                [],
                f"**Problem on the server:** cannot write its working files: {os_problem(e)}.",
            )
        except Exception:
            log.exception("pareidolia web: unexpected error")
            return WebResult(
                [],
                [],
                [],
                "**Internal error** while protecting; the details are in the server log.",
            )


@dataclasses.dataclass(frozen=True)
class _Request:
    """One request's photos and settings: the uploads (server paths) with the user's file
    names, the expression of the protector, the target photo (None: no adaptation) with its
    adaptation steps, whether the report includes the robustness check, the score
    network's compute dtype and the strength."""

    uploads: tuple[Path, ...]
    names: tuple[str, ...]
    emotion: str
    target: Path | None
    adapt: int
    robustness: bool
    dtype: str
    strength: str


def _copy_uploads(request: _Request, work: Path) -> tuple[dict[int, Path], dict[int, str]]:
    """Copy each upload into its own folder under the user's name: (the copies, the problems)
    by upload index; a missing or oversized upload is a problem."""
    problems: dict[int, str] = {}
    inputs: dict[int, Path] = {}
    for i, (upload, name) in enumerate(zip(request.uploads, request.names, strict=True)):
        if not upload.is_file():
            problems[i] = "the upload is missing on the server (upload it again)"
        elif (too_large := _too_large(upload)) is not None:
            problems[i] = too_large
        else:
            dest = work / "in" / str(i) / name
            dest.parent.mkdir(parents=True)
            shutil.copyfile(upload, dest)
            inputs[i] = dest
    return inputs, problems


def _target(request: _Request) -> tuple[int, Any]:
    """(adaptation steps, the target's working crop) of ``request``; (0, None) without a
    target."""
    if request.target is None:
        return 0, None
    steps = int(request.adapt)
    if steps < 1:
        raise UserError("a target face needs at least 1 adaptation step")
    return steps, _load_target(request.target, _display_name(request.target))


def _protect(
    request: _Request,
    work: Path,
    *,
    progress: ProgressFn | None,
    publish: Publisher,
    protector_factory: ProtectorFactory | None,
) -> WebResult:
    """The body of :func:`protect_uploads` inside its request folder ``work``."""
    from pareidolia.io import read_photo
    from pareidolia.protect import ProtectOptions, preset, protect_files
    from pareidolia.report import (
        ZOO_CAVEAT,
        PhotoReport,
        independent_summary,
        markdown_summary,
        reports_json,
        table_rows,
    )
    from pareidolia.runtime import pick_dtype

    if protector_factory is None:
        from pareidolia.default_protectors import default_protector

        protector_factory = default_protector
    names, target = request.names, request.target
    adapt_steps, target_crop = _target(request)
    mode, refine, map_strength = preset(request.strength)
    protector = protector_factory(request.emotion)
    options = ProtectOptions(
        mode=mode,
        refine=refine,
        map_strength=map_strength,
        out_dir=work / "out",
        adapt_steps=adapt_steps,
        robustness=request.robustness,
        dtype=pick_dtype(request.dtype, protector.device),
    )
    inputs, problems = _copy_uploads(request, work)
    reports: dict[int, PhotoReport] = {}
    if inputs:
        tracker = _Progress(progress, [names[i] for i in inputs])
        tracker.start()
        done = protect_files(
            list(inputs.values()),
            protector,
            options,
            tracker,
            target_crop=target_crop,
        )
        reports = dict(zip(inputs, done, strict=True))

    pairs: list[Pair] = []
    rows: list[list[str]] = []
    served: list[str] = []
    shown: list[PhotoReport] = []  # the reports under the user's file names (no server paths)
    previews = work / "preview"
    previews.mkdir()
    for i, name in enumerate(names):
        if i in problems:
            shown.append(PhotoReport(Path(name), error=problems[i]))
            continue
        report = reports[i]
        output = None if report.output is None else Path(report.output.name)
        shown.append(dataclasses.replace(report, path=Path(name), output=output))
        if report.output is None:
            continue
        rows += table_rows(shown[-1])
        folder = previews / str(i)
        folder.mkdir()
        stem = Path(name).stem
        original = _preview(read_photo(inputs[i]).rgb, folder / f"{stem}_original.png")
        protected = _preview(read_photo(report.output).rgb, folder / f"{stem}_protected.png")
        pairs.append(Pair(name, publish(original), publish(protected)))
        served.append(publish(report.output))
    report_path = work / "pareidolia-report.json"
    # where and in what dtype it ran (not the base network's source: a server path)
    run = {"device": str(protector.device), "dtype": request.dtype}
    report_path.write_text(reports_json(shown, run=run), "utf-8")
    served.append(publish(report_path))

    protected_n = len(pairs)
    head = f"Protected {protected_n} of {len(names)} photo(s)"
    head += " (adapted to the target face)." if target is not None else "."
    failed = [markdown_summary(r) for r in shown if r.status != "protected"]
    fine = [markdown_summary(r) for r in shown if r.status == "protected"]
    check = independent_summary(shown)
    tail = [*([check] if check else []), *([ZOO_CAVEAT] if pairs else [])]
    message = "\n\n".join([head, *failed, *fine, *tail])
    return WebResult(pairs, rows, served, message)


# ----------------------------------------------------------------------------- the page


def _gradio() -> Any:
    """Import Gradio with its telemetry off, or explain how to install it."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gradio
    except ImportError:
        raise UserError("the web page needs Gradio: pip install 'pareidolia[web]'") from None
    return gradio


def _emotions(protector_factory: ProtectorFactory | None) -> list[str]:
    from pareidolia.default_protectors import DEFAULT_EMOTION, shipped_emotions

    if protector_factory is None:
        return shipped_emotions() or [DEFAULT_EMOTION]
    return [DEFAULT_EMOTION]


_T = TypeVar("_T")


class OneWorker:
    """Runs calls on one thread of its own, one at a time, with the caller's context variables
    (Gradio's progress bar finds its request through them). Memory freed by one call is reused
    by the next: the heap of a thread stays with that thread."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def run(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        """``fn(*args, **kwargs)`` on the worker thread; its result, or its exception."""
        context = contextvars.copy_context()
        return self._pool.submit(context.run, fn, *args, **kwargs).result()


def build_app(
    protector_factory: ProtectorFactory | None = None,
    emotions: Sequence[str] | None = None,
    keep_seconds: float = KEEP_SECONDS,
    dtype: str = "float32",
) -> Any:
    """The Gradio ``Blocks`` page. ``protector_factory(emotion)`` gives the protector to use
    (default: the shipped ones, loaded once per emotion); ``emotions`` are the choices offered
    (default: the shipped emotions); uploads and results are deleted ``keep_seconds`` after
    they were made; ``dtype`` as for :func:`protect_uploads`. Requests are queued (at most
    :data:`MAX_QUEUE` waiting) and protected one at a time, all on one :class:`OneWorker`
    thread; each waiting user sees their place in the queue on the result components.
    Launch it with :func:`launch_kwargs`, or use :func:`serve`."""
    gr = _gradio()
    from pareidolia.default_protectors import DEFAULT_EMOTION

    choices = list(emotions) if emotions else _emotions(protector_factory)
    cache: dict[str, Protector] = {}
    worker = OneWorker("pareidolia-protect")

    def protector_for(emotion: str) -> Protector:
        if emotion not in cache:
            if protector_factory is None:
                from pareidolia.default_protectors import default_protector

                cache[emotion] = default_protector(emotion)
            else:
                cache[emotion] = protector_factory(emotion)
        return cache[emotion]

    with gr.Blocks(
        title="pareidolia: protect your photos from face recognition",
        analytics_enabled=False,
        delete_cache=None,  # sweep_cache deletes every file, and keeps queued uploads
    ) as app:
        gr.Markdown(
            "# pareidolia\n"
            "Protect the faces in your photos from face recognition with a slight change of "
            "expression. Everything runs on this computer; uploads and results are deleted "
            f"{duration_text(keep_seconds)} after they were made (the photos of a request "
            "waiting in the queue when it is done), and when the server stops."
        )
        with gr.Row():
            with gr.Column(scale=1):
                photos = gr.File(
                    label=f"Photos (up to {MAX_FILES}, {MAX_UPLOAD_MB} MB each)",
                    file_count="multiple",
                    type="filepath",
                    elem_id="photos",
                )
                emotion = gr.Dropdown(
                    choices=choices,
                    value=DEFAULT_EMOTION if DEFAULT_EMOTION in choices else choices[0],
                    label="Expression",
                    elem_id="emotion",
                )
                target = gr.File(
                    label="Target face (optional): the identity FR should see instead",
                    file_count="single",
                    type="filepath",
                    elem_id="target",
                )
                adapt = gr.Slider(
                    minimum=1,
                    maximum=MAX_ADAPT,
                    step=1,
                    value=DEFAULT_ADAPT,
                    label="Adaptation steps toward the target (more: stronger, slower)",
                    visible=False,
                    elem_id="adapt",
                )
                strength = gr.Radio(
                    choices=[(label, name) for name, label in STRENGTH_CHOICES.items()],
                    value=DEFAULT_STRENGTH,
                    label="Strength",
                    elem_id="strength",
                )
                robust = gr.Checkbox(
                    value=True,
                    label="Also check after a simulated social-network upload (0.5×, JPEG 75)",
                    elem_id="robust",
                )
                button = gr.Button("Protect", variant="primary", elem_id="protect")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="status")
                slider = gr.ImageSlider(
                    label="Original ↔ protected (first photo)",
                    type="filepath",
                    interactive=False,
                    elem_id="slider",
                )
                gallery = gr.Gallery(
                    label="Original | protected",
                    columns=2,
                    object_fit="contain",
                    interactive=False,
                    elem_id="gallery",
                )
                downloads = gr.File(
                    label="Downloads", file_count="multiple", interactive=False, elem_id="downloads"
                )
        table = gr.Dataframe(
            headers=COLUMNS,
            datatype="str",
            interactive=False,
            wrap=True,
            label="Report: scores per face and FR model (FAR 0.01 decisions)",
            elem_id="report",
        )

        def publish(path: Path) -> str:
            cached: str | None = downloads.move_resource_to_block_cache(path)
            if cached is None:  # pragma: no cover - only for a path of None
                raise UserError(f"{path.name}: could not be prepared for download")
            return cached

        def on_target(value: str | None) -> Any:
            return gr.update(visible=bool(value))

        def on_protect(
            files: list[str] | None,
            emotion_value: str,
            target_value: str | None,
            adapt_value: float,
            robust_value: bool,
            strength_value: str = DEFAULT_STRENGTH,  # last: older API calls leave it out
            progress: Any = gr.Progress(),  # noqa: B008 - Gradio's documented idiom
        ) -> tuple[Any, ...]:
            def report(fraction: float, what: str) -> None:
                progress(fraction, desc=what)

            result = worker.run(
                protect_uploads,
                files,
                emotion_value,
                target_value,
                int(adapt_value),
                report,
                publish=publish,
                protector_factory=protector_for,
                robustness=bool(robust_value),
                dtype=dtype,
                strength=strength_value,
            )
            if not result.pairs:  # also as a pop-up: nothing to show below
                gr.Warning(result.message.replace("**", ""))
            gallery_items = [
                item
                for p in result.pairs
                for item in (
                    (p.original, f"{p.name}: original"),
                    (p.protected, f"{p.name}: protected"),
                )
            ]
            first = (result.pairs[0].original, result.pairs[0].protected) if result.pairs else None
            return (
                result.message,
                first,
                gallery_items,
                result.files or None,
                result.rows or None,
            )

        target.change(on_target, inputs=target, outputs=adapt)
        button.click(
            on_protect,
            inputs=[photos, emotion, target, adapt, robust, strength],
            outputs=[status, slider, gallery, downloads, table],
            concurrency_limit=1,
            show_progress="full",  # with the queue: "queue: 2/5" while waiting, then progress
        )
    app.queue(default_concurrency_limit=1, max_size=MAX_QUEUE)
    return app


def _host_port(netloc: str, scheme: str = "http") -> tuple[str, int | None]:
    """(lower-case host name, port) of ``host[:port]``; the scheme's port when none is given."""
    parts = urlsplit(f"//{netloc}")
    try:
        port = parts.port
    except ValueError:
        port = -1  # a malformed port never matches
    if port is None:
        port = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(scheme)
    return (parts.hostname or "").lower(), port


LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def allowed_hosts(host: str) -> frozenset[str] | None:
    """The ``Host`` names the page answers to when listening on ``host``: the loopback names
    (and ``host`` itself) for a loopback address; None (any name) for another address, which
    the user chose to expose."""
    import ipaddress

    name = host.strip("[]").lower()
    try:
        loopback = name == "localhost" or ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = False
    return LOOPBACK_NAMES | {name} if loopback else None


def _cache_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, filenames in os.walk(folder):
        for name in filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


class RequestGuard:
    """ASGI middleware in front of the page.

    * Refuses (403) a ``Host`` header that is not one of ``hosts`` (DNS rebinding: a web site
      whose name resolves to 127.0.0.1 would otherwise be served the page and its results).
    * Refuses (403) a request whose ``Origin`` is not the page itself (another web site the
      user visits posting uploads to the page); requests without ``Origin`` (not from a
      browser, or same-origin navigations) pass.
    * Refuses (507, :func:`cache_full`) an upload when the cache folder holds, with the
      uploads under way, more than :data:`MAX_CACHE_BYTES`.
    """

    def __init__(
        self,
        app: Any,
        hosts: frozenset[str] | None,
        cache: Path | None,
        keep_seconds: float = KEEP_SECONDS,
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.cache = cache
        self.keep_seconds = keep_seconds
        self.pending = 0  # bytes of the uploads being received
        self.lock = threading.Lock()

    def refusal(self, scope: dict[str, Any]) -> tuple[int, str] | None:
        """(status, message) when the request must be refused, else None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        scheme = str(scope.get("scheme", "http"))
        host = headers.get("host")
        if host is not None:
            name = _host_port(host, scheme)[0]
            if self.hosts is not None and name not in self.hosts:
                return 403, f"Host {name!r} is not served here; open the page at 127.0.0.1"
        origin = headers.get("origin")
        if origin is not None:
            parts = urlsplit(origin)
            same = host is not None and _host_port(parts.netloc, parts.scheme) == _host_port(
                host, scheme
            )
            if not same:
                return 403, f"requests from {origin} are refused; use the page itself"
        return None

    def _full(self, length: int) -> bool:
        if self.cache is None:
            return False
        return _cache_bytes(self.cache) + self.pending + length > MAX_CACHE_BYTES

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refused = self.refusal(scope)
        if refused is not None:
            log.warning("pareidolia web: refused %s %s: %s", scope["type"], scope["path"], refused)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            from starlette.responses import PlainTextResponse

            await PlainTextResponse(refused[1], status_code=refused[0])(scope, receive, send)
            return
        is_upload = scope["type"] == "http" and scope.get("method") == "POST"
        is_upload = is_upload and str(scope["path"]).rstrip("/").endswith("/upload")
        if not is_upload:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        try:
            length = max(0, int(headers.get(b"content-length", b"0")))
        except ValueError:
            length = 0
        with self.lock:
            full = self._full(length)
            if not full:
                self.pending += length
        if full:
            from starlette.responses import PlainTextResponse

            full_text = cache_full(self.keep_seconds)
            await PlainTextResponse(full_text, status_code=507)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            with self.lock:
                self.pending -= length


EMPTY_FOLDER_SECONDS = 5.0
"""An empty folder of the cache that did not change for this long is deleted: Gradio fills
the folders it makes for an upload or a result at once."""


def sweep_cache(
    folder: Path,
    max_age: float = KEEP_SECONDS,
    *,
    now: float | None = None,
    keep: Collection[str] = (),
) -> int:
    """Delete every file of ``folder`` made more than ``max_age`` seconds ago (by its change
    time, which a copy or rename cannot set back) except those in ``keep`` (real paths: the
    uploads of requests still waiting, :func:`queued_uploads`), and the folders left empty:
    at once when this sweep emptied them, else after :data:`EMPTY_FOLDER_SECONDS` (deleting a
    file makes its folder's change time new); returns the number of files deleted. Unlike
    Gradio's own ``delete_cache``, which knows only the files Gradio handed out, this also
    removes refused uploads (e.g. one named ``..``) and anything a failed request left."""
    now = time.time() if now is None else now
    deleted = 0
    emptied: set[str] = set()  # folders this sweep deleted something in
    for dirpath, dirnames, filenames in os.walk(folder, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                if now - os.lstat(path).st_ctime > max_age and os.path.realpath(path) not in keep:
                    os.unlink(path)
                    deleted += 1
                    emptied.add(dirpath)
        for name in dirnames:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                unchanged = now - os.lstat(path).st_ctime > min(max_age, EMPTY_FOLDER_SECONDS)
                if path in emptied or unchanged:
                    os.rmdir(path)  # only when empty
                    emptied.add(dirpath)
    return deleted


def _paths_in(value: Any) -> Iterator[str]:
    """The ``path`` of every file (Gradio's ``FileData`` dicts) in an event's input data."""
    if isinstance(value, dict):
        if isinstance(value.get("path"), str):
            yield value["path"]
        for item in value.values():
            yield from _paths_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _paths_in(item)


def queued_uploads(app: Any) -> set[str]:
    """The real paths of the files that the requests in the Gradio page ``app``'s queue,
    waiting or being served, were given. Their expiry waits until the request is done,
    however long the queue: a request must not find its upload deleted when its turn comes.
    Read from Gradio's queue (call it in the event loop's thread, which changes the queue);
    empty if that is not laid out as in Gradio 6."""
    queue: Any = getattr(app, "_queue", None)  # None: AttributeError below
    try:
        events = [e for q in queue.event_queue_per_concurrency_id.values() for e in q.queue]
        events += [e for job in queue.active_jobs if job for e in job]
    except (AttributeError, TypeError):
        return set()
    data = [getattr(getattr(e, "data", None), "data", None) for e in events]
    return {os.path.realpath(p) for d in data for p in _paths_in(d)}


@contextlib.asynccontextmanager
async def _sweeping(cache: Path, keep_seconds: float, app: Any) -> Any:
    """Lifespan of the server ``app`` (Gradio's FastAPI app): :func:`sweep_cache` for
    ``keep_seconds`` every :func:`sweep_every` seconds, keeping :func:`queued_uploads`."""
    import asyncio
    import functools

    import anyio

    async def loop() -> None:
        while True:
            await asyncio.sleep(sweep_every(keep_seconds))
            keep = queued_uploads(app.get_blocks())
            sweep = functools.partial(sweep_cache, cache, keep_seconds, keep=keep)
            await anyio.to_thread.run_sync(sweep)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def launch_kwargs(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    cache: Path | None = None,
    keep_seconds: float = KEEP_SECONDS,
) -> dict[str, Any]:
    """The arguments :func:`serve` passes to ``Blocks.launch``: no share link, no server-side
    rendering, no API page, Gradio's upload size limit, and :class:`RequestGuard` and
    :func:`sweep_cache` (files older than ``keep_seconds``) on ``cache`` (default:
    ``$GRADIO_TEMP_DIR``, as set by :func:`private_cache`)."""
    import functools

    from starlette.middleware import Middleware

    if cache is None and os.environ.get("GRADIO_TEMP_DIR"):
        cache = Path(os.environ["GRADIO_TEMP_DIR"])
    app_kwargs: dict[str, Any] = {
        "middleware": [
            Middleware(
                RequestGuard,  # type: ignore[arg-type]
                hosts=allowed_hosts(host),
                cache=cache,
                keep_seconds=keep_seconds,
            )
        ]
    }
    if cache is not None:
        app_kwargs["lifespan"] = functools.partial(_sweeping, cache, keep_seconds)
    return {
        "server_name": host,
        "server_port": port,
        "share": False,
        "ssr_mode": False,
        "mcp_server": False,
        "inbrowser": False,
        "quiet": True,  # `pareidolia web` prints the address; Gradio would suggest share=True
        "show_error": False,
        "footer_links": [],
        "max_file_size": f"{MAX_UPLOAD_MB}mb",
        "pwa": False,
        "app_kwargs": app_kwargs,
    }


@contextlib.contextmanager
def private_cache() -> Iterator[Path]:
    """A fresh folder for Gradio's uploads and results (``GRADIO_TEMP_DIR``), deleted with
    everything in it on exit; the variable is restored. Enter it before :func:`build_app`.
    Its name carries this process's id, so :func:`pareidolia.stale.remove_stale` can remove
    it should the server be killed."""
    before = os.environ.get("GRADIO_TEMP_DIR")
    folder = Path(tempfile.mkdtemp(prefix=pid_prefix(WEB_CACHE)))
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = before
        shutil.rmtree(folder, ignore_errors=True)


STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP stop the main thread like Ctrl-C (so the ``finally``
    clean-ups run); the previous handlers are restored after. Does nothing outside the main
    thread, where handlers cannot be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _interrupt) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    protector_factory: ProtectorFactory | None = None,
    keep_seconds: float = KEEP_SECONDS,
    emotions: Sequence[str] | None = None,
    dtype: str = "float32",
) -> None:
    """Run the page (``protector_factory``, ``emotions`` and ``dtype`` as for :func:`build_app`) until
    interrupted (Ctrl-C, SIGTERM or SIGHUP); uploads and results are
    deleted ``keep_seconds`` after they were made, the cache folder on the way out, and those
    of earlier servers that were killed at the start."""
    _gradio()
    for folder in remove_stale():
        log.warning("pareidolia web: removed %s, left by an earlier run", folder)
    with stop_signals_interrupt(), private_cache() as cache, contextlib.suppress(KeyboardInterrupt):
        # a stop (Ctrl-C, SIGTERM, SIGHUP) is a clean exit wherever it lands: while the page
        # is built or starting up, not only inside Gradio's blocking loop
        app = build_app(protector_factory, emotions, keep_seconds=keep_seconds, dtype=dtype)
        try:
            app.launch(**launch_kwargs(host, port, cache, keep_seconds))  # blocks until stopped
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port} ({e})") from None
        finally:
            with contextlib.suppress(Exception):
                app.close()
