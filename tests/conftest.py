"""Shared fixtures: the bundled astronaut photo and public test photos from registry packages."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="session")
def faceapi_demo() -> Path:
    """face-api 1.7.15's demo photos (group photos; fetched by `make data` from npm)."""
    return fetch("face-api") / "package" / "demo"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run a test on one torch thread. Tests of tiny networks are faster so, and stay fast when
    the cores are shared (two threads per process on two busy cores made them up to 50× slower
    through OpenMP's waiting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def module_one_thread() -> Iterator[None]:
    """:func:`one_thread` for a whole module (``pytestmark = usefixtures(...)``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def identity_protector(insightface_images: Path) -> Any:
    """A cheap stand-in protector for pipeline tests: the shipped prior itself (so a face comes
    back as its 2-step DDIM round trip), with Tom Hanks's embeddings as the target's."""
    import copy

    from pareidolia.diffusion.prior import default_prior
    from pareidolia.evaluation.verification import FaceEmbedder
    from pareidolia.io import read_photo
    from pareidolia.locate import locate_faces
    from pareidolia.protector import Protector, ProtectorConfig

    unet, cfg = default_prior()
    target = read_photo(insightface_images / "Tom_Hanks_54745.png").rgb
    face = locate_faces(target)[0]
    return Protector(
        unet=copy.deepcopy(unet).requires_grad_(False),
        base_unet=unet,
        base_cfg=cfg,
        config=ProtectorConfig(n_inv=2, n_gen=2),
        target_embeddings=FaceEmbedder().embed(target, face.landmarks),
    )
