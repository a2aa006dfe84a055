"""`pareidolia fetch`: what it prints and refuses; the table's entries point at local files
(``file://``), so nothing reaches the internet (the HTTP side is tests/test_download.py)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from pareidolia import download
from pareidolia.cli import main

DATA = b"weights " * 5000


@pytest.fixture
def local_clip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The table's ``clip`` entry served from a local file; downloads allowed; the source."""
    for name in ("PAREIDOLIA_OFFLINE", "HF_HUB_OFFLINE", "PAREIDOLIA_CACHE"):
        monkeypatch.delenv(name, raising=False)
    source = tmp_path / "source.safetensors"
    source.write_bytes(DATA)
    entry = replace(
        download.ARTIFACTS["clip"], url=source.as_uri(), sha256=hashlib.sha256(DATA).hexdigest()
    )
    monkeypatch.setitem(download.ARTIFACTS, "clip", entry)
    return source


def test_fetch_downloads_once_into_the_cache(
    local_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    assert main(["fetch", "clip", "--cache", str(cache), "--quiet"]) == 0
    target = cache / download.ARTIFACTS["clip"].file
    out = capsys.readouterr().out
    assert target.read_bytes() == DATA
    assert f"clip: {target} (downloaded, sha256 verified)" in out
    assert f"set PAREIDOLIA_CACHE={cache}" in out  # not the default folder: say how to use it
    local_clip.unlink()  # a second fetch needs no source: the verified file stays
    assert main(["fetch", "clip", "--cache", str(cache), "--offline", "--quiet"]) == 0
    assert f"clip: {target} (already there, sha256 verified)" in capsys.readouterr().out


@pytest.mark.parametrize("how", ["--offline", "PAREIDOLIA_OFFLINE", "HF_HUB_OFFLINE"])
def test_fetch_offline_is_one_line_and_downloads_nothing(
    how: str,
    local_clip: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["fetch", "clip", "--cache", str(tmp_path / "cache"), "--quiet"]
    if how == "--offline":
        argv.append(how)
    else:
        monkeypatch.setenv(how, "1")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pareidolia: clip: downloads are off"), err
    assert local_clip.as_uri() in err[0]
    assert not (tmp_path / "cache").exists()


def test_fetch_paper_fr_says_where_and_what_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch", "paper-fr"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert "--fr-weights DIR" in line and "no public address with a published checksum" in line
    for name in ("ir152.pth", "irse50.pth", "facenet.pth", "mobile_face.pth"):
        assert name in line


def test_fetch_without_names_lists_what_and_where(
    local_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    assert main(["fetch", "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"cache folder: {cache}" in out
    assert "paper-unet  not fetched" in out and "clip        not fetched" in out
    assert download.ARTIFACTS["paper-unet"].url in out and "paper-fr:" in out
    assert not cache.exists()  # listing downloads nothing


def test_fetch_an_unknown_name_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch", "clip", "stylegan"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "pareidolia: nothing to fetch called stylegan (choose paper-unet, clip, paper-fr)"
    ]
