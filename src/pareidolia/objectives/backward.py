"""Linearised backward passes through the surrogates' activations [ours, after LinBP].

A gradient taken through a network's ReLUs is the gradient of the one piecewise-linear region
the input lies in; another model's regions differ, so the step that crosses one model's
decision boundary is tuned to that model alone. LinBP (Guo et al., NeurIPS 2020) and the
backward-smoothing attacks after it keep the forward pass exact and let the backward pass
through the rectifiers as if they were (more) linear, which makes the attack transfer better.

:func:`leaky_backward` does that for every ``relu``, ``relu6`` and ``prelu`` called inside it:
the forward values are unchanged; the derivative on the rectifier's flat side becomes at least
``leak`` (0: the exact gradient, 1: fully linear, as LinBP). The change applies to whatever
runs inside the context, so it is used around the surrogate ensemble's forward pass only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["leaky_backward"]


class _WithDerivative(torch.autograd.Function):
    """Returns ``out`` (computed without a graph); the backward multiplies by ``deriv``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, out: torch.Tensor, deriv: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(deriv)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (deriv,) = ctx.saved_tensors
        return grad * deriv, None, None


def _flat_side(x: torch.Tensor, leak: float) -> torch.Tensor:
    return torch.where(x > 0, 1.0, leak).to(x.dtype)


def _relu6_deriv(x: torch.Tensor, leak: float) -> torch.Tensor:
    return torch.where((x > 0) & (x < 6), 1.0, leak).to(x.dtype)


def _prelu_deriv(x: torch.Tensor, weight: torch.Tensor, leak: float) -> torch.Tensor:
    shape = [1, -1] + [1] * (x.dim() - 2) if x.dim() > 1 and weight.numel() > 1 else [-1]
    slope = weight.detach().reshape(shape).clamp_min(leak)
    return torch.where(x > 0, torch.ones_like(x), slope.expand_as(x).to(x.dtype))


class _LeakyBackward(TorchFunctionMode):
    def __init__(self, leak: float) -> None:
        super().__init__()
        self.leak = leak
        self.derivs: dict[Callable[..., Any], Callable[..., torch.Tensor]] = {
            F.relu: lambda x, *_: _flat_side(x, leak),
            torch.relu: lambda x, *_: _flat_side(x, leak),
            F.relu6: lambda x, *_: _relu6_deriv(x, leak),
            F.prelu: lambda x, w, *_: _prelu_deriv(x, w, leak),
            torch.prelu: lambda x, w, *_: _prelu_deriv(x, w, leak),
        }

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        deriv = self.derivs.get(func)
        x = args[0] if args else None
        if deriv is None or not isinstance(x, torch.Tensor) or not x.requires_grad:
            return func(*args, **kwargs)
        if kwargs.get("inplace") or (len(args) > 1 and args[1] is True and func is not F.prelu):
            raise ValueError("leaky_backward cannot follow an in-place activation")
        with torch.no_grad():
            out = func(*args, **kwargs)
            d = deriv(x, *args[1:])
        return _WithDerivative.apply(x, out, d)


@contextmanager
def leaky_backward(leak: float) -> Iterator[None]:
    """Inside: rectifiers keep their forward values; their backward passes at least ``leak``
    of the gradient on the flat side. ``leak`` 0 changes nothing (no mode is entered)."""
    if not 0.0 <= leak <= 1.0:
        raise ValueError(f"leak must be in [0, 1], got {leak}")
    if leak == 0.0:
        yield
        return
    with _LeakyBackward(leak):
        yield
