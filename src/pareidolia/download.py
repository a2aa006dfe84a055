"""Downloading what the full-strength path needs, into one cache folder, only when asked.

:data:`ARTIFACTS` is the one table of what can be fetched (``pareidolia fetch NAME``): the
paper's DDPM CelebA-HQ network and the CLIP ViT-B/16 (OpenAI) weights of the paper's expression
guide. Each file is checked by sha256: the one recorded in the table, or, where the table has
none, the one the server publishes with the file (Hugging Face sends the sha256 of every large
file as ``X-Linked-Etag``). A transfer goes to ``FILE.part`` and resumes from it (an HTTP
``Range`` request) when it was cut short; a file whose sha256 does not match is deleted; a
verified file is renamed into place (with ``FILE.sha256`` beside it, what later loads check it
against) and never downloaded again.

The cache folder is ``--cache DIR``, else ``$PAREIDOLIA_CACHE``, else
``$XDG_CACHE_HOME/pareidolia`` (``~/.cache/pareidolia``). ``PAREIDOLIA_OFFLINE=1`` or
``HF_HUB_OFFLINE=1`` (or ``--offline``) forbids any download; nothing else in pareidolia
downloads at all.
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO

from tqdm import tqdm

from pareidolia.checksums import file_sha256
from pareidolia.errors import UserError
from pareidolia.io import atomic_write_bytes

CACHE_ENV = "PAREIDOLIA_CACHE"
OFFLINE_ENVS = ("PAREIDOLIA_OFFLINE", "HF_HUB_OFFLINE")
_TRUE = frozenset({"1", "true", "yes", "on"})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
SHA_SUFFIX = ".sha256"
PART_SUFFIX = ".part"


def hf_resolve_url(repo: str, file: str, revision: str = "main") -> str:
    """The download address of ``file`` in the Hugging Face model repository ``repo``."""
    return f"https://huggingface.co/{repo}/resolve/{revision}/{file}"


@dataclass(frozen=True)
class Artifact:
    """One file that ``pareidolia fetch`` can download."""

    name: str  # what ``pareidolia fetch`` calls it
    file: str  # where it goes, relative to the cache folder
    url: str
    sha256: str | None  # None: the server publishes it with the file (X-Linked-Etag)
    size: str  # roughly, for people: "455 MB"
    note: str  # what it is, its licence, where it comes from


CELEBA_HQ_CKPT = "celeba_hq.ckpt"
CELEBA_HQ_SHA256 = "6cbb630eb856ff3ebe4854fe87af3c21a052765678955999db97ea15b5eeb8a5"
CELEBA_HQ_REPO = "gwang-kim/DiffusionCLIP-CelebA_HQ"
CLIP_REPO = "timm/vit_base_patch16_clip_224.openai"
CLIP_FILE = "open_clip_model.safetensors"

PAPER_UNET = Artifact(
    name="paper-unet",
    file=f"paper-unet/{CELEBA_HQ_CKPT}",
    url=hf_resolve_url(CELEBA_HQ_REPO, CELEBA_HQ_CKPT),
    sha256=CELEBA_HQ_SHA256,
    size="455 MB",
    note="the paper's DDPM CelebA-HQ 256 score network (SDEdit / DiffusionCLIP; licence: "
    "theirs), a state dict read with weights_only=True; --model paper",
)
CLIP_VIT_B16_OPENAI = Artifact(
    name="clip",
    file="clip/ViT-B-16-openai.safetensors",
    url=hf_resolve_url(CLIP_REPO, CLIP_FILE),
    # The sha256 open_clip's table has for ViT-B-16 / openai (in the address of OpenAI's
    # ViT-B-16.pt) is a TorchScript file's, which torch.load cannot read with weights_only=True;
    # this safetensors file is checked against the sha256 the Hub publishes with it.
    sha256=None,
    size="~600 MB",
    note="OpenAI's CLIP ViT-B/16 in open_clip's layout, from timm's Hub repo (the file "
    "open_clip itself loads for ViT-B-16 / openai); licence: OpenAI's CLIP model card; "
    "train --guide clip",
)

ARTIFACTS: dict[str, Artifact] = {a.name: a for a in (PAPER_UNET, CLIP_VIT_B16_OPENAI)}
"""Everything ``pareidolia fetch`` downloads, by name."""


class DownloadError(UserError):
    """A download that was refused, failed or did not verify; the message says what to do."""


class NotFetchedError(UserError):
    """A file that is not in the cache (or not intact there); the message names the command
    that fetches it."""


def cache_dir(override: str | Path | None = None) -> Path:
    """The cache folder: ``override``, else ``$PAREIDOLIA_CACHE``, else
    ``$XDG_CACHE_HOME/pareidolia`` (``~/.cache/pareidolia``)."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "pareidolia"


def offline_reason(env: Mapping[str, str] | None = None) -> str | None:
    """Which environment variable forbids downloads (``PAREIDOLIA_OFFLINE=1``), or None."""
    env = os.environ if env is None else env
    for name in OFFLINE_ENVS:
        if env.get(name, "").strip().lower() in _TRUE:
            return f"{name}={env[name]}"
    return None


def artifact_path(artifact: Artifact, cache: str | Path | None = None) -> Path:
    """Where ``artifact`` is (or would be) in the cache folder."""
    return cache_dir(cache) / artifact.file


