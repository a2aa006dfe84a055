"""Score-network loading: the SDEdit checkpoint converter against an independent reference
forward, diffusers folders, hub ids offline, and the one-string dispatcher."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pareidolia.checksums import file_sha256
from pareidolia.diffusion import models
from pareidolia.diffusion.hashing import model_hash
from pareidolia.diffusion.models import (
    FETCHED_PAPER_SPEC,
    ScoreModelError,
    SDEditArch,
    build_unet,
    convert_sdedit_ckpt,
    load_diffusers,
    load_score_model,
    load_sdedit_ckpt,
    recorded_spec,
)
from pareidolia.download import PAPER_UNET, NotFetchedError

SMALL = SDEditArch(ch=32, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(8,), resolution=32)


# --- a minimal DDPM Model in the pytorch_diffusion layout, written from the DDPM paper's design --


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """DDPM's embedding: [sin, cos] of t·exp(−ln(10000)·k/(dim/2 − 1)), k = 0 … dim/2 − 1."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - 1))
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def group_norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, c_temb: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb_proj = nn.Linear(c_temb, c_out)
        self.norm2, self.conv2 = group_norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        if c_in != c_out:
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = group_norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        h = self.norm(x)
        q, k, v = (m(h).reshape(b, c, hgt * wid) for m in (self.q, self.k, self.v))
        weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c), dim=2)
        out = torch.einsum("bcj,bij->bci", v, weights).reshape(b, c, hgt, wid)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: ``block`` and ``attn`` lists, and a resampler."""

    def __init__(self) -> None:
        super().__init__()
        self.block, self.attn = nn.ModuleList(), nn.ModuleList()


class ReferenceModel(nn.Module):
    """The DDPM UNet with pytorch_diffusion's module names (``up`` indexed by level)."""

    def __init__(self, a: SDEditArch) -> None:
        super().__init__()
        self.a = a
        c_temb = 4 * a.ch
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(a.ch, c_temb), nn.Linear(c_temb, c_temb)])
        self.conv_in = nn.Conv2d(a.in_channels, a.ch, 3, padding=1)
        mult_in = (1, *a.ch_mult)
        res, c = a.resolution, a.ch
        self.down = nn.ModuleList()
        for i, m in enumerate(a.ch_mult):
            level = Level()
            for _ in range(a.num_res_blocks):
                level.block.append(ResnetBlock(c, a.ch * m, c_temb))
                c = a.ch * m
                if res in a.attn_resolutions:
                    level.attn.append(AttnBlock(c))
            if i != len(a.ch_mult) - 1:
                level.downsample = Downsample(c)
                res //= 2
            self.down.append(level)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1 = ResnetBlock(c, c, c_temb), AttnBlock(c)
        self.mid.block_2 = ResnetBlock(c, c, c_temb)
        self.up = nn.ModuleList()
        for i in reversed(range(len(a.ch_mult))):
            level = Level()
            for j in range(a.num_res_blocks + 1):
                skip = a.ch * (mult_in[i] if j == a.num_res_blocks else a.ch_mult[i])
                level.block.append(ResnetBlock(c + skip, a.ch * a.ch_mult[i], c_temb))
                c = a.ch * a.ch_mult[i]
                if res in a.attn_resolutions:
                    level.attn.append(AttnBlock(c))
            if i != 0:
                level.upsample = Upsample(c)
                res *= 2
            self.up.insert(0, level)
        self.norm_out, self.conv_out = group_norm(c), nn.Conv2d(c, a.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.temb.dense[1](F.silu(self.temb.dense[0](sinusoidal_embedding(t, self.a.ch))))
        hs = [self.conv_in(x)]
        for i, level in enumerate(self.down):
            for j, block in enumerate(level.block):
                h = block(hs[-1], temb)
                hs.append(level.attn[j](h) if len(level.attn) else h)
            if i != len(self.down) - 1:
                hs.append(level.downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            for j, block in enumerate(level.block):
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
                if len(level.attn):
                    h = level.attn[j](h)
            if i != 0:
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def reference(seed: int = 0) -> ReferenceModel:
    """A reference Model with every parameter (norms included) away from its default."""
    torch.manual_seed(seed)
    model = ReferenceModel(SMALL).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


# --- tests -----------------------------------------------------------------------------------------


def test_converted_unet_matches_the_reference_forward() -> None:
    ref = reference()
    unet = convert_sdedit_ckpt(ref.state_dict(), SMALL).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 37, 999])
    with torch.no_grad():
        expected, actual = ref(x, t), unet(x, t).sample
    assert expected.abs().mean() > 0.1  # a non-trivial output
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_paper_architecture_has_the_paper_size() -> None:
    unet = build_unet()
    assert sum(p.numel() for p in unet.parameters()) == 113_673_219


def test_missing_and_unknown_keys_are_named() -> None:
    sd = dict(reference().state_dict())
    del sd["up.2.attn.0.q.weight"]
    sd["down.0.block.0.bogus.weight"] = torch.zeros(1)
    with pytest.raises(
        ScoreModelError, match=r"up\.2\.attn\.0\.q\.weight.*down\.0\.block\.0\.bogus\.weight"
    ):
        convert_sdedit_ckpt(sd, SMALL)


