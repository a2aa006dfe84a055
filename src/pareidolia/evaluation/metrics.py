"""The benchmark's numbers, free of any protocol: match rates at FAR levels, dodging, image
quality (PSNR, SSIM, CIEDE2000 colour shift, and FID / LPIPS with user-supplied weights), robustness variants and the
residual power spectrum (METHOD.md §5, figure 2).

Everything takes embeddings, decision rules or uint8 pictures (the images a user would get), so
each function can be checked on hand-made inputs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from pareidolia.colour import colour_shift
from pareidolia.errors import OptionError
from pareidolia.evaluation.variants import jpeg, rescale
from pareidolia.faces.blend import face_mask
from pareidolia.quality import psnr, ssim
from pareidolia.runtime import FAR
from pareidolia.zoo.thresholds import FARS

PSNR_CAP = 100.0  # dB given to identical images, so means stay finite (and JSON-valid)


class DecisionRule(Protocol):
    """A verification rule: a score between embeddings and a same-person decision per FAR
    (:class:`pareidolia.zoo.thresholds.Thresholds` is one)."""

    @property
    def metric(self) -> str: ...

    def score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor: ...

    def matches(self, score: torch.Tensor | float, far: str = FAR) -> torch.Tensor | bool: ...


def match_rates(
    scores: torch.Tensor, rule: DecisionRule, fars: Sequence[str] = FARS
) -> dict[str, float]:
    """Share of ``scores`` (N,) that ``rule`` calls the same person, per FAR."""
    out = {}
    for far in fars:
        decided = torch.as_tensor(rule.matches(scores, far))
        out[far] = float(decided.float().mean()) if decided.numel() else float("nan")
    return out


def impersonation(
    rule: DecisionRule,
    protected: torch.Tensor,
    target: torch.Tensor,
    fars: Sequence[str] = FARS,
) -> dict[str, object]:
    """PSR per FAR of protected embeddings (N, D) against the target's test embedding (1, D),
    and their mean score to it (cosine, or distance for Euclidean rules)."""
    scores = rule.score(protected, target)
    return {"psr": match_rates(scores, rule, fars), "mean_score": float(scores.float().mean())}


def dodging_rate(
    rule: DecisionRule, protected: torch.Tensor, original: torch.Tensor, far: str = FAR
) -> float:
    """Share of protected faces that no longer verify as their own original (row i against
    row i) at ``far``: protection that hides the person even where impersonation fails."""
    same = torch.as_tensor(rule.matches(rule.score(protected, original), far))
    return float((~same.bool()).float().mean())


# ----------------------------------------------------------------------------- image quality


def capped_psnr(a: np.ndarray, b: np.ndarray, cap: float = PSNR_CAP) -> float:
    """PSNR (dB) of two uint8 images, identical images (∞) given ``cap``."""
    return min(psnr(a, b), cap)


def quality(originals: np.ndarray, protected: np.ndarray) -> dict[str, float]:
    """Mean PSNR (capped) and SSIM of uint8 (N, H, W, 3) protected images to their originals."""
    pairs = list(zip(originals, protected, strict=True))
    return {
        "psnr": float(np.mean([capped_psnr(a, b) for a, b in pairs])),
        "ssim": float(np.mean([ssim(a, b) for a, b in pairs])),
    }


def colour_shifts(originals: np.ndarray, protected: np.ndarray) -> dict[str, float]:
    """Mean over faces of the CIEDE2000 colour shift's mean and 95th percentile over the face
    oval of uint8 (N, S, S, 3) working crops (:func:`pareidolia.colour.colour_shift`)."""
    mask = face_mask(originals.shape[1])
    shifts = [colour_shift(a, b, mask) for a, b in zip(originals, protected, strict=True)]
    return {
        "de00_mean": float(np.mean([m for m, _ in shifts])),
        "de00_p95": float(np.mean([p for _, p in shifts])),
    }


def robustness_variants(protected: np.ndarray) -> dict[str, np.ndarray]:
    """What an upload suffers, applied to uint8 (N, S, S, 3) protected crops, each variant
    returned at the crop size: JPEG quality 75, and a 0.5× downscale (area) scaled back up."""
    size = protected.shape[1]

    def half(img: np.ndarray) -> np.ndarray:
        small = rescale(img, 0.5)
        return rescale(small, size / small.shape[0])

    return {
        "jpeg75": np.stack([jpeg(img, 75) for img in protected]),
        "resize0.5": np.stack([half(img) for img in protected]),
    }


# ----------------------------------------------------------------------------- spectrum


def radial_power_spectrum(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged power spectrum of a square 2-D array.

    The 2-D power |FFT|² (mean removed, unnormalised DFT divided by the pixel count) is averaged
    over annuli of width one frequency step; bin k holds the frequencies whose radius rounds to
    k/S cycles per pixel, k = 0 … S/2 (Nyquist). Returns (frequencies in cycles/pixel, power).
    """
    if image.ndim != 2 or image.shape[0] != image.shape[1]:
        raise ValueError(f"expected a square 2-D array, got shape {image.shape}")
    s = image.shape[0]
    power = np.abs(np.fft.fft2(image - image.mean())) ** 2 / image.size
    f = np.fft.fftfreq(s)
    radius = np.rint(np.hypot(f[:, None], f[None, :]) * s).astype(int)
    nbins = s // 2 + 1
    inside = radius < nbins
    sums = np.bincount(radius[inside], weights=power[inside], minlength=nbins)
    counts = np.bincount(radius[inside], minlength=nbins)
    return np.arange(nbins) / s, sums / np.maximum(counts, 1)


