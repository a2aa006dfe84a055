"""Landmark refinement follows head roll that YuNet's five points miss."""

from __future__ import annotations

import cv2
import numpy as np

from pareidolia.evaluation.variants import rotate
from pareidolia.faces.detect import detect_faces
from pareidolia.faces.refine import five_from_68
from pareidolia.locate import locate_faces


def _roll(points: np.ndarray) -> float:
    d = points[1] - points[0]
    return float(np.degrees(np.arctan2(d[1], d[0])))


def test_refined_landmarks_track_rotation(astronaut_rgb: np.ndarray) -> None:
    h, w = astronaut_rgb.shape[:2]
    base = locate_faces(astronaut_rgb)[0].landmarks
    for angle in (8.0, -8.0, 15.0):
        rotated = rotate(astronaut_rgb, angle)
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        truth = np.c_[base, np.ones(5)] @ m.T
        refined = locate_faces(rotated)[0].landmarks
        raw = detect_faces(rotated)[0].landmarks
        assert abs(_roll(refined) - _roll(truth)) < 3.0
        assert np.abs(refined - truth).mean() <= np.abs(raw - truth).mean() + 0.5


def test_five_from_68_uses_eye_centres_nose_tip_mouth_corners() -> None:
    pts = np.zeros((68, 2))
    pts[36:42] = [1.0, 2.0]
    pts[42:48] = [3.0, 2.0]
    pts[30], pts[48], pts[54] = [2.0, 3.0], [1.0, 4.0], [3.0, 4.0]
    assert np.allclose(five_from_68(pts), [[1, 2], [3, 2], [2, 3], [1, 4], [3, 4]])
