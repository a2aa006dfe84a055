"""The human ports (faceres, mobileface, emotion Xception) against the original TF.js graphs.

Fixtures come from ``tools/fixtures/make_human.py``: the original graph models run in
@tensorflow/tfjs 4.22 (CPU backend) with human's own input scaling, on the astronaut's face, its
mirror image and uniform noise. Offline and fast: only the shipped weights and the fixtures.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pareidolia.zoo import human
from pareidolia.zoo.spec import EMOTIONS

WEIGHTS = Path(human.__file__).resolve().parent / "weights"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SPECS = {s.name: s for s in human.SPECS}
TOL = 1e-4


def _model(name: str) -> torch.nn.Module:
    spec = SPECS[name]
    model = spec.factory()
    model.load_state_dict(load_file(str(WEIGHTS / spec.weights_file)), strict=True)
    return model.eval().requires_grad_(False)


def _fixture(name: str) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    data = dict(np.load(FIXTURES / f"{name}.npz"))
    x = torch.from_numpy(data["input"]).permute(0, 3, 1, 2).float() / 255.0
    return x, data


def _rel_err(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.linalg.norm(y - ref, axis=1) / np.linalg.norm(ref, axis=1)


@pytest.mark.parametrize("name", ["faceres", "mobileface"])
def test_embedding_matches_tfjs(name: str) -> None:
    x, data = _fixture(name)
    with torch.no_grad():
        y = _model(name)(x).numpy()
    assert y.shape == (3, SPECS[name].output_dim)
    assert _rel_err(y, data["output"]).max() <= TOL


def test_emotion_matches_tfjs() -> None:
    x, data = _fixture("mini_xception")
    assert tuple(data["labels"]) == human.HUMAN_EMOTIONS
    model = _model("mini_xception")
    with torch.no_grad():
        logp = model(x)
        logits = model.native_logits(x).numpy()
    assert logp.shape == (3, 7)
    # Probabilities, after mapping human's order onto spec.EMOTIONS.
    ref = data["output"][:, list(human.EMOTION_ORDER)]
    assert _rel_err(logp.exp().numpy(), ref).max() <= TOL
    # The softmax saturates on the face; the pre-softmax scores are the sharper check.
    assert _rel_err(logits, data["logits"]).max() <= TOL
    # Orders: the reordering is a permutation that names the same emotions.
    names = {"fear": "fearful", "disgust": "disgusted", "surprise": "surprised"}
    assert [
        names.get(human.HUMAN_EMOTIONS[i], human.HUMAN_EMOTIONS[i]) for i in human.EMOTION_ORDER
    ] == list(EMOTIONS)


@pytest.mark.parametrize("name", list(SPECS))
def test_gradients_reach_pixels(name: str) -> None:
    spec = SPECS[name]
    x, _ = _fixture(name)
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
    digest = hashlib.sha256((WEIGHTS / spec.weights_file).read_bytes()).hexdigest()
    assert digest == spec.sha256
    assert spec.licence == "MIT"
    assert spec.weights_file == f"{name}.safetensors"