def residual_spectrum(
    originals: np.ndarray, protected: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Radial power spectrum of the residual x̂ − x (uint8 (N, S, S, 3) in [0, 255] → values in
    [−1, 1]), averaged over colour channels and faces: where in frequency a method puts its
    change (figure 2 of the paper: makeup low, emotion edits medium-to-high)."""
    residual = protected.astype(np.float64) / 255.0 - originals.astype(np.float64) / 255.0
    spectra = [
        radial_power_spectrum(residual[i, :, :, c])[1]
        for i in range(residual.shape[0])
        for c in range(residual.shape[3])
    ]
    freqs = radial_power_spectrum(residual[0, :, :, 0])[0]
    return freqs, np.mean(spectra, axis=0)


# ----------------------------------------------------------------------------- FID, LPIPS


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to feature sets a (N, D) and b (M, D):
    ‖μa − μb‖² + tr(Σa + Σb − 2 (Σa^½ Σb Σa^½)^½), the symmetric form, by eigendecomposition."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = float(np.sqrt(np.clip(middle, 0, None)).sum())
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def load_torchscript(path: Path, option: str) -> torch.jit.ScriptModule:
    """A TorchScript module from ``path`` (never fetched); an :class:`OptionError` naming
    ``option`` (the setting that gave the path) when the file is missing or is not TorchScript."""
    if not path.is_file():
        raise OptionError(f"{path}: {{{option}}} file not found", option)
    try:
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; it still loads
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:  # torch reports bad archives with several exception types
        raise OptionError(
            f"{path}: {{{option}}} is not a loadable TorchScript file ({e})", option
        ) from e


def _check_output(out: object, rows: int, path: Path, option: str, what: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.shape[0] != rows or not out.is_floating_point():
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise OptionError(f"{path}: {{{option}}} returned {shape}, expected {what}", option)
    return out


class FidFeatures:
    """FID's feature extractor from a user-supplied TorchScript Inception (the clean-fid /
    StyleGAN ``inception-2015-12-05.pt`` contract: uint8-valued float (N, 3, 299, 299) images in
    [0, 255], called with ``return_features=True``, → (N, 2048) pool features)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.net = load_torchscript(path, "fid_weights")

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
        x = torch.nn.functional.interpolate(
            x, size=(299, 299), mode="bilinear", align_corners=False
        )
        try:
            out = self.net(x, return_features=True)
        except Exception as e:
            raise OptionError(
                f"{self.path}: {{fid_weights}} could not embed images ({e})", "fid_weights"
            ) from e
        feats = _check_output(out, len(images), self.path, "fid_weights", "(N, D) features")
        return feats.reshape(len(images), -1).double().numpy()

    def fid(self, originals: np.ndarray, protected: np.ndarray) -> float:
        """FID of protected images against their originals (uint8 (N, H, W, 3) each)."""
        return frechet_distance(self(originals), self(protected))


class Lpips:
    """LPIPS from a user-supplied TorchScript module: (a, b) of shape (N, 3, H, W) in [−1, 1]
    → (N,) or (N, 1, 1, 1) distances (e.g. ``torch.jit.trace`` of ``lpips.LPIPS(net='alex')``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.net = load_torchscript(path, "lpips_weights")

    @torch.no_grad()
    def __call__(self, originals: np.ndarray, protected: np.ndarray) -> float:
        def prep(u8: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 127.5 - 1.0

        try:
            out = self.net(prep(originals), prep(protected))
        except Exception as e:
            raise OptionError(
                f"{self.path}: {{lpips_weights}} could not compare images ({e})", "lpips_weights"
            ) from e
        d = _check_output(out, len(originals), self.path, "lpips_weights", "(N,) distances")
        return float(d.reshape(len(originals), -1).mean())


def optional_metric(name: str, compute: Callable[[], float] | None, flag: str) -> dict[str, object]:
    """``{"value": …}`` when weights were given, else ``{"value": None, "skipped": why}``."""
    if compute is None:
        return {
            "value": None,
            "skipped": f"{name} needs weights; pass {flag} PATH (nothing is fetched)",
        }
    return {"value": compute()}
