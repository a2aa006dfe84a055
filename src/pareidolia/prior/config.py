"""The typed configuration of the offline prior: its architecture and its training run.

Plain dataclasses without heavy imports, so the command line builds its parser (and its
defaults) without loading torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pareidolia.errors import OptionError


@dataclass(frozen=True)
class PriorArch:
    """The UNet's shape: resolution, per-level widths, residual blocks per level, group-norm
    groups (must divide every width) and attention head width. The last level (the lowest
    resolution) and the middle block have self-attention, the others none."""

    resolution: int = 128
    block_out_channels: tuple[int, ...] = (16, 32, 64, 128, 128)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    attention_head_dim: int = 32

    def __post_init__(self) -> None:
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(
                f"norm_num_groups {self.norm_num_groups} must divide every width "
                f"{self.block_out_channels}"
            )
        if self.resolution % 2 ** (len(self.block_out_channels) - 1):
            raise ValueError(
                f"resolution {self.resolution} must be divisible by 2^{len(self.block_out_channels) - 1}"
            )


DEFAULT_ARCH = PriorArch()


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; printed into the model card and checkpoint.

    ``data`` is a face set folder (``pareidolia prior data``) or ``"default"``: the project's
    face set, built into ``OUT/data`` on first use from the registry packages.
    """

    out: str
    data: str = "default"
    steps: int = 20_000
    batch: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup: int = 200
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    t_max: int = 500
    synthetic_ratio: float = 0.4
    augment: bool = True
    arch: PriorArch = field(default_factory=PriorArch)
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    checkpoint_every: int = 500
    log_every: int = 10
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        if self.t_max < 1:
            raise OptionError(f"{{t_max}} must be at least 1, got {self.t_max}", "t_max")
        if self.steps < 1 or self.batch < 1:
            raise OptionError("{steps} and {batch} must be positive", "steps", "batch")
        if not 0.0 <= self.synthetic_ratio <= 1.0:
            raise OptionError(
                f"{{synthetic_ratio}} must lie in [0, 1], got {self.synthetic_ratio}",
                "synthetic_ratio",
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config :func:`dataclasses.asdict` turned into ``d`` (JSON / checkpoint)."""
        arch = dict(d["arch"])
        arch["block_out_channels"] = tuple(arch["block_out_channels"])
        return cls(**{**d, "arch": PriorArch(**arch)})

    def resumable_from(self, other: TrainConfig) -> list[str]:
        """Fields that differ from ``other`` in a way a resumed run cannot accept (the step
        count, device, time limit and intervals may change; the rest fixes the results)."""
        free = {"out", "data", "steps", "device", "max_minutes", "checkpoint_every", "log_every"}
        mine, theirs = asdict(self), asdict(other)
        return [k for k in mine if k not in free and mine[k] != theirs[k]]
