"""The `pareidolia` command: verify, models, demo, and bad input (exit 2, one line, nothing written)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pareidolia.cli import main
from pareidolia.commands.demo import ASTRONAUT
from pareidolia.evaluation.variants import strong_variant
from pareidolia.io import read_photo, write_photo

VERIFY_KEYS = {"a", "b", "far", "models", "all_match", "none_match"}
MODEL_KEYS = {"model", "metric", "score", "threshold", "match", "independent"}
FR = {"dlib", "sface", "faceres", "mobileface"}
JUDGES = {"facenet128", "mobilefacenet512"}


def _run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def astronaut_variant(tmp_path_factory: pytest.TempPathFactory, astronaut_path: Path) -> Path:
    photo = read_photo(astronaut_path)
    return write_photo(tmp_path_factory.mktemp("v") / "variant.jpg", strong_variant(photo.rgb))


def test_the_command_line_starts_without_torch() -> None:
    """Building the parser (``--help``, ``--version``, a usage error) imports no torch, so
    those answer at once; a command imports it when it runs."""
    probe = (
        "import sys; from pareidolia.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'diffusers', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_verify_matches_an_edited_copy_on_every_model(
    capsys: pytest.CaptureFixture[str], astronaut_path: Path, astronaut_variant: Path
) -> None:
    out = _run_json(capsys, "verify", str(astronaut_path), str(astronaut_variant))
    assert set(out) == VERIFY_KEYS and out["far"] == "0.01"
    assert {m["model"] for m in out["models"]} == FR | JUDGES
    assert {m["model"] for m in out["models"] if m["independent"]} == JUDGES
    assert all(set(m) == MODEL_KEYS for m in out["models"])
    assert all(m["match"] for m in out["models"]), out["models"]
    assert out["all_match"] is True


def test_verify_rejects_a_different_person_on_every_model(
    capsys: pytest.CaptureFixture[str], astronaut_path: Path, insightface_images: Path
) -> None:
    out = _run_json(
        capsys, "verify", str(astronaut_path), str(insightface_images / "Tom_Hanks_54745.png")
    )
    assert not any(m["match"] for m in out["models"]), out["models"]
    assert out["none_match"] is True


def test_verify_table_is_readable(
    capsys: pytest.CaptureFixture[str], astronaut_path: Path, astronaut_variant: Path
) -> None:
    assert main(["verify", str(astronaut_path), str(astronaut_variant)]) == 0
    text = capsys.readouterr().out
    assert "verdict: same person for every model" in text
    rows = {line.split()[0]: line for line in text.splitlines() if line.split()}
    for name in FR | JUDGES:
        assert "match" in rows[name]
        assert ("independent check" in rows[name]) == (name in JUDGES)


def test_models_lists_the_zoo_with_checksums_ok(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _run_json(capsys, "models")
    by_name = {r["name"]: r for r in rows}
    assert FR | {
        "faceapi_landmarks",
        "faceapi_expression",
        "mini_xception",
        "yunet",
        "facenet128",
        "mobilefacenet512",
    } <= set(by_name)
    assert by_name["facenet128"]["role"] == by_name["mobilefacenet512"]["role"] == "fr_judge"
    assert all(r["status"] == "ok" for r in rows if r["role"] != "score_network"), rows
    assert {
        "name",
        "role",
        "input",
        "input_size",
        "output_dim",
        "licence",
        "source",
        "file",
        "sha256",
        "status",
    } <= set(rows[0])
    networks = {r["name"]: r for r in rows if r["role"] == "score_network"}
    assert {"prior", "ddpm-celebahq-256", "celeba_hq.ckpt"} <= set(networks)
    assert (
        networks["celeba_hq.ckpt"]["sha256"]
        == "6cbb630eb856ff3ebe4854fe87af3c21a052765678955999db97ea15b5eeb8a5"
    )


def _bad_inputs(tmp: Path) -> dict[str, Path]:
    empty = tmp / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp / "text.png"
    text.write_text("hello, not an image")
    full = tmp / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(
        full
    )
    truncated = tmp / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[:2000])
    noface = tmp / "noface.png"
    Image.fromarray(np.full((200, 300, 3), 90, np.uint8)).save(noface)
    return {
        "empty": empty,
        "text": text,
        "truncated": truncated,
        "noface": noface,
        "missing": tmp / "missing.jpg",
    }


@pytest.mark.parametrize("case", ["empty", "text", "truncated", "noface", "missing"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], astronaut_path: Path, case: str
) -> None:
    bad = _bad_inputs(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["verify", str(astronaut_path), str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "Traceback" not in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_demo_protects_the_astronaut_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo: the shipped protector on the bundled photo, a side-by-side panel, the report."""
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 face(s) protected" in out and "dlib" in out and "side by side" in out
    protected = read_photo(tmp_path / "astronaut_protected.jpg").rgb
    original = read_photo(ASTRONAUT).rgb
    assert protected.shape == original.shape
    diff = np.abs(protected.astype(int) - original.astype(int)).max(axis=2)
    assert diff.max() > 20  # the face was edited …
    assert np.median(diff[:, :100]) <= 2  # … the left edge (background) only re-encoded
    panel = read_photo(tmp_path / "astronaut_side_by_side.png").rgb
    assert (panel.shape[1] - 16) % 3 == 0 and panel.shape[0] < original.shape[0]  # 3 face crops


