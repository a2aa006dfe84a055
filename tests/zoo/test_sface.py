"""The SFace port against onnxruntime on the original int8 ONNX, plus gradient and checksum checks.

``tests/fixtures/sface.npz`` holds three uint8 RGB chips (astronaut face, its mirror, uniform
noise) and the embeddings onnxruntime computed for them from the published
``face_recognition_sface_2021dec_int8bq.onnx`` (made by ``tools/fixtures/make_sface.py``). Only
``pareidolia.zoo.sface`` is used, through a registry narrowed to its spec, so these tests do not
depend on the other zoo modules.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pareidolia.zoo import registry
from pareidolia.zoo.sface import SPECS, SFace

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sface.npz"
SPEC = SPECS[0]
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> nn.Module:
    monkeypatch.setattr(registry, "specs", lambda: {SPEC.name: SPEC})
    return registry.load("sface")


def _chips(u8: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(u8).permute(0, 3, 1, 2).to(torch.float32) / 255.0


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_spec_contract() -> None:
    assert SPEC.name == "sface" and SPEC.role == "fr" and SPEC.chip == "arcface112"
    assert SPEC.input_size == 112 and SPEC.output_dim == 128
    assert SPEC.licence == "Apache-2.0"
    assert isinstance(SPEC.factory(), SFace)


def test_shipped_files_match_checksums() -> None:
    assert _sha256(registry.weights_path(SPEC)) == SPEC.sha256
    assert _sha256(registry.WEIGHTS_DIR / "yunet_2023mar_int8bq.onnx") == YUNET_SHA256


def test_matches_onnxruntime(model: nn.Module) -> None:
    data = np.load(FIXTURE)
    assert data["input"].dtype == np.uint8 and data["input"].shape == (3, 112, 112, 3)
    reference = data["output"]
    with torch.no_grad():
        out = model(_chips(data["input"])).numpy()
    assert out.shape == reference.shape == (3, 128)
    rel = np.linalg.norm(out - reference, axis=1) / np.linalg.norm(reference, axis=1)
    assert rel.max() <= 1e-4, rel


def test_mirrored_face_is_same_person(model: nn.Module) -> None:
    data = np.load(FIXTURE)
    with torch.no_grad():
        emb = model(_chips(data["input"]))
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
    x = _chips(np.load(FIXTURE)["input"])
    with torch.no_grad():
        ref = model(x)
        out = model.train()(x)
    assert torch.allclose(ref, out)
