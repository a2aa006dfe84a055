"""Face detection with YuNet (OpenCV ``FaceDetectorYN``; the int8 ONNX shipped in the package).

A photo larger than ``DETECT_MAX_SIDE`` is searched twice: downscaled whole (longest side
``DETECT_MAX_SIDE``, for the large faces, found as before) and at full resolution in
overlapping tiles of that side (for the small faces the downscaled copy loses); faces found
twice are merged by non-maximum suppression. One tile's pixels are copied at a time, so memory
does not grow with the photo.
Faces below the minimum size, and faces too hard to align, are reported as skipped with their
reason (:mod:`pareidolia.protect`), never silently dropped.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pareidolia.errors import WeightsError

YUNET_FILE = Path(__file__).resolve().parents[1] / "zoo" / "weights" / "yunet_2023mar_int8bq.onnx"
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
DETECT_MAX_SIDE = 1280  # the downscaled copy's longest side, and the full-resolution tile side
NMS_IOU = 0.3  # boxes overlapping more are one face (YuNet's own suppression threshold)
# the smallest face (box width, pixels of the downscaled copy) the downscaled pass is relied on
# to find; tiles overlap by this at full resolution, so every face too small for that pass lies
# whole in some tile
COARSE_MIN_FACE_PX = 32
TILE_EDGE_PX = 8  # a tile's face within this of an inner tile edge may be cut: left to the others
MIN_FACE_PX = 20  # default: faces whose box's shorter side is below this are skipped
CROP_MIN_FACE_PX = 48  # faces whose box is shorter than this are not trained on nor a target
# faces below this (box's shorter side) are refined with SMALL_FACE_COPIES EOT copies, not the
# usual three: the others' random 0.5-1x down-scales would mostly be faces under 20 px
SMALL_FACE_PX = 40
SMALL_FACE_COPIES = 1
# refined landmarks that resize the face more than this against YuNet's are the 68-point net
# losing the face (a profile, marks drawn over it): YuNet's five points are kept then
MAX_REFINE_ZOOM = 1.5
MAX_TURN = 0.6  # nose this far off the eye-mouth midline, in eye distances (~45°): turned away
MAX_OUTSIDE = 0.3  # more of the face oval than this beyond the photo: cut by the border


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

    @property
    def side(self) -> float:
        """The detection box's shorter side in pixels (what the minimum size is measured on)."""
        return float(min(self.box[2], self.box[3]))


_per_thread = threading.local()


def _detector() -> cv2.FaceDetectorYN:
    """This thread's YuNet detector (OpenCV, on the CPU), made on first use. Each call sets
    the detector's input size and threshold, so one detector shared by threads (the web
    server's) would race; one per thread does not."""
    detector: cv2.FaceDetectorYN | None = getattr(_per_thread, "detector", None)
    if detector is None:
        detector = _per_thread.detector = _new_detector()
    return detector


def _new_detector() -> cv2.FaceDetectorYN:
    if not YUNET_FILE.exists():
        raise WeightsError(
            f"{YUNET_FILE}: YuNet detector missing; rebuild with tools/convert_weights.py"
        )
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    cv2.setNumThreads(max(1, os.cpu_count() or 1))
    return cv2.FaceDetectorYN.create(str(YUNET_FILE), "", (320, 320), 0.6, NMS_IOU, 5000)


