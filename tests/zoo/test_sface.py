"""The SFace port against onnxruntime on the original int8 ONNX, plus gradient and checksum checks.

``tests/fixtures/sface.npz`` holds three uint8 RGB chips (astronaut face, its mirror, uniform
noise) and the embeddings onnxruntime computed for them from the published
``face_recognition_sface_2021dec_int8bq.onnx`` (made by ``tools/fixtures/make_sface.py``). Only
``pareidolia.zoo.sface`` is used, through a registry narrowed to its spec, so these tests do not
depend on the other zoo modules.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zoo_fixtures import load_fixture, relative_error

from pareidolia.checksums import file_sha256
from pareidolia.faces.detect import YUNET_FILE, YUNET_SHA256
from pareidolia.zoo import registry
from pareidolia.zoo.sface import SPECS, SFace

SPEC = SPECS[0]


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> nn.Module:
    monkeypatch.setattr(registry, "specs", lambda: {SPEC.name: SPEC})
    return registry.load("sface")


def test_spec_contract() -> None:
    assert SPEC.name == "sface" and SPEC.role == "fr" and SPEC.chip == "arcface112"
    assert SPEC.input_size == 112 and SPEC.output_dim == 128
    assert SPEC.licence == "Apache-2.0"
    assert isinstance(SPEC.factory(), SFace)


def test_shipped_files_match_checksums() -> None:
    assert file_sha256(registry.weights_path(SPEC)) == SPEC.sha256
    assert file_sha256(YUNET_FILE) == YUNET_SHA256


def test_matches_onnxruntime(model: nn.Module) -> None:
    x, data = load_fixture("sface")
    assert x.shape == (3, 3, 112, 112)
    reference = data["output"]
    with torch.no_grad():
        out = model(x).numpy()
    assert out.shape == reference.shape == (3, 128)
    rel = relative_error(out, reference)
    assert rel.max() <= 1e-4, rel


def test_mirrored_face_is_same_person(model: nn.Module) -> None:
    x, _ = load_fixture("sface")
    with torch.no_grad():
        emb = model(x)
    cos = torch.nn.functional.cosine_similarity(emb[:1], emb[1:], dim=-1)
    assert cos[0] > 0.363  # OpenCV's same-person threshold
    assert cos[1] < 0.363  # noise is nobody


def test_gradients_reach_pixels(model: nn.Module) -> None:
    x = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0), requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_train_mode_keeps_frozen_statistics(model: nn.Module) -> None:
    x, _ = load_fixture("sface")
    with torch.no_grad():
        ref = model(x)
        out = model.train()(x)
    assert torch.allclose(ref, out)
