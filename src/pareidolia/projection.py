"""Gradient surgery for the two fine-tuning objectives (METHOD.md §3, step 4).

The identity loss L_A and the expression loss L_E are differentiated separately, giving one
gradient per network parameter for each: ``g_a`` and ``g_e`` (lists of tensors, aligned with
the parameter list). A combiner turns the pair into the single gradient the optimiser sees.
Regulariser gradients (Laplacian, score matching, fidelity) are added by the caller *after*
the combination.

- ``none``: plain sum g_A + g_E.
- ``pcgrad``: Yu et al. 2020, "Gradient Surgery for Multi-Task Learning" (NeurIPS),
  two-task case on the gradient flattened over all parameters.
- ``gradvac``: Wang et al. 2021, "Gradient Vaccine: Investigating and Improving Multi-task
  Optimization in Massively Multilingual Models" (ICLR), per parameter tensor with an EMA
  target cosine similarity.

All functions are pure (inputs are never modified) and free of host synchronisation: the
"if conflicting" branches are evaluated with ``torch.where``, so they run on the gradients'
device without ``.item()`` calls. Scalar reductions are accumulated in at least float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = [
    "Combiner",
    "GradVac",
    "Method",
    "combine_none",
    "combine_pcgrad",
    "make_combiner",
    "project",
]

Method = Literal["none", "pcgrad", "gradvac"]
_MAX_TARGET = 1.0 - 1e-6  # |φ̂| used in the GradVac step is clamped to this
Combiner = Callable[[Sequence[Tensor], Sequence[Tensor]], list[Tensor]]


def _check_pair(g_a: Sequence[Tensor], g_e: Sequence[Tensor]) -> None:
    if len(g_a) != len(g_e):
        raise ValueError(f"gradient lists differ in length: {len(g_a)} vs {len(g_e)}")
    for k, (a, e) in enumerate(zip(g_a, g_e, strict=True)):
        if a.shape != e.shape:
            raise ValueError(f"gradient {k}: shapes differ, {tuple(a.shape)} vs {tuple(e.shape)}")


def _acc_dtype(t: Tensor) -> torch.dtype:
    """Accumulation dtype: float64 stays float64, everything else is reduced in float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Inner product of two same-shaped tensors as a 0-d tensor (float32 or float64)."""
    dt = _acc_dtype(a)
    return torch.dot(a.reshape(-1).to(dt), b.reshape(-1).to(dt))


def _global_dot(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensor:
    """Σ_k ⟨x_k, y_k⟩: the dot product of the lists flattened and concatenated."""
    return torch.stack([_dot(x, y).to(xs[0].device) for x, y in zip(xs, ys, strict=True)]).sum()


def _axpy(x: Tensor, c: Tensor, y: Tensor) -> Tensor:
    """x + c·y with the scalar c cast to x's dtype and device (a new tensor)."""
    return x + c.to(device=x.device, dtype=x.dtype) * y


def combine_none(g_a: Sequence[Tensor], g_e: Sequence[Tensor]) -> list[Tensor]:
    """No surgery: the plain sum g_A + g_E, tensor by tensor."""
    _check_pair(g_a, g_e)
    return [a + e for a, e in zip(g_a, g_e, strict=True)]


def combine_pcgrad(
    g_a: Sequence[Tensor], g_e: Sequence[Tensor], eps: float = 1e-12
) -> list[Tensor]:
    """PCGrad for two tasks (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning").

    The gradients are treated as single vectors (flattened and concatenated over all
    parameter tensors). If they conflict, g_A·g_E < 0, each is projected onto the normal
    plane of the *original* other one,

        g_A' = g_A − (g_A·g_E / ‖g_E‖²) g_E,    g_E' = g_E − (g_E·g_A / ‖g_A‖²) g_A,

    and the result is g_A' + g_E'. Otherwise the result is the plain sum. A zero gradient never
    conflicts (its dot product is 0), so the other gradient passes through unchanged; the
    squared norms are additionally clamped at ``eps`` so no division by zero can occur.
    """
    _check_pair(g_a, g_e)
    if not g_a:
        return []
    dot = _global_dot(g_a, g_e)
    na2 = _global_dot(g_a, g_a).clamp_min(eps)
    ne2 = _global_dot(g_e, g_e).clamp_min(eps)
    conflict = dot < 0
    zero = torch.zeros_like(dot)
    c_a = torch.where(conflict, -dot / ne2, zero)  # coefficient of g_E in g_A'
    c_e = torch.where(conflict, -dot / na2, zero)  # coefficient of g_A in g_E'
    # g_A' + g_E' = (1 + c_e) g_A + (1 + c_a) g_E
    return [_axpy(_axpy(a + e, c_e, a), c_a, e) for a, e in zip(g_a, g_e, strict=True)]


