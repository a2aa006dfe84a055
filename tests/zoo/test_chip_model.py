"""The zoo's one model type: a face model seen through its chip, used the same way by the
identity loss, the verifiers and the photo embedder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pareidolia.faces.align import ChipSampler, crop_chip, to_tensor
from pareidolia.faces.templates import ARCFACE_112
from pareidolia.objectives.identity import SurrogateEnsemble
from pareidolia.zoo import registry
from pareidolia.zoo.chip_model import shared_zoo_model, zoo_model
from pareidolia.zoo.thresholds import thresholds

pytestmark = pytest.mark.usefixtures("module_one_thread")


def test_a_zoo_model_reads_its_chip_from_working_crops() -> None:
    model = zoo_model("sface", 128)
    x = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    net, chip = registry.load("sface"), ChipSampler(registry.get("sface").chip, 128)
    with torch.no_grad():
        expected = net(chip(x))
        assert torch.equal(model(x), expected)
    assert torch.allclose(model.embed_crops(x, batch=2), expected, atol=1e-6)
    assert model.rule == thresholds("sface") and model.device == torch.device("cpu")


def test_a_photo_is_embedded_from_its_own_chip() -> None:
    model = shared_zoo_model("mobileface")
    rgb = np.random.default_rng(0).integers(0, 256, (300, 260, 3), dtype=np.uint8)
    landmarks = ARCFACE_112 * 1.5 + 40.0
    chip = crop_chip(rgb, landmarks, registry.get("mobileface").chip)
    with torch.no_grad():
        expected = registry.load("mobileface")(to_tensor(chip))
    assert torch.equal(model.embed_photo(rgb, landmarks), expected)


def test_shared_models_are_loaded_once_per_size_and_device() -> None:
    judge = shared_zoo_model(registry.JUDGE, 256, "cpu")
    assert shared_zoo_model(registry.JUDGE, 256, torch.device("cpu")) is judge
    assert shared_zoo_model(registry.JUDGE, 128, "cpu") is not judge
    with pytest.raises(ValueError, match="not an FR model"):
        _ = judge.rule


def test_the_ensemble_takes_names_or_models() -> None:
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    built = zoo_model("mobileface")
    by_model, by_name = SurrogateEnsemble([built]), SurrogateEnsemble(["mobileface"])
    with torch.no_grad():
        out = by_model(x)["mobileface"]
        assert torch.equal(out, F.normalize(built(x), dim=-1))
        assert torch.equal(out, by_name(x)["mobileface"])
