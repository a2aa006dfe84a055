"""``pareidolia bench``: the offline protocol end to end, resume, and the paper protocol's input
checks (exit 2 with one line naming what is missing)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pareidolia.cli import main
from pareidolia.commands.bench import parse_protectors
from pareidolia.errors import UserError
from pareidolia.evaluation.protocol import PAPER_TARGETS
from pareidolia.evaluation.report import FIGURES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _finite(value: Any) -> bool:
    """Every number in a JSON value is finite (None allowed for skipped metrics)."""
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def _check_outputs(out: Path) -> dict[str, Any]:
    results = json.loads((out / "results.json").read_text())
    assert results["format"] == "pareidolia.bench/1"
    assert results["machine"]["torch"] == torch.__version__
    for name in FIGURES:
        assert (out / name).read_bytes().startswith(PNG_MAGIC), name
    table = (out / "results.md").read_text()
    for cell in results["cells"]:
        assert _finite({k: v for k, v in cell.items() if k != "fid" and k != "lpips"}), cell
        assert set(cell["psr"]) == {"0.1", "0.01", "0.001"}
        assert cell["fid"]["value"] is None and "--fid-weights" in cell["fid"]["skipped"]
        assert f"| {cell['method']} | {cell['victim']} |" in table
    return results


def _untuned_protector(path: Path, victim: str) -> Path:
    """A protector file whose network is the base prior itself (no training): enough to run
    MAP's apply path in the benchmark."""
    import copy

    from pareidolia.diffusion.prior import default_prior
    from pareidolia.protector import Protector, ProtectorConfig, save_protector

    unet, cfg = default_prior()
    surrogates = tuple(m for m in ("dlib", "sface", "faceres", "mobileface") if m != victim)
    config = ProtectorConfig(victim=victim, surrogates=surrogates)
    return save_protector(path, Protector(copy.deepcopy(unet), unet, cfg, config))


@pytest.mark.slow
def test_offline_quick_runs_end_to_end(tmp_path: Path, one_thread: None) -> None:
    out = tmp_path / "bench"
    given = _untuned_protector(tmp_path / "dlib.safetensors", "dlib")
    argv = ["bench", "--protocol", "offline", "--quick", "--quiet", "--out", str(out)]
    argv += ["--faces", str(tmp_path / "faces"), "--protector", f"dlib={given}"]
    assert main(argv) == 0
    results = _check_outputs(out)
    methods = {c["method"] for c in results["cells"]}
    assert methods == {
        "none", "map", "map-adapt", "pgd-8", "pgd-16", "fgsm", "mi-fgsm", "ti-dim", "tip-im",
        "lum-eot-8", "lum-eot-12", "lum-eot-16",
    }  # fmt: skip
    for c in results["cells"]:
        assert 0.0 <= c["de00_mean"] <= c["de00_p95"]
        if c["method"] == "none":
            assert c["de00_p95"] == 0.0
    assert results["methods"]["map-adapt"]["overrides"] == {"adapt_steps": 1}  # --quick
    assert {c["victim"] for c in results["cells"]} == {"dlib", "sface"}
    assert results["map"]["dlib"]["source"] == str(given)
    assert results["map"]["sface"]["source"] == "trained"
    assert results["map"]["sface"]["config"]["epochs"] == 1
    assert results["map"]["sface"]["train_faces"] == 4
    assert (out / "protectors" / "sface.safetensors").is_file()
    assert results["methods"]["tip-im"]["config"]["epsilon"] == pytest.approx(12 / 255)
    assert results["methods"]["pgd-16"]["config"]["steps"] == 2  # --quick
    assert all(c["faces"] == 3 for c in results["cells"])