class GradVac:
    """Gradient Vaccine (Wang et al. 2021, ICLR), two tasks, one target per parameter tensor.

    For every parameter tensor k, with observed cosine φ_k = cos(g_A^k, g_E^k) and EMA target
    φ̂_k (initialised to 0, i.e. GradVac starts out like a per-tensor PCGrad on conflicts):

    - if φ_k < φ̂_k, g_A^k is moved toward g_E^k so that their cosine becomes exactly φ̂_k:

          g_A^k ← g_A^k + ‖g_A^k‖ (φ̂_k √(1−φ_k²) − φ_k √(1−φ̂_k²)) / (‖g_E^k‖ √(1−φ̂_k²)) · g_E^k;

      (only g_A is adjusted, as in METHOD.md; g_E is left as is);
    - the target is then updated with the *observed*, pre-adjustment cosine, as in the paper's
      Algorithm 1: φ̂_k ← (1−β) φ̂_k + β φ_k. The comparison uses the target from before this
      update. (METHOD.md lists the update first; we follow the paper.)

    The result is g_A + g_E per tensor. A tensor where either gradient has zero norm is left
    untouched and its target is not updated (its cosine is undefined). √(1−·²) is clamped at 0,
    the denominator at ``eps`` and the target used in the step to |φ̂| ≤ 1 − 1e-6 (a target of
    exactly 1 would need an infinite step), so no NaN or inf can arise.

    The targets live in one 1-D float32 tensor ``phi_hat`` of length K (number of parameter
    tensors), created lazily on the first call on the gradients' device. ``state_dict`` /
    ``load_state_dict`` checkpoint it (and β) for resumed fine-tuning.
    """

    def __init__(self, beta: float, eps: float = 1e-12) -> None:
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"GradVac beta must be in (0, 1], got {beta}")
        self.beta = float(beta)
        self.eps = float(eps)
        self.phi_hat: Tensor | None = None

    def __call__(self, g_a: Sequence[Tensor], g_e: Sequence[Tensor]) -> list[Tensor]:
        _check_pair(g_a, g_e)
        if not g_a:
            return []
        device = g_a[0].device
        n = len(g_a)
        if self.phi_hat is None:
            self.phi_hat = torch.zeros(n, dtype=torch.float32, device=device)
        elif self.phi_hat.numel() != n:
            raise ValueError(
                f"GradVac holds targets for {self.phi_hat.numel()} tensors, got {n} gradients"
            )
        phi_hat = self.phi_hat.to(device)

        dots = torch.stack([_dot(a, e).float().to(device) for a, e in zip(g_a, g_e, strict=True)])
        na = torch.stack([_dot(a, a).float().to(device) for a in g_a]).sqrt()
        ne = torch.stack([_dot(e, e).float().to(device) for e in g_e]).sqrt()
        valid = (na > 0) & (ne > 0)
        phi = (dots / (na * ne).clamp_min(self.eps)).clamp(-1.0, 1.0)

        sin_phi = (1 - phi * phi).clamp_min(0).sqrt()
        # a target of exactly ±1 would need an infinite step; keep it just inside (-1, 1)
        tgt = phi_hat.clamp(-_MAX_TARGET, _MAX_TARGET)
        sin_hat = (1 - tgt * tgt).clamp_min(0).sqrt()
        coef = na * (tgt * sin_phi - phi * sin_hat) / (ne * sin_hat).clamp_min(self.eps)
        adjust = valid & (phi < phi_hat)
        coef = torch.where(adjust, coef, torch.zeros_like(coef))

        updated = (1 - self.beta) * phi_hat + self.beta * phi
        self.phi_hat = torch.where(valid, updated, phi_hat)

        return [_axpy(a, coef[k], e) + e for k, (a, e) in enumerate(zip(g_a, g_e, strict=True))]

    def state_dict(self) -> dict[str, Any]:
        """β and the per-tensor targets (on CPU; ``None`` before the first call)."""
        return {
            "beta": self.beta,
            "phi_hat": None if self.phi_hat is None else self.phi_hat.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned; the targets move to the gradients' device
        on the next call."""
        beta = float(state["beta"])
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"GradVac beta must be in (0, 1], got {beta}")
        self.beta = beta
        phi_hat = state["phi_hat"]
        self.phi_hat = (
            None if phi_hat is None else torch.as_tensor(phi_hat, dtype=torch.float32).clone()
        )


def make_combiner(method: Method, beta: float = 0.01) -> Combiner:
    """The combiner named by the trainer's config. ``beta`` is used by ``gradvac`` only.

    ``none`` and ``pcgrad`` are stateless functions; ``gradvac`` returns a fresh ``GradVac``
    instance (keep it, and checkpoint it with its ``state_dict``).
    """
    if method == "none":
        return combine_none
    if method == "pcgrad":
        return combine_pcgrad
    if method == "gradvac":
        return GradVac(beta)
    raise ValueError(f"unknown gradient projection method {method!r}")


def project(
    method: Method,
    g_a: Sequence[Tensor],
    g_e: Sequence[Tensor],
    gradvac: GradVac | None = None,
) -> list[Tensor]:
    """One-shot form: combine ``g_a`` and ``g_e`` with ``method``. ``gradvac`` (the stateful
    instance) is required for ``method="gradvac"``."""
    if method == "gradvac":
        if gradvac is None:
            raise ValueError("method 'gradvac' needs its GradVac instance (it is stateful)")
        return gradvac(g_a, g_e)
    return make_combiner(method)(g_a, g_e)