def _recorded_sha256(path: Path) -> str | None:
    """The sha256 written beside ``path`` when it was verified, if any."""
    try:
        text = path.with_name(path.name + SHA_SUFFIX).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if _SHA256.match(text) else None


def _expected(artifact: Artifact, path: Path) -> str | None:
    return artifact.sha256 or _recorded_sha256(path)


def _fetch_hint(artifact: Artifact, cache: str | Path | None) -> str:
    flag = f" --cache {cache}" if cache else ""
    return f"`pareidolia fetch {artifact.name}{flag}` downloads it ({artifact.size})"


def fetched(artifact: Artifact, cache: str | Path | None = None) -> tuple[Path, str]:
    """(path, sha256) of ``artifact`` in the cache, checked against its sha256 (the table's, or
    the one recorded when it was fetched). A :class:`NotFetchedError` line names the file and
    the command that fetches it when it is missing, unverified or damaged."""
    path = artifact_path(artifact, cache)
    if not path.is_file():
        raise NotFetchedError(f"{path}: not fetched; {_fetch_hint(artifact, cache)}")
    expected = _expected(artifact, path)
    if expected is None:
        raise NotFetchedError(
            f"{path}: no sha256 recorded for it (not fetched by pareidolia); "
            f"{_fetch_hint(artifact, cache)}"
        )
    actual = file_sha256(path)
    if actual != expected:
        raise NotFetchedError(
            f"{path}: sha256 is {actual}, expected {expected} (damaged or replaced); "
            f"{_fetch_hint(artifact, cache)} again"
        )
    return path, actual


def is_fetched(artifact: Artifact, cache: str | Path | None = None) -> bool:
    """Whether ``artifact`` is in the cache and verifies."""
    try:
        fetched(artifact, cache)
    except NotFetchedError:
        return False
    return True


class _RecordingRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, keeping the sha256 a redirect publishes: Hugging Face
    answers a large file's address with a redirect to its storage carrying the file's sha256
    as ``X-Linked-Etag``."""

    def __init__(self) -> None:
        self.published: str | None = None

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        self.published = _linked_sha256(headers) or self.published
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _linked_sha256(headers: Message) -> str | None:
    value = (headers.get("X-Linked-Etag") or "").strip().strip('"').lower()
    return value if _SHA256.match(value) else None


def download(
    artifact: Artifact,
    cache: str | Path | None = None,
    *,
    offline: bool = False,
    progress: bool = True,
) -> Path:
    """``artifact`` in the cache folder, downloaded if it is not there yet (see the module
    docstring); returns its path. Every failure is a :class:`DownloadError` line: downloads
    forbidden, the server unreachable or refusing, a transfer cut short (the part is kept:
    the same call resumes it), or a sha256 mismatch (the part is deleted)."""
    if is_fetched(artifact, cache):
        return artifact_path(artifact, cache)
    path = artifact_path(artifact, cache)
    reason = "--offline" if offline else offline_reason()
    if reason is not None:
        raise DownloadError(
            f"{artifact.name}: downloads are off ({reason}); {path} is needed from {artifact.url}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + PART_SUFFIX)
    published = _transfer(artifact, part, progress)
    expected = artifact.sha256 or published
    if expected is None:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{artifact.name}: {artifact.url} publishes no sha256 for the file; not using it"
        )
    actual = file_sha256(part)
    if actual != expected:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{artifact.name}: the download's sha256 is {actual}, expected {expected}; "
            f"deleted it (run the command again, or check {artifact.url})"
        )
    atomic_write_bytes(
        path.with_name(path.name + SHA_SUFFIX), f"{actual}\n".encode(), overwrite=True
    )
    os.replace(part, path)
    return path


def _transfer(artifact: Artifact, part: Path, progress: bool) -> str | None:
    """Download ``artifact.url`` into ``part``, continuing what it holds; returns the sha256
    the server published, if any."""
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(artifact.url, headers={"User-Agent": "pareidolia"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    redirects = _RecordingRedirects()
    opener = urllib.request.build_opener(redirects)
    try:
        response = opener.open(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing after what the part holds: it is complete
            return redirects.published or _linked_sha256(e.headers)
        raise DownloadError(f"{artifact.name}: {artifact.url} answered {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"{artifact.name}: cannot reach {artifact.url} ({reason})") from e
    with response:
        published = redirects.published or _linked_sha256(response.headers)
        resumed = have > 0 and response.status == 206
        start = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        bar = tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
            desc=artifact.file, disable=not progress, leave=False,
        )  # fmt: skip
        with bar, part.open("ab" if resumed else "wb") as out:
            problem = None
            while True:
                try:  # a broken transfer ends the loop; a full disk (writing) is an OSError
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    problem = type(e).__name__
                    break
                if not chunk:
                    break
                out.write(chunk)
                bar.update(len(chunk))
            got = out.tell()
            out.flush()
            os.fsync(out.fileno())
    if problem is not None or (total is not None and got < total):
        raise DownloadError(
            f"{artifact.name}: the transfer broke after {got} of {total or '?'} bytes"
            f"{f' ({problem})' if problem else ''}; run the same command again to resume "
            f"from {part}"
        )
    return published