def test_a_protector_given_for_the_wrong_victim_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    given = _untuned_protector(tmp_path / "dlib.safetensors", "dlib")
    argv = ["bench", "--quick", "--out", str(tmp_path / "o"), "--faces", str(tmp_path / "f")]
    assert main([*argv, "--protector", f"sface={given}"]) == 2
    assert "holds out 'dlib', not 'sface'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_offline_baseline_subset_resumes_and_refuses_to_overwrite(
    tmp_path: Path, one_thread: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out, faces = tmp_path / "bench", tmp_path / "faces"
    argv = ["bench", "--quick", "--quiet", "--out", str(out), "--faces", str(faces)]
    argv += ["--methods", "none,fgsm", "--victims", "sface"]
    assert main(argv) == 0
    results = _check_outputs(out)
    assert [(c["method"], c["victim"]) for c in results["cells"]] == [
        ("none", "sface"),
        ("fgsm", "sface"),
    ]
    none, fgsm = results["cells"]
    assert none["psnr"] == 100.0 and none["dodging"] == 0.0 and none["seconds_per_face"] == 0.0
    assert fgsm["psnr"] < 40 and fgsm["surrogates"] == ["dlib", "faceres", "mobileface"]
    assert len(fgsm["residual_power"]) == len(results["spectrum_frequencies"]) == 129

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pareidolia: ") and "not empty" in err and "--resume" in err

    cell = out / "cells" / "offline" / "sface" / "fgsm.npz"
    stamp = cell.stat().st_mtime_ns
    assert main([*argv, "--resume"]) == 0
    assert cell.stat().st_mtime_ns == stamp  # reused, not recomputed
    again = json.loads((out / "results.json").read_text())
    assert again["cells"][1]["psr"] == fgsm["psr"]
    assert main([*argv, "--resume", "--seed", "1"]) == 0  # another config: stale, recomputed
    assert cell.stat().st_mtime_ns != stamp


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], "the paper protocol needs --celeba DIR"),
        (["--celeba", "{tmp}/nowhere"], "nowhere: --celeba folder not found"),
    ],
)
def test_paper_protocol_names_missing_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], expected: str
) -> None:
    argv = ["bench", "--protocol", "paper", "--out", str(tmp_path / "o")]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("pareidolia: ") and expected in err
    assert not (tmp_path / "o").exists()


def _write_images(folder: Path, names: list[str], seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / name)


@pytest.fixture
def paper_data(tmp_path: Path) -> dict[str, Path]:
    celeba, ladn, weights = tmp_path / "celeba", tmp_path / "ladn", tmp_path / "fr"
    _write_images(celeba / "targets", [f"{i}.png" for pair in PAPER_TARGETS for i in pair], 0)
    _write_images(celeba / "test", [f"{i:03d}.png" for i in range(8)], 1)
    _write_images(ladn, [f"l{i}.jpg" for i in range(4)], 2)
    weights.mkdir()
    return {"celeba": celeba, "ladn": ladn, "fr": weights}


