"""Noise-based baselines (METHOD.md §5): FGSM, PGD, MI-FGSM, TI-DIM and TIP-IM, and lum-eot
(ours: a luminance-bounded residual with expectation over transformations), behind one
``protect(crops, loss)`` interface, built by name so a benchmark can run them all:

    method = BASELINES["pgd"](epsilon=16 / 255)
    protected = method.protect(crops, identity_loss)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pareidolia.baselines.base import Baseline
from pareidolia.baselines.fgsm import FGSM, FGSMConfig
from pareidolia.baselines.lumeot import LumEOT, LumEOTConfig
from pareidolia.baselines.mifgsm import MIFGSM, MIFGSMConfig
from pareidolia.baselines.pgd import PGD, PGDConfig
from pareidolia.baselines.tidim import TIDIM, TIDIMConfig
from pareidolia.baselines.tipim import TIPIM, TIPIMConfig


def _factory(
    method: Callable[[Any], Baseline], config: Callable[..., Any]
) -> Callable[..., Baseline]:
    def build(**overrides: Any) -> Baseline:
        """The method with its default configuration, fields replaced by ``overrides``."""
        return method(config(**overrides))

    return build


BASELINES: dict[str, Callable[..., Baseline]] = {
    "fgsm": _factory(FGSM, FGSMConfig),
    "pgd": _factory(PGD, PGDConfig),
    "mi-fgsm": _factory(MIFGSM, MIFGSMConfig),
    "ti-dim": _factory(TIDIM, TIDIMConfig),
    "tip-im": _factory(TIPIM, TIPIMConfig),
    "lum-eot": _factory(LumEOT, LumEOTConfig),  # ours: luminance-bounded residual with EOT
}

__all__ = [
    "BASELINES",
    "FGSM",
    "MIFGSM",
    "PGD",
    "TIDIM",
    "TIPIM",
    "Baseline",
    "FGSMConfig",
    "LumEOT",
    "LumEOTConfig",
    "MIFGSMConfig",
    "PGDConfig",
    "TIDIMConfig",
    "TIPIMConfig",
]
