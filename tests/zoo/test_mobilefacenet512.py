"""The MobileFaceNet-512 port against onnxruntime on the published ONNX, plus identity, gradient
and checksum checks.

``tests/fixtures/mobilefacenet512.npz`` holds three uint8 RGB chips (astronaut face, its
mirror, uniform noise) and the embeddings onnxruntime computed for them from ``fr_feature.onnx``
of the npm package ``faceplugin-face-recognition-js`` 0.0.1 (made by
``tools/fixtures/make_mobilefacenet512.py``). Only ``pareidolia.zoo.mobilefacenet512`` is used,
through a registry narrowed to its spec.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zoo_fixtures import load_fixture, relative_error

from pareidolia.checksums import file_sha256
from pareidolia.zoo import registry
from pareidolia.zoo.mobilefacenet512 import SPECS, MobileFaceNet512
from pareidolia.zoo.thresholds import thresholds

SPEC = SPECS[0]


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> nn.Module:
    monkeypatch.setattr(registry, "specs", lambda: {SPEC.name: SPEC})
    return registry.load("mobilefacenet512")


def test_spec_contract() -> None:
    assert SPEC.name == "mobilefacenet512" and SPEC.role == "fr_judge"
    assert SPEC.chip == "arcface112" and SPEC.input_size == 112 and SPEC.output_dim == 512
    assert isinstance(SPEC.factory(), MobileFaceNet512)


def test_shipped_file_matches_checksum() -> None:
    assert file_sha256(registry.weights_path(SPEC)) == SPEC.sha256


def test_matches_onnxruntime(model: nn.Module) -> None:
    x, data = load_fixture("mobilefacenet512")
    assert x.shape == (3, 3, 112, 112)
    with torch.no_grad():
        out = model(x).numpy()
    assert out.shape == data["output"].shape == (3, 512)
    rel = relative_error(out, data["output"])
    assert rel.max() <= 1e-4, rel


def test_mirrored_face_is_same_person_and_noise_is_nobody(model: nn.Module) -> None:
    x, _ = load_fixture("mobilefacenet512")
    with torch.no_grad():
        emb = model(x)
    rule = thresholds("mobilefacenet512")
    score = rule.score(emb[:1], emb[1:])
    assert bool(rule.matches(score[0], "0.01")) and not bool(rule.matches(score[1], "0.01"))


def test_gradient_reaches_the_chip(model: nn.Module) -> None:
    x, _ = load_fixture("mobilefacenet512")
    chip = x[:1].clone().requires_grad_(True)
    model(chip).norm().backward()
    assert chip.grad is not None and chip.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_the_pipeline_refuses_a_judge_as_surrogate() -> None:
    """The judges stay independent: the identity loss's ensemble takes only role ``fr``."""
    from pareidolia.objectives.identity import SurrogateEnsemble

    for judge in registry.names("fr_judge"):
        with pytest.raises(ValueError, match="not an FR model"):
            SurrogateEnsemble([judge])
