from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pareidolia.errors import UserError
from pareidolia.objectives.expression import (
    MIN_AGREEMENT,
    ClassifierGuide,
    ClipDirectionalGuide,
    ExpressionGuide,
    clip_preprocess,
    open_clip_guide,
    text_direction,
)


@pytest.fixture(scope="module")
def guides() -> dict[str, ClassifierGuide]:
    return {e: ClassifierGuide(e) for e in ("happy", "sad", "surprised")}


def test_classifier_prefers_happy_on_smiling_astronaut(guides, astronaut_crop) -> None:
    happy = guides["happy"](astronaut_crop, astronaut_crop)
    sad = guides["sad"](astronaut_crop, astronaut_crop)
    assert happy.shape == sad.shape == (1,)
    assert happy.item() < sad.item()


def test_classifier_gradients_reach_pixels_and_steps_lower_loss(guides, astronaut_crop) -> None:
    guide: ExpressionGuide = guides["surprised"]
    x = astronaut_crop.clone().requires_grad_(True)
    start = guide(x, astronaut_crop)
    (grad,) = torch.autograd.grad(start.sum(), x)
    assert grad.abs().sum() > 0
    for _ in range(5):
        loss = guide(x, astronaut_crop).sum()
        (g,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x -= 2.0 / 255 * g.sign()
            x.clamp_(0, 1)
    assert guide(x, astronaut_crop).item() < start.item() - 0.1


def test_classifier_is_the_zoo_expression_net_through_its_chip(guides, astronaut_crop) -> None:
    guide = guides["happy"]
    parent = torch.nn.Sequential(guide).train()
    assert parent.training and not guide.net.training  # the frozen net stays in eval mode
    assert guide.sampler is guide.model.chip and guide.sampler.chip == "faceapi112"
    assert all(not p.requires_grad for p in guide.parameters())
    expected = guide.net(guide.sampler(astronaut_crop))
    assert torch.equal(guide.log_probs(astronaut_crop), expected)
    guide.eval()


@pytest.mark.parametrize("bad", ["neutral", "joy", "Happy", ""])
def test_bad_emotion_names_raise(bad: str) -> None:
    with pytest.raises(ValueError, match="surprised"):
        ClassifierGuide(bad)


# --- CLIP directional math with tiny fakes ---------------------------------------------------

D = 8


def linear_encoder(seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(3 * 4 * 4, D, bias=False)


def encode(enc: torch.nn.Linear):
    return lambda x: enc(x.flatten(1))


def images(seed: int, n: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))


def unit_shift(enc: torch.nn.Linear, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(
            F.normalize(enc(x_hat.flatten(1)), dim=-1) - F.normalize(enc(x.flatten(1)), dim=-1),
            dim=-1,
        )[0]


def orthogonal_to(v: torch.Tensor, seed: int = 5) -> torch.Tensor:
    w = torch.randn(v.shape, generator=torch.Generator().manual_seed(seed))
    return w - (w @ v) * v


@pytest.mark.parametrize(
    ("angle", "expected"),
    [
        (0.0, 0.0),
        (math.pi / 3, -math.log(0.75)),
        (math.pi / 2, math.log(2.0)),
        (2 * math.pi / 3, -math.log(0.25)),
        (math.pi, -math.log(MIN_AGREEMENT)),
    ],
)
def test_clip_directional_analytic_values(angle: float, expected: float) -> None:
    enc = linear_encoder()
    x, x_hat = images(1), images(2)
    u = unit_shift(enc, x_hat, x)
    w = F.normalize(orthogonal_to(u), dim=0)
    direction = math.cos(angle) * u + math.sin(angle) * w
    guide = ClipDirectionalGuide(encode(enc), direction, preprocess=None)
    loss = guide(x_hat, x)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(expected, abs=1e-4)


def test_clip_no_shift_is_log2_and_direction_scale_irrelevant() -> None:
    enc = linear_encoder()
    x = images(1)
    guide = ClipDirectionalGuide(encode(enc), 7.0 * torch.ones(D), preprocess=None)
    assert guide(x, x).item() == pytest.approx(math.log(2.0), abs=1e-6)


def test_clip_text_direction_from_fake_encoder_and_gradients() -> None:
    """A fake text encoder that 'sees' images a (for "face") and b (for "<emotion> face"):
    editing a into b is exactly along ΔT (loss 0) and b into a exactly opposite."""
    enc = linear_encoder()
    a, b = images(1), images(2)

    def text_encoder(texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([enc((b if "happy" in t else a).flatten(1)) for t in texts])

    delta_t = text_direction(text_encoder, "happy")
    assert delta_t.shape == (D,)
    assert delta_t.norm().item() == pytest.approx(1.0)
    guide = ClipDirectionalGuide.from_text_encoder(
        encode(enc), text_encoder, "happy", preprocess=None
    )
    assert guide(b, a).item() == pytest.approx(0.0, abs=1e-5)
    assert guide(a, b).item() == pytest.approx(-math.log(MIN_AGREEMENT), abs=1e-3)

    x_hat = images(3).requires_grad_(True)
    guide(x_hat, a).sum().backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        text_direction(text_encoder, "neutral")


def test_clip_preprocess_shape_and_normalisation() -> None:
    x = torch.full((2, 3, 256, 256), 0.5)
    y = clip_preprocess(x)
    assert y.shape == (2, 3, 224, 224)
    assert y[0, 0, 0, 0].item() == pytest.approx((0.5 - 0.48145466) / 0.26862954, abs=1e-4)


@pytest.mark.parametrize("problem", ["missing", "broken"])
def test_open_clip_guide_without_a_working_package_is_a_user_error(
    monkeypatch, tmp_path, write_clip_weights, problem: str
) -> None:
    """Not installed, or installed with a torchvision whose compiled operators do not fit
    this torch (its import then raises RuntimeError): one line either way."""
    import sys

    write_clip_weights(tmp_path / "w.safetensors")
    if problem == "missing":
        monkeypatch.setitem(sys.modules, "open_clip", None)  # import now raises ImportError
    else:
        package = tmp_path / "site" / "open_clip"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(
            'raise RuntimeError("operator torchvision::nms does not exist")\n'
        )
        monkeypatch.delitem(sys.modules, "open_clip", raising=False)
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(UserError, match="open_clip_torch") as e:
        open_clip_guide("happy", "tiny", str(tmp_path / "w.safetensors"))
    assert "\n" not in str(e.value)
    assert problem == "missing" or "torchvision::nms" in str(e.value)


# --- the open_clip guide with a fake open_clip and fake weights -------------------------------


def test_open_clip_guide_reads_the_fetched_weights(
    fake_open_clip, fake_clip_cache, write_clip_weights
) -> None:
    """The default (ViT-B-16 / openai) is the file in the cache, loaded into open_clip's model
    built with QuickGELU and no weights of its own (open_clip downloads nothing)."""
    from pareidolia.checksums import file_sha256

    guide = open_clip_guide("happy")
    assert fake_open_clip.calls == [
        ("ViT-B-16", {"pretrained": None, "force_quick_gelu": True, "device": "cpu"})
    ]
    assert guide.weights_sha256 == file_sha256(fake_clip_cache)
    expected = write_clip_weights(fake_clip_cache.with_name("copy.safetensors"))
    (model,) = fake_open_clip.models
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    assert not any(p.requires_grad for p in model.parameters())

    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    x_hat = x.clone().requires_grad_(True)
    start = guide(x_hat, x)
    assert start.item() == pytest.approx(math.log(2.0), abs=1e-5)  # no edit yet: orthogonal
    for _ in range(20):
        (g,) = torch.autograd.grad(guide(x_hat, x).sum(), x_hat)
        with torch.no_grad():
            x_hat -= 0.05 * g.sign()
            x_hat.clamp_(0, 1)
    assert guide(x_hat, x).item() < start.item() - 0.1  # edits along ΔT lower L_E


def test_open_clip_guide_without_weights_names_the_fetch_command(
    fake_open_clip, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("PAREIDOLIA_CACHE", str(tmp_path))
    with pytest.raises(UserError, match=r"not fetched; `pareidolia fetch clip` downloads") as e:
        open_clip_guide("happy")
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)
    assert fake_open_clip.calls == []  # nothing built, nothing downloaded


def test_open_clip_guide_takes_a_weights_file(fake_open_clip, tmp_path, write_clip_weights) -> None:
    from pareidolia.checksums import file_sha256

    path = tmp_path / "mine.safetensors"
    write_clip_weights(path, seed=4)
    guide = open_clip_guide("sad", "tiny", str(path))
    assert guide.weights_sha256 == file_sha256(path)
    assert fake_open_clip.calls[0][1]["force_quick_gelu"] is False


@pytest.mark.parametrize(
    ("model", "pretrained", "message"),
    [
        ("ViT-B-16", "laion2b_s34b_b88k", "fetches only ViT-B-16 / openai"),
        ("no-such-model", "FILE", "cannot build model 'no-such-model'"),
        ("tiny", "BAD", "not weights of open_clip's tiny"),
        ("tiny", "JUNK", "not readable CLIP weights"),
    ],
)
def test_open_clip_guide_problems_are_one_line(
    fake_open_clip, tmp_path, write_clip_weights, model: str, pretrained: str, message: str
) -> None:
    from safetensors.torch import save_file

    write_clip_weights(tmp_path / "FILE.safetensors")
    save_file({"other": torch.zeros(2)}, str(tmp_path / "BAD.safetensors"))
    (tmp_path / "JUNK.safetensors").write_bytes(b"not safetensors")
    if pretrained.isupper():
        pretrained = str(tmp_path / f"{pretrained}.safetensors")
    with pytest.raises(UserError, match=message) as e:
        open_clip_guide("happy", model, pretrained)
    assert "\n" not in str(e.value)
