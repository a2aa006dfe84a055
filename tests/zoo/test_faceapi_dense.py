"""face-api's landmark-68 and expression ports against face-api's own TF.js runtime.

``tests/fixtures/faceapi_{landmarks,expression}.npz`` hold three uint8 RGB 112×112 chips
(astronaut face, its mirror, uniform noise) and what face-api 1.7.15 computed for them on
tfjs 4.22 in Node (made by ``tools/fixtures/make_faceapi_dense.py``): landmarks (N, 68, 2) and
expression softmax probabilities (N, 7). Only ``pareidolia.zoo.faceapi_dense`` is used, through
a registry narrowed to its specs, so these tests do not depend on the other zoo modules.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from zoo_fixtures import load_fixture, relative_error

from pareidolia.checksums import file_sha256
from pareidolia.zoo import registry
from pareidolia.zoo.faceapi_dense import SPECS, FaceApiExpression, FaceApiLandmarks
from pareidolia.zoo.spec import EMOTIONS

BY_NAME = {s.name: s for s in SPECS}


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(registry, "specs", lambda: dict(BY_NAME))
    return registry.load


def _fixture(name: str) -> tuple[torch.Tensor, np.ndarray]:
    x, data = load_fixture(name)
    assert x.shape == (3, 3, 112, 112)
    return x, data["output"]


def test_spec_contract() -> None:
    lm, ex = BY_NAME["faceapi_landmarks"], BY_NAME["faceapi_expression"]
    assert (lm.role, lm.chip, lm.input_size, lm.output_dim) == ("landmarks", "faceapi112", 112, 136)
    assert (ex.role, ex.chip, ex.input_size, ex.output_dim) == ("expression", "faceapi112", 112, 7)
    assert lm.licence == ex.licence == "MIT"
    assert isinstance(lm.factory(), FaceApiLandmarks)
    assert isinstance(ex.factory(), FaceApiExpression)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_shipped_weights_match_checksum(name: str) -> None:
    spec = BY_NAME[name]
    assert file_sha256(registry.weights_path(spec)) == spec.sha256


def test_landmarks_match_faceapi_tfjs(load) -> None:
    model = load("faceapi_landmarks")
    x, reference = _fixture("faceapi_landmarks")
    with torch.no_grad():
        out = model(x).numpy()
    assert out.shape == reference.shape == (3, 68, 2)
    rel = relative_error(out, reference)
    assert rel.max() <= 1e-4, rel


def test_landmarks_are_plausible_on_a_face(load) -> None:
    model = load("faceapi_landmarks")
    x, _ = _fixture("faceapi_landmarks")
    with torch.no_grad():
        pts = model(x[:1])[0]
    left_eye, right_eye = pts[36:42].mean(0), pts[42:48].mean(0)
    nose, mouth = pts[30], pts[48:68].mean(0)
    assert 0.0 < left_eye[0] < nose[0] < right_eye[0] < 1.0  # image left to right
    assert left_eye[1] < nose[1] < mouth[1]  # top to bottom
    assert abs(left_eye[1] - right_eye[1]) < 0.05  # upright face


def test_expression_matches_faceapi_tfjs(load) -> None:
    model = load("faceapi_expression")
    x, reference = _fixture("faceapi_expression")
    with torch.no_grad():
        logp = model(x)
    out = logp.exp().numpy()
    assert out.shape == reference.shape == (3, 7)
    rel = relative_error(out, reference)
    assert rel.max() <= 1e-4, rel
    # Also the tiny probabilities, through their logs (the logits up to a constant).
    assert np.abs(logp.numpy() - np.log(reference)).max() <= 1e-3
    assert EMOTIONS[int(out[0].argmax())] == "happy"  # the astronaut smiles


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_gradients_reach_pixels(load, name: str) -> None:
    model = load(name)
    x = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = model(x)
    (out[..., 0].sum() + out[..., 1].sum()).backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_two_models_have_their_own_extractor_weights(load) -> None:
    lm, ex = load("faceapi_landmarks"), load("faceapi_expression")
    w_lm = lm.extractor.dense0.conv0.conv.weight
    w_ex = ex.extractor.dense0.conv0.conv.weight
    assert w_lm.shape == w_ex.shape and not torch.equal(w_lm, w_ex)
