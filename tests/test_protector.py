"""MAP fine-tuning mechanics on a tiny random 32 px UNet and real faces downscaled to 32 px.

The FR / expression chips are upsampled from 32 px crops: fine for checking that gradients
flow, losses fall, checkpoints resume exactly and artifacts round-trip, not for quality.
"""

from __future__ import annotations

import copy
import json
import os
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from safetensors import safe_open
from safetensors.torch import save as st_save

from pareidolia import protector as protector_mod
from pareidolia.data_parallel import SINGLE
from pareidolia.diffusion.hashing import model_hash, tensors_sha256
from pareidolia.diffusion.schedule import ScoreModelConfig
from pareidolia.errors import UserError
from pareidolia.faces.align import to_tensor, warp_crop, working_alignment
from pareidolia.io import read_photo
from pareidolia.locate import locate_faces
from pareidolia.objectives.expression import ClassifierGuide
from pareidolia.objectives.identity import IdentityLoss, SurrogateEnsemble
from pareidolia.protector import (
    Protector,
    ProtectorConfig,
    apply_protector,
    finetune,
    load_protector,
    save_protector,
)

SIZE = 32
CONFIG = ProtectorConfig(
    t0=10,
    n_inv=3,
    n_gen=2,
    lr=1e-3,
    epochs=1,
    batch=1,
    w_lap=0.0,
    w_sm=1.0,
    w_l1=0.5,
    projection="gradvac",
    surrogates=("mobileface",),
    victim="sface",
    emotion="happy",
    ema_decay=0.0,
    seed=3,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _crop(rgb: np.ndarray) -> torch.Tensor:
    face = locate_faces(rgb)[0]
    crop = to_tensor(warp_crop(rgb, working_alignment(face.landmarks, 256)))
    return F.interpolate(crop, size=(SIZE, SIZE), mode="bilinear", antialias=True).clamp(0, 1)


@pytest.fixture(scope="module")
def faces(astronaut_rgb: np.ndarray, insightface_images: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Training faces (astronaut, a face of t1.jpg) and the target (Tom Hanks), 32 px."""
    group = read_photo(insightface_images / "t1.jpg").rgb
    hanks = read_photo(insightface_images / "Tom_Hanks_54745.png").rgb
    return torch.cat([_crop(astronaut_rgb), _crop(group)]), _crop(hanks)


def _tiny_unet(seed: int) -> tuple[UNet2DModel, ScoreModelConfig]:
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=SIZE,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()
    cfg = ScoreModelConfig(1e-4, 0.02, 1000, SIZE, f"tiny-test-{seed}", model_hash(unet))
    return unet, cfg


@pytest.fixture(scope="module")
def base() -> tuple[UNet2DModel, ScoreModelConfig]:
    return _tiny_unet(0)


def _run(
    base: tuple[UNet2DModel, ScoreModelConfig],
    faces: tuple[torch.Tensor, torch.Tensor],
    out: Path,
    config: ProtectorConfig = CONFIG,
    resume: bool = False,
) -> Protector:
    unet, cfg = base
    train, target = faces
    return finetune(unet, cfg, train, target, config, out, progress=False, resume=resume)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_finetune_lowers_identity_loss_and_changes_weights(
    base: tuple[UNet2DModel, ScoreModelConfig],
    faces: tuple[torch.Tensor, torch.Tensor],
    tmp_path: Path,
) -> None:
    unet, cfg = base
    train, target = faces
    before_hash = model_hash(unet)
    config = replace(CONFIG, epochs=4, w_expr=0.1, w_sm=0.0, w_l1=0.0, projection="none")
    prot = _run(base, faces, tmp_path, config)
    assert model_hash(unet) == before_hash  # the base network is never modified
    assert not _same_weights(prot.unet, unet)  # gradients reached the weights

    identity = IdentityLoss(SurrogateEnsemble(["mobileface"], SIZE), target)
    untouched = Protector(unet=unet, base_unet=unet, base_cfg=cfg, config=config)
    l_before = identity(apply_protector(untouched, train))
    l_after = identity(apply_protector(prot, train))
    assert float(l_after.mean()) < float(l_before.mean()) - 0.02, (l_before, l_after)
    assert bool((l_after < l_before).all()), (l_before, l_after)

    log = list(protector_mod.iter_log(tmp_path))
    assert len(log) == 8 and all(set(protector_mod.TERMS) <= set(r) for r in log)
    assert set(prot.target_embeddings) == {"mobileface", "sface"}
    assert prot.metrics["steps"] == 8.0


@pytest.mark.parametrize("projection", ["none", "pcgrad", "gradvac"])
def test_every_projection_runs(
    base: tuple[UNet2DModel, ScoreModelConfig],
    faces: tuple[torch.Tensor, torch.Tensor],
    tmp_path: Path,
    projection: str,
) -> None:
    config = ProtectorConfig.from_dict({**CONFIG.to_dict(), "projection": projection})
    prot = _run(base, faces, tmp_path, config)
    assert not _same_weights(prot.unet, base[0])
    assert all(np.isfinite(v) for v in prot.metrics.values())


def test_resume_from_epoch_checkpoint_matches_uninterrupted_run(
    base: tuple[UNet2DModel, ScoreModelConfig],
    faces: tuple[torch.Tensor, torch.Tensor],
    tmp_path: Path,
) -> None:
    two = replace(CONFIG, epochs=2, ema_decay=0.9)
    whole = _run(base, faces, tmp_path / "whole", two)
    _run(base, faces, tmp_path / "split", replace(two, epochs=1))
    resumed = _run(base, faces, tmp_path / "split", two, resume=True)
    assert _same_weights(whole.unet, resumed.unet)
    assert whole.metrics == resumed.metrics
    # the latents were cached by the first run and reused
    assert len(list((tmp_path / "split" / "latents").glob("*.safetensors"))) == 2
    with pytest.raises(UserError, match="another config"):
        _run(base, faces, tmp_path / "split", replace(two, lr=2e-3), resume=True)


def test_a_checkpoint_from_before_a_new_config_field_resumes_at_its_default() -> None:
    from pareidolia.protector import _resume_key, _same_run

    current = _resume_key(CONFIG)
    older = {k: v for k, v in current.items() if k != "clip_model"}  # written before the field
    assert _same_run(older, current)
    assert not _same_run(older, _resume_key(replace(CONFIG, guide="clip", clip_model="RN50")))
    assert not _same_run({**older, "lr": current["lr"] * 2}, current)
    assert not _same_run({**current, "gone": 1}, current)  # a field this version lacks


def test_checkpointed_generation_gives_the_same_training(
    base: tuple[UNet2DModel, ScoreModelConfig],
    faces: tuple[torch.Tensor, torch.Tensor],
    tmp_path: Path,
) -> None:
    plain = _run(base, faces, tmp_path / "plain")
    ckpt = _run(base, faces, tmp_path / "ckpt", replace(CONFIG, checkpoint_gen=True))
    for a, b in zip(plain.unet.state_dict().values(), ckpt.unet.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert not ckpt.unet.is_gradient_checkpointing  # switched on for training only


def _first_step(
    base: tuple[UNet2DModel, ScoreModelConfig],
    faces: tuple[torch.Tensor, torch.Tensor],
    root: Path,
    config: ProtectorConfig,
) -> tuple[UNet2DModel, list[torch.Tensor]]:
    """The tuned network and the gradients one training step sets, on both faces at once."""
    unet, cfg = base
    train, target = faces
    cpu = torch.device("cpu")
    batch = protector_mod._training_faces(unet, cfg, train, config, root / "latents")
    fr = protector_mod._offline_fr(config, SIZE, cpu)
    guide = protector_mod.expression_guide(config, SIZE, cpu)
    ctx, state = protector_mod._start(
        unet, cfg, config, SIZE, target, fr, guide, SINGLE, torch.float32
    )
    protector_mod._step(ctx, state, batch[[0, 1]])
    return state.tuned, [p.grad for p in ctx.params if p.grad is not None]


def test_grad_checkpointing_gives_the_same_gradients(
    base: tuple[UNet2DModel, ScoreModelConfig],
    faces: tuple[torch.Tensor, torch.Tensor],
    tmp_path: Path,
) -> None:
    """``checkpoint_gen`` (per generation step, and the UNet's own per-block checkpointing on
    the tuned copy) recomputes activations: every term's gradient, after the projection, is
    the one without it."""
    tuned, plain = _first_step(base, faces, tmp_path / "plain", CONFIG)
    tuned_ckpt, ckpt = _first_step(
        base, faces, tmp_path / "ckpt", replace(CONFIG, checkpoint_gen=True)
    )
    assert not tuned.is_gradient_checkpointing and tuned_ckpt.is_gradient_checkpointing
    assert len(plain) == len(ckpt) == len(list(base[0].parameters()))
    for a, b in zip(plain, ckpt, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-8)


def test_a_run_resumes_with_grad_checkpointing_switched(
    base: tuple[UNet2DModel, ScoreModelConfig],
    faces: tuple[torch.Tensor, torch.Tensor],
    tmp_path: Path,
) -> None:
    """Memory options are not part of the resume key: a run started without checkpointing
    finishes with it as the uninterrupted run does, and a checkpoint whose key still holds
    ``checkpoint_gen`` (written before it was left out) resumes too."""
    from pareidolia.protector import _resume_key, _same_run

    two = replace(CONFIG, epochs=2, ema_decay=0.9)
    whole = _run(base, faces, tmp_path / "whole", two)
    _run(base, faces, tmp_path / "split", replace(two, epochs=1))
    resumed = _run(base, faces, tmp_path / "split", replace(two, checkpoint_gen=True), resume=True)
    assert resumed.metrics == whole.metrics
    for a, b in zip(
        whole.unet.state_dict().values(), resumed.unet.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    current = _resume_key(CONFIG)
    assert "checkpoint_gen" not in current
    assert _same_run({**current, "checkpoint_gen": True}, current)


def test_interrupt_writes_checkpoint_and_resumes_mid_epoch(
    base: tuple[UNet2DModel, ScoreModelConfig],
    faces: tuple[torch.Tensor, torch.Tensor],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    whole = _run(base, faces, tmp_path / "whole")
    real_step = protector_mod._step
    calls = 0

    def interrupting(*args: object, **kwargs: object) -> dict[str, float]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(protector_mod, "_step", interrupting)
    with pytest.raises(KeyboardInterrupt):
        _run(base, faces, tmp_path / "cut")
    assert (tmp_path / "cut" / protector_mod.CHECKPOINT_NAME).is_file()
    monkeypatch.setattr(protector_mod, "_step", real_step)
    resumed = _run(base, faces, tmp_path / "cut", resume=True)
    assert _same_weights(whole.unet, resumed.unet)
    assert whole.metrics == resumed.metrics
    steps = [r["step"] for r in protector_mod.iter_log(tmp_path / "cut")]
    assert steps == [1, 2]


def test_ctrl_c_during_the_update_is_held_until_the_step_is_whole(
    base: tuple[UNet2DModel, ScoreModelConfig],
    faces: tuple[torch.Tensor, torch.Tensor],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    whole = _run(base, faces, tmp_path / "whole")
    real_update = protector_mod._Ema.update

    def update_then_sigint(self: object, net: torch.nn.Module) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # arrives between optimiser step and EMA update
        real_update(self, net)  # type: ignore[arg-type]

    monkeypatch.setattr(protector_mod._Ema, "update", update_then_sigint)
    # A shell's background job starts with SIGINT ignored; Ctrl-C in a terminal raises.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            _run(base, faces, tmp_path / "cut")
    finally:
        signal.signal(signal.SIGINT, previous)
    monkeypatch.setattr(protector_mod._Ema, "update", real_update)
    state = torch.load(tmp_path / "cut" / protector_mod.CHECKPOINT_NAME, weights_only=True)
    assert (state["step"], state["pos"], state["ema"]["updates"]) == (1, 1, 1)
    resumed = _run(base, faces, tmp_path / "cut", resume=True)
    assert _same_weights(whole.unet, resumed.unet)


def test_faces_at_another_size_than_the_network_are_resized(
    faces: tuple[torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    unet, cfg = _tiny_unet(0)
    cfg = replace(cfg, resolution=16)
    prot = _run((unet, cfg), faces, tmp_path)
    out = apply_protector(prot, faces[0])
    assert out.shape == faces[0].shape and 0.0 <= float(out.min()) <= float(out.max()) <= 1.0


def test_save_load_round_trip_and_refusals(
    base: tuple[UNet2DModel, ScoreModelConfig],
    faces: tuple[torch.Tensor, torch.Tensor],
    tmp_path: Path,
) -> None:
    unet, cfg = base
    train, _ = faces
    prot = _run(base, faces, tmp_path / "run")
    path = save_protector(tmp_path / "p.safetensors", prot)
    loaded = load_protector(path, unet, cfg)
    assert loaded.config == prot.config
    assert loaded.metrics == prot.metrics and loaded.face_sha256 == prot.face_sha256
    assert all(
        torch.equal(loaded.target_embeddings[m], e) for m, e in prot.target_embeddings.items()
    )
    assert torch.equal(apply_protector(loaded, train), apply_protector(prot, train))

    other, other_cfg = _tiny_unet(1)
    with pytest.raises(UserError, match="base model"):
        load_protector(path, other, other_cfg)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(UserError, match="corrupt"):
        load_protector(garbage, unet, cfg)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError):
        load_protector(truncated, unet, cfg)
    flipped = bytearray(path.read_bytes())
    flipped[-5] ^= 0xFF  # inside the tensor data: only the weight checksum can tell
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(UserError):
        load_protector(bad, unet, cfg)
    with pytest.raises(UserError, match="no such"):
        load_protector(tmp_path / "missing.safetensors", unet, cfg)


def test_the_clip_guide_alone_tunes_the_network_and_is_recorded(
    base: tuple[UNet2DModel, ScoreModelConfig],
    faces: tuple[torch.Tensor, torch.Tensor],
    tmp_path: Path,
    fake_open_clip: object,
    fake_clip_cache: Path,
) -> None:
    """``guide = "clip"``, every other loss off: L_E (a fake CLIP's directional loss) falls,
    its gradient alone changes the weights, and the artifact records the guide and the
    weights' sha256."""
    from pareidolia.checksums import file_sha256
    from pareidolia.protect import ProtectOptions, run_record

    unet, cfg = base
    zero = {"w_id": 0.0, "w_lap": 0.0, "w_sm": 0.0, "w_l1": 0.0, "w_lowpass": 0.0}
    config = replace(CONFIG, guide="clip", epochs=4, projection="none", **zero)
    prot = _run(base, faces, tmp_path / "run", config)
    assert not _same_weights(prot.unet, unet)
    l_e = [r["L_E"] for r in protector_mod.iter_log(tmp_path / "run")]
    assert np.mean(l_e[-2:]) < 0.5 * np.mean(l_e[:2]), l_e
    sha256 = file_sha256(fake_clip_cache)
    assert prot.run == {"device": "cpu", "dtype": "float32", "clip_weights_sha256": sha256}

    loaded = load_protector(save_protector(tmp_path / "p.safetensors", prot), unet, cfg)
    assert (loaded.config.guide, loaded.config.clip_model) == ("clip", "ViT-B-16")
    assert loaded.config.clip_pretrained == "openai"
    assert run_record(loaded, ProtectOptions()) == {
        "device": "cpu", "dtype": "float32", "model": cfg.source, "guide": "clip ViT-B-16 / openai",
        "clip_weights_sha256": sha256,
    }  # fmt: skip


def test_the_classifier_stays_the_default_guide_and_others_are_refused() -> None:
    assert ProtectorConfig().guide == "classifier"
    assert isinstance(protector_mod.expression_guide(CONFIG, SIZE, "cpu"), ClassifierGuide)
    with pytest.raises(UserError, match=r"unknown expression guide 'lpips' \(classifier, clip\)"):
        replace(CONFIG, guide="lpips")
    with pytest.raises(UserError, match="are for guide 'clip'"):
        replace(CONFIG, clip_model="ViT-L-14")


def test_finetune_from_init_continues_from_those_weights(
    base: tuple[UNet2DModel, ScoreModelConfig],
    faces: tuple[torch.Tensor, torch.Tensor],
    tmp_path: Path,
) -> None:
    """``init`` starts the tuned weights from another network of the same architecture (a
    protector), while inversion stays with the base."""
    unet, cfg = base
    train, target = faces
    start = _tiny_unet(5)[0]
    slow = replace(CONFIG, lr=1e-7)
    cont = finetune(unet, cfg, train, target, slow, tmp_path, progress=False, init=start)
    ref, got, b = start.state_dict(), cont.unet.state_dict(), unet.state_dict()
    k = next(k for k in ref if ref[k].is_floating_point() and not torch.equal(ref[k], b[k]))
    assert (got[k] - ref[k]).abs().max() < 1e-4 < (got[k] - b[k]).abs().max()
    assert model_hash(unet) == cfg.content_hash  # the base is untouched


def test_fp16_delta_artifact_is_smaller_and_close(
    base: tuple[UNet2DModel, ScoreModelConfig],
    faces: tuple[torch.Tensor, torch.Tensor],
    tmp_path: Path,
) -> None:
    """The shipped format: float16 differences from the base, restored to within fp16 rounding
    of each difference (so far closer than the full weights' own scale)."""
    unet, cfg = base
    prot = _run(base, faces, tmp_path / "run")
    full = save_protector(tmp_path / "full.safetensors", prot)
    delta = save_protector(tmp_path / "delta.safetensors", prot, delta_fp16=True)
    assert delta.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_protector(delta, unet, cfg)
    tuned, base_w = prot.unet.state_dict(), unet.state_dict()
    for k, v in loaded.unet.state_dict().items():
        step = (tuned[k] - base_w[k]).abs().max()
        assert (v - tuned[k]).abs().max() <= 1e-3 * step + 1e-7, k
    assert not torch.equal(loaded.unet.state_dict()[k], base_w[k]) or float(step) == 0.0
    with pytest.raises(UserError, match="base model"):
        load_protector(delta, *_tiny_unet(1))


def test_config_validation_and_json_round_trip() -> None:
    assert ProtectorConfig.from_json(CONFIG.to_json()) == CONFIG
    default = ProtectorConfig()
    assert (default.t0, default.n_inv, default.n_gen, default.lr) == (60, 20, 6, 1e-4)
    assert default.victim not in default.surrogates
    with pytest.raises(UserError, match="held out"):
        replace(CONFIG, victim="mobileface")
    with pytest.raises(UserError, match="emotion"):
        replace(CONFIG, emotion="neutral")
    with pytest.raises(UserError, match="projection"):
        ProtectorConfig.from_dict({**CONFIG.to_dict(), "projection": "mgda"})
    with pytest.raises(UserError, match="unknown"):
        ProtectorConfig.from_dict({**CONFIG.to_dict(), "bogus": 1})


class _StandInFR(torch.nn.Module):
    """Paper-zoo stand-in surrogates: crops → unit 8-D features per named model; counts calls."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = list(names)
        torch.manual_seed(len(self.names))
        self.convs = torch.nn.ModuleDict({n: torch.nn.Conv2d(3, 8, 5, stride=4) for n in names})
        self.calls = 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        return {n: F.normalize(c(x).mean(dim=(2, 3)), dim=-1) for n, c in self.convs.items()}


def test_paper_zoo_protectors_train_against_the_given_fr_models(
    base: tuple[UNet2DModel, ScoreModelConfig],
    faces: tuple[torch.Tensor, torch.Tensor],
    tmp_path: Path,
) -> None:
    """``fr_zoo="paper"``: names are the paper checkpoints', the models come from ``fr`` (the
    user's files), and the identity gradient flows through them into the network."""
    unet, cfg = base
    train, target = faces
    config = replace(
        CONFIG, fr_zoo="paper", surrogates=("ir152", "irse50"), victim="facenet", epochs=1
    )
    # identity only: any weight change below comes through the stand-in FR models
    config = replace(config, w_expr=0.0, w_lap=0.0, w_sm=0.0, w_l1=0.0, w_lowpass=0.0)
    built: dict[tuple[str, ...], _StandInFR] = {}

    def fr(names: list[str]) -> torch.nn.Module:
        built[tuple(names)] = _StandInFR(list(names))
        return built[tuple(names)]

    prot = finetune(unet, cfg, train, target, config, tmp_path, progress=False, fr=fr)
    assert set(built) == {("ir152", "irse50"), ("facenet",)}
    assert built[("ir152", "irse50")].calls > 2  # target + one call per training step
    assert set(prot.target_embeddings) == {"ir152", "irse50", "facenet"}
    assert all(e.shape == (1, 8) for e in prot.target_embeddings.values())
    assert not _same_weights(prot.unet, unet)
    with pytest.raises(UserError, match="needs those models"):
        finetune(unet, cfg, train, target, config, tmp_path / "b", progress=False)


def test_fr_zoo_decides_which_model_names_are_valid() -> None:
    paper = replace(CONFIG, fr_zoo="paper", surrogates=("ir152",), victim="mobile_face")
    assert ProtectorConfig.from_json(paper.to_json()) == paper
    with pytest.raises(UserError, match="not FR models: dlib"):
        replace(paper, victim="dlib")
    with pytest.raises(UserError, match="not FR models: ir152"):
        replace(CONFIG, surrogates=("ir152",))
    with pytest.raises(UserError, match="fr_zoo"):
        replace(CONFIG, fr_zoo="lfw")


# ----------------------------------------------------------------------------- damaged tensors


def _untuned(unet: UNet2DModel, cfg: ScoreModelConfig) -> Protector:
    """A protector that is a copy of ``unet`` (no training needed to test the file format)."""
    return Protector(
        unet=copy.deepcopy(unet).requires_grad_(False),
        base_unet=unet,
        base_cfg=cfg,
        config=CONFIG,
    )


def _rewritten(
    src: Path, dest: Path, change: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
) -> Path:
    """``src`` with its tensors changed by ``change``, the header's checksum made to fit them:
    a file only the tensors' names, shapes or kinds can tell from a good one."""
    with safe_open(str(src), framework="pt", device="cpu") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    tensors = change(tensors)
    info = json.loads(meta["protector"])
    info["tensors_sha256"] = tensors_sha256(tensors)
    meta["protector"] = json.dumps(info)
    dest.write_bytes(st_save(tensors, metadata=meta))
    return dest


def _first_matrix(tensors: dict[str, torch.Tensor]) -> str:
    return next(k for k, v in tensors.items() if k.startswith("unet.") and v.ndim == 4)


@pytest.mark.parametrize("delta_fp16", [True, False], ids=["delta-fp16", "full"])
def test_a_wrongly_shaped_tensor_is_refused_naming_it_and_both_shapes(
    base: tuple[UNet2DModel, ScoreModelConfig], tmp_path: Path, delta_fp16: bool
) -> None:
    unet, cfg = base
    good = save_protector(tmp_path / "good.safetensors", _untuned(unet, cfg), delta_fp16=delta_fp16)
    names: list[str] = []

    def reshape(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        names.append(_first_matrix(tensors))
        tensors[names[0]] = torch.zeros(7, 5, dtype=tensors[names[0]].dtype)
        return tensors

    bad = _rewritten(good, tmp_path / "bad.safetensors", reshape)
    shape = tuple(unet.state_dict()[names[0].removeprefix("unet.")].shape)
    with pytest.raises(UserError) as caught:
        load_protector(bad, unet, cfg)
    assert str(caught.value) == (
        f"{bad}: protector tensor {names[0]} has shape (7, 5), but the base network's is "
        f"{shape} (a damaged protector, or one for another network)"
    )


def test_a_tensor_of_another_kind_is_refused(
    base: tuple[UNet2DModel, ScoreModelConfig], tmp_path: Path
) -> None:
    unet, cfg = base
    good = save_protector(tmp_path / "good.safetensors", _untuned(unet, cfg), delta_fp16=True)

    def to_int(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        k = _first_matrix(tensors)
        tensors[k] = tensors[k].to(torch.int64)
        return tensors

    bad = _rewritten(good, tmp_path / "int.safetensors", to_int)
    with pytest.raises(UserError, match=r"protector tensor unet\.\S+ is int64, but the base"):
        load_protector(bad, unet, cfg)


def test_wrong_tensor_names_are_counted_and_three_shown(
    base: tuple[UNet2DModel, ScoreModelConfig], tmp_path: Path
) -> None:
    unet, cfg = base
    good = save_protector(tmp_path / "good.safetensors", _untuned(unet, cfg), delta_fp16=True)
    n = len(unet.state_dict())

    def rename(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k.replace("unet.", "unet.renamed.", 1): v for k, v in tensors.items()}

    bad = _rewritten(good, tmp_path / "renamed.safetensors", rename)
    with pytest.raises(UserError) as caught:
        load_protector(bad, unet, cfg)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 600, message
    assert f"{n} of the base network's tensors missing" in message
    assert f"{n} unexpected" in message and f"… {n - 3} more" in message
    assert message.count("unet.renamed.") == 3  # three of each are shown

    def drop_one(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        del tensors[_first_matrix(tensors)]
        return tensors

    bad = _rewritten(good, tmp_path / "short.safetensors", drop_one)
    with pytest.raises(UserError, match=r"weights do not fit the base network: 1 of the base "):
        load_protector(bad, unet, cfg)


def test_a_folder_given_as_protector_is_named_as_a_folder(
    base: tuple[UNet2DModel, ScoreModelConfig], tmp_path: Path
) -> None:
    with pytest.raises(UserError) as caught:
        load_protector(tmp_path, *base)
    assert str(caught.value) == f"{tmp_path}: is a folder; a protector is one file (.safetensors)"


def test_cli_refuses_a_wrongly_shaped_tensor_with_one_line(
    astronaut_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``pareidolia protect --protector FILE`` with the shipped prior as base: exit 2 and one
    line naming the tensor, not a RuntimeError's traceback."""
    from pareidolia.cli import main
    from pareidolia.diffusion.prior import default_prior

    unet, cfg = default_prior()
    good = save_protector(tmp_path / "good.safetensors", _untuned(unet, cfg), delta_fp16=True)
    name: list[str] = []

    def reshape(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        name.append(_first_matrix(tensors))
        tensors[name[0]] = torch.zeros(7, 5, dtype=torch.float16)
        return tensors

    bad = _rewritten(good, tmp_path / "bad.safetensors", reshape)
    out = tmp_path / "out"
    rc = main(["protect", str(astronaut_path), "-o", str(out), "--protector", str(bad)])
    stdout, stderr = capsys.readouterr()
    assert rc == 2 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pareidolia: {bad}: protector tensor {name[0]}")
    assert "(7, 5)" in lines[0] and "Traceback" not in stderr
    assert not out.exists() or not any(out.iterdir())


# ----------------------------------------------------------------------------- dtype


def test_bfloat16_training_and_protecting_stay_close_to_float32(
    base: tuple[UNet2DModel, ScoreModelConfig],
    faces: tuple[torch.Tensor, torch.Tensor],
    tmp_path: Path,
) -> None:
    """bfloat16 autocast around the score network, on the CPU: training records its dtype and
    keeps float32 weights; the protected faces stay near the float32 run's. Measured here
    (torch 2.13, CPU): applying one protector in bfloat16 moves pixels ([0, 1]) by 8e-5 on
    average (8e-4 at most); training and applying in bfloat16 by 8.5e-4 (0.017 at most), the
    float32 edit itself being 4e-3 on average. Bounds: about three times those."""
    unet, cfg = base
    train, _ = faces
    two = replace(CONFIG, epochs=2)
    p32 = _run(base, faces, tmp_path / "fp32", two)
    p16 = finetune(unet, cfg, *faces, two, tmp_path / "bf16", progress=False, dtype=torch.bfloat16)
    assert (p32.run["dtype"], p16.run["dtype"]) == ("float32", "bfloat16")
    assert all(
        v.dtype == torch.float32 for v in p16.unet.state_dict().values() if v.is_floating_point()
    )
    out32 = apply_protector(p32, train)
    applied16 = apply_protector(p32, train, dtype=torch.bfloat16)
    both16 = apply_protector(p16, train, dtype=torch.bfloat16)
    assert applied16.dtype == both16.dtype == torch.float32
    d_apply, d_both = (applied16 - out32).abs(), (both16 - out32).abs()
    assert 0 < float(d_apply.mean()) < 3e-4 and float(d_apply.max()) < 3e-3, d_apply.max()
    assert float(d_both.mean()) < 3e-3 and float(d_both.max()) < 0.05, d_both.max()
    loaded = load_protector(save_protector(tmp_path / "p.safetensors", p16), unet, cfg)
    assert loaded.run == p16.run


def test_a_protector_saved_before_the_dtype_was_recorded_still_loads(
    base: tuple[UNet2DModel, ScoreModelConfig], tmp_path: Path
) -> None:
    from pareidolia.protect import ProtectOptions, run_record

    unet, cfg = base
    untuned = replace(_untuned(unet, cfg), run={"device": "cpu", "dtype": "float32"})
    path = save_protector(tmp_path / "new.safetensors", untuned)
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    info = json.loads(meta["protector"])
    info["run"] = {"device": "cpu"}  # what an older version wrote
    meta["protector"] = json.dumps(info)
    old = tmp_path / "old.safetensors"
    old.write_bytes(st_save(tensors, metadata=meta))
    loaded = load_protector(old, unet, cfg)
    assert loaded.run == {"device": "cpu"}
    assert run_record(loaded, ProtectOptions())["dtype"] == "float32"
