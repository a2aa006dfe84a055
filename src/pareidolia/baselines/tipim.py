"""TIP-IM — Yang, Dong, Pang, Su, Zhu, Chen & Xue, "Towards Face Encryption by Generating
Adversarial Identity Masks", ICCV 2021.

A targeted identity-protection iterative method: an L∞-bounded mask that pulls the face toward
a target identity, pushes it away from its own, and stays natural; when several targets are
offered, each step greedily keeps the target whose update gains most. Reconstructed from the
paper and the authors' released ``run.py`` / ``mmd.py``:

- Identity term, per target t, averaged over the surrogates m (unit embeddings f_m):
  L_t(x̂) = (1 − cos(f_m(x̂), f_m(t))) − λ·(1 − cos(f_m(x̂), f_m(x))), λ = 1 (``dodging``). The
  released code uses squared feature distances, which for unit embeddings are 2 − 2·cos.
- Naturalness: γ·MMD²(x̂, x) with γ = 100, a biased Gaussian-kernel maximum mean discrepancy.
  The released code takes it between the flattened images of a batch, which couples the faces
  of a batch and, for one face, reduces to a function of ‖x̂ − x‖₂. Here it is taken per face between the sets of
  its non-overlapping p×p patches (p = 16 at 256 px: 256 patches of 768 values), with the kernel
  k(a, b) = mean_σ exp(−‖a − b‖²/(2·D·σ²)) over per-value bandwidths σ ∈ {4, 16, 64}/255 (D the
  patch dimension). It compares the distribution of local texture of the protected and original
  face, so noise that would not occur in the original (e.g. on flat skin or background) is
  penalised; it is zero iff x̂ = x (up to a permutation of patches). MMD² is of order 10⁻³
  here, so γ = 100 makes it a tenth of the identity term: on the test faces (mobileface +
  faceres surrogates) it cuts MMD² by about 60 % at no cost in target similarity, while
  γ = 1000 starts to trade similarity for naturalness.
- Update (MI-FGSM style, as released): g_t = μ·g + ∇L̃_t/‖∇L̃_t‖₁ with μ = 1, L̃_t = L_t + γ·MMD²,
  candidate x̂_t = Π(x̂ − α·sign(g_t)) with α = 1.5·ε/N, N = 50 steps; the gradient is taken at a
  randomly warped input, as in the released code: an affine matrix I + N(0, s_p²) per entry and
  a rotation by N(0, s_r²) radians, s_p and s_r drawn from U(0.01, 0.1) each step, composed into
  one warp with zero padding (the released code applies them one after the other).
- Greedy target selection: with targets T, each face keeps the candidate x̂_t maximising the
  gain log(1 + max_{t'∈T} exp(d(x̂_t, x) − d(x̂_t, t'))), d the L2 distance of unit embeddings
  averaged over surrogates (the released ``Gain3``), and its momentum g_t. With one target this
  is the targeted attack with naturalness.

Budget: L∞ ε in [0, 1] pixel units, default 8/255 like the other baselines (the released code
uses ε = 12 on a 0–255 scale, i.e. 12/255).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pareidolia.baselines.base import (
    check_crops,
    check_epsilon,
    check_steps,
    l1_normalise,
    project,
    seeded_generator,
)
from pareidolia.objectives.identity import IdentityLoss


@dataclass(frozen=True)
class TIPIMConfig:
    """TIP-IM budget (L∞ ε, N steps of α = step_scale·ε/N), loss weights and MMD settings."""

    epsilon: float = 8 / 255
    steps: int = 50
    step_scale: float = 1.5
    momentum: float = 1.0
    dodging: float = 1.0
    naturalness: float = 100.0
    mmd_patch: int = 16
    mmd_bandwidths: tuple[float, ...] = (4 / 255, 16 / 255, 64 / 255)
    diversity: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_epsilon(self.epsilon)
        check_steps(self.steps)
        if self.step_scale <= 0:
            raise ValueError(f"step_scale must be positive, got {self.step_scale}")
        if self.naturalness < 0 or self.dodging < 0:
            raise ValueError("the naturalness and dodging weights must be non-negative")
        if self.mmd_patch < 1 or not self.mmd_bandwidths or min(self.mmd_bandwidths) <= 0:
            raise ValueError("mmd_patch must be ≥ 1 and mmd_bandwidths positive and non-empty")

    @property
    def alpha(self) -> float:
        """The step size actually used."""
        return self.step_scale * self.epsilon / self.steps


class PatchMMD:
    """Per-face biased MMD² (B,) of a batch to fixed reference crops, between their sets of
    non-overlapping ``patch``² patches, with a Gaussian kernel averaged over per-value
    ``bandwidths``. The reference's own kernel term is computed once."""

    def __init__(self, reference: Tensor, patch: int, bandwidths: Sequence[float]) -> None:
        self.patch = patch
        self.scales = [1.0 / (2.0 * s * s) for s in bandwidths]
        self.reference = self._patches(reference)
        self.reference_term = self._kernel_mean(self.reference, self.reference)

    def _patches(self, x: Tensor) -> Tensor:
        """(B, N, D) non-overlapping patches of (B, C, H, W) crops."""
        return F.unfold(x, self.patch, stride=self.patch).transpose(1, 2)

    def _kernel_mean(self, a: Tensor, b: Tensor) -> Tensor:
        """Mean kernel value (B,) over all pairs of patches of ``a`` and ``b``."""
        sq = a.pow(2).sum(-1)[:, :, None] + b.pow(2).sum(-1)[:, None, :] - 2 * a @ b.transpose(1, 2)
        sq = sq.clamp_min(0.0) / a.shape[-1]
        # Values below e⁻⁶⁰ are negligible; the clamp keeps them out of the float32 subnormal
        # range, where CPUs are very slow.
        return torch.stack(
            [torch.exp(-(sq * c).clamp_max(60.0)).mean((1, 2)) for c in self.scales]
        ).mean(0)

    def __call__(self, x: Tensor) -> Tensor:
        p = self._patches(x)
        return (
            self._kernel_mean(p, p) + self.reference_term - 2 * self._kernel_mean(p, self.reference)
        )