# ----------------------------------------------------------------------------- expected errors


def _pareidolia_errors() -> list[type[Exception]]:
    """Every :class:`PareidoliaError` subclass of the package (all of its modules imported)."""
    import importlib
    import pkgutil

    import pareidolia
    from pareidolia.errors import PareidoliaError

    for mod in pkgutil.walk_packages(pareidolia.__path__, "pareidolia."):
        importlib.import_module(mod.name)
    found: list[type[Exception]] = []
    todo: list[type[Exception]] = [PareidoliaError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def _instance(cls: type[Exception]) -> Exception:
    from pareidolia.errors import OptionError
    from pareidolia.io import ImageError

    if issubclass(cls, ImageError):
        return cls("photo.jpg", "not an image")
    if issubclass(cls, OptionError):
        return cls("{adapt_steps} must be 0 or more, got -1", "adapt_steps")
    return cls("photo.jpg: what went wrong")


def test_every_expected_error_ends_as_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pareidolia.commands.verify as verify
    from pareidolia.errors import OptionError, UserError, WeightsError

    errors = _pareidolia_errors()
    assert {UserError, WeightsError, OptionError} <= set(errors)
    for cls in errors:
        error = _instance(cls)

        def fail(a: Path, b: Path, error: Exception = error) -> dict[str, object]:
            raise error

        monkeypatch.setattr(verify, "verify_files", fail)
        assert main(["verify", "a.jpg", "b.jpg"]) == 2, cls
        err = capsys.readouterr().err
        assert err.startswith("pareidolia: ") and "Traceback" not in err, (cls, err)
        assert len(err.strip().splitlines()) == 1, (cls, err)


def test_option_errors_name_the_flag_on_the_command_line(
    astronaut_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The library names its options in its own words; the command line names the flag."""
    from pareidolia.errors import OptionError
    from pareidolia.protect import ProtectOptions

    with pytest.raises(OptionError) as caught:
        ProtectOptions(min_face=0)
    assert str(caught.value) == "min_face must be at least 1 pixel, got 0"
    assert main(["protect", str(astronaut_path), "--min-face", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "pareidolia: --min-face must be at least 1 pixel, got 0.0\n"
    assert main(["protect", str(astronaut_path), "--inversion-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "pareidolia: --inversion-steps must be at least 2, got 1\n"


def test_missing_weights_end_as_one_line(
    astronaut_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A missing FR weight file and a missing detector: one line naming the file, exit 2."""
    from pareidolia import locate
    from pareidolia.faces import detect
    from pareidolia.zoo import chip_model, registry

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    # no network loaded before (they are loaded once and kept)
    monkeypatch.setattr(chip_model, "_shared", functools.cache(chip_model.zoo_model))
    monkeypatch.setattr(locate, "_landmark_net", functools.cache(locate._landmark_net.__wrapped__))
    assert main(["verify", str(astronaut_path), str(astronaut_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pareidolia: {tmp_path}") and "missing" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    monkeypatch.undo()

    missing = tmp_path / "yunet.onnx"
    monkeypatch.setattr(detect, "YUNET_FILE", missing)
    monkeypatch.setattr(detect, "_per_thread", threading.local())  # no detector made yet
    assert main(["verify", str(astronaut_path), str(astronaut_path)]) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert err == (
        f"pareidolia: {missing}: YuNet detector missing; rebuild with tools/convert_weights.py\n"
    )
