"""Shared by the zoo's equivalence tests: the stored outputs of the original runtimes.

Each ``tests/fixtures/<name>.npz`` holds ``input`` — uint8 RGB chips (N, S, S, 3) that the
original runtime also read as value/255 — and ``output``, what that runtime computed for them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pareidolia.faces.align import to_tensor

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def load_fixture(name: str) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """(chips as float (N, 3, S, S) in [0, 1], every array of the fixture file)."""
    data = dict(np.load(FIXTURES / f"{name}.npz"))
    assert data["input"].dtype == np.uint8 and data["input"].ndim == 4
    return to_tensor(data["input"]), data


def relative_error(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-sample ‖out − ref‖ / ‖ref‖ over all of a sample's values."""
    out, ref = out.reshape(len(out), -1), ref.reshape(len(ref), -1)
    return np.linalg.norm(out - ref, axis=1) / np.linalg.norm(ref, axis=1)
