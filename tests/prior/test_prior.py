"""The offline face prior: training lowers the loss, resuming is exact, evaluation reports every
field, the shipped-prior loader checks its sha256, and the face set split is as documented."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pareidolia.checksums import file_sha256
from pareidolia.cli import build_parser, main
from pareidolia.commands.prior import _config
from pareidolia.diffusion.models import ScoreModelError, load_score_model
from pareidolia.diffusion.prior import (
    SHIPPED_PRIOR_DIR,
    SHIPPED_PRIOR_SHA256,
    WEIGHTS,
    default_prior,
    load_prior,
)
from pareidolia.diffusion.schedule import alphas_cumprod, linear_betas
from pareidolia.prior.config import PriorArch, TrainConfig
from pareidolia.prior.data import FaceSampler
from pareidolia.prior.dcgan import DCGANGenerator
from pareidolia.prior.facesets import PHOTOS, FaceCrop, load_faceset, make_faceset, write_faceset
from pareidolia.prior.model import build_prior_unet
from pareidolia.prior.train import CHECKPOINT, LOG, train
from pareidolia.quality import psnr, ssim

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: one torch thread

TINY = PriorArch(resolution=32, block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=8)


def _crops(rgb: np.ndarray, n: int, size: int = 64) -> list[np.ndarray]:
    """``n`` different square patches of a photo around its face, as stand-in working crops."""
    import cv2

    out = []
    for i in range(n):
        x0, y0 = 120 + 12 * i, 30 + 8 * i
        out.append(
            cv2.resize(
                rgb[y0 : y0 + 200, x0 : x0 + 200], (size, size), interpolation=cv2.INTER_AREA
            )
        )
    return out


@pytest.fixture(scope="module")
def faceset(tmp_path_factory: pytest.TempPathFactory, astronaut_rgb: np.ndarray) -> Path:
    """A small face set (4 training and 2 held-out crops of 64 px) with a random DCGAN."""
    root = tmp_path_factory.mktemp("faceset")
    src = PHOTOS[0].file
    crops = _crops(astronaut_rgb, 6)
    faces = [
        FaceCrop(f"face-{i}", "train" if i < 4 else "heldout", src, i, None, np.zeros((5, 2)), c)
        for i, c in enumerate(crops)
    ]
    torch.manual_seed(0)
    dcgan = root / "random-dcgan.safetensors"
    save_file(DCGANGenerator().state_dict(), str(dcgan))
    return write_faceset(root / "set", faces, dcgan)


def _cfg(out: Path, data: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        out=str(out), data=str(data), steps=6, batch=4, arch=TINY, warmup=1, log_every=2,
        synthetic_ratio=0.5, device="cpu",
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def _fixed_loss(unet: torch.nn.Module, x0: torch.Tensor) -> float:
    """ε-matching loss on a fixed batch, fixed timesteps and fixed noise."""
    ac = alphas_cumprod(linear_betas(1e-4, 0.02, 1000)).float()
    t = torch.tensor([20, 120, 250, 400])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
    a = ac[t].view(-1, 1, 1, 1)
    with torch.no_grad():
        pred = unet(a.sqrt() * x0 + (1 - a).sqrt() * noise, t).sample
    return float(torch.nn.functional.mse_loss(pred, noise))


def test_training_lowers_the_loss(tmp_path: Path, faceset: Path) -> None:
    cfg = _cfg(tmp_path / "run", faceset, steps=40, lr=2e-3, synthetic_ratio=0.0, augment=False)
    result = train(cfg, progress=False)
    crops = [c for _, c in load_faceset(faceset).faces("train")]
    x0 = torch.from_numpy(np.stack([c[::2, ::2] for c in crops])).permute(0, 3, 1, 2).float()
    x0 = x0 / 127.5 - 1.0
    torch.manual_seed(cfg.seed)
    before = _fixed_loss(build_prior_unet(TINY).eval(), x0)
    after = _fixed_loss(load_prior(result.model_dir)[0], x0)
    assert after < 0.7 * before, (before, after)
    assert result.step == 40 and len(result.losses) == 40
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10])


def _log_losses(run: Path) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (run / LOG).read_text().splitlines()]


def test_interrupt_and_resume_reproduce_the_uninterrupted_run(
    tmp_path: Path, faceset: Path
) -> None:
    whole = train(_cfg(tmp_path / "whole", faceset), progress=False)

    def interrupt_at_3(step: int, loss: float) -> None:
        if step == 3:
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C: acted on after this step

    cut = _cfg(tmp_path / "cut", faceset)
    with pytest.raises(KeyboardInterrupt):
        train(cut, progress=False, on_step=interrupt_at_3)
    assert torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=True)["step"] == 3
    resumed = train(cut, resume=True, progress=False)

    assert resumed.losses == whole.losses[3:]
    assert _log_losses(tmp_path / "cut") == _log_losses(tmp_path / "whole")
    a = torch.load(tmp_path / "whole" / CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=True)
    for key in ("unet", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    assert file_sha256(whole.model_dir / WEIGHTS) == file_sha256(resumed.model_dir / WEIGHTS)
    with pytest.raises(Exception, match="already there"):
        train(cut, progress=False)
    with pytest.raises(Exception, match="batch"):
        train(_cfg(tmp_path / "cut", faceset, batch=2), resume=True, progress=False)


def _tiny_prior(run: Path, faceset: Path) -> Path:
    """A barely trained tiny prior (one step), as ``prior train`` exports it."""
    return train(_cfg(run, faceset, steps=1), progress=False).model_dir


def test_prior_eval_reports_every_field(
    tmp_path: Path, faceset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _tiny_prior(tmp_path / "run", faceset)
    argv = ["prior", "eval", "--model", f"prior:{folder}", "--faces", str(faceset), "--t0", "40"]
    assert main([*argv, "--sweep-t0", "20,40", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["t0"] == 40 and report["resolution"] == 32 and len(report["faces"]) == 2
    face = report["faces"][0]
    assert {"psnr", "ssim", "noised_psnr", "fr", "fr_all_match", "expression_before",
            "expression_after", "expression_same"} <= set(face)  # fmt: skip
    assert set(face["fr"]) == {"dlib", "sface", "faceres", "mobileface"}
    assert {"score", "threshold", "match"} == set(face["fr"]["sface"])
    summary = report["summary"]
    assert {"psnr_mean", "ssim_mean", "noised_psnr_mean", "fr_pass_rate", "fr_all_pass_rate",
            "expression_unchanged_rate"} <= set(summary)  # fmt: skip
    assert [r["t0"] for r in report["sweep"]] == [20, 40]
    assert report["sweep"][1]["psnr_mean"] == summary["psnr_mean"]
    assert main([*argv, "--write-card"]) == 0
    assert "| PSNR (dB), mean |" in (folder / "MODEL_CARD.md").read_text()
    assert "mean / pass rate" in capsys.readouterr().out


def test_prior_loaders_check_the_weights(tmp_path: Path, faceset: Path) -> None:
    folder = _tiny_prior(tmp_path / "run", faceset)
    digest = file_sha256(folder / WEIGHTS)
    unet, config = default_prior(folder, digest)
    assert not unet.training
    assert config.resolution == 32 and config.num_train_timesteps == 1000
    assert load_score_model(f"prior:{folder}")[1].content_hash == config.content_hash
    with pytest.raises(ScoreModelError, match="sha256"):
        default_prior(folder, "0" * 64)
    with pytest.raises(ScoreModelError, match="ships no offline face prior"):
        default_prior(tmp_path / "absent", digest)
    assert load_prior(tmp_path / "run")[1].content_hash == config.content_hash  # a run folder
    with pytest.raises(ScoreModelError, match="not a prior folder"):
        load_prior(tmp_path)


@pytest.mark.skipif(SHIPPED_PRIOR_SHA256 is None, reason="no prior shipped in this version")
def test_the_shipped_prior_loads_with_its_recorded_sha256() -> None:
    assert file_sha256(SHIPPED_PRIOR_DIR / WEIGHTS) == SHIPPED_PRIOR_SHA256
    unet, config = load_score_model("prior:")
    assert config.resolution == 128 and config.num_train_timesteps == 1000
    x = torch.zeros(1, 3, 128, 128)
    with torch.no_grad():
        assert unet(x, torch.tensor([60])).sample.shape == x.shape


def test_parser_defaults_are_the_train_config_defaults() -> None:
    args = build_parser().parse_args(["prior", "train", "--out", "x"])
    assert _config(args) == TrainConfig(out="x")


def test_psnr_and_ssim() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    assert psnr(a, a) == float("inf") and ssim(a, a) == pytest.approx(1.0)
    mse = np.mean((a.astype(float) - b) ** 2)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / mse))
    metrics = pytest.importorskip("skimage.metrics")
    expected = metrics.structural_similarity(
        a,
        b,
        channel_axis=2,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    assert ssim(a, b) == pytest.approx(expected, abs=1e-6)


def test_faceset_split_is_the_documented_one(tmp_path: Path) -> None:
    from pareidolia.prior.facesets import DCGAN_WEIGHTS, make_faceset, packages_dir

    needed = [p.file.path for p in PHOTOS if p.file.package != "pareidolia"] + [DCGAN_WEIGHTS.path]
    if not all((packages_dir() / path).is_file() for path in needed):
        pytest.skip("needs `python tools/packages.py face-api insightface gan-face-generate`")
    fs = load_faceset(make_faceset(tmp_path / "set"))
    entries = fs.manifest["faces"]
    train_sources = {e["source"]["name"] for e in entries if e["split"] == "train"}
    held = [e["name"] for e in entries if e["split"] == "heldout"]
    assert sum(e["split"] == "train" for e in entries) == 22
    assert train_sources == {f"faceapi-sample{i}" for i in range(1, 7)}
    assert held == [
        "astronaut-0",
        *[f"insightface-t1-{i}" for i in range(6)],
        "insightface-tom-hanks-0",
    ]
    assert all(len(e["sha256"]) == 64 and len(e["source"]["sha256"]) == 64 for e in entries)
    name, crop = fs.faces("heldout")[0]
    assert name == "astronaut-0" and crop.shape == (256, 256, 3)
    assert fs.dcgan_path is not None


@pytest.mark.slow
@pytest.mark.skipif(SHIPPED_PRIOR_SHA256 is None, reason="no prior shipped in this version")
def test_the_shipped_prior_meets_its_round_trip_targets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue targets on the held-out real faces at t0 = 60: PSNR ≥ 28 dB, all four FR models keep
    the identity on ≥ 95 % of faces, the expression label is kept on ≥ 90 %; and the noised round
    trip (which an untrained network fails, ~20 dB) shows the prior knows faces."""
    faces = tmp_path / "faces"
    make_faceset(faces, synthetic=False)
    assert main(["prior", "eval", "--faces", str(faces), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["faces"] == 8
    assert summary["psnr_mean"] >= 28.0
    assert summary["fr_all_pass_rate"] >= 0.95
    assert summary["expression_unchanged_rate"] >= 0.90
    assert summary["noised_psnr_mean"] >= 27.0


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_face_sampler_all_real_or_all_synthetic(astronaut_rgb: np.ndarray, ratio: float) -> None:
    """A batch may be all real or all synthetic (the synthetic count is binomial)."""
    torch.manual_seed(0)
    sampler = FaceSampler(_crops(astronaut_rgb, 2), 32, DCGANGenerator().eval(), ratio)
    x = sampler.batch(3, np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, 32, 32)
    assert torch.isfinite(x).all() and x.min() >= -1.0 and x.max() <= 1.0
