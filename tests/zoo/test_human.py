"""The human ports (faceres, mobileface, emotion Xception) against the original TF.js graphs.

Fixtures come from ``tools/fixtures/make_human.py``: the original graph models run in
@tensorflow/tfjs 4.22 (CPU backend) with human's own input scaling, on the astronaut's face, its
mirror image and uniform noise. Offline and fast: only the shipped weights and the fixtures.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from zoo_fixtures import load_fixture, relative_error

from pareidolia.checksums import file_sha256
from pareidolia.zoo import human
from pareidolia.zoo.spec import EMOTIONS

WEIGHTS = Path(human.__file__).resolve().parent / "weights"
SPECS = {s.name: s for s in human.SPECS}
TOL = 1e-4


def _model(name: str) -> torch.nn.Module:
    spec = SPECS[name]
    model = spec.factory()
    model.load_state_dict(load_file(str(WEIGHTS / spec.weights_file)), strict=True)
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize("name", ["faceres", "mobileface"])
def test_embedding_matches_tfjs(name: str) -> None:
    x, data = load_fixture(name)
    with torch.no_grad():
        y = _model(name)(x).numpy()
    assert y.shape == (3, SPECS[name].output_dim)
    assert relative_error(y, data["output"]).max() <= TOL


def test_emotion_matches_tfjs() -> None:
    x, data = load_fixture("mini_xception")
    assert tuple(data["labels"]) == human.HUMAN_EMOTIONS
    model = _model("mini_xception")
    with torch.no_grad():
        logp = model(x)
        logits = model.native_logits(x).numpy()
    assert logp.shape == (3, 7)
    # Probabilities, after mapping human's order onto spec.EMOTIONS.
    ref = data["output"][:, list(human.EMOTION_ORDER)]
    assert relative_error(logp.exp().numpy(), ref).max() <= TOL
    # The softmax saturates on the face; the pre-softmax scores are the sharper check.
    assert relative_error(logits, data["logits"]).max() <= TOL
    # Orders: the reordering is a permutation that names the same emotions.
    names = {"fear": "fearful", "disgust": "disgusted", "surprise": "surprised"}
    assert [
        names.get(human.HUMAN_EMOTIONS[i], human.HUMAN_EMOTIONS[i]) for i in human.EMOTION_ORDER
    ] == list(EMOTIONS)


@pytest.mark.parametrize("name", list(SPECS))
def test_gradients_reach_pixels(name: str) -> None:
    spec = SPECS[name]
    x, _ = load_fixture(name)
    x = x[:1].clone().requires_grad_(True)
    out = _model(name)(x)
    assert out.shape == (1, spec.output_dim)
    (out[0, 0] if spec.role == "emotion_judge" else out.square().sum()).backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(SPECS))
def test_shipped_weights_checksum(name: str) -> None:
    spec = SPECS[name]
    assert file_sha256(WEIGHTS / spec.weights_file) == spec.sha256
    assert spec.licence == "MIT"
    assert spec.weights_file == f"{name}.safetensors"
