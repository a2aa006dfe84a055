from __future__ import annotations

import pytest
import torch

from pareidolia.errors import UserError
from pareidolia.objectives.fidelity import FidelityLoss, l1_loss, require_lpips


def test_l1_per_sample() -> None:
    x = torch.zeros(2, 3, 4, 4)
    y = x.clone()
    y[1] += 0.5
    y[1, 0, 0, 0] = 2.0
    loss = l1_loss(y, x)
    assert loss.shape == (2,)
    assert loss[0].item() == 0.0
    assert loss[1].item() == pytest.approx((47 * 0.5 + 2.0) / 48)
    assert torch.equal(l1_loss(x, y), loss)
    with pytest.raises(ValueError):
        l1_loss(x, x[:, :, :2])


def test_l1_gradient_and_weighting() -> None:
    x = torch.zeros(1, 3, 2, 2)
    y = torch.full((1, 3, 2, 2), 0.25, requires_grad=True)
    loss = FidelityLoss()(y, x)
    assert loss.item() == pytest.approx(0.75)  # DiffAM weight 3
    loss.backward()
    assert y.grad is not None and torch.allclose(y.grad, torch.full_like(y, 3.0 / 12))


def test_lpips_without_weights_is_a_user_error() -> None:
    with pytest.raises(UserError, match="LPIPS"):
        require_lpips(None)
    with pytest.raises(UserError, match="LPIPS"):
        FidelityLoss(lpips_weight=10.0)
    fake = FidelityLoss(l1_weight=0.0, lpips_weight=2.0, perceptual=lambda a, b: torch.ones(len(a)))
    assert torch.equal(
        fake(torch.zeros(3, 3, 2, 2), torch.zeros(3, 3, 2, 2)), torch.full((3,), 2.0)
    )