def test_paper_protocol_names_missing_weight_files(
    tmp_path: Path, paper_data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    (paper_data["fr"] / "ir152.pth").write_bytes(b"")
    argv = ["bench", "--protocol", "paper", "--out", str(tmp_path / "o")]
    argv += ["--celeba", str(paper_data["celeba"]), "--fr-weights", str(paper_data["fr"])]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "missing irse50.pth, facenet.pth, mobile_face.pth" in err
    assert not (tmp_path / "o").exists()


def test_paper_protocol_names_a_missing_target_photo(
    tmp_path: Path, paper_data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    (paper_data["celeba"] / "targets" / "085807.png").unlink()
    argv = ["bench", "--protocol", "paper", "--out", str(tmp_path / "o")]
    argv += ["--celeba", str(paper_data["celeba"]), "--fr-weights", str(paper_data["fr"])]
    assert main(argv) == 2
    assert "085807" in capsys.readouterr().err


class _TinyFR(nn.Module):
    """A stand-in paper FR model: faces in [0, 1] → 8-D features (differentiable)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 5, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x * 2 - 1).mean(dim=(2, 3))


def test_paper_protocol_runs_with_stand_in_models(
    tmp_path: Path,
    paper_data: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    one_thread: None,
) -> None:
    import pareidolia.zoo.paper_fr as paper_fr

    for spec in paper_fr.PAPER_FR.values():
        (paper_data["fr"] / spec.checkpoint).write_bytes(b"stand-in")
    seeds = {name: i for i, name in enumerate(paper_fr.PAPER_FR)}
    monkeypatch.setattr(paper_fr, "load_paper_fr", lambda name, path, device: _TinyFR(seeds[name]))
    out = tmp_path / "o"
    argv = ["bench", "--protocol", "paper", "--quick", "--quiet", "--out", str(out)]
    argv += ["--celeba", str(paper_data["celeba"]), "--ladn", str(paper_data["ladn"])]
    argv += ["--fr-weights", str(paper_data["fr"]), "--fr-preprocess", "crop"]
    argv += ["--methods", "none,map,fgsm", "--victims", "irse50"]
    assert main(argv) == 0
    results = _check_outputs(out)
    assert results["fr_preprocess"]["preprocess"] == "crop"
    assert {(c["dataset"], c["method"]) for c in results["cells"]} == {
        ("celeba-hq", "none"),
        ("celeba-hq", "fgsm"),
        ("ladn", "none"),
        ("ladn", "fgsm"),
    }
    assert all(c["faces"] == 4 for c in results["cells"])  # one face per target group
    assert any("MAP skipped" in n and "train" in n for n in results["notes"])
    groups = results["datasets"]["celeba-hq"]["groups"]
    assert [g["target"] for g in groups] == [t for t, _ in PAPER_TARGETS]


@pytest.mark.slow
def test_paper_protocol_trains_map_per_victim_and_target(
    tmp_path: Path,
    paper_data: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    one_thread: None,
) -> None:
    """With CelebA training faces, MAP runs on the paper protocol: one protector per target,
    tuned against the paper FR models (stand-ins here) other than the victim."""
    import pareidolia.zoo.paper_fr as paper_fr

    for spec in paper_fr.PAPER_FR.values():
        (paper_data["fr"] / spec.checkpoint).write_bytes(b"stand-in")
    seeds = {name: i for i, name in enumerate(paper_fr.PAPER_FR)}
    monkeypatch.setattr(paper_fr, "load_paper_fr", lambda name, path, device: _TinyFR(seeds[name]))
    _write_images(paper_data["celeba"] / "train", ["t0.png", "t1.png", "t2.png"], 3)
    out = tmp_path / "o"
    argv = ["bench", "--protocol", "paper", "--quick", "--quiet", "--out", str(out)]
    argv += ["--celeba", str(paper_data["celeba"]), "--fr-weights", str(paper_data["fr"])]
    argv += ["--methods", "none,map", "--victims", "facenet"]
    assert main(argv) == 0
    results = _check_outputs(out)
    none, map_cell = results["cells"]
    assert none["method"] == "none" and map_cell["method"] == "map" and map_cell["faces"] == 4
    assert 0 < map_cell["psnr"] < 100  # the faces were edited
    names = [f"facenet-{t}" for t, _ in PAPER_TARGETS]
    assert sorted(results["map"]) == sorted(names)
    for name in names:
        info = results["map"][name]
        assert info["source"] == "trained" and info["train_faces"] == 2  # --quick: two faces
        assert info["config"]["fr_zoo"] == "paper" and info["config"]["victim"] == "facenet"
        assert info["config"]["surrogates"] == ["ir152", "irse50", "mobile_face"]
        assert (out / "protectors" / f"{name}.safetensors").is_file()
    assert not results["notes"]


def test_the_paper_protocol_refuses_given_protectors(
    tmp_path: Path, paper_data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    given = _untuned_protector(tmp_path / "p.safetensors", "dlib")
    argv = ["bench", "--protocol", "paper", "--out", str(tmp_path / "o")]
    argv += ["--celeba", str(paper_data["celeba"]), "--fr-weights", str(paper_data["fr"])]
    assert main([*argv, "--protector", f"irse50={given}"]) == 2
    assert "--protector is for the offline protocol" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_protector_flags_are_checked(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="expected VICTIM=PATH"):
        parse_protectors(["dlib"])
    with pytest.raises(UserError, match="protector file not found"):
        parse_protectors([f"dlib={tmp_path / 'none.safetensors'}"])
    f = tmp_path / "p.safetensors"
    f.write_bytes(b"x")
    assert parse_protectors([f"dlib={f}"]) == {"dlib": f}
