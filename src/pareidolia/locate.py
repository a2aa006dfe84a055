"""Find faces in a photo: YuNet detection, then five-point refinement with the face-api
68-point landmark net, so every model chip is aligned to the face as it really is."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import torch

from pareidolia.faces.align import to_tensor, warp_crop, working_alignment
from pareidolia.faces.detect import (
    CROP_MIN_FACE_PX,
    MAX_REFINE_ZOOM,
    Face,
    detect_faces,
    split_by_size,
)
from pareidolia.faces.refine import refine_landmarks
from pareidolia.runtime import WORKING_SIZE
from pareidolia.zoo import registry


@cache
def _landmark_net(device: str) -> torch.nn.Module:
    """The face-api 68-point landmark net on ``device``, loaded once per device."""
    return registry.load("faceapi_landmarks", device)


def landmarks68(chip: np.ndarray, device: str = "cpu") -> np.ndarray:
    """68 points (chip pixels) of one (S, S, 3) uint8 chip, the net run on ``device``."""
    with torch.no_grad():
        rel = _landmark_net(device)(to_tensor(chip).to(device))[0].cpu().numpy()
    return rel * chip.shape[1]


def _refined(rgb: np.ndarray, five: np.ndarray) -> np.ndarray:
    """The 68-point net's five points for YuNet's ``five``, unless the two disagree on the face's
    size by more than :data:`~pareidolia.faces.detect.MAX_REFINE_ZOOM` (the net lost the face);
    YuNet's points then."""
    better = refine_landmarks(rgb, five, landmarks68)
    zoom = working_alignment(better).scale / working_alignment(five).scale
    return better if 1 / MAX_REFINE_ZOOM <= zoom <= MAX_REFINE_ZOOM else five


def locate_faces(rgb: np.ndarray, refine: bool = True) -> list[Face]:
    """All faces of an RGB photo, largest first, with refined five-point landmarks."""
    faces = detect_faces(rgb)
    if not refine:
        return faces
    return [replace(f, landmarks=_refined(rgb, f.landmarks)) for f in faces]


def face_crops(path: Path | str, size: int = WORKING_SIZE) -> list[np.ndarray]:
    """Working crops (uint8, ``size`` px) of every face of the photo at ``path`` sharp enough to
    learn from (:data:`~pareidolia.faces.detect.CROP_MIN_FACE_PX`), largest first. Raises
    :class:`~pareidolia.io.ImageError` for unusable files."""
    from pareidolia.io import read_photo

    photo = read_photo(path)
    faces, _ = split_by_size(locate_faces(photo.rgb), CROP_MIN_FACE_PX)
    return [warp_crop(photo.rgb, working_alignment(f.landmarks, size)) for f in faces]


def target_face(path: Path | str, size: int = WORKING_SIZE) -> torch.Tensor:
    """The largest face of the photo at ``path`` as a (1, 3, size, size) working crop in [0, 1]
    (a target identity for ``train``, ``protect --target`` and the web page). Raises
    :class:`~pareidolia.errors.NoFaceError` when the photo has no face large enough."""
    from pareidolia.errors import NoFaceError

    crops = face_crops(path, size)
    if not crops:
        raise NoFaceError(f"{path}: no face found for the target")
    return to_tensor(crops[0])
