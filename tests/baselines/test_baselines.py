"""Noise-based baselines on real faces: each pulls two real people (the astronaut and a face of
insightface's group photo) toward a third (Tom Hanks) in the white-box surrogates, within its
L∞ budget, reproducibly.

Runs fast: two crops, the two fastest surrogates (mobileface, faceres) and few iterations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from pareidolia.baselines import BASELINES, TIPIM, TIPIMConfig
from pareidolia.baselines.base import check_crops, project
from pareidolia.baselines.tidim import diverse_input, gaussian_kernel, smooth
from pareidolia.baselines.tipim import PatchMMD
from pareidolia.faces.align import to_tensor, warp_crop, working_alignment
from pareidolia.faces.detect import detect_faces
from pareidolia.io import read_photo
from pareidolia.objectives.identity import IdentityLoss, SurrogateEnsemble

EPS = 8 / 255
# Few iterations keep the file fast. Per method: overrides, and the least rise in mean surrogate
# cosine to the target that each crop must show, about half the smaller rise measured on the
# two crops (torch 2.13 CPU; before 0.149 / 0.224).
SETTINGS: dict[str, tuple[dict[str, float | int], float]] = {
    "fgsm": ({}, 0.15),  # measured → 0.488 / 0.505
    "pgd": ({"steps": 10}, 0.3),  # → 0.727 / 0.755
    "mi-fgsm": ({"steps": 10}, 0.25),  # → 0.647 / 0.706
    "ti-dim": ({"steps": 10}, 0.2),  # → 0.544 / 0.601
    "tip-im": ({"steps": 10}, 0.15),  # → 0.423 / 0.482
    "lum-eot": ({"steps": 8, "copies": 1, "lr": 4 / 255}, 0.15),  # → 0.470 / 0.533
}


def _crop(rgb: np.ndarray, face: int = 0) -> Tensor:
    lm = detect_faces(rgb)[face].landmarks
    return to_tensor(warp_crop(rgb, working_alignment(lm, 256)))


@pytest.fixture(scope="module")
def group(insightface_images: Path) -> np.ndarray:
    return read_photo(insightface_images / "t1.jpg").rgb


@pytest.fixture(scope="module")
def crops(astronaut_rgb: np.ndarray, group: np.ndarray) -> Tensor:
    return torch.cat([_crop(astronaut_rgb), _crop(group, 0)])


@pytest.fixture(scope="module")
def ensemble() -> SurrogateEnsemble:
    return SurrogateEnsemble(["mobileface", "faceres"])


@pytest.fixture(scope="module")
def loss(ensemble: SurrogateEnsemble, insightface_images: Path) -> IdentityLoss:
    hanks = read_photo(insightface_images / "Tom_Hanks_54745.png").rgb  # 112 px aligned chip
    padded = np.pad(hanks, ((94, 94), (94, 94), (0, 0)), mode="edge")  # room for the detector
    return IdentityLoss(ensemble, _crop(padded))


def mean_similarity(loss: IdentityLoss, x: Tensor) -> Tensor:
    """Cosine to the target (B,), averaged over the surrogates."""
    with torch.no_grad():
        return torch.stack(list(loss.similarities(x).values())).mean(0)


def assert_in_budget(out: Tensor, x: Tensor, eps: float) -> None:
    assert out.shape == x.shape and out.dtype == x.dtype
    assert (out - x).abs().max() <= eps + 1e-6
    assert out.min() >= 0 and out.max() <= 1


@pytest.fixture(scope="module")
def protected(crops: Tensor, loss: IdentityLoss) -> Callable[[str], Tensor]:
    """Each method's output on ``crops`` with its test settings, computed once."""
    cache: dict[str, Tensor] = {}

    def run(name: str) -> Tensor:
        if name not in cache:
            overrides, _ = SETTINGS[name]
            cache[name] = BASELINES[name](epsilon=EPS, **overrides).protect(crops, loss)
        return cache[name]

    return run


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_baseline_impersonates_target_within_budget(
    name: str, crops: Tensor, loss: IdentityLoss, protected: Callable[[str], Tensor]
) -> None:
    out = protected(name)
    before, after = mean_similarity(loss, crops), mean_similarity(loss, out)
    print(f"{name}: {before.tolist()} -> {after.tolist()}")
    assert (after - before).min() > SETTINGS[name][1]
    assert_in_budget(out, crops, EPS)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_same_seed_same_output(name: str, crops: Tensor, loss: IdentityLoss) -> None:
    overrides = {"steps": 2} if name != "fgsm" else {}
    a = BASELINES[name](**overrides).protect(crops[:1], loss)
    b = BASELINES[name](**overrides).protect(crops[:1], loss)
    assert torch.equal(a, b)
    if name in {"pgd", "ti-dim", "tip-im"}:  # the randomised methods: the seed drives them
        assert not torch.equal(BASELINES[name](seed=1, **overrides).protect(crops[:1], loss), a)


def test_larger_budget_is_respected(crops: Tensor, loss: IdentityLoss) -> None:
    out = BASELINES["pgd"](epsilon=16 / 255, steps=3).protect(crops[:1], loss)
    assert_in_budget(out, crops[:1], 16 / 255)
    assert (out - crops[:1]).abs().max() > EPS  # the larger ball is used, not just allowed


