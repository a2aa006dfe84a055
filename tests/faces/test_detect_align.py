"""Detection and alignment on real photos; differentiable chips agree with direct crops."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
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


# ----------------------------------------------------------------------------- large photos


def _small_astronaut_on_grey(
    astronaut_rgb: np.ndarray, scale: float, size: tuple[int, int], at: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """A grey photo of ``size`` (w, h) with the astronaut photo shrunk by ``scale`` at ``at``;
    returns the photo and where the face's centre lies."""
    import cv2

    small = cv2.resize(astronaut_rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    photo = np.full((size[1], size[0], 3), 118, np.uint8)
    x, y = at
    photo[y : y + small.shape[0], x : x + small.shape[1]] = small
    face = detect_faces(astronaut_rgb)[0]
    cx, cy = face.box[0] + face.box[2] / 2, face.box[1] + face.box[3] / 2
    return photo, (round(x + cx * scale), round(y + cy * scale))


def _centre(box: tuple[float, ...]) -> np.ndarray:
    return np.array([box[0] + box[2] / 2, box[1] + box[3] / 2])


def test_small_face_in_a_large_photo_is_found_in_full_resolution_tiles(
    astronaut_rgb: np.ndarray,
) -> None:
    """A 26 px face in a 4,400 px photo is 7 px in the 1,280 px copy, where YuNet cannot see
    it; the tiles find it, at its place, once, even lying across a tile seam."""
    import cv2

    from pareidolia.faces.detect import DETECT_MAX_SIDE

    for x in (600, DETECT_MAX_SIDE - 60):  # inside the first tile; across its right edge
        photo, centre = _small_astronaut_on_grey(astronaut_rgb, 0.29, (4400, 1400), (x, 500))
        scale = DETECT_MAX_SIDE / 4400
        assert detect_faces(cv2.resize(photo, None, fx=scale, fy=scale)) == []
        (face,) = detect_faces(photo)
        assert 20 <= face.side <= 32
        assert np.abs(_centre(face.box) - centre).max() < 6


def test_large_face_across_tiles_is_one_face(astronaut_rgb: np.ndarray) -> None:
    """A face larger than the tiles' overlap, across a seam: found whole by the downscaled
    pass; the tiles' cut copies of it are left out."""
    from pareidolia.faces.detect import DETECT_MAX_SIDE

    # the face (~360 px) spans 1,040-1,400: across both edges of the first tiles' overlap
    photo, centre = _small_astronaut_on_grey(astronaut_rgb, 4.0, (3600, 2400), (328, 200))
    assert centre[0] - 180 < DETECT_MAX_SIDE - 106 and centre[0] + 180 > DETECT_MAX_SIDE
    (face,) = detect_faces(photo)
    assert face.side > 300
    assert np.abs(_centre(face.box) - centre).max() < 40


def test_tiles_cover_the_photo_with_the_overlap() -> None:
    from pareidolia.faces.detect import tile_starts

    assert tile_starts(1000, 1280, 100) == [0]
    for length, overlap in ((1281, 50), (4400, 116), (10_000, 266)):
        starts = tile_starts(length, 1280, overlap)
        assert starts[0] == 0 and starts[-1] == length - 1280
        assert all(b - a <= 1280 - overlap for a, b in itertools.pairwise(starts))


def test_suppression_keeps_the_best_of_duplicates_and_distinct_neighbours() -> None:
    from pareidolia.faces.detect import Face, merge, suppress

    lm = np.zeros((5, 2))
    a = Face((0, 0, 100, 100), lm, 0.9)
    dup = Face((5, 5, 100, 100), lm, 0.8)
    neighbour = Face((70, 0, 100, 100), lm, 0.7)  # IoU 0.18: another face
    assert suppress([dup, a, neighbour]) == [a, neighbour]
    assert merge([dup], [a, neighbour]) == [dup, neighbour]  # the first set wins a duplicate


def test_turn_is_small_for_a_frontal_face(astronaut_rgb: np.ndarray) -> None:
    from pareidolia.faces.detect import MAX_TURN, turn

    lm = detect_faces(astronaut_rgb)[0].landmarks
    assert turn(lm) < 0.1
    profile = lm.copy()
    profile[2, 0] = lm[1, 0] + 5  # the nose beyond the far eye
    assert turn(profile) > MAX_TURN


def test_crop_reads_only_its_region_and_reflects_like_the_whole_photo(
    astronaut_rgb: np.ndarray,
) -> None:
    """``warp_crop`` of a face half beyond the border equals warping the whole photo."""
    import cv2

    face = detect_faces(astronaut_rgb)[0]
    for shift in ((-200.0, 0.0), (0.0, 380.0), (0.0, 0.0)):
        al = working_alignment(face.landmarks + np.array(shift), 256)
        flags = {"flags": cv2.INTER_LINEAR, "borderMode": cv2.BORDER_REFLECT_101}
        whole = cv2.warpAffine(astronaut_rgb, al.matrix, (256, 256), **flags)
        assert np.abs(warp_crop(astronaut_rgb, al).astype(int) - whole).max() <= 1


def test_outside_share(astronaut_rgb: np.ndarray) -> None:
    from pareidolia.faces.align import outside_share
    from pareidolia.faces.blend import face_mask

    face = detect_faces(astronaut_rgb)[0]
    h, w = astronaut_rgb.shape[:2]
    al = working_alignment(face.landmarks, 256)
    assert outside_share(al, h, w) == 0.0
    eyes_x = face.landmarks[:2, 0].mean()
    half = working_alignment(face.landmarks - np.array([eyes_x, 0.0]), 256)  # cut down the middle
    assert 0.4 < outside_share(half, h, w, face_mask(256)) < 0.6


def test_inside_mask_and_the_chips_black_beyond_the_border(astronaut_rgb: np.ndarray) -> None:
    from pareidolia.faces.align import crop_chip, inside_mask, outside_share
    from pareidolia.faces.blend import face_mask

    face = detect_faces(astronaut_rgb)[0]
    h, w = astronaut_rgb.shape[:2]
    assert inside_mask(working_alignment(face.landmarks, 256), h, w).all()
    eyes_x = face.landmarks[:2, 0].mean()
    lm = face.landmarks - np.array([eyes_x, 0.0])  # the photo's left edge between the eyes
    half = working_alignment(lm, 256)
    inside = inside_mask(half, h, w)
    oval = face_mask(256)
    assert np.isclose(1.0 - (oval * inside).sum() / oval.sum(), outside_share(half, h, w, oval))
    # the crop's columns left of the photo's edge (x = 0 maps to crop x = matrix[0, 2] on the
    # eyes' row, the alignment being near-upright) are outside, those right of it inside
    edge = half.matrix[0, 2] + half.matrix[0, 1] * lm[:2, 1].mean()
    row = round(half.matrix[1, 2] + half.matrix[1, 1] * lm[:2, 1].mean())
    assert not inside[row, : int(edge) - 1].any() and inside[row, int(edge) + 2 :].all()
    # the working crop reflects the photo there; the FR chips are black there
    beyond = cv2.erode((~inside).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # off the seam
    assert warp_crop(astronaut_rgb, half)[beyond].mean() > 20
    assert warp_crop(astronaut_rgb, half, zero_border=True)[beyond].max() == 0
    shifted = astronaut_rgb[:, round(eyes_x) :]
    chip = crop_chip(shifted, lm + np.array([eyes_x - round(eyes_x), 0.0]), "arcface112")
    assert chip[:, :20].max() == 0 and chip[:, 70:].mean() > 20
