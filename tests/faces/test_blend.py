"""Pasting an edited working crop back into the photo (pareidolia.faces.blend)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pareidolia.faces.align import Alignment, warp_crop
from pareidolia.faces.blend import blend_edit, face_mask, paste_residual

S = 64


def _similarity(scale: float, degrees: float, centre: tuple[float, float]) -> Alignment:
    """Photo → crop map that puts photo point ``centre`` at the crop centre."""
    m = cv2.getRotationMatrix2D(centre, degrees, scale)
    m[:, 2] += (S / 2 - centre[0], S / 2 - centre[1])
    return Alignment(m, S)


@pytest.fixture
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (180, 240, 3), dtype=np.uint8)


ALIGNMENTS = [
    _similarity(1.0, 0.0, (100.0, 90.0)),
    _similarity(0.6, 25.0, (130.0, 80.0)),  # face bigger than the crop, rotated
    _similarity(2.5, -40.0, (60.0, 120.0)),  # small face, rotated the other way
]


def test_mask_is_feathered_oval_zero_at_border() -> None:
    m = face_mask(S)
    assert m.shape == (S, S) and m.dtype == np.float32
    assert m.max() == pytest.approx(1.0) and m.min() == 0.0
    assert not m[0].any() and not m[-1].any() and not m[:, 0].any() and not m[:, -1].any()
    centre_row = m[int(0.54 * S)]
    assert 0.0 < centre_row[S // 2 - int(0.31 * S)] < 1.0  # soft rim, not a hard edge
    assert np.all(np.diff(centre_row[: S // 2]) >= -1e-6)  # rises monotonically to the centre


@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_identity_edit_leaves_photo_unchanged(photo: np.ndarray, alignment: Alignment) -> None:
    crop = warp_crop(photo, alignment)
    out = blend_edit(photo, crop, crop.copy(), alignment)
    assert out.tobytes() == photo.tobytes()
    assert out is not photo


@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_outside_warped_mask_unchanged(photo: np.ndarray, alignment: Alignment) -> None:
    rng = np.random.default_rng(1)
    residual = rng.normal(0, 40, (S, S, 3)).astype(np.float32)
    out = paste_residual(photo, residual, alignment)
    support = cv2.warpAffine(
        face_mask(S), alignment.inverse, (photo.shape[1], photo.shape[0]), flags=cv2.INTER_LINEAR
    )
    outside = cv2.dilate((support > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) == 0
    assert outside.any()
    assert np.array_equal(out[outside], photo[outside])
    assert not np.array_equal(out, photo)


@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_constant_residual_follows_the_feathered_mask(alignment: Alignment) -> None:
    grey = np.full((180, 240, 3), 100, np.uint8)
    out = paste_residual(grey, np.full((S, S, 3), 50.0, np.float32), alignment)
    expected = 100 + 50 * cv2.warpAffine(
        face_mask(S), alignment.inverse, (240, 180), flags=cv2.INTER_LINEAR
    )
    diff = np.abs(out.astype(np.float64) - expected[:, :, None])
    assert diff.max() <= 1.0  # rounding only
    centre = np.round(alignment.inverse @ np.array([S / 2, 0.54 * S, 1.0])).astype(int)
    assert out[centre[1], centre[0]].tolist() == [150, 150, 150]  # full edit inside the face
    values = np.unique(out[:, :, 0])
    assert len(values) > 10  # a gradual falloff, not a hard step


def test_faces_near_the_photo_edge_are_clipped(photo: np.ndarray) -> None:
    alignment = _similarity(1.0, 10.0, (5.0, 5.0))  # most of the crop lies outside the photo
    out = paste_residual(photo, np.full((S, S, 3), 30.0, np.float32), alignment)
    assert out.shape == photo.shape
    assert (out.astype(int) - photo.astype(int)).min() >= 0


def test_values_are_clipped_to_uint8(photo: np.ndarray) -> None:
    alignment = ALIGNMENTS[0]
    out = paste_residual(photo, np.full((S, S, 3), 1000.0, np.float32), alignment)
    assert out.dtype == np.uint8
    centre = np.round(alignment.inverse @ np.array([S / 2, 0.54 * S, 1.0])).astype(int)
    assert out[centre[1], centre[0]].tolist() == [255, 255, 255]


def test_mismatched_crops_are_refused(photo: np.ndarray) -> None:
    crop = warp_crop(photo, ALIGNMENTS[0])
    with pytest.raises(ValueError, match="differ"):
        blend_edit(photo, crop, crop[:-1], ALIGNMENTS[0])
