from __future__ import annotations

import pytest
import torch

from pareidolia.objectives.landmarks import (
    NEIGHBOURS,
    LaplacianLoss,
    laplacian_change,
    laplacian_coordinates,
)


def random_points(seed: int = 0, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 68, 2, generator=torch.Generator().manual_seed(seed)) * 100


def test_neighbour_table_covers_all_points_with_closed_loops() -> None:
    assert len(NEIGHBOURS) == 68
    for i, nb in enumerate(NEIGHBOURS):
        assert 1 <= len(nb) <= 2 and i not in nb
        for j in nb:
            assert i in NEIGHBOURS[j]  # symmetric
    # open-chain ends have one neighbour
    for end, nb in [(0, 1), (16, 15), (17, 18), (21, 20), (22, 23), (26, 25), (27, 28), (30, 29)]:
        assert NEIGHBOURS[end] == (nb,)
    assert NEIGHBOURS[31] == (32,) and NEIGHBOURS[35] == (34,)
    # loops close
    assert set(NEIGHBOURS[36]) == {41, 37} and set(NEIGHBOURS[41]) == {40, 36}
    assert set(NEIGHBOURS[42]) == {47, 43} and set(NEIGHBOURS[47]) == {46, 42}
    assert set(NEIGHBOURS[48]) == {59, 49} and set(NEIGHBOURS[59]) == {58, 48}
    assert set(NEIGHBOURS[60]) == {67, 61} and set(NEIGHBOURS[67]) == {66, 60}
    assert sum(len(nb) == 1 for nb in NEIGHBOURS) == 10  # two ends of five open chains


def test_laplacian_coordinates_translation_invariant_and_zero_between_neighbours() -> None:
    p = random_points()
    d = laplacian_coordinates(p)
    assert d.shape == (2, 68, 2)
    assert torch.allclose(laplacian_coordinates(p + torch.tensor([3.0, -7.0])), d, atol=1e-4)
    q = p.clone()
    q[:, 19] = (q[:, 18] + q[:, 20]) / 2  # brow point midway between its neighbours
    assert torch.allclose(laplacian_coordinates(q)[:, 19], torch.zeros(2, 2), atol=1e-5)
    with pytest.raises(ValueError):
        laplacian_coordinates(torch.zeros(1, 5, 2))


def test_laplacian_change_zero_local_and_translation() -> None:
    p = random_points()
    assert torch.equal(laplacian_change(p, p), torch.zeros(2))
    assert torch.allclose(laplacian_change(p + 5.0, p), torch.zeros(2), atol=1e-6)
    q = p.clone()
    q[0, 19, 1] += 4.0  # lift one eyebrow point of the first face
    loss = laplacian_change(q, p)
    assert loss[0] > 0 and loss[1] == 0
    # δ_19 moves by 4, δ_18 and δ_20 by 2 each: (16 + 4 + 4) / 68
    assert loss[0].item() == pytest.approx(24 / 68, rel=1e-5)


@pytest.fixture(scope="module")
def lap() -> LaplacianLoss:
    return LaplacianLoss()


def test_laplacian_loss_on_astronaut(lap: LaplacianLoss, astronaut_crop: torch.Tensor) -> None:
    pts = lap.landmarks(astronaut_crop)
    assert pts.shape == (1, 68, 2)
    assert pts.min() > 0 and pts.max() < lap.chip_size  # chip pixels
    assert lap(astronaut_crop, astronaut_crop).item() == pytest.approx(0.0, abs=1e-8)
    x = astronaut_crop.clone().requires_grad_(True)
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    loss = lap(noisy, astronaut_crop)
    assert loss.shape == (1,) and loss.item() > 0
    loss.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_laplacian_loss_is_the_zoo_landmark_net_through_its_chip(
    lap: LaplacianLoss, astronaut_crop: torch.Tensor
) -> None:
    """The parts that refinement reaches for (``sampler.chip``, ``net``) are the zoo model's, the
    net stays frozen in eval mode under a parent's ``train()``, and the points are the net's
    output on the chip, in chip pixels."""
    parent = torch.nn.Sequential(lap).train()
    assert parent.training and not lap.net.training
    assert lap.sampler is lap.model.chip and lap.net is lap.model.net
    assert lap.sampler.chip == "faceapi112" and lap.chip_size == lap.sampler.size == 112
    assert all(not p.requires_grad for p in lap.parameters())
    expected = lap.net(lap.sampler(astronaut_crop)) * lap.chip_size
    assert torch.equal(lap.landmarks(astronaut_crop), expected)
    lap.eval()
