"""L_A: the identity objective over surrogate FR models, on real faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pareidolia.faces.align import to_tensor, warp_crop, working_alignment
from pareidolia.io import read_photo
from pareidolia.locate import locate_faces
from pareidolia.objectives.identity import IdentityLoss, SurrogateEnsemble

SURROGATES = ["mobileface", "sface"]


def _crop(rgb: np.ndarray) -> torch.Tensor:
    face = locate_faces(rgb)[0]
    return to_tensor(warp_crop(rgb, working_alignment(face.landmarks, 256)))


@pytest.fixture(scope="module")
def crops(astronaut_rgb: np.ndarray, insightface_images: Path) -> tuple[torch.Tensor, torch.Tensor]:
    group = read_photo(insightface_images / "t1.jpg").rgb
    return _crop(astronaut_rgb), _crop(group)


def test_loss_is_zero_for_the_target_and_large_for_another_person(
    crops: tuple[torch.Tensor, torch.Tensor],
) -> None:
    astronaut, other = crops
    loss = IdentityLoss(SurrogateEnsemble(SURROGATES), target=astronaut)
    assert float(loss(astronaut)) < 1e-5
    assert float(loss(other)) > 0.6  # different people: cosine well below 0.4 in both models
    sims = loss.similarities(torch.cat([astronaut, other]))
    assert set(sims) == set(SURROGATES) and all(s.shape == (2,) for s in sims.values())


def test_gradients_reach_the_crop_and_a_step_lowers_the_loss(
    crops: tuple[torch.Tensor, torch.Tensor],
) -> None:
    astronaut, other = crops
    loss = IdentityLoss(SurrogateEnsemble(SURROGATES), target=astronaut)
    x = other.clone().requires_grad_(True)
    before = loss(x)
    before.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    stepped = (other - 2 / 255 * x.grad.sign()).clamp(0, 1)
    assert float(loss(stepped)) < float(before.detach())


def test_only_fr_models_are_accepted() -> None:
    with pytest.raises(ValueError, match="not an FR model"):
        SurrogateEnsemble(["faceapi_expression"])
    with pytest.raises(ValueError, match="at least one"):
        SurrogateEnsemble([])
