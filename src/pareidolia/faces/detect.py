"""Face detection with YuNet (OpenCV ``FaceDetectorYN``; the int8 ONNX shipped in the package).

Large photos are detected on a downscaled copy (longest side ``DETECT_MAX_SIDE``) and the
results mapped back, so a 40-megapixel photo costs the same as a 1,280 px one. Faces whose
inter-ocular span is below the minimum size are reported as skipped, never silently dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

YUNET_FILE = Path(__file__).resolve().parents[1] / "zoo" / "weights" / "yunet_2023mar_int8bq.onnx"
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
DETECT_MAX_SIDE = 1280
MIN_FACE_PX = 48  # default: faces narrower than this (box width, original pixels) are skipped


@dataclass(frozen=True)
class Face:
    """One detected face in original-image pixel coordinates."""

    box: tuple[float, float, float, float]  # x, y, width, height
    landmarks: np.ndarray  # (5, 2): eyes (image-left first), nose tip, mouth corners
    score: float

    @property
    def size(self) -> float:
        """Width of the detection box in pixels."""
        return float(self.box[2])


@cache
def _detector() -> cv2.FaceDetectorYN:
    if not YUNET_FILE.exists():
        raise FileNotFoundError(
            f"{YUNET_FILE}: YuNet detector missing; rebuild with tools/convert_weights.py"
        )
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    cv2.setNumThreads(max(1, os.cpu_count() or 1))
    return cv2.FaceDetectorYN.create(str(YUNET_FILE), "", (320, 320), 0.6, 0.3, 5000)


def detect_faces(rgb: np.ndarray, score_threshold: float = 0.6) -> list[Face]:
    """All faces in an RGB uint8 image, largest first."""
    h, w = rgb.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if scale < 1.0:
        bgr = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    det = _detector()
    det.setScoreThreshold(score_threshold)
    det.setInputSize((bgr.shape[1], bgr.shape[0]))
    _, rows = det.detect(bgr)
    faces: list[Face] = []
    for r in rows if rows is not None else []:
        r = r.astype(np.float64) / np.r_[np.full(14, scale), 1.0]
        faces.append(
            Face(box=(r[0], r[1], r[2], r[3]), landmarks=r[4:14].reshape(5, 2), score=float(r[14]))
        )
    faces.sort(key=lambda f: -f.size)
    return faces


def split_by_size(
    faces: list[Face], min_size: float = MIN_FACE_PX
) -> tuple[list[Face], list[Face]]:
    """(faces large enough to protect, faces too small)."""
    keep = [f for f in faces if f.size >= min_size]
    small = [f for f in faces if f.size < min_size]
    return keep, small