def test_shape_mismatch_is_named() -> None:
    sd = dict(reference().state_dict())
    sd["conv_out.bias"] = torch.zeros(4)
    with pytest.raises(ScoreModelError, match=r"conv_out\.bias \(4,\) \(expected \(3,\)\)"):
        convert_sdedit_ckpt(sd, SMALL)


def test_dataparallel_prefix_is_dropped() -> None:
    sd = reference().state_dict()
    plain = convert_sdedit_ckpt(sd, SMALL)
    prefixed = convert_sdedit_ckpt({f"module.{k}": v for k, v in sd.items()}, SMALL)
    assert model_hash(plain) == model_hash(prefixed)


def test_load_sdedit_ckpt_checks_file_and_sha256(tmp_path: Path) -> None:
    path = tmp_path / "small.ckpt"
    torch.save(reference().state_dict(), path)
    unet, config = load_sdedit_ckpt(path, SMALL, expected_sha256=None)
    assert config.content_hash == model_hash(unet) and config.resolution == 32
    assert (config.beta_start, config.beta_end, config.num_train_timesteps) == (1e-4, 0.02, 1000)
    assert config.source == f"paper-ckpt:{path}"
    with pytest.raises(ScoreModelError, match="sha256"):
        load_sdedit_ckpt(path, SMALL)  # the default expects the paper's file
    with pytest.raises(
        ScoreModelError, match=r"celeba_hq\.ckpt.*gwang-kim/DiffusionCLIP-CelebA_HQ"
    ):
        load_sdedit_ckpt(tmp_path / "absent.ckpt")
    with pytest.raises(ScoreModelError, match="sha256"):
        load_score_model(f"paper-ckpt:{path}")


def test_paper_spec_reads_the_fetched_checkpoint_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``paper`` / ``paper-ckpt:`` is the file `pareidolia fetch paper-unet` writes, checked
    against the recorded sha256 and recorded under the portable spec ``paper-ckpt:``."""
    monkeypatch.setenv("PAREIDOLIA_CACHE", str(tmp_path))
    with pytest.raises(NotFetchedError, match=r"celeba_hq\.ckpt: not fetched; `pareidolia fetch"):
        load_score_model("paper")
    path = tmp_path / PAPER_UNET.file
    path.parent.mkdir()
    torch.save(reference().state_dict(), path)
    with pytest.raises(NotFetchedError, match="expected " + PAPER_UNET.sha256):
        load_score_model("paper-ckpt:")  # not the paper's file: its sha256 differs
    small = partial(load_sdedit_ckpt, arch=SMALL, expected_sha256=None)
    monkeypatch.setattr(models, "load_sdedit_ckpt", small)
    monkeypatch.setattr(models, "PAPER_UNET", replace(PAPER_UNET, sha256=file_sha256(path)))
    unet, config = load_score_model("paper")
    assert config.source == FETCHED_PAPER_SPEC and config.content_hash == model_hash(unet)
    assert recorded_spec(f"paper-ckpt:{tmp_path}/elsewhere/celeba_hq.ckpt") == FETCHED_PAPER_SPEC
    assert recorded_spec(f"paper-ckpt:{path}") == f"paper-ckpt:{path}"  # a file that is here


def test_load_diffusers_folder_both_layouts(tmp_path: Path) -> None:
    unet = convert_sdedit_ckpt(reference().state_dict(), SMALL)
    unet.save_pretrained(tmp_path / "pipe" / "unet")
    (tmp_path / "pipe" / "scheduler").mkdir()
    (tmp_path / "pipe" / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(
            {
                "beta_schedule": "linear",
                "beta_start": 2e-4,
                "beta_end": 0.01,
                "num_train_timesteps": 500,
            }
        )
    )
    loaded, config = load_diffusers(tmp_path / "pipe")
    assert config.content_hash == model_hash(unet) == model_hash(loaded)
    assert (config.beta_start, config.beta_end, config.num_train_timesteps) == (2e-4, 0.01, 500)
    assert config.alphas_cumprod().shape == (500,)

    unet.save_pretrained(tmp_path / "bare")  # no scheduler config: DDPM's schedule
    _, bare = load_score_model(str(tmp_path / "bare"))
    assert (bare.beta_start, bare.num_train_timesteps, bare.resolution) == (1e-4, 1000, 32)
    assert load_score_model(f"diffusers:{tmp_path / 'bare'}")[1] == bare

    (tmp_path / "pipe" / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"beta_schedule": "scaled_linear"})
    )
    with pytest.raises(ScoreModelError, match="linear"):
        load_diffusers(tmp_path / "pipe")
    with pytest.raises(ScoreModelError, match="not a diffusers model folder"):
        load_diffusers(tmp_path)


def test_hub_id_offline_names_the_files_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(
        ScoreModelError, match=r"unet/config\.json.*scheduler/scheduler_config\.json"
    ):
        load_diffusers("google/ddpm-celebahq-256", cache_dir=tmp_path)
    with pytest.raises(ScoreModelError, match="no such folder"):
        load_diffusers(str(tmp_path / "a" / "b" / "c"))
