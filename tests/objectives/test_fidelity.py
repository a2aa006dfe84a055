from __future__ import annotations

import pytest
import torch

from pareidolia.objectives.fidelity import l1_loss, lowpass_l1_loss


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


def test_l1_gradient() -> None:
    x = torch.zeros(1, 3, 2, 2)
    y = torch.full((1, 3, 2, 2), 0.25, requires_grad=True)
    loss = l1_loss(y, x)
    assert loss.item() == pytest.approx(0.25)
    loss.backward()
    assert y.grad is not None and torch.allclose(y.grad, torch.full_like(y, 1.0 / 12))


def test_lowpass_l1_sees_only_the_low_frequencies() -> None:
    x = torch.zeros(1, 3, 32, 32)
    flat = torch.full_like(x, 0.1)  # a colour shift: all low frequency
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None]) % 2 * 0.2 - 0.1
    fine = x + checker  # the finest detail, mean 0
    assert lowpass_l1_loss(flat, x, 4.0).item() == pytest.approx(0.1, rel=1e-4)
    assert lowpass_l1_loss(fine, x, 4.0).item() < 0.01 < l1_loss(fine, x).item()
