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


class FakeClip(torch.nn.Module):
    """A tiny stand-in for an open_clip CLIP model: a linear image embedding of the 8×8
    average-pooled image and a bag-of-bytes text embedding, 16-D each."""

    def __init__(self) -> None:
        super().__init__()
        self.visual = torch.nn.Linear(3 * 8 * 8, 16)
        self.token_embedding = torch.nn.Embedding(256, 16)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(tokens).mean(1)


def _fake_tokenize(texts: list[str]) -> torch.Tensor:
    rows = [list(t.encode()[:32].ljust(32, b"\0")) for t in texts]
    return torch.tensor(rows, dtype=torch.long)


@pytest.fixture
def fake_open_clip(monkeypatch: pytest.MonkeyPatch) -> Any:
    """An ``open_clip`` module that builds :class:`FakeClip` for the model names ``ViT-B-16``
    and ``tiny`` (records each ``create_model`` call in ``.calls``, each model in ``.models``)."""
    import types

    module: Any = types.ModuleType("open_clip")
    module.calls, module.models = [], []

    def create_model(name: str, **kwargs: Any) -> FakeClip:
        module.calls.append((name, kwargs))
        if name not in ("ViT-B-16", "tiny"):
            raise RuntimeError(f"Model config for {name} not found.")
        module.models.append(FakeClip())
        return module.models[-1]

    module.create_model = create_model
    module.get_tokenizer = lambda name: _fake_tokenize
    monkeypatch.setitem(sys.modules, "open_clip", module)
    return module


def _write_fake_clip_weights(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in FakeClip().state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return state


@pytest.fixture
def write_clip_weights() -> Any:
    """``write(path, seed=0)``: random :class:`FakeClip` weights written to ``path``
    (safetensors); returns them."""
    return _write_fake_clip_weights


@pytest.fixture
def fake_clip_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder (``PAREIDOLIA_CACHE``) holding fake CLIP weights where ``pareidolia fetch
    clip`` puts them, with the sha256 record a fetch leaves; returns the weights' path."""
    from pareidolia.checksums import file_sha256
    from pareidolia.download import ARTIFACTS, SHA_SUFFIX

    cache = tmp_path / "cache"
    monkeypatch.setenv("PAREIDOLIA_CACHE", str(cache))
    path = cache / ARTIFACTS["clip"].file
    _write_fake_clip_weights(path)
    path.with_name(path.name + SHA_SUFFIX).write_text(file_sha256(path) + "\n")
    return path
