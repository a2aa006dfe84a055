"""The paper-protocol FR models: architectures, checkpoint loading and its error messages.

No real checkpoint can be had here, so each model is built, given random weights (batch-norm
statistics included) and saved with ``torch.save`` the way the attack repos' files were; the
loader must bring back exactly that network. Parameter counts are asserted exactly against the
public definitions (face.evoLVe / InsightFace_Pytorch IR nets and MobileFaceNet, facenet-pytorch
InceptionResnetV1), whose state-dict keys and shapes these modules reproduce.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pareidolia.errors import UserError
from pareidolia.zoo import registry
from pareidolia.zoo.paper_fr import (
    PAPER_FR,
    PaperFR,
    load_paper_fr,
    paper_preprocess,
    read_paper_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ("ir152", "irse50", "facenet", "mobile_face")

# Parameters of the embedding networks, as the public definitions count them.
PARAMETERS = {
    "ir152": 70_737_600,  # face.evoLVe IR_152((112, 112))
    "irse50": 43_797_696,  # InsightFace_Pytorch Backbone(50, 0.6, "ir_se")
    "facenet": 23_482_624,  # facenet-pytorch InceptionResnetV1 without `logits`
    "mobile_face": 1_200_512,  # InsightFace_Pytorch MobileFaceNet(512)
}
FACENET_WITH_LOGITS = 27_910_327  # facenet-pytorch's VGGFace2 model, 8631-class head included

Saved = tuple[nn.Module, Path]


def _randomise(net: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere, plausible batch-norm statistics, eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in net.state_dict().items():
            if not t.is_floating_point():
                continue
            if key.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif key.endswith("running_mean") or key.endswith(".bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.ndim == 1:  # batch-norm scales, PReLU slopes
                t.copy_(1.0 + torch.randn(t.shape, generator=g) * 0.1)
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) / fan_in**0.5)
    return net.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Saved]:
    """``saved(name)`` → (original network, its checkpoint file), built once per module.

    The facenet file carries the 8631-identity ``logits`` head, as the attack repos' does.
    """
    cache: dict[str, Saved] = {}
    folder = tmp_path_factory.mktemp("paper_fr")

    def get(name: str) -> Saved:
        if name not in cache:
            spec = PAPER_FR[name]
            net = _randomise(spec.factory(), seed=NAMES.index(name))
            state = dict(net.state_dict())
            if name == "facenet":
                state["logits.weight"] = torch.randn(8631, 512)
                state["logits.bias"] = torch.randn(8631)
            path = folder / spec.checkpoint
            torch.save(state, path)
            cache[name] = (net, path)
        return cache[name]

    return get


def _faces(size: int, n: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------
# The table


def test_table_of_the_four() -> None:
    assert tuple(PAPER_FR) == NAMES
    assert {n: s.checkpoint for n, s in PAPER_FR.items()} == {n: f"{n}.pth" for n in NAMES}
    assert {n: s.input_size for n, s in PAPER_FR.items()} == {
        "ir152": 112,
        "irse50": 112,
        "facenet": 160,
        "mobile_face": 112,
    }
    assert all(s.output_dim == 512 for s in PAPER_FR.values())
    assert all(
        "[-1, 1]" in s.preprocessing and "bilinear" in s.preprocessing for s in PAPER_FR.values()
    )
    expected = {  # METHOD.md §5
        "ir152": (0.094632, 0.166788, 0.227922),
        "irse50": (0.144840, 0.241045, 0.312703),
        "facenet": (0.256587, 0.409131, 0.591191),
        "mobile_face": (0.183635, 0.301611, 0.380878),
    }
    for name, taus in expected.items():
        t = PAPER_FR[name].thresholds
        assert t.metric == "cosine" and t.model == name
        assert (t.at["0.1"], t.at["0.01"], t.at["0.001"]) == taus


def test_not_in_the_default_zoo() -> None:
    fr = registry.names("fr")
    assert not set(fr) & set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts(name: str) -> None:
    spec = PAPER_FR[name]
    with torch.device("meta"):
        net = spec.factory()
    count = sum(p.numel() for p in net.parameters())
    assert count == PARAMETERS[name] == spec.parameters


def test_facenet_count_with_its_classifier() -> None:
    assert PARAMETERS["facenet"] + 512 * 8631 + 8631 == FACENET_WITH_LOGITS


# --------------------------------------------------------------------------------------------
# Loading


@pytest.mark.parametrize("name", NAMES)
def test_round_trip(name: str, saved: Callable[[str], Saved]) -> None:
    original, path = saved(name)
    model = load_paper_fr(name, path)
    assert isinstance(model, PaperFR) and model.spec is PAPER_FR[name]
    assert not any(p.requires_grad for p in model.parameters())
    size = PAPER_FR[name].input_size
    x = _faces(size)
    with torch.no_grad():
        emb = model(x)
        reference = original(x * 2 - 1)
    assert emb.shape == (1, 512)
    assert torch.isfinite(emb).all() and emb.abs().max() > 0
    torch.testing.assert_close(emb, reference, rtol=0, atol=0)


def test_any_input_size_is_resized_bilinearly(saved: Callable[[str], Saved]) -> None:
    original, path = saved("mobile_face")
    model = load_paper_fr("mobile_face", path)
    x = _faces(256, n=2)
    resized = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(resized * 2 - 1), rtol=0, atol=0)


def test_wrapped_and_data_parallel_checkpoints_load(
    saved: Callable[[str], Saved], tmp_path: Path
) -> None:
    original, path = saved("mobile_face")
    state = torch.load(path, weights_only=True)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    model = load_paper_fr("mobile_face", wrapped)
    x = _faces(112)
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x * 2 - 1), rtol=0, atol=0)


def test_old_checkpoints_without_batch_counters_load(
    saved: Callable[[str], Saved], tmp_path: Path
) -> None:
    _, path = saved("mobile_face")
    state = torch.load(path, weights_only=True)
    old = tmp_path / "old.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, old)
    assert set(read_paper_checkpoint("mobile_face", old)) == set(state)


def test_facenet_with_or_without_classifier(saved: Callable[[str], Saved], tmp_path: Path) -> None:
    _, path = saved("facenet")
    state = torch.load(path, weights_only=True)
    assert "logits.weight" in state  # the fixture is shaped like the attack repos' file
    assert "logits.weight" not in read_paper_checkpoint("facenet", path)
    bare = tmp_path / "facenet_bare.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("logits.")}, bare)
    load_paper_fr("facenet", bare)


# --------------------------------------------------------------------------------------------
# Errors a user can act on


def test_renamed_key_is_named(saved: Callable[[str], Saved], tmp_path: Path) -> None:
    _, path = saved("mobile_face")
    state = torch.load(path, weights_only=True)
    state["conv1.convolution.weight"] = state.pop("conv1.conv.weight")
    bad = tmp_path / "renamed.pth"
    torch.save(state, bad)
    with pytest.raises(UserError) as err:
        load_paper_fr("mobile_face", bad)
    msg = str(err.value)
    assert str(bad) in msg and "'mobile_face'" in msg and "right checkpoint" in msg
    assert "missing 1 keys: conv1.conv.weight" in msg
    assert "unexpected 1 keys: conv1.convolution.weight" in msg
    assert "\n" not in msg  # the CLI prints it as one line


def test_wrong_shape_is_named(saved: Callable[[str], Saved], tmp_path: Path) -> None:
    _, path = saved("mobile_face")
    state = torch.load(path, weights_only=True)
    state["linear.weight"] = torch.zeros(128, 512)
    bad = tmp_path / "narrow.pth"
    torch.save(state, bad)
    with pytest.raises(
        UserError, match=r"linear\.weight \(file \(128, 512\), model \(512, 512\)\)"
    ):
        load_paper_fr("mobile_face", bad)


def test_another_models_checkpoint(saved: Callable[[str], Saved]) -> None:
    _, irse50_file = saved("irse50")
    with pytest.raises(UserError) as err:
        load_paper_fr("ir152", irse50_file)
    msg = str(err.value)
    assert str(irse50_file) in msg and "'ir152'" in msg and "ir152.pth" in msg
    assert "missing" in msg and "unexpected" in msg and "res_layer.5.fc1.weight" in msg
    assert "It fits 'irse50' (irse50.pth)" in msg


def test_mobile_face_file_for_facenet(saved: Callable[[str], Saved]) -> None:
    _, path = saved("mobile_face")
    with pytest.raises(UserError, match=r"It fits 'mobile_face'"):
        load_paper_fr("facenet", path)


def test_text_file(tmp_path: Path) -> None:
    text = tmp_path / "ir152.pth"
    text.write_text("<html>404 Not Found</html>\n")
    with pytest.raises(UserError, match=r"not a PyTorch checkpoint") as err:
        load_paper_fr("ir152", text)
    assert str(text) in str(err.value)


def test_whole_pickled_model_is_refused(tmp_path: Path) -> None:
    pickled = tmp_path / "mobile_face.pth"
    torch.save(PAPER_FR["mobile_face"].factory(), pickled)
    with pytest.raises(UserError, match=r"re-saved as model\.state_dict\(\)"):
        load_paper_fr("mobile_face", pickled)


def test_checkpoint_without_weights(tmp_path: Path) -> None:
    meta = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "lr": 0.1}, meta)
    with pytest.raises(UserError, match=r"holds a mapping with keys epoch, lr"):
        load_paper_fr("irse50", meta)


def test_missing_file_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no such file.*facenet\.pth"):
        load_paper_fr("facenet", tmp_path / "nowhere.pth")
    with pytest.raises(UserError, match=r"unknown paper FR model 'arcface'"):
        load_paper_fr("arcface", tmp_path / "nowhere.pth")


# --------------------------------------------------------------------------------------------
# Use in attacks


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_the_input(name: str, saved: Callable[[str], Saved]) -> None:
    _, path = saved(name)
    model = load_paper_fr(name, path)
    x = _faces(128, seed=1).requires_grad_(True)
    model(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_train_mode_keeps_the_network_frozen(saved: Callable[[str], Saved]) -> None:
    _, path = saved("mobile_face")
    model = load_paper_fr("mobile_face", path)
    x = _faces(112, n=2)
    with torch.no_grad():
        before = model(x)
        model.train()
        assert model.training and not model.net.training
        torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    assert model.checkpoint_sha256() is not None and len(model.checkpoint_sha256() or "") == 64


# --------------------------------------------------------------------------------------------
# Face preparation


def test_preprocess_resize_and_crop() -> None:
    x = _faces(256, n=2)
    resize = paper_preprocess("resize")
    torch.testing.assert_close(
        resize(x, 112), F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False)
    )
    assert resize.record() == {"preprocess": "resize", "preprocess_description": resize.description}

    crop = paper_preprocess("crop")
    boxes = torch.tensor([[64.0, 48.0, 192.0, 176.0], [0.0, 0.0, 256.0, 256.0]])
    out = crop(x, 160, boxes)
    assert out.shape == (2, 3, 160, 160)
    expected0 = F.interpolate(x[:1, :, 48:176, 64:192], size=(160, 160), mode="bilinear")
    torch.testing.assert_close(out[:1], expected0)
    torch.testing.assert_close(out[1:], resize(x[1:], 160))
    assert crop.record()["preprocess"] == "crop"


def test_preprocess_refuses_ambiguity() -> None:
    x = _faces(64)
    with pytest.raises(ValueError, match="crop mode needs boxes"):
        paper_preprocess("crop")(x, 112)
    with pytest.raises(ValueError, match="resize mode uses the whole image"):
        paper_preprocess("resize")(x, 112, torch.zeros(1, 4))
    with pytest.raises(ValueError, match="empty face box"):
        paper_preprocess("crop")(x, 112, torch.tensor([[10.0, 10.0, 10.0, 30.0]]))
    with pytest.raises(ValueError, match="preprocess mode"):
        paper_preprocess("squash")  # type: ignore[arg-type]
