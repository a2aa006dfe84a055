"""The downloader against a loopback HTTP server (Range, redirects, cut transfers); no test
reaches the internet: every artifact here points at 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pareidolia import download
from pareidolia.download import (
    ARTIFACTS,
    Artifact,
    DownloadError,
    NotFetchedError,
    cache_dir,
    fetched,
)

PAYLOAD = bytes(range(256)) * 1200  # 307,200 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class Served:
    """What the loopback server sends and what it saw."""

    payload: bytes = PAYLOAD
    cut_after: int | None = None  # the next full answer stops after this many bytes
    honour_range: bool = True
    published: str | None = None  # sha256 sent as X-Linked-Etag on the redirect
    ranges: list[str | None] = field(default_factory=list)  # Range header of each file request


def _handler(served: Served) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/hub/weights.bin":  # the Hub's way: a redirect naming the sha256
                self.send_response(302)
                self.send_header("Location", "/storage/weights.bin")
                if served.published:
                    self.send_header("X-Linked-Etag", f'"{served.published}"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path not in ("/weights.bin", "/storage/weights.bin"):
                self.send_error(404)
                return
            data, rng = served.payload, self.headers.get("Range")
            served.ranges.append(rng)
            start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
            if rng and served.honour_range:
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                body = data[start:]
            else:
                self.send_response(200)
                body = data
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if served.cut_after is not None:
                body, served.cut_after = body[: served.cut_after], None  # then the server hangs up
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Served]]:
    """A loopback server (its base URL, its state); proxies bypassed for it, downloads on."""
    for name in ("PAREIDOLIA_OFFLINE", "HF_HUB_OFFLINE", "PAREIDOLIA_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    served = Served()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _artifact(base: str, sha256: str | None = SHA, path: str = "/weights.bin") -> Artifact:
    return Artifact("test", "test/weights.bin", base + path, sha256, "300 kB", "loopback")


def test_a_download_is_verified_and_put_in_place(server, tmp_path: Path) -> None:
    base, served = server
    path = download.download(_artifact(base), tmp_path, progress=False)
    assert path == tmp_path / "test" / "weights.bin" and path.read_bytes() == PAYLOAD
    assert (tmp_path / "test" / "weights.bin.sha256").read_text().strip() == SHA
    assert not (tmp_path / "test" / "weights.bin.part").exists()
    assert served.ranges == [None]
    assert fetched(_artifact(base), tmp_path) == (path, SHA)


def test_a_verified_file_is_never_downloaded_again(server, tmp_path: Path) -> None:
    base, served = server
    download.download(_artifact(base), tmp_path, progress=False)
    download.download(_artifact(base), tmp_path, progress=False)
    download.download(_artifact(base), tmp_path, offline=True, progress=False)  # nothing to get
    assert served.ranges == [None]


def test_a_wrong_checksum_is_one_error_and_leaves_no_file(server, tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(DownloadError, match=f"sha256 is {SHA}, expected {'0' * 64}") as e:
        download.download(_artifact(base, "0" * 64), tmp_path, progress=False)
    assert "\n" not in str(e.value)
    assert list((tmp_path / "test").iterdir()) == []


def test_a_cut_transfer_resumes_from_the_part_with_a_range_request(server, tmp_path: Path) -> None:
    base, served = server
    served.cut_after = 100_000
    with pytest.raises(DownloadError, match=r"broke after 100000 of 307200 bytes.*resume"):
        download.download(_artifact(base), tmp_path, progress=False)
    part = tmp_path / "test" / "weights.bin.part"
    assert part.read_bytes() == PAYLOAD[:100_000]
    assert not (tmp_path / "test" / "weights.bin").exists()
    path = download.download(_artifact(base), tmp_path, progress=False)
    assert served.ranges == [None, "bytes=100000-"]
    assert path.read_bytes() == PAYLOAD and not part.exists()


def test_a_server_that_ignores_range_restarts_the_file(server, tmp_path: Path) -> None:
    base, served = server
    served.honour_range = False
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "weights.bin.part").write_bytes(b"stale bytes")
    path = download.download(_artifact(base), tmp_path, progress=False)
    assert served.ranges == ["bytes=11-"] and path.read_bytes() == PAYLOAD


def test_a_complete_part_is_verified_without_more_bytes(server, tmp_path: Path) -> None:
    base, served = server
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "weights.bin.part").write_bytes(PAYLOAD)  # cut before the rename
    assert download.download(_artifact(base), tmp_path, progress=False).read_bytes() == PAYLOAD
    assert served.ranges == [f"bytes={len(PAYLOAD)}-"]  # answered 416: nothing more to send


@pytest.mark.parametrize(
    "switch", ["flag", "PAREIDOLIA_OFFLINE=1", "HF_HUB_OFFLINE=1", "PAREIDOLIA_OFFLINE=true"]
)
def test_offline_forbids_any_download_with_one_line(
    server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    base, served = server
    if switch != "flag":
        name, value = switch.split("=")
        monkeypatch.setenv(name, value)
    reason = "--offline" if switch == "flag" else switch
    with pytest.raises(DownloadError, match=f"downloads are off \\({reason}\\)") as e:
        download.download(_artifact(base), tmp_path, offline=switch == "flag", progress=False)
    assert "\n" not in str(e.value) and base in str(e.value)
    assert served.ranges == [] and not (tmp_path / "test").exists()


def test_the_sha256_a_redirect_publishes_checks_the_file(server, tmp_path: Path) -> None:
    """An artifact without a recorded sha256 (the Hub's safetensors) is checked against the one
    the redirect sends, which is then recorded for later loads."""
    base, served = server
    art = _artifact(base, sha256=None, path="/hub/weights.bin")
    served.published = "f" * 64
    with pytest.raises(DownloadError, match=r"expected f{64}"):
        download.download(art, tmp_path, progress=False)
    served.published = SHA
    path = download.download(art, tmp_path, progress=False)
    assert fetched(art, tmp_path) == (path, SHA)
    path.write_bytes(PAYLOAD[:-1])  # damaged later
    with pytest.raises(NotFetchedError, match=r"damaged.*`pareidolia fetch test --cache "):
        fetched(art, tmp_path)


def test_no_published_sha256_is_refused(server, tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(DownloadError, match="publishes no sha256"):
        download.download(_artifact(base, sha256=None), tmp_path, progress=False)
    assert list((tmp_path / "test").iterdir()) == []


def test_an_unreachable_server_is_one_line(server, tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(DownloadError, match="answered 404"):
        download.download(_artifact(base, path="/nothing/here"), tmp_path, progress=False)
    closed = _artifact("http://127.0.0.1:9")  # the discard port: nothing listens
    with pytest.raises(
        DownloadError, match=re.escape("cannot reach http://127.0.0.1:9/weights.bin")
    ):
        download.download(closed, tmp_path, progress=False)


def test_a_missing_file_names_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(NotFetchedError, match="not fetched; `pareidolia fetch clip --cache"):
        fetched(ARTIFACTS["clip"], tmp_path)
    (tmp_path / "clip").mkdir()
    (tmp_path / ARTIFACTS["clip"].file).write_bytes(b"copied by hand")
    with pytest.raises(NotFetchedError, match="no sha256 recorded"):
        fetched(ARTIFACTS["clip"], tmp_path)


def test_the_cache_folder_flag_then_variable_then_xdg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PAREIDOLIA_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "pareidolia"
    monkeypatch.setenv("PAREIDOLIA_CACHE", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "flag") == tmp_path / "flag"


def test_the_table_points_at_the_published_files() -> None:
    # the addresses are compared as strings only; no test fetches them
    paper, clip = ARTIFACTS["paper-unet"], ARTIFACTS["clip"]
    assert paper.url == (
        "https://huggingface.co/gwang-kim/DiffusionCLIP-CelebA_HQ/resolve/main/celeba_hq.ckpt"
    )
    assert paper.sha256 == download.CELEBA_HQ_SHA256
    assert clip.url == (
        "https://huggingface.co/timm/vit_base_patch16_clip_224.openai/resolve/main/"
        "open_clip_model.safetensors"
    )
    assert clip.file.endswith(".safetensors")  # open_clip reads the file with safetensors
