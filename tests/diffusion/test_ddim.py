"""DDIM inversion and generation: conventions, reconstruction, gradients, checkpointing."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from diffusers import UNet2DModel

from pareidolia.diffusion.ddim import generate, invert, timestep_grid, unet_eps
from pareidolia.diffusion.schedule import alphas_cumprod, linear_betas

AC = alphas_cumprod(linear_betas(1e-4, 0.02, 1000))


def tiny_unet(seed: int = 0) -> UNet2DModel:
    """A random 16 px UNet with a few channels: fast, and as non-linear as a real one."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=16,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=None,
    ).eval()


def faces(batch: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_grid_endpoints_rounding_and_repeats() -> None:
    assert timestep_grid(60, 6) == (0, 12, 24, 36, 48, 60)
    g = timestep_grid(60, 20)
    assert len(g) == 20 and g[0] == 0 and g[-1] == 60
    assert g[:4] == (0, 3, 6, 9)  # k · 60/19 = 0, 3.16, 6.32, 9.47
    assert timestep_grid(5, 3) == (0, 3, 5)  # 2.5 rounds half up (Python's round gives 2)
    assert timestep_grid(3, 4) == (0, 1, 2, 3)
    assert timestep_grid(2, 3) == (0, 1, 2)
    assert timestep_grid(5, 10) == (0, 1, 2, 3, 4, 5)  # more steps than timesteps: repeats dropped
    assert timestep_grid(1, 4) == (0, 1)  # 0, 0.33, 0.67, 1 → 0, 0, 1, 1
    with pytest.raises(ValueError):
        timestep_grid(0, 5)
    with pytest.raises(ValueError):
        timestep_grid(60, 1)
    with pytest.raises(ValueError):
        invert(lambda x, t: x, AC, faces(), 1000, 5)


def test_constant_eps_follows_the_closed_form() -> None:
    """With ε ≡ c the DDIM ODE is solved exactly by any grid: x̂₀ never changes, so the latent is
    √ᾱ_t0·x̂₀ + √(1−ᾱ_t0)·c with x̂₀ = (x − √(1−ᾱ_0)·c)/√ᾱ_0 (the input sits at t = 0), and
    generation returns x̂₀ (the final step goes to ᾱ = 1). Pins the ᾱ indexing convention."""
    c = torch.full((1, 3, 1, 1), 0.3)

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.dtype == torch.long and t.shape == (x.shape[0],)
        return c.expand_as(x)

    x = faces()
    a0, a60 = float(AC[0]), float(AC[60])
    x0 = (x - math.sqrt(1 - a0) * c) / math.sqrt(a0)
    z = invert(eps, AC, x, 60, 7)
    torch.testing.assert_close(z, math.sqrt(a60) * x0 + math.sqrt(1 - a60) * c)
    torch.testing.assert_close(generate(eps, AC, z, 60, 4), x0)


def test_invert_then_generate_reconstructs_and_error_falls_with_steps() -> None:
    """DDIM inversion is the η = 0 ODE run backwards, so with the same network and grid the
    round trip returns the input up to a discretisation error that shrinks with the step size,
    whatever the (smooth) network: a random UNet will do. The limit is x̂₀(x, 0), the input with
    the t = 0 noise level (√(1−ᾱ_0) = 1 %) removed by generation's last step."""
    eps = unet_eps(tiny_unet())
    x = faces()
    zero = torch.zeros(len(x), dtype=torch.long)
    with torch.no_grad():
        limit = (x - math.sqrt(1 - float(AC[0])) * eps(x, zero)) / math.sqrt(float(AC[0]))
        errors, input_errors = [], []
        for n in (3, 5, 9, 17):
            z = invert(eps, AC, x, 60, n)
            y = generate(eps, AC, z, 60, n)
            errors.append((y - limit).abs().max().item())
            input_errors.append((y - x).abs().max().item())
    assert all(b < 0.7 * a for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 1e-2, errors
    assert input_errors[-1] < 3e-2 and input_errors[-1] < input_errors[0], input_errors


def test_batch_items_are_processed_independently() -> None:
    eps, x = unet_eps(tiny_unet()), faces(batch=3)
    with torch.no_grad():
        z, z_one = invert(eps, AC, x, 60, 4), invert(eps, AC, x[1:2], 60, 4)
        y, y_one = generate(eps, AC, z, 60, 3), generate(eps, AC, z_one, 60, 3)
    torch.testing.assert_close(z[1:2], z_one)
    torch.testing.assert_close(y[1:2], y_one)


def test_invert_is_frozen() -> None:
    unet = tiny_unet()
    x = faces().requires_grad_(True)
    z = invert(unet_eps(unet), AC, x, 40, 3)
    assert not z.requires_grad
    assert all(p.grad is None for p in unet.parameters())


def _param_grads(unet: UNet2DModel, checkpoint: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    unet.zero_grad(set_to_none=True)
    z = invert(unet_eps(tiny_unet(seed=1)), AC, faces(), 60, 5)
    y = generate(unet_eps(unet), AC, z, 60, 6, checkpoint=checkpoint)
    (y - faces()).square().mean().backward()
    return y.detach(), [p.grad.clone() for p in unet.parameters()]


def test_gradients_reach_every_parameter_through_generate() -> None:
    unet = tiny_unet()
    _, grads = _param_grads(unet, checkpoint=False)
    assert len(grads) == len(list(unet.parameters()))
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(int(g.abs().sum() > 0) for g in grads) == len(grads)


def test_checkpointing_gives_the_same_result_and_gradients() -> None:
    unet = tiny_unet()
    y_plain, g_plain = _param_grads(unet, checkpoint=False)
    y_ckpt, g_ckpt = _param_grads(unet, checkpoint=True)
    torch.testing.assert_close(y_ckpt, y_plain)
    for a, b in zip(g_ckpt, g_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_the_unets_own_checkpointing_gives_the_same_gradients() -> None:
    """``train --grad-checkpoint``: per-step checkpointing and diffusers' per-block activation
    checkpointing together change neither the result nor the gradients."""
    unet = tiny_unet()
    y_plain, g_plain = _param_grads(unet, checkpoint=False)
    unet.enable_gradient_checkpointing()
    y_ckpt, g_ckpt = _param_grads(unet, checkpoint=True)
    torch.testing.assert_close(y_ckpt, y_plain)
    for a, b in zip(g_ckpt, g_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_unet_eps_in_bfloat16_runs_the_network_in_it_and_returns_float32() -> None:
    """``--dtype bfloat16``: the convolutions compute in bfloat16 under autocast, the weights
    stay float32, and ε̂ comes back as float32 close to the float32 one."""
    unet = tiny_unet()
    seen: list[torch.dtype] = []
    hook = unet.conv_in.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    x, t = faces(), torch.full((2,), 60, dtype=torch.long)
    with torch.no_grad():
        e32, e16 = unet_eps(unet)(x, t), unet_eps(unet, torch.bfloat16)(x, t)
    hook.remove()
    assert seen == [torch.float32, torch.bfloat16]
    assert e16.dtype == torch.float32 and all(p.dtype == torch.float32 for p in unet.parameters())
    assert 0 < float((e16 - e32).abs().max()) < 0.05 * float(e32.abs().max())


def test_guided_generate_with_an_identity_guide_is_generate() -> None:
    from pareidolia.diffusion.ddim import guided_generate

    eps, ac = unet_eps(tiny_unet()), AC
    x_t = invert(eps, ac, faces(), 60, 5)
    with torch.no_grad():
        plain = generate(eps, ac, x_t, 60, 4)
    seen: list[int] = []

    def record(x0: torch.Tensor, t: int) -> torch.Tensor:
        seen.append(t)
        return x0

    guided = guided_generate(eps, ac, x_t, 60, 4, record)
    assert torch.allclose(guided, plain, atol=1e-5)
    assert seen == sorted(timestep_grid(60, 4), reverse=True)  # once per step, t0 first


def test_guided_generate_carries_the_correction_to_the_output() -> None:
    from pareidolia.diffusion.ddim import guided_generate

    eps, ac = unet_eps(tiny_unet()), AC
    x_t = invert(eps, ac, faces(), 60, 5)
    plain = guided_generate(eps, ac, x_t, 60, 4, lambda x0, t: x0)
    brighter = guided_generate(eps, ac, x_t, 60, 4, lambda x0, t: x0 + 0.05)
    assert float((brighter - plain).mean()) > 0.1  # four corrections of 0.05, carried on
