"""The astronaut's working crop (1, 3, 256, 256) in [0, 1], shared by the objective tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pareidolia.faces.align import to_tensor, warp_crop, working_alignment
from pareidolia.locate import locate_faces


@pytest.fixture(scope="session")
def astronaut_crop(astronaut_rgb: np.ndarray) -> torch.Tensor:
    face = locate_faces(astronaut_rgb)[0]
    return to_tensor(warp_crop(astronaut_rgb, working_alignment(face.landmarks, 256)))
