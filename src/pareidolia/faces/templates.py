"""Five-point alignment templates: the working crop and each face model's own chip.

Points are (left eye, right eye, nose tip, left mouth corner, right mouth corner) in pixels of
the chip, "left" meaning the subject's right eye as it appears on the left of the image (the
convention of the ArcFace template and of YuNet's landmarks).

Because every chip is a similarity transform of the same five points, the map from the working
crop to any model chip is one fixed affine matrix; :func:`chip_affine` returns it so crops can
be taken differentiably with ``grid_sample``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pareidolia.runtime import WORKING_SIZE

# ArcFace / insightface 112x112 template (also used by SFace and MobileFace).
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

# dlib's mean face shape (landmarks 17-67, unit square) reduced to the five points:
# eye centres = mean of points 36-41 / 42-47, nose tip = 30, mouth corners = 48 / 54.
_DLIB_UNIT_5 = np.array(
    [
        [0.225492, 0.215990],
        [0.774508, 0.215990],
        [0.490127, 0.515625],
        [0.254149, 0.780233],
        [0.726104, 0.780233],
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class ChipTemplate:
    """Where the five points lie in a square chip of ``size`` pixels."""

    size: int
    points: np.ndarray  # (5, 2) float64, pixel coordinates


def _scaled_arcface(size: int, scale: float, shift_y: float = 0.0) -> ChipTemplate:
    """ArcFace template zoomed by ``scale`` about the chip centre (scale < 1 shows more context)."""
    unit = ARCFACE_112 / 112.0
    pts = (unit - 0.5) * scale + 0.5
    pts[:, 1] += shift_y
    return ChipTemplate(size, pts * size)


def _dlib_chip(size: int, padding: float) -> ChipTemplate:
    """dlib ``get_face_chip_details`` convention: mean shape padded by ``padding`` on each side."""
    pts = (_DLIB_UNIT_5 + padding) / (1.0 + 2.0 * padding)
    return ChipTemplate(size, pts * size)


def _ffhq_working(size: int) -> ChipTemplate:
    """FFHQ / CelebA-HQ-style crop: side = 2·max(2·eye distance, 1.8·eye-to-mouth),
    centred 0.1·eye-to-mouth below the eyes (Karras et al.'s alignment script), computed on the
    ArcFace template so every face lands on the same five points."""
    a = ARCFACE_112
    eye_c = (a[0] + a[1]) / 2
    mouth_c = (a[3] + a[4]) / 2
    eye_to_eye = np.linalg.norm(a[1] - a[0])
    eye_to_mouth = np.linalg.norm(mouth_c - eye_c)
    side = 2.0 * max(2.0 * eye_to_eye, 1.8 * eye_to_mouth)
    centre = eye_c + 0.1 * (mouth_c - eye_c)
    pts = (a - centre) / side + 0.5
    return ChipTemplate(size, pts * size)


CHIPS: dict[str, ChipTemplate] = {
    "working": _ffhq_working(WORKING_SIZE),
    "arcface112": ChipTemplate(112, ARCFACE_112.copy()),
    "dlib150": _dlib_chip(150, 0.25),
    "faceres224": _scaled_arcface(224, 0.80),
    "faceapi112": _scaled_arcface(112, 0.85, shift_y=-0.02),
    "emotion64": _scaled_arcface(64, 0.85, shift_y=-0.02),
    # FaceNet (facenet128): the ArcFace framing, as SFace's, at 160 px (not tuned)
    "facenet160": _scaled_arcface(160, 1.0),
}


def working_template(size: int) -> ChipTemplate:
    """The working crop's template at any resolution (the score network may run at 128 or 256)."""
    return _ffhq_working(size)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) taking ``src``
    points onto ``dst`` points; returns the 2x3 matrix. Umeyama (1991), without reflection."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var_s = (s0**2).sum() / len(src)
    scale = (sig * d).sum() / var_s
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def chip_affine(src_chip: ChipTemplate, dst_chip: ChipTemplate) -> np.ndarray:
    """2x3 matrix mapping pixel coordinates of ``src_chip`` to those of ``dst_chip``."""
    return umeyama(src_chip.points, dst_chip.points)
