"""Detection and alignment on real photos; differentiable chips agree with direct crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pareidolia.faces.align import (
    ChipSampler,
    crop_chip,
    to_tensor,
    to_uint8,
    warp_crop,
    working_alignment,
)
from pareidolia.faces.detect import detect_faces, split_by_size
from pareidolia.faces.templates import CHIPS, working_template
from pareidolia.io import read_photo


def test_astronaut_has_one_face_with_sane_landmarks(astronaut_rgb: np.ndarray) -> None:
    faces = detect_faces(astronaut_rgb)
    assert len(faces) == 1
    lm = faces[0].landmarks
    assert lm[0, 0] < lm[1, 0]  # image-left eye first
    assert lm[2, 1] > lm[0, 1] and lm[3, 1] > lm[2, 1]  # nose below eyes, mouth below nose


def test_group_photo_finds_every_face(insightface_images: Path) -> None:
    faces = detect_faces(read_photo(insightface_images / "t1.jpg").rgb)
    assert len(faces) == 6


def test_blank_image_has_no_face() -> None:
    assert detect_faces(np.full((300, 400, 3), 127, np.uint8)) == []


def test_small_faces_are_split_off_not_dropped(astronaut_rgb: np.ndarray) -> None:
    small = np.ascontiguousarray(astronaut_rgb[::4, ::4])  # face becomes ~22 px wide
    faces = detect_faces(np.pad(small, ((100, 100), (100, 100), (0, 0)), mode="edge"))
    keep, skipped = split_by_size(faces, min_size=48)
    assert keep == [] and len(skipped) == len(faces)


def test_large_photo_detected_at_full_resolution_coordinates(astronaut_rgb: np.ndarray) -> None:
    big = np.kron(astronaut_rgb, np.ones((6, 6, 1), np.uint8))  # 3072 px: detected downscaled
    small_face = detect_faces(astronaut_rgb)[0]
    big_face = detect_faces(big)[0]
    # YuNet's landmarks shift by a few pixels between input scales; a mapping error would be ×2.4
    assert np.allclose(big_face.landmarks / 6, small_face.landmarks, atol=6.0)


def test_alignment_puts_landmarks_on_the_template(astronaut_rgb: np.ndarray) -> None:
    face = detect_faces(astronaut_rgb)[0]
    al = working_alignment(face.landmarks, 256)
    mapped = np.c_[face.landmarks, np.ones(5)] @ al.matrix.T
    assert np.abs(mapped - working_template(256).points).max() < 12  # a similarity fit of 5 points
    back = np.c_[mapped, np.ones(5)] @ al.inverse.T
    assert np.allclose(back, face.landmarks, atol=1e-6)


@pytest.mark.parametrize("chip", sorted(c for c in CHIPS if c != "working"))
def test_differentiable_chip_matches_direct_crop_and_passes_gradients(
    astronaut_rgb: np.ndarray, chip: str
) -> None:
    face = detect_faces(astronaut_rgb)[0]
    crop = warp_crop(astronaut_rgb, working_alignment(face.landmarks, 256))
    x = to_tensor(crop).requires_grad_(True)
    out = ChipSampler(chip, 256)(x)
    assert out.shape == (1, 3, CHIPS[chip].size, CHIPS[chip].size)
    direct = crop_chip(astronaut_rgb, face.landmarks, chip).astype(np.float64)
    assert (
        np.abs(to_uint8(out)[0].astype(np.float64) - direct).mean() < 6.0
    )  # two resamplings differ slightly
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
