from __future__ import annotations

import math

import pytest
import torch
from diffusers import UNet2DModel

from pareidolia.diffusion.ddim import unet_eps
from pareidolia.diffusion.schedule import alphas_cumprod, linear_betas
from pareidolia.objectives.score_matching import ScoreMatchingLoss, score_matching_loss

ABAR = alphas_cumprod(linear_betas(1e-4, 0.02, 1000))


def faces(batch: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def tiny_unet() -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=16,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
    )


def oracle_for(x: torch.Tensor, seen: list[torch.Tensor]):
    """The perfect denoiser for known clean faces x: recovers ε exactly from x_t."""

    def oracle(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(t)
        a = ABAR[t].float().view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * x) / (1 - a).sqrt()

    return oracle


def test_oracle_model_has_zero_loss_and_t_range() -> None:
    seen: list[torch.Tensor] = []
    x = faces()
    gen = torch.Generator().manual_seed(3)
    loss = score_matching_loss(oracle_for(x, seen), x, ABAR, t_max=400, generator=gen)
    assert loss.shape == (2,)
    assert loss.max().item() < 1e-6
    seen.clear()
    x = faces(256)
    loss = ScoreMatchingLoss(ABAR, t0=400)(oracle_for(x, seen), x, torch.Generator())
    assert loss.max().item() < 1e-6
    t = seen[0]
    assert t.dtype == torch.long and t.min() >= 0 and t.max() <= 400 and t.max() > 300
    seen.clear()
    ScoreMatchingLoss(ABAR, t0=400, all_timesteps=True)(oracle_for(x, seen), x, torch.Generator())
    assert seen[0].max() > 400


def test_zero_model_loss_is_noise_power() -> None:
    x = faces(4, 32)
    loss = score_matching_loss(lambda x_t, t: torch.zeros_like(x_t), x, ABAR, 10)
    assert loss.mean().item() == pytest.approx(1.0, abs=0.05)  # E ε² = 1


def test_tiny_unet_positive_with_gradients_and_seeded() -> None:
    unet = tiny_unet()
    model = unet_eps(unet)
    x = faces()
    loss = score_matching_loss(
        model, x, ABAR, t_max=500, generator=torch.Generator().manual_seed(7)
    )
    assert loss.shape == (2,) and (loss > 0).all() and torch.isfinite(loss).all()
    loss.mean().backward()
    grads = [p.grad for p in unet.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    with torch.no_grad():
        again = score_matching_loss(
            model, x, ABAR, t_max=500, generator=torch.Generator().manual_seed(7)
        )
        other = score_matching_loss(
            model, x, ABAR, t_max=500, generator=torch.Generator().manual_seed(8)
        )
    assert torch.equal(again, loss.detach())
    assert not torch.equal(other, loss.detach())


def test_bad_t_max_raises() -> None:
    with pytest.raises(ValueError):
        score_matching_loss(lambda x_t, t: x_t, faces(), ABAR, t_max=1000)
    with pytest.raises(ValueError):
        ScoreMatchingLoss(ABAR, t0=-1)
    assert math.isfinite(float(ABAR[-1]))


@pytest.mark.parametrize("all_timesteps", [False, True])
def test_noise_drawn_apart_gives_the_same_loss_and_rows_of_it(all_timesteps: bool) -> None:
    """draw + at is the loss itself; a part of the batch with its rows of the batch's noise
    (as a process of several takes it) gets its rows of the loss."""
    sm, model, x = (
        ScoreMatchingLoss(ABAR, t0=400, all_timesteps=all_timesteps),
        tiny_unet(),
        faces(3),
    )
    with torch.no_grad():
        whole = sm(unet_eps(model), x, torch.Generator().manual_seed(5))
        t, eps = sm.draw(x, torch.Generator().manual_seed(5))
        assert torch.equal(sm.at(unet_eps(model), x, t, eps), whole)
        part = sm.at(unet_eps(model), x[1:], t[1:], eps[1:])
    torch.testing.assert_close(part, whole[1:])
