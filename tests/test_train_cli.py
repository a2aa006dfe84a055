"""`pareidolia train` and `pareidolia apply` on the shipped prior, with a few cheap steps."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pareidolia.checksums import file_sha256
from pareidolia.cli import main
from pareidolia.diffusion.prior import default_prior
from pareidolia.io import read_photo, write_photo
from pareidolia.locate import face_crops
from pareidolia.protector import load_protector

FAST = 't0 = 20\nn_inv = 4\nn_gen = 2\nw_lap = 0.0\nsurrogates = ["mobileface"]\n'


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, astronaut_path: Path, insightface_images: Path
) -> Path:
    """A protector trained by the command for one epoch on the astronaut toward Tom Hanks."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("train")
    faces = root / "faces"
    faces.mkdir()
    shutil.copy(astronaut_path, faces / "astronaut.jpg")
    (root / "fast.toml").write_text(FAST)
    out = root / "p.safetensors"
    argv = [
        "train", "--faces", str(faces), "--target",
        str(insightface_images / "Tom_Hanks_54745.png"), "--emotion", "surprised",
        "--victim", "sface", "--epochs", "1", "--config", str(root / "fast.toml"),
        "--out", str(out), "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    return out


def test_train_writes_a_loadable_protector_with_its_settings(trained: Path) -> None:
    p = load_protector(trained, *default_prior())
    assert p.config.emotion == "surprised" and p.config.victim == "sface"
    assert p.config.surrogates == ("mobileface",) and p.config.epochs == 1
    assert (p.config.t0, p.config.n_inv) == (20, 4)
    assert set(p.target_embeddings) == {"mobileface", "sface"}
    assert p.metrics["steps"] == 1.0 and p.metrics["train_seconds"] > 0
    work = trained.with_name(trained.name + ".work")
    assert (work / "checkpoint.pt").is_file() and (work / "train.jsonl").is_file()


def test_train_resume_with_more_epochs(trained: Path, tmp_path: Path) -> None:
    """--resume continues the finished run for the extra epoch only."""
    work = trained.with_name(trained.name + ".work")
    copy = tmp_path / "p.safetensors"
    shutil.copytree(work, copy.with_name(copy.name + ".work"))
    faces = trained.parent / "faces"
    argv = [
        "train", "--faces", str(faces), "--target", str(faces / "astronaut.jpg"),
        "--emotion", "surprised", "--victim", "sface", "--epochs", "2",
        "--config", str(trained.parent / "fast.toml"), "--out", str(copy), "--resume", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    assert load_protector(copy, *default_prior()).metrics["steps"] == 2.0


def test_grad_checkpoint_resumes_a_run_started_without_it(trained: Path, tmp_path: Path) -> None:
    """``--grad-checkpoint`` changes memory, not results: not part of what a resume checks."""
    copy = tmp_path / "p.safetensors"
    shutil.copytree(trained.with_name(trained.name + ".work"), copy.with_name(copy.name + ".work"))
    faces = trained.parent / "faces"
    argv = [
        "train", "--faces", str(faces), "--target", str(faces / "astronaut.jpg"),
        "--emotion", "surprised", "--victim", "sface", "--epochs", "2", "--grad-checkpoint",
        "--config", str(trained.parent / "fast.toml"), "--out", str(copy), "--resume", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    p = load_protector(copy, *default_prior())
    assert p.metrics["steps"] == 2.0 and p.config.checkpoint_gen


def _applied(protector: Path, crop: Path, out: Path, dtype: str) -> np.ndarray:
    argv = ["apply", "--protector", str(protector), str(crop), "-o", str(out), "--dtype", dtype]
    assert main(argv) == 0
    return read_photo(out / f"{crop.stem}_protected.png").rgb.astype(int)


def test_train_and_apply_in_bfloat16_end_to_end(
    trained: Path, tmp_path: Path, astronaut_path: Path, insightface_images: Path
) -> None:
    """``train --dtype bfloat16 --grad-checkpoint`` then ``apply --dtype bfloat16``, the same
    run as the float32 ``trained`` one otherwise: the artifact records both, and the protected
    crop stays near the float32 one. Measured (CPU, torch 2.13): 0.56 levels of 255 on average
    and 5 at most, against a float32 edit of 3.7 on average; bounds about three times those."""
    out = tmp_path / "bf16.safetensors"
    argv = [
        "train", "--faces", str(trained.parent / "faces"), "--target",
        str(insightface_images / "Tom_Hanks_54745.png"), "--emotion", "surprised",
        "--victim", "sface", "--epochs", "1", "--config", str(trained.parent / "fast.toml"),
        "--out", str(out), "--quiet", "--dtype", "bfloat16", "--grad-checkpoint",
    ]  # fmt: skip
    assert main(argv) == 0
    p = load_protector(out, *default_prior())
    assert p.run["dtype"] == "bfloat16" and p.config.checkpoint_gen
    crop = write_photo(tmp_path / "a.png", face_crops(astronaut_path)[0])
    fp32 = _applied(trained, crop, tmp_path / "fp32", "float32")
    bf16 = _applied(out, crop, tmp_path / "bf16", "bfloat16")
    diff = np.abs(bf16 - fp32)
    edit = np.abs(fp32 - read_photo(crop).rgb.astype(int))
    assert diff.mean() < 1.5 and diff.max() <= 15, (diff.mean(), diff.max())
    assert edit.mean() > 3 * diff.mean()  # the edit, not the rounding, is what changed the face


def test_apply_edits_crops_and_keeps_inputs(trained: Path, astronaut_path: Path) -> None:
    crop_dir = trained.parent / "crops"
    crop_dir.mkdir(exist_ok=True)
    crop = write_photo(crop_dir / "a.png", face_crops(astronaut_path)[0], overwrite=True)
    before = file_sha256(crop)
    assert main(["apply", "--protector", str(trained), str(crop)]) == 0
    out = crop_dir / "a_protected.png"
    edited = read_photo(out).rgb
    assert edited.shape == (256, 256, 3) and file_sha256(crop) == before
    diff = np.abs(edited.astype(int) - read_photo(crop).rgb.astype(int))
    assert 0 < diff.mean() < 20  # edited, not replaced
    assert main(["apply", "--protector", str(trained), str(crop)]) == 0
    assert (crop_dir / "a_protected-2.png").is_file()  # never overwrites


@pytest.mark.parametrize(
    "problem",
    ["no-folder", "no-face-target", "exists", "bad-config", "apply-not-a-crop", "apply-corrupt"],
)
def test_bad_input_exits_2_with_one_line(
    problem: str,
    trained: Path,
    tmp_path: Path,
    astronaut_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    blank = write_photo(tmp_path / "blank.png", np.full((300, 200, 3), 128, np.uint8))
    faces = str(trained.parent / "faces")
    base = ["train", "--faces", faces, "--target", str(astronaut_path), "--emotion", "happy"]
    argv = {
        "no-folder": [*base[:2], str(tmp_path / "nope"), *base[3:], "--out", "x.safetensors"],
        "no-face-target": [*base[:4], str(blank), "--out", str(tmp_path / "p.safetensors")],
        "exists": [*base, "--out", str(trained)],
        "bad-config": [*base, "--config", str(blank), "--out", str(tmp_path / "q.safetensors")],
        "apply-not-a-crop": ["apply", "--protector", str(trained), str(blank)],
        "apply-corrupt": ["apply", "--protector", str(blank), str(blank)],
    }[problem]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pareidolia: ")
    assert not (tmp_path / "p.safetensors").exists() and not (tmp_path / "q.safetensors").exists()


def test_train_with_the_clip_guide_records_it(
    trained: Path,
    tmp_path: Path,
    fake_open_clip: object,
    fake_clip_cache: Path,
    insightface_images: Path,
) -> None:
    """`train --guide clip` (a fake open_clip, its weights where `fetch clip` puts them)."""
    from pareidolia.protect import ProtectOptions, run_record

    out = tmp_path / "clip.safetensors"
    argv = [
        "train", "--faces", str(trained.parent / "faces"), "--target",
        str(insightface_images / "Tom_Hanks_54745.png"), "--emotion", "happy", "--victim",
        "sface", "--epochs", "1", "--config", str(trained.parent / "fast.toml"),
        "--guide", "clip", "--out", str(out), "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    p = load_protector(out, *default_prior())
    assert (p.config.guide, p.config.clip_model, p.config.clip_pretrained) == (
        "clip", "ViT-B-16", "openai",
    )  # fmt: skip
    assert p.run["clip_weights_sha256"] == file_sha256(fake_clip_cache)
    assert run_record(p, ProtectOptions())["guide"] == "clip ViT-B-16 / openai"
    assert np.isfinite(p.metrics["L_E"]) and p.metrics["L_E"] > 0


@pytest.mark.parametrize("problem", ["not-fetched", "unknown-guide", "clip-model-without-clip"])
def test_clip_guide_problems_are_one_line_before_any_work(
    problem: str,
    trained: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PAREIDOLIA_CACHE", str(tmp_path / "empty-cache"))
    (tmp_path / "bogus.toml").write_text('guide = "bogus"\n')
    out = tmp_path / "p.safetensors"
    base = ["train", "--faces", str(trained.parent / "faces"), "--target", str(trained.parent /
            "faces" / "astronaut.jpg"), "--out", str(out), "--quiet"]  # fmt: skip
    extra, message = {
        "not-fetched": (["--guide", "clip"], "not fetched; `pareidolia fetch clip` downloads"),
        "unknown-guide": (
            ["--config", str(tmp_path / "bogus.toml")],
            "unknown expression guide 'bogus' (classifier, clip)",
        ),
        "clip-model-without-clip": (["--clip-model", "RN50"], "are for guide 'clip'"),
    }[problem]
    assert main([*base, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pareidolia: ") and message in err[0], err
    assert not out.exists() and not out.with_name(out.name + ".work").exists()