def test_tipim_naturalness_lowers_patch_mmd(
    crops: Tensor, loss: IdentityLoss, protected: Callable[[str], Tensor]
) -> None:
    mmd = PatchMMD(crops, 16, TIPIMConfig.mmd_bandwidths)
    plain = TIPIM(TIPIMConfig(steps=10, naturalness=0.0)).protect(crops, loss)
    natural = protected("tip-im")  # the default γ = 100
    print(f"patch MMD² γ=0: {mmd(plain).tolist()}, γ=100: {mmd(natural).tolist()}")
    assert (mmd(natural) < 0.8 * mmd(plain)).all()
    assert (mean_similarity(loss, natural) - mean_similarity(loss, crops)).min() > 0.15


def test_tipim_greedy_selection_reaches_some_target(
    crops: Tensor, loss: IdentityLoss, ensemble: SurrogateEnsemble, group: np.ndarray
) -> None:
    other = IdentityLoss(ensemble, _crop(group, 1))
    out = TIPIM(TIPIMConfig(steps=10)).protect_targets(crops, [loss, other])
    assert_in_budget(out, crops, EPS)
    before = torch.maximum(mean_similarity(loss, crops), mean_similarity(other, crops))
    after = torch.maximum(mean_similarity(loss, out), mean_similarity(other, out))
    print(f"tip-im, two targets (best of): {before.tolist()} -> {after.tolist()}")
    assert (after - before).min() > 0.15


def test_registry_builds_every_method_with_frozen_configs() -> None:
    assert set(BASELINES) == {"fgsm", "pgd", "mi-fgsm", "ti-dim", "tip-im", "lum-eot"}
    for name, build in BASELINES.items():
        method = build(epsilon=16 / 255)
        assert method.config.epsilon == 16 / 255, name
        with pytest.raises(dataclasses.FrozenInstanceError):
            method.config.epsilon = 0.5
    assert BASELINES["pgd"]().config.alpha == pytest.approx(2 / 255)
    with pytest.raises(ValueError, match="epsilon"):
        BASELINES["pgd"](epsilon=8)  # a 0–255 budget by mistake
    with pytest.raises(ValueError, match="kernel_size"):
        BASELINES["ti-dim"](kernel_size=4)


def test_crops_are_checked() -> None:
    with pytest.raises(ValueError, match="float"):
        check_crops(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_crops(torch.full((1, 3, 8, 8), 255.0))
    with pytest.raises(ValueError, match="shape"):
        check_crops(torch.zeros(3, 8, 8))


def test_projection_clips_to_ball_and_image_range() -> None:
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1)
    out = project(x + torch.tensor([-1.0, 1.0, 1.0]).view(1, 3, 1, 1), x, 0.1)
    assert torch.allclose(out.flatten(), torch.tensor([0.0, 0.6, 1.0]))


def test_ti_kernel_is_a_normalised_symmetric_gaussian() -> None:
    k = gaussian_kernel(7)
    assert k.shape == (7, 7) and k.sum() == pytest.approx(1.0)
    assert torch.allclose(k, k.T) and torch.allclose(k, k.flip(0))
    assert k.argmax() == 24  # the centre
    g = torch.ones(1, 3, 32, 32)
    assert torch.allclose(smooth(g, k)[..., 8:-8, 8:-8], g[..., 8:-8, 8:-8])  # a constant stays


def test_diverse_input_keeps_size_and_applies_with_its_probability() -> None:
    x = torch.rand(2, 3, 64, 64)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(diverse_input(x, gen, probability=0.0, ratio=1.1), x)
    out = diverse_input(x, gen, probability=1.0, ratio=1.1)
    assert out.shape == x.shape and not torch.equal(out, x)


def test_patch_mmd_is_zero_at_the_reference_and_grows_with_noise() -> None:
    x = torch.rand(1, 3, 64, 64)
    mmd = PatchMMD(x, 16, (4 / 255, 16 / 255, 64 / 255))
    small, large = (project(x + s * torch.randn_like(x), x, 1.0) for s in (2 / 255, 8 / 255))
    assert mmd(x).abs().item() < 1e-6
    assert 0 < mmd(small).item() < mmd(large).item()


def test_lum_eot_never_changes_chroma_without_a_chroma_field(
    crops: Tensor, loss: IdentityLoss
) -> None:
    out = BASELINES["lum-eot"](epsilon=EPS, steps=3, copies=1).protect(crops, loss)
    d = out - crops
    inside = ((crops > 0.05) & (crops < 0.95)).all(1, keepdim=True).expand_as(d)
    assert (d - d.mean(1, keepdim=True))[inside].abs().max() < 1e-5  # equal on R, G, B
    assert d.abs().max() > EPS / 4
    with_chroma = BASELINES["lum-eot"](epsilon=EPS, steps=3, copies=1, chroma_grid=16).protect(
        crops, loss
    )
    dc = with_chroma - crops
    assert (dc - dc.mean(1, keepdim=True))[inside].abs().max() > 1e-3  # the chroma field acts
