"""Find faces in a photo: YuNet detection, then five-point refinement with the face-api
68-point landmark net, so every model chip is aligned to the face as it really is."""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import numpy as np
import torch

from pareidolia.faces.align import to_tensor
from pareidolia.faces.detect import Face, detect_faces
from pareidolia.faces.refine import refine_landmarks
from pareidolia.zoo import registry


@cache
def _landmark_net() -> torch.nn.Module:
    return registry.load("faceapi_landmarks")


def landmarks68(chip: np.ndarray) -> np.ndarray:
    """68 points (chip pixels) of one (S, S, 3) uint8 chip."""
    with torch.no_grad():
        rel = _landmark_net()(to_tensor(chip))[0].numpy()
    return rel * chip.shape[1]


def locate_faces(rgb: np.ndarray, refine: bool = True) -> list[Face]:
    """All faces of an RGB photo, largest first, with refined five-point landmarks."""
    faces = detect_faces(rgb)
    if not refine:
        return faces
    return [replace(f, landmarks=refine_landmarks(rgb, f.landmarks, landmarks68)) for f in faces]
