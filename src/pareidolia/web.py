"""``pareidolia web``: a local web page to protect photos, built with Gradio.

The page lets a user drop photos, pick the expression of a shipped protector, optionally give a
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
  a private folder per server (``GRADIO_TEMP_DIR`` set by :func:`serve`); Gradio's
  ``delete_cache`` removes uploads and results :data:`KEEP_SECONDS` after they were made
  (checked every :data:`SWEEP_SECONDS`), and :func:`serve` deletes the whole folder when the
  server stops. We chose this over a follow-up ``.then()`` clean-up event because the latter
  never runs when the browser disconnects mid-request.
* Limits are enforced on the server: :data:`MAX_UPLOAD_MB` per file (also given to Gradio as
  ``max_file_size``, which refuses larger uploads before they are stored) and
  :data:`MAX_FILES` photos per request; the server listens on loopback unless told otherwise.
* Problems a user can fix (not an image, no face, file too large, no shipped protector) come
  back as a clear message in the page's status box, never a traceback; an unexpected error is
  logged on the server and shown as one line.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from PIL import Image

from pareidolia.errors import NoFaceError, UserError

if TYPE_CHECKING:
    from pareidolia.protect import PhotoReport
    from pareidolia.protector import Protector

__all__ = [
    "COLUMNS",
    "DEFAULT_ADAPT",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "KEEP_SECONDS",
    "MAX_FILES",
    "MAX_UPLOAD_MB",
    "Pair",
    "WebResult",
    "build_app",
    "copy_into",
    "private_cache",
    "protect_uploads",
    "serve",
]

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_UPLOAD_MB = 50
"""Largest file accepted, per photo or target (checked by Gradio on upload and again here)."""
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
MAX_FILES = 20
"""Most photos protected in one request (CPU time per photo is seconds to minutes)."""
DEFAULT_ADAPT = 20
"""Adaptation steps proposed when a target face is given (as ``pareidolia protect --target``)."""
MAX_ADAPT = 200
PREVIEW_SIDE = 1600
"""Longest side of the side-by-side previews (PNG); the downloads are full resolution."""
KEEP_SECONDS = 600
"""How long uploads and results stay in the server's cache after they were made."""
SWEEP_SECONDS = 60
"""How often the cache is checked for files older than :data:`KEEP_SECONDS`."""

COLUMNS = [
    "photo",
    "face",
    "model",
    "metric",
    "threshold",
    "vs original",
    "still matches original",
    "vs target: before → after",
    "matches target: before → after",
    "after upload (target / original)",
]
"""Headers of the report table; one row per protected face and FR model."""

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


def _yes(x: bool | None) -> str:
    return "-" if x is None else ("yes" if x else "no")


