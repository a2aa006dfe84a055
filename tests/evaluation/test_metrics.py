"""The benchmark's metrics on cases whose answer is known by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pareidolia.errors import OptionError, UserError
from pareidolia.evaluation import metrics as M
from pareidolia.evaluation.protocol import target_test_photo
from pareidolia.zoo.thresholds import Thresholds

COSINE = Thresholds("toy", "cosine", {"0.1": 0.2, "0.01": 0.5, "0.001": 0.8}, {})
EUCLID = Thresholds("toy", "euclidean", {"0.1": 0.7, "0.01": 0.6, "0.001": 0.5}, {})


def _unit(*angles_deg: float) -> torch.Tensor:
    a = torch.tensor(angles_deg, dtype=torch.float64) * math.pi / 180
    return torch.stack([a.cos(), a.sin()], dim=1)


def test_psr_counts_cosine_matches_at_every_far() -> None:
    # cosines to the target (angle 0): cos 0° = 1, cos 45° ≈ 0.707, cos 70° ≈ 0.342, cos 90° = 0
    protected, target = _unit(0, 45, 70, 90), _unit(0)
    out = M.impersonation(COSINE, protected, target)
    assert out["psr"] == {"0.1": 0.75, "0.01": 0.5, "0.001": 0.25}
    assert out["mean_score"] == pytest.approx(
        (1 + math.cos(math.pi / 4) + math.cos(70 * math.pi / 180)) / 4
    )


def test_psr_counts_euclidean_matches_below_the_threshold() -> None:
    target = torch.zeros(1, 3)
    protected = torch.tensor([[0.4, 0, 0], [0.55, 0, 0], [0.65, 0, 0], [1.0, 0, 0]])
    rates = M.match_rates(EUCLID.score(protected, target), EUCLID)
    assert rates == {"0.1": 0.75, "0.01": 0.5, "0.001": 0.25}


def test_dodging_counts_faces_that_no_longer_match_their_original() -> None:
    original = _unit(0, 0, 0, 0)
    protected = _unit(10, 50, 80, 170)  # cos: 0.98, 0.64, 0.17, −0.98 against threshold 0.5
    assert M.dodging_rate(COSINE, protected, original, "0.01") == 0.5


def test_psnr_of_identical_images_is_capped_and_of_known_noise_exact() -> None:
    a = np.full((16, 16, 3), 100, np.uint8)
    assert M.capped_psnr(a, a) == M.PSNR_CAP
    b = a + 1  # MSE 1 → 20·log10(255) dB
    assert M.capped_psnr(a, b) == pytest.approx(20 * math.log10(255))
    q = M.quality(np.stack([a, a]), np.stack([a, b]))
    assert q["psnr"] == pytest.approx((M.PSNR_CAP + 20 * math.log10(255)) / 2)
    assert q["ssim"] <= 1.0


@pytest.mark.parametrize("k", [5, 20, 40])
def test_power_spectrum_of_a_sinusoid_peaks_at_its_frequency(k: int) -> None:
    s = 128
    y, x = np.mgrid[0:s, 0:s]
    image = np.sin(2 * np.pi * (k * x + 0 * y) / s)
    freqs, power = M.radial_power_spectrum(image)
    assert len(freqs) == s // 2 + 1 and freqs[-1] == pytest.approx(0.5)
    assert int(np.argmax(power)) == k
    assert freqs[k] == pytest.approx(k / s)
    # all the energy sits in that ring
    assert power[k] > 1e6 * np.delete(power, k).max()


def test_residual_spectrum_is_zero_for_no_change_and_averages_faces() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    freqs, power = M.residual_spectrum(x, x)
    assert freqs.shape == power.shape == (17,) and not power.any()
    noisy = np.clip(x.astype(int) + rng.integers(-8, 9, x.shape), 0, 255).astype(np.uint8)
    _, p2 = M.residual_spectrum(x, noisy)
    # white noise: flat spectrum, roughly the same power in low and high rings
    assert 0.5 < p2[2:8].mean() / p2[8:].mean() < 2


def test_frechet_distance_of_shifted_gaussians_is_the_squared_shift() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert M.frechet_distance(a, a + np.array([1.0, 2.0, 0.0])) == pytest.approx(5.0, abs=1e-6)


def test_robustness_variants_keep_the_crop_size() -> None:
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    variants = M.robustness_variants(x)
    assert set(variants) == {"jpeg75", "resize0.5"}
    assert all(v.shape == x.shape and v.dtype == np.uint8 for v in variants.values())


def test_optional_metrics_are_skipped_without_weights_and_refuse_bad_files(tmp_path: Path) -> None:
    skipped = M.optional_metric("FID", None, "--fid-weights")
    assert skipped["value"] is None and "--fid-weights" in str(skipped["skipped"])
    with pytest.raises(UserError, match="not found"):
        M.FidFeatures(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torchscript archive")
    with pytest.raises(UserError, match="lpips_weights is not a loadable TorchScript") as caught:
        M.Lpips(bad)
    assert isinstance(caught.value, OptionError)  # the command line says the flag instead
    flag = caught.value.worded({"lpips_weights": "--lpips-weights"})
    assert flag.startswith(f"{bad}: --lpips-weights is not a loadable TorchScript")


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_lpips_runs_a_user_torchscript_module(tmp_path: Path) -> None:
    class L1(torch.nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (a - b).abs().mean(dim=(1, 2, 3))

    path = tmp_path / "l1.pt"
    torch.jit.script(L1()).save(str(path))
    x = np.zeros((2, 8, 8, 3), np.uint8)
    y = np.full((2, 8, 8, 3), 255, np.uint8)
    assert M.Lpips(path)(x, y) == pytest.approx(2.0)


def test_target_test_photo_is_a_different_picture_of_the_same_size() -> None:
    crop = np.random.default_rng(0).integers(0, 200, (64, 64, 3), dtype=np.uint8)
    other = target_test_photo(crop)
    assert other.shape == crop.shape and other.dtype == np.uint8
    assert not np.array_equal(other, crop)