def _run(rgb: np.ndarray, scale: float, origin: tuple[int, int], threshold: float) -> list[Face]:
    """YuNet on ``rgb`` resized by ``scale``; faces in the coordinates of a photo in which
    ``rgb`` starts at ``origin`` (x, y)."""
    h, w = rgb.shape[:2]
    img = rgb
    if scale < 1.0:
        img = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    bgr = np.ascontiguousarray(img[:, :, ::-1])
    det = _detector()
    det.setScoreThreshold(threshold)
    det.setInputSize((bgr.shape[1], bgr.shape[0]))
    _, rows = det.detect(bgr)
    shift = np.r_[origin, 0.0, 0.0, np.tile(origin, 5), 0.0]  # box x, y, w, h, 5 points, score
    faces = []
    for r in rows if rows is not None else []:
        r = r.astype(np.float64) / np.r_[np.full(14, scale), 1.0] + shift
        faces.append(
            Face(box=(r[0], r[1], r[2], r[3]), landmarks=r[4:14].reshape(5, 2), score=float(r[14]))
        )
    return faces


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Offsets of tiles of ``tile`` px covering ``length`` px, neighbours sharing at least
    ``overlap`` px, evenly spread so the last one ends at the border."""
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _inside_tile(face: Face, x0: int, y0: int, x1: int, y1: int, w: int, h: int) -> bool:
    """Whether ``face`` keeps clear of the tile's inner edges (the photo's own border is no
    cut: a face there is what it is in the photo)."""
    bx, by, bw, bh = face.box
    m = TILE_EDGE_PX
    return (
        (x0 == 0 or bx >= x0 + m)
        and (y0 == 0 or by >= y0 + m)
        and (x1 == w or bx + bw <= x1 - m)
        and (y1 == h or by + bh <= y1 - m)
    )


def _tiles(rgb: np.ndarray, overlap: int, threshold: float) -> list[Face]:
    """Faces found at full resolution in overlapping tiles, those a tile cuts left out."""
    h, w = rgb.shape[:2]
    t = DETECT_MAX_SIDE
    faces = []
    for y0 in tile_starts(h, t, overlap):
        for x0 in tile_starts(w, t, overlap):
            x1, y1 = min(w, x0 + t), min(h, y0 + t)
            found = _run(rgb[y0:y1, x0:x1], 1.0, (x0, y0), threshold)
            faces += [f for f in found if _inside_tile(f, x0, y0, x1, y1, w, h)]
    return faces


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x, y, width, height) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def suppress(faces: list[Face], threshold: float = NMS_IOU) -> list[Face]:
    """Non-maximum suppression: of faces whose boxes overlap by more than ``threshold`` (IoU),
    the best-scoring one."""
    return merge([], sorted(faces, key=lambda f: -f.score), threshold)


def merge(first: list[Face], then: list[Face], threshold: float = NMS_IOU) -> list[Face]:
    """``first``, then each face of ``then`` (in order) that overlaps none kept so far by more
    than ``threshold`` (IoU)."""
    kept = list(first)
    for f in then:
        if all(iou(f.box, k.box) <= threshold for k in kept):
            kept.append(f)
    return kept


def detect_faces(rgb: np.ndarray, score_threshold: float = 0.6) -> list[Face]:
    """All faces in an RGB uint8 image, largest first (see the module docstring for large
    photos: a face the downscaled pass sees at :data:`COARSE_MIN_FACE_PX` or more is taken from
    it, any other from the tiles where they found it)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    faces = _run(rgb, scale, (0, 0), score_threshold)
    if scale < 1.0:
        overlap = min(
            DETECT_MAX_SIDE // 2, math.ceil(COARSE_MIN_FACE_PX / scale) + 2 * TILE_EDGE_PX
        )
        sure = [f for f in faces if f.size * scale >= COARSE_MIN_FACE_PX]
        unsure = [f for f in faces if f.size * scale < COARSE_MIN_FACE_PX]
        tiles = suppress(_tiles(rgb, overlap, score_threshold))
        faces = merge(merge(sure, tiles), unsure)
    faces.sort(key=lambda f: -f.size)
    return faces


def turn(landmarks: np.ndarray) -> float:
    """How far a face is turned sideways: the nose tip's distance from the line through the
    eyes' and the mouth corners' midpoints, in eye distances (0 frontal, ~0.3 at 30°, ~0.55 at
    45°; a profile's collapsed eye distance gives large values)."""
    eyes = (landmarks[0] + landmarks[1]) / 2
    mouth = (landmarks[3] + landmarks[4]) / 2
    iod = float(np.linalg.norm(landmarks[1] - landmarks[0]))
    axis = mouth - eyes
    length = float(np.linalg.norm(axis))
    if iod < 1e-6 or length < 1e-6:
        return math.inf
    nose = landmarks[2] - eyes
    return abs(float(axis[0] * nose[1] - axis[1] * nose[0])) / length / iod


def split_by_size(
    faces: list[Face], min_size: float = MIN_FACE_PX
) -> tuple[list[Face], list[Face]]:
    """(faces large enough to protect, faces too small), by the box's shorter side."""
    keep = [f for f in faces if f.side >= min_size]
    small = [f for f in faces if f.side < min_size]
    return keep, small