def _score(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _rows(name: str, report: dict[str, Any]) -> list[list[str]]:
    """Report table rows (:data:`COLUMNS`) of one photo's JSON-ready report."""
    rows = []
    for face in report["faces"]:
        uploads = {r["model"]: r for r in face["robustness"] or []}
        for m in face["models"]:
            if face["redetected"] is None:
                upload = "not checked"
            elif m["model"] not in uploads:
                upload = "face not found"
            else:
                up = uploads[m["model"]]
                upload = f"{_yes(up['matches_target'])} / {_yes(up['matches_original'])}"
            rows.append(
                [
                    name,
                    str(face["index"]),
                    m["model"],
                    m["metric"],
                    _score(m["threshold"]),
                    _score(m["original_score"]),
                    _yes(m["matches_original"]),
                    f"{_score(m['target_before'])} → {_score(m['target_after'])}",
                    f"{_yes(m['matches_target_before'])} → {_yes(m['matches_target_after'])}",
                    upload,
                ]
            )
    return rows


def _summary(name: str, report: dict[str, Any]) -> str:
    """One markdown line on what happened to one photo."""
    status = report["status"]
    if status == "error":
        return f"**{name}**: not processed: {report['error']}"
    if status == "no_face":
        return f"**{name}**: no face found; nothing to protect"
    if status == "too_small":
        return f"**{name}**: every face is too small to protect; nothing written"
    faces = []
    for f in report["faces"]:
        top_b, top_a = f["top_expression_before"], f["top_expression_after"]
        psnr = "∞" if f["psnr"] is None else f"{f['psnr']:.1f}"
        fooled = sum(bool(m["matches_target_after"]) for m in f["models"])
        kept = sum(bool(m["matches_original"]) for m in f["models"])
        n = len(f["models"])
        faces.append(
            f"face {f['index']}: expression {top_b} {f['expression_before'][top_b]:.2f} → "
            f"{top_a} {f['expression_after'][top_a]:.2f}, PSNR {psnr} dB, SSIM {f['ssim']:.3f}; "
            f"matches the target for {fooled} of {n} models, the original for {kept} of {n}"
        )
    line = f"**{name}**: {report['faces_protected']} face(s) protected in {report['seconds']:.1f} s"
    if report["skipped"]:
        line += f", {len(report['skipped'])} too small and left unchanged"
    return line + "".join(f"\n  - {f}" for f in faces)


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
) -> WebResult:
    """Protect uploaded photos; never raises for a problem a user can fix.

    ``files`` are the uploads (paths whose last part is the user's file name); ``emotion``
    picks the protector from ``protector_factory`` (default: the shipped protectors);
    ``target``, when given, is a photo of the identity to be mistaken for, and the protector
    is adapted toward it for ``adapt`` steps (ignored without a target). The work happens in a
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
    names = [_display_name(u) for u in uploads]
    scrub = [*{u.parent for u in uploads}, *([Path(target).parent] if target else [])]
    with tempfile.TemporaryDirectory(prefix="pareidolia-web-", dir=workroot) as tmp:
        work = Path(tmp)
        try:
            return _protect(
                uploads,
                names,
                emotion,
                Path(target) if target else None,
                adapt,
                progress,
                publish,
                protector_factory,
                robustness,
                work,
            )
        except UserError as e:
            return WebResult([], [], [], f"**Problem:** {_scrub(str(e), [work, *scrub])}")
        except Exception:
            log.exception("pareidolia web: unexpected error")
            return WebResult(
                [],
                [],
                [],
                "**Internal error** while protecting; the details are in the server log.",
            )


def _protect(
    uploads: list[Path],
    names: list[str],
    emotion: str,
    target: Path | None,
    adapt: int,
    progress: ProgressFn | None,
    publish: Publisher,
    protector_factory: ProtectorFactory | None,
    robustness: bool,
    work: Path,
) -> WebResult:
    """The body of :func:`protect_uploads` inside its request folder ``work``."""
    from pareidolia.io import read_photo
    from pareidolia.protect import ProtectOptions, protect_files

    if protector_factory is None:
        from pareidolia.default_protectors import default_protector

        protector_factory = default_protector
    adapt_steps = 0
    target_crop = None
    if target is not None:
        adapt_steps = int(adapt)
        if adapt_steps < 1:
            raise UserError("a target face needs at least 1 adaptation step")
        target_crop = _load_target(target, _display_name(target))
    protector = protector_factory(emotion)
    options = ProtectOptions(out_dir=work / "out", adapt_steps=adapt_steps, robustness=robustness)

    # Copy each upload into its own folder under the user's name; refuse oversized files.
    problems: dict[int, str] = {}
    inputs: dict[int, Path] = {}
    for i, (upload, name) in enumerate(zip(uploads, names, strict=True)):
        if not upload.is_file():
            problems[i] = "the upload is missing on the server (upload it again)"
        elif (too_large := _too_large(upload)) is not None:
            problems[i] = too_large
        else:
            dest = work / "in" / str(i) / name
            dest.parent.mkdir(parents=True)
            shutil.copyfile(upload, dest)
            inputs[i] = dest
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
    lines: list[str] = []
    data: list[dict[str, Any]] = []
    previews = work / "preview"
    previews.mkdir()
    for i, name in enumerate(names):
        if i in problems:
            lines.append(f"**{name}**: not processed: {problems[i]}")
            data.append({"path": name, "status": "error", "error": problems[i]})
            continue
        report = reports[i]
        d = report.to_dict()
        d["path"] = name
        d["output"] = None if report.output is None else report.output.name
        data.append(d)
        lines.append(_summary(name, d))
        if report.output is None:
            continue
        rows += _rows(name, d)
        folder = previews / str(i)
        folder.mkdir()
        stem = Path(name).stem
        original = _preview(read_photo(inputs[i]).rgb, folder / f"{stem}_original.png")
        protected = _preview(read_photo(report.output).rgb, folder / f"{stem}_protected.png")
        pairs.append(Pair(name, publish(original), publish(protected)))
        served.append(publish(report.output))
    report_path = work / "pareidolia-report.json"
    report_path.write_text(json.dumps({"far": "0.01", "photos": data}, indent=2), "utf-8")
    served.append(publish(report_path))

    protected_n = len(pairs)
    head = f"Protected {protected_n} of {len(names)} photo(s)"
    head += " (adapted to the target face)." if target is not None else "."
    failed = [ln for ln, d in zip(lines, data, strict=True) if d["status"] != "protected"]
    fine = [ln for ln, d in zip(lines, data, strict=True) if d["status"] == "protected"]
    message = "\n\n".join([head, *failed, *fine])
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


def build_app(
    protector_factory: ProtectorFactory | None = None,
    emotions: Sequence[str] | None = None,
) -> Any:
    """The Gradio ``Blocks`` page. ``protector_factory(emotion)`` gives the protector to use
    (default: the shipped ones, loaded once per emotion); ``emotions`` are the choices offered
    (default: the shipped emotions). Launch it with :func:`launch_kwargs`, or use :func:`serve`."""
    gr = _gradio()
    from pareidolia.default_protectors import DEFAULT_EMOTION

    choices = list(emotions) if emotions else _emotions(protector_factory)
    cache: dict[str, Protector] = {}

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
        delete_cache=(SWEEP_SECONDS, KEEP_SECONDS),
    ) as app:
        gr.Markdown(
            "# pareidolia\n"
            "Protect the faces in your photos from face recognition with a slight change of "
            "expression. Everything runs on this computer; uploads and results are deleted "
            f"{KEEP_SECONDS // 60} minutes after they were made, and when the server stops."
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
            progress: Any = gr.Progress(),  # noqa: B008 - Gradio's documented idiom
        ) -> tuple[Any, ...]:
            def report(fraction: float, what: str) -> None:
                progress(fraction, desc=what)

            result = protect_uploads(
                files,
                emotion_value,
                target_value,
                int(adapt_value),
                report,
                publish=publish,
                protector_factory=protector_for,
                robustness=bool(robust_value),
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
            inputs=[photos, emotion, target, adapt, robust],
            outputs=[status, slider, gallery, downloads, table],
            concurrency_limit=1,
            show_progress="full",
        )
    return app


def launch_kwargs(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> dict[str, Any]:
    """The arguments :func:`serve` passes to ``Blocks.launch``: no share link, no server-side
    rendering, no API page, Gradio's upload size limit."""
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
    }


@contextlib.contextmanager
def private_cache() -> Iterator[Path]:
    """A fresh folder for Gradio's uploads and results (``GRADIO_TEMP_DIR``), deleted with
    everything in it on exit; the variable is restored. Enter it before :func:`build_app`."""
    before = os.environ.get("GRADIO_TEMP_DIR")
    folder = Path(tempfile.mkdtemp(prefix="pareidolia-web-cache-"))
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = before
        shutil.rmtree(folder, ignore_errors=True)


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    protector_factory: ProtectorFactory | None = None,
) -> None:
    """Run the page until interrupted (Ctrl-C); the cache folder is deleted on the way out."""
    _gradio()
    with private_cache():
        app = build_app(protector_factory)
        app.queue(default_concurrency_limit=1)
        try:
            app.launch(**launch_kwargs(host, port))  # blocks until Ctrl-C
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port} ({e})") from None
        finally:
            with contextlib.suppress(Exception):
                app.close()
