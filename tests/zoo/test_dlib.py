"""The dlib ResNet-29 port against face-api's own TF.js runtime, plus gradient and checksum checks.

``tests/fixtures/dlib.npz`` holds three uint8 chips (astronaut face, its mirror, uniform noise)
and the descriptors face-api 1.7.15 computed for them in tfjs 4.22 (made by
``tools/fixtures/make_dlib.py``). Only ``pareidolia.zoo.dlib_resnet`` is used, through a registry
whose spec table is narrowed to it, so these tests do not depend on the other zoo modules.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from zoo_fixtures import load_fixture, relative_error

from pareidolia.zoo import registry
from pareidolia.zoo.dlib_resnet import SPECS, DlibResNet

SPEC = SPECS[0]


@pytest.fixture
def dlib_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the registry know only the dlib spec."""
    monkeypatch.setattr(registry, "specs", lambda: {SPEC.name: SPEC})


@pytest.fixture
def model(dlib_only: None) -> nn.Module:
    return registry.load("dlib")


def test_spec_contract() -> None:
    assert SPEC.name == "dlib" and SPEC.role == "fr" and SPEC.chip == "dlib150"
    assert SPEC.input_size == 150 and SPEC.output_dim == 128
    assert SPEC.weights_file == "dlib.safetensors"
    assert isinstance(SPEC.factory(), DlibResNet)


def test_matches_faceapi_tfjs(model: nn.Module) -> None:
    x, data = load_fixture("dlib")
    assert x.shape == (3, 3, 150, 150)
    reference = data["output"]
    with torch.no_grad():
        out = model(x).numpy()
    assert out.shape == reference.shape == (3, 128)
    rel = relative_error(out, reference)
    assert rel.max() <= 1e-4, rel


def test_mirrored_face_is_same_person(model: nn.Module) -> None:
    x, _ = load_fixture("dlib")
    with torch.no_grad():
        emb = model(x[:2])
    assert torch.linalg.vector_norm(emb[0] - emb[1]) < 0.6  # dlib's same-person rule


def test_gradients_reach_pixels(model: nn.Module) -> None:
    x = torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(0), requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())  # weights frozen by the registry


def test_checksum_rejects_corrupt_weights(
    dlib_only: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert registry.weights_status(SPEC) == "ok"
    corrupt = tmp_path / SPEC.weights_file
    shutil.copyfile(registry.weights_path(SPEC), corrupt)
    with open(corrupt, "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    assert registry.weights_status(SPEC) == "mismatch"
    with pytest.raises(registry.WeightsError):
        registry.load("dlib")
    corrupt.unlink()
    assert registry.weights_status(SPEC) == "missing"
    with pytest.raises(registry.WeightsError):
        registry.load("dlib")
