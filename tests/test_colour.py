"""Colour: CIELAB and CIEDE2000 against scikit-image, chroma restoration's guarantees."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.color import deltaE_ciede2000, rgb2lab

from pareidolia.colour import (
    ciede2000,
    colour_shift,
    restore_chroma,
    restore_chroma_tensor,
    rgb_to_lab,
)


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-25, 26, a.shape), 0, 255).astype(np.uint8)
    return a, b


def test_lab_and_ciede2000_equal_scikit_image(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    assert np.abs(rgb_to_lab(a) - rgb2lab(a)).max() < 1e-3
    ours = ciede2000(rgb_to_lab(a), rgb_to_lab(b))
    theirs = deltaE_ciede2000(rgb2lab(a), rgb2lab(b))
    assert np.abs(ours - theirs).max() < 1e-3


def test_ciede2000_on_sharma_reference_pairs() -> None:
    # Sharma, Wu & Dalal (2005), table 1: pairs 1, 7 and 17
    lab1 = np.array([[50.0, 2.6772, -79.7751], [50.0, 0.0, 0.0], [50.0, 2.5, 0.0]])
    lab2 = np.array([[50.0, 0.0, -82.7485], [50.0, -1.0, 2.0], [73.0, 25.0, -18.0]])
    np.testing.assert_allclose(ciede2000(lab1, lab2), [2.0425, 2.3669, 27.1492], atol=1e-4)


def test_colour_shift_is_zero_for_identical_images_and_respects_the_mask(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    a, b = pair
    assert colour_shift(a, a) == (0.0, 0.0)
    mask = np.zeros(a.shape[:2], np.float32)
    mask[:10] = 1.0
    mean, p95 = colour_shift(a, b, mask)
    de = deltaE_ciede2000(rgb2lab(a), rgb2lab(b))[:10]
    assert mean == pytest.approx(de.mean(), abs=1e-3)
    assert p95 == pytest.approx(np.percentile(de, 95), abs=1e-3)


def test_restore_chroma_keeps_the_originals_colour_and_the_edits_luminance(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    a, b = pair
    a = (a // 2 + 64).astype(np.uint8)  # away from the cube's faces, so nothing clips
    b = np.clip(a.astype(int) + (b.astype(int) - 128) // 8, 0, 255).astype(np.uint8)
    out = restore_chroma(a, b)
    luma = np.array([0.299, 0.587, 0.114])
    assert np.abs(out @ luma - b @ luma).max() <= 1.0
    chroma = lambda x: x.astype(float) - (x @ luma)[..., None]  # noqa: E731
    assert np.abs(chroma(out) - chroma(a)).max() <= 1.5


def test_grey_stays_grey() -> None:
    rng = np.random.default_rng(1)
    g = rng.integers(0, 256, (16, 16, 1), dtype=np.uint8).repeat(3, -1)
    edited = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)  # a coloured edit
    out = restore_chroma(g, edited)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_the_tensor_version_agrees_and_passes_gradients(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    a, b = pair
    a = (a // 2 + 64).astype(np.uint8)
    ta = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
    tb = (torch.from_numpy(b).permute(2, 0, 1)[None].float() / 255).requires_grad_(True)
    out = restore_chroma_tensor(ta, tb)
    ref = restore_chroma(a, b).astype(np.float32) / 255
    # the numpy path clips per pixel in RGB; compare where nothing clipped
    got = out.detach()[0].permute(1, 2, 0).numpy()
    inside = (got > 0.001).all(-1) & (got < 0.999).all(-1)
    assert np.abs(got - ref)[inside].max() < 1.5 / 255
    out.sum().backward()
    assert tb.grad is not None and tb.grad.abs().sum() > 0