def random_warp(batch: int, generator: torch.Generator) -> Tensor:
    """(B, 2, 3) affine_grid matrices of the released TIP-IM input diversity: a random affine
    I + N(0, s_p²) followed by a rotation of N(0, s_r²) radians, s_p, s_r ~ U(0.01, 0.1)."""
    s_proj, s_rot = (0.01 + 0.09 * torch.rand(2, generator=generator)).tolist()
    affine = torch.eye(3).repeat(batch, 1, 1)
    affine[:, :2] += s_proj * torch.randn(batch, 2, 3, generator=generator)
    theta = s_rot * torch.randn(batch, generator=generator)
    rotation = torch.zeros(batch, 3, 3)
    rotation[:, 0, 0] = rotation[:, 1, 1] = theta.cos()
    rotation[:, 0, 1] = theta.sin()
    rotation[:, 1, 0] = -theta.sin()
    rotation[:, 2, 2] = 1.0
    return (affine @ rotation)[:, :2]


def warp(x: Tensor, matrices: Tensor) -> Tensor:
    """``x`` resampled through ``matrices`` (affine_grid convention), zeros outside."""
    grid = F.affine_grid(matrices.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class TIPIM:
    """Targeted identity-protection iterative method with MMD naturalness and greedy targets."""

    def __init__(self, config: TIPIMConfig | None = None) -> None:
        self.config = config or TIPIMConfig()

    def protect(self, crops: Tensor, loss: IdentityLoss) -> Tensor:
        """Protected crops impersonating ``loss``'s target (TIP-IM with a one-target set)."""
        return self.protect_targets(crops, [loss])

    def protect_targets(self, crops: Tensor, losses: Sequence[IdentityLoss]) -> Tensor:
        """Protected crops, each steered toward whichever target of ``losses`` (one per target
        identity, all over the same surrogate ensemble) the greedy selection favours."""
        check_crops(crops)
        if not losses or any(lo.ensemble is not losses[0].ensemble for lo in losses):
            raise ValueError("TIP-IM needs at least one target loss, all on one surrogate ensemble")
        cfg = self.config
        ensemble = losses[0].ensemble
        generator = seeded_generator(cfg.seed)
        with torch.no_grad():
            source = ensemble(crops)
        targets = [{m: lo.target_embedding(m) for m in source} for lo in losses]
        mmd = PatchMMD(crops, cfg.mmd_patch, cfg.mmd_bandwidths)

        def identity(emb: dict[str, Tensor], target: dict[str, Tensor]) -> Tensor:
            terms = [
                (1 - (e * target[m]).sum(-1)) - cfg.dodging * (1 - (e * source[m]).sum(-1))
                for m, e in emb.items()
            ]
            return torch.stack(terms).mean(0)

        def gain(cands: Tensor) -> Tensor:
            """Released ``Gain3`` of candidates (K, B, 3, H, W) → (K, B)."""
            with torch.no_grad():
                flat = ensemble(cands.flatten(0, 1))
            emb = {m: e.view(*cands.shape[:2], -1) for m, e in flat.items()}
            d_src = torch.stack([(e - source[m]).norm(dim=-1) for m, e in emb.items()]).mean(0)
            d_tgt = torch.stack(
                [
                    torch.stack([(e - t[m]).norm(dim=-1) for m, e in emb.items()]).mean(0)
                    for t in targets
                ]
            )
            return torch.log1p(torch.exp(d_src - d_tgt).max(0).values)

        x_adv = crops.detach()
        g = torch.zeros_like(crops)
        for _ in range(cfg.steps):
            with torch.enable_grad():
                xa = x_adv.detach().requires_grad_(True)
                seen = warp(xa, random_warp(len(xa), generator)) if cfg.diversity else xa
                emb = ensemble(seen)
                natural = cfg.naturalness * mmd(xa) if cfg.naturalness else 0.0
                objectives = [(identity(emb, t) + natural).sum() for t in targets]
                grads = [torch.autograd.grad(o, xa, retain_graph=True)[0] for o in objectives]
            moms = torch.stack([cfg.momentum * g + l1_normalise(gr) for gr in grads])  # (K, B, ...)
            cands = project(x_adv - cfg.alpha * moms.sign(), crops, cfg.epsilon)
            if len(targets) > 1:
                best = gain(cands).argmax(0)
            else:
                best = torch.zeros(len(crops), dtype=torch.long, device=crops.device)
            pick = torch.arange(len(crops), device=crops.device)
            x_adv, g = cands[best, pick], moms[best, pick]
        return x_adv.detach()
