"""One device, dtype and base-network policy for every command (issue 15): ``--device``
(``auto`` = CUDA when present), ``--dtype`` (float32 by default, bfloat16 autocast) and
``--model SPEC`` spelled once, the device and dtype recorded in the reports and the protector
file, a protector refused on another base network, ``protect`` taking the base network a
protector records, and ``train --fr-zoo paper``."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from pareidolia.cli import build_parser, main
from pareidolia.diffusion.models import (
    SHIPPED_PRIOR_SPEC,
    SDEditArch,
    build_unet,
    canonical_spec,
    load_score_model,
    recorded_spec,
    shared_score_model,
)
from pareidolia.errors import ScoreModelError
from pareidolia.protector import Protector, ProtectorConfig, protector_base, save_protector

pytestmark = pytest.mark.usefixtures("module_one_thread")

NO_CUDA = not torch.cuda.is_available()
COMMANDS = (
    ["protect", "x.jpg"],
    ["web"],
    ["demo"],
    ["train", "--faces", "f", "--target", "t", "--out", "o"],
    ["apply", "--protector", "p", "c.png"],
    ["bench"],
    ["prior", "train", "--data", "d", "--out", "o"],
    ["prior", "eval"],
)


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_command_has_the_same_device_option(argv: list[str]) -> None:
    from pareidolia.commands.options import device_of

    args = build_parser().parse_args(argv)
    assert args.device == "auto"
    if NO_CUDA:
        assert device_of(args) == torch.device("cpu")
    assert build_parser().parse_args([*argv, "--device", "cuda:1"]).device == "cuda:1"
    assert hasattr(args, "model") or (argv[0] == "prior" and argv[1] == "train")


@pytest.mark.parametrize("argv", COMMANDS[:7], ids=lambda a: " ".join(a[:2]))
def test_every_command_that_runs_the_score_network_has_the_same_dtype_option(
    argv: list[str],
) -> None:
    from pareidolia.commands.options import dtype_of

    args = build_parser().parse_args(argv)
    assert args.dtype == "float32"  # CPU results stay as they were
    assert dtype_of(args, torch.device("cpu")) == torch.float32
    bf16 = build_parser().parse_args([*argv, "--dtype", "bfloat16"])
    assert dtype_of(bf16, torch.device("cpu")) == torch.bfloat16


@pytest.mark.parametrize(
    "argv",
    [
        ["protect", "PHOTO"],
        ["demo", "--out", "TMP"],
        ["web"],
        ["train", "--faces", "nope", "--target", "PHOTO", "--out", "OUT"],
        ["apply", "--protector", "nope.safetensors", "PHOTO"],
        ["bench", "--out", "TMP"],
    ],
    ids=lambda a: a[0],
)
def test_a_bad_dtype_is_one_line_before_any_work(
    argv: list[str], astronaut_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = {"PHOTO": str(astronaut_path), "OUT": str(tmp_path / "p.safetensors")}
    argv = [{**names, "TMP": str(tmp_path / "out")}.get(a, a) for a in argv]
    assert main([*argv, "--device", "cpu", "--dtype", "float16"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "pareidolia: --dtype 'float16': not a dtype (float32, bfloat16, auto)"
    ]
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.skipif(not NO_CUDA, reason="CUDA is available here")
@pytest.mark.parametrize(
    "argv",
    [
        ["protect", "PHOTO", "--device", "cuda"],
        ["demo", "--device", "cuda:0"],
        ["web", "--device", "cuda"],
        ["train", "--faces", "nope", "--target", "PHOTO", "--out", "OUT", "--device", "cuda"],
    ],
    ids=lambda a: a[0],
)
def test_cuda_without_cuda_is_one_line(
    argv: list[str], astronaut_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        {"PHOTO": str(astronaut_path), "OUT": str(tmp_path / "p.safetensors")}.get(a, a)
        for a in argv
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda" in err[0] and "no CUDA device" in err[0], err


def test_the_shipped_prior_has_one_spec() -> None:
    from pareidolia.diffusion.prior import SHIPPED_PRIOR_DIR

    for spec in ("prior", "prior:", "prior:default", f"prior:{SHIPPED_PRIOR_DIR}"):
        assert canonical_spec(spec) == SHIPPED_PRIOR_SPEC
    assert recorded_spec("prior:/elsewhere/site-packages/pareidolia/prior") == SHIPPED_PRIOR_SPEC
    assert (
        recorded_spec("diffusers:google/ddpm-celebahq-256") == "diffusers:google/ddpm-celebahq-256"
    )
    cpu = torch.device("cpu")
    assert shared_score_model("prior", cpu)[0] is shared_score_model("prior:default", "cpu")[0]


def test_an_uncached_hub_id_offline_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ScoreModelError) as caught:
        load_score_model("diffusers:pareidolia-test/no-such-model")
    message = str(caught.value)
    assert "\n" not in message and "not in the Hugging Face cache" in message


# ----------------------------------------------------------------------------- base networks


def _tiny_unet_folder(folder: Path) -> Path:
    """A random 32 px diffusers UNet saved as a folder (a base network other than the prior)."""
    torch.manual_seed(0)
    arch = SDEditArch(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=32)
    build_unet(arch).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_protector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An untuned protector file made on a tiny diffusers network, and that network's spec."""
    root = tmp_path_factory.mktemp("tiny")
    spec = f"diffusers:{_tiny_unet_folder(root / 'unet')}"
    unet, cfg = load_score_model(spec)
    p = Protector(copy.deepcopy(unet), unet, cfg, ProtectorConfig(n_inv=2, n_gen=2))
    return save_protector(root / "p.safetensors", p), spec


def test_protect_takes_the_base_network_the_protector_records(
    tiny_protector: tuple[Path, str],
) -> None:
    from pareidolia.commands.protect import protector_for
    from pareidolia.protect import ProtectOptions, run_record

    path, spec = tiny_protector
    assert protector_base(path).source == spec
    args = build_parser().parse_args(["protect", "x.jpg", "--protector", str(path)])
    p = protector_for(args, torch.device("cpu"))
    assert p.base_cfg.source == spec and p.device == torch.device("cpu")
    assert run_record(p, ProtectOptions()) == {"device": "cpu", "dtype": "float32", "model": spec}
    again = protector_for(args, torch.device("cpu"))
    assert again.base_unet is p.base_unet  # loaded once per process and device


def test_a_protector_on_another_base_network_is_one_line(
    tiny_protector: tuple[Path, str], astronaut_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, spec = tiny_protector
    argv = ["protect", str(astronaut_path), "--protector", str(path), "--model", "prior"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert captured.out == "" and len(err) == 1, err
    assert f"tuned from base model {spec}" in err[0] and f"--model {spec}" in err[0]


def test_the_shipped_protectors_are_refused_on_another_network(
    tiny_protector: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, spec = tiny_protector
    assert main(["demo", "--model", spec]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shipped protectors were made on the shipped prior" in err[0]
    assert f"--model {spec}" in err[0]


def test_an_uncached_hub_model_in_protect_is_one_line(
    tiny_protector: tuple[Path, str], astronaut_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = tiny_protector
    argv = ["protect", str(astronaut_path), "--protector", str(path)]
    assert main([*argv, "--model", "diffusers:pareidolia-test/no-such-model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pareidolia-test/no-such-model" in err[0]


def test_a_protector_without_offline_targets_is_refused_before_work(
    tiny_protector: tuple[Path, str],
    astronaut_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A protector with no target embedding of the offline zoo (as a ``--fr-zoo paper`` one)
    cannot be refined toward its target: one line, nothing written."""
    path, _ = tiny_protector
    out = tmp_path / "out"
    assert main(["protect", str(astronaut_path), "-o", str(out), "--protector", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no target embedding of an offline FR model" in err[0], err
    assert not out.exists() or not any(out.iterdir())


# ----------------------------------------------------------------------------- train --fr-zoo


@pytest.mark.parametrize("weights", [None, "empty"])
def test_train_paper_zoo_without_weights_is_one_line(
    weights: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--faces", str(tmp_path / "nope"), "--target", "t.jpg", "--fr-zoo", "paper"]
    argv += ["--out", str(tmp_path / "p.safetensors")]
    if weights:
        (tmp_path / weights).mkdir()
        argv += ["--fr-weights", str(tmp_path / weights)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for name in ("ir152.pth", "irse50.pth", "facenet.pth", "mobile_face.pth"):
        assert name in err[0]
    assert ("missing" in err[0]) == bool(weights)
    assert not (tmp_path / "p.safetensors").exists()


class _TinyFR(torch.nn.Module):
    """A paper FR model's random stand-in (their real weights are the user's)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x * 2 - 1).mean(dim=(2, 3))


def test_train_makes_a_paper_zoo_protector(
    tmp_path: Path,
    astronaut_path: Path,
    insightface_images: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``train --fr-zoo paper --fr-weights DIR``: the paper's models (stand-ins here, read
    through the benchmark's loader) are the surrogates, ir152 the held-out victim by default;
    the file records the device it was made on and its base network."""
    import pareidolia.zoo.paper_fr as paper_fr
    from pareidolia.diffusion.prior import default_prior
    from pareidolia.protector import load_protector

    weights = tmp_path / "fr"
    weights.mkdir()
    seeds = {name: i for i, name in enumerate(paper_fr.PAPER_FR)}
    for spec in paper_fr.PAPER_FR.values():
        (weights / spec.checkpoint).write_bytes(b"stand-in")
    monkeypatch.setattr(paper_fr, "load_paper_fr", lambda name, path, device: _TinyFR(seeds[name]))
    faces = tmp_path / "faces"
    faces.mkdir()
    shutil.copy(astronaut_path, faces / "astronaut.jpg")
    (tmp_path / "fast.toml").write_text("t0 = 20\nn_inv = 4\nn_gen = 2\nw_lap = 0.0\n")
    out = tmp_path / "p.safetensors"
    argv = [
        "train", "--faces", str(faces), "--target", str(insightface_images / "Tom_Hanks_54745.png"),
        "--fr-zoo", "paper", "--fr-weights", str(weights), "--epochs", "1", "--device", "auto",
        "--config", str(tmp_path / "fast.toml"), "--out", str(out), "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    p = load_protector(out, *default_prior())
    assert p.config.fr_zoo == "paper" and p.config.victim == "ir152"
    assert set(p.config.surrogates) == {"irse50", "facenet", "mobile_face"}
    assert set(p.target_embeddings) == {"ir152", "irse50", "facenet", "mobile_face"}
    assert p.run == {"device": "cpu" if NO_CUDA else "cuda:0", "dtype": "float32"}
    assert canonical_spec(protector_base(out).source) == SHIPPED_PRIOR_SPEC


# ----------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA device")
def test_protect_runs_on_cuda_and_says_so(
    astronaut_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["protect", str(astronaut_path), "-o", str(tmp_path), "--device", "cuda", "--json"]
    assert main([*argv, "--steps", "2", "--no-robustness"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["run"]["device"].startswith("cuda")
    assert report["photos"][0]["status"] == "protected"


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA device")
def test_bfloat16_on_cuda_adapts_protects_and_says_so(
    astronaut_path: Path,
    insightface_images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--dtype bfloat16`` on a GPU: ``auto`` picks it where the GPU supports it; a protector
    adapted (trained) and applied in bfloat16 protects the face, and the report says so; the
    MAP pass stays close to float32's (bound as on the CPU, where bfloat16 moved the shipped
    protector's output by 1e-3 on average, 0.011 at most)."""
    from pareidolia.default_protectors import default_protector
    from pareidolia.faces.align import to_tensor
    from pareidolia.locate import face_crops
    from pareidolia.protector import apply_protector
    from pareidolia.runtime import pick_dtype

    cuda = torch.device("cuda")
    if torch.cuda.is_bf16_supported(including_emulation=False):
        assert pick_dtype("auto", cuda) == torch.bfloat16
    target = str(insightface_images / "Tom_Hanks_54745.png")
    argv = ["protect", str(astronaut_path), "-o", str(tmp_path), "--device", "cuda", "--json"]
    argv += ["--dtype", "bfloat16", "--fast", "--target", target, "--adapt", "2"]
    assert main([*argv, "--no-robustness"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["run"]["dtype"] == "bfloat16" and report["run"]["device"].startswith("cuda")
    assert report["photos"][0]["status"] == "protected"
    protector = default_protector("happy", cuda)
    x = to_tensor(face_crops(astronaut_path, 256)).to(cuda)
    diff = apply_protector(protector, x, dtype=torch.bfloat16) - apply_protector(protector, x)
    assert float(diff.abs().mean()) < 3e-3 and float(diff.abs().max()) < 0.05


def test_prior_train_takes_the_shared_dtype_option() -> None:
    """``prior train --dtype bfloat16`` asks for bfloat16 autocast, and the command it records
    for the run spells it the same way (it parses back to the same config)."""
    import shlex

    from pareidolia.commands.prior import _config, command_line

    argv = ["prior", "train", "--data", "d", "--out", "o", "--device", "cpu"]
    assert not _config(build_parser().parse_args(argv)).bf16
    cfg = _config(build_parser().parse_args([*argv, "--dtype", "bfloat16"]))
    assert cfg.bf16
    words = shlex.split(command_line(cfg))
    assert "--dtype" in words and "--bf16" not in words
    assert _config(build_parser().parse_args([*words[1:], "--device", "cpu"])) == cfg
