"""The per-face refinement [ours] and the landmark expression guide: bounds, gradients, losses
that fall, and a move of a held-out FR model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pareidolia.faces.align import to_tensor, warp_crop, working_alignment
from pareidolia.faces.blend import face_mask
from pareidolia.locate import locate_faces
from pareidolia.objectives.geometry import (
    TEMPLATES,
    displacements,
    inter_ocular,
    smile_lift,
    template_error,
)
from pareidolia.objectives.identity import zoo_ensembles
from pareidolia.refine import (
    STRENGTHS,
    TEMPLATE_WARP,
    RefineConfig,
    Refiner,
    eot_copies,
    jpeg_straight_through,
)
from pareidolia.zoo.thresholds import thresholds

pytestmark = pytest.mark.usefixtures("module_one_thread")


@pytest.fixture(scope="module")
def crop(astronaut_rgb: np.ndarray) -> torch.Tensor:
    face = locate_faces(astronaut_rgb)[0]
    return to_tensor(warp_crop(astronaut_rgb, working_alignment(face.landmarks)))


@pytest.fixture(scope="module")
def target(insightface_images) -> torch.Tensor:  # type: ignore[no-untyped-def]
    from pareidolia.io import read_photo

    rgb = read_photo(insightface_images / "t1.jpg").rgb
    face = locate_faces(rgb)[0]
    return to_tensor(warp_crop(rgb, working_alignment(face.landmarks)))


def _refiner(surrogates: list[str], **kw: float) -> Refiner:
    """A refiner with the template warp off unless asked for (the tests of the other parts)."""
    kw.setdefault("template_warp", 0.0)
    return Refiner(surrogates, "happy", RefineConfig(**kw), zoo_ensembles(256, "cpu"))  # type: ignore[arg-type]


def test_the_template_warp_is_each_emotions_own_unless_set() -> None:
    fr = zoo_ensembles(256, "cpu")
    assert Refiner(["sface"], "happy", RefineConfig(), fr).template_warp == TEMPLATE_WARP["happy"]
    assert Refiner(["sface"], "surprised", RefineConfig(), fr).template_warp == 0.0
    assert Refiner(["sface"], "happy", RefineConfig(template_warp=0.5), fr).template_warp == 0.5
    assert STRENGTHS["natural"][0].template_warp == STRENGTHS["strong"][0].template_warp == 0.0


# ----------------------------------------------------------------------------- geometry


def test_template_loss_is_zero_at_the_template_and_scale_free() -> None:
    torch.manual_seed(0)
    p = torch.rand(2, 68, 2) * 100
    idx = sorted(TEMPLATES["happy"])
    template = torch.tensor([TEMPLATES["happy"][i] for i in idx])
    moved = p.clone()
    moved[:, idx] += template * inter_ocular(p)[:, None, None]
    assert template_error(moved, p, "happy").abs().max() < 1e-10
    assert template_error(p, p, "happy").min() > 0
    # the same faces twice as large: same displacements in IOD units
    np.testing.assert_allclose(displacements(2 * moved, 2 * p), displacements(moved, p), atol=1e-6)


def test_template_loss_reaches_the_pixels_and_falls(crop: torch.Tensor) -> None:
    r = _refiner(["sface"], steps=8, lr=0.1, max_shift=3.0, w_target=0, w_dodge=0, w_classifier=0)
    before = r.geometry(crop, crop)
    x = crop.clone().requires_grad_(True)
    r.geometry(x, crop).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    out = r(crop, crop, r.embed(crop), [256])
    after = r.geometry(out, crop)
    assert after.item() < 0.8 * before.item()
    moves = displacements(
        r.geometry.points_net.landmarks(out), r.geometry.points_net.landmarks(crop)
    )
    assert float(-moves[0, [48, 54], 1].mean()) > 0  # mouth corners went up


# ----------------------------------------------------------------------------- EOT


def test_jpeg_in_the_loop_is_real_forward_and_identity_backward(crop: torch.Tensor) -> None:
    x = crop.clone().requires_grad_(True)
    y = jpeg_straight_through(x, [50])
    assert (y - x).abs().max() > 1 / 255  # really compressed
    y.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))  # type: ignore[arg-type]


def test_eot_copies_shape_and_first_copy_at_the_faces_own_size(crop: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(0)
    views = eot_copies(crop.repeat(2, 1, 1, 1), [64, 256], 3, gen, jpeg=False)
    assert views.shape == (6, 3, 256, 256)
    assert torch.equal(views[1], crop[0])  # a 256 px face at its own size: unchanged
    assert (views[0] - crop[0]).abs().mean() > 0.005  # a 64 px face: resampled


def test_eot_copies_with_a_generator_per_face_do_not_depend_on_the_batch(
    crop: torch.Tensor,
) -> None:
    """One generator per face (as the refinement draws them): a face's random views are the
    ones it gets alone, whatever shares its batch."""
    faces = torch.cat([crop.flip(-1), crop])
    gens = [torch.Generator().manual_seed(7) for _ in range(2)]
    together = eot_copies(faces, [100, 120], 3, gens, jpeg=True).view(3, 2, 3, 256, 256)
    alone = eot_copies(crop, [120], 3, [torch.Generator().manual_seed(7)], jpeg=True)
    assert torch.equal(together[:, 1], alone)


# ----------------------------------------------------------------------------- refinement


def test_luminance_only_refinement_keeps_chroma_and_its_bound(
    crop: torch.Tensor, target: torch.Tensor
) -> None:
    eps = 8 / 255
    r = _refiner(
        ["sface", "mobileface"],
        steps=4,
        lr=0.5,
        max_shift=0.0,
        lum_eps=eps,
        lum_texture=0.0,
        w_geometry=0,
        w_classifier=0,
    )
    out = r(crop, crop, r.embed(target), [256])
    d = out - crop
    assert d.abs().max() <= eps + 1e-6
    inside = ((crop > 0.05) & (crop < 0.95)).all(1, keepdim=True).expand_as(d)
    spread = d - d.mean(1, keepdim=True)  # equal on R, G and B: no chroma change
    assert spread[inside].abs().max() < 1e-5
    assert d.abs().max() > eps / 2  # and it did change the luminance


def test_refinement_raises_target_similarity(crop: torch.Tensor, target: torch.Tensor) -> None:
    r = _refiner(["sface", "mobileface"], steps=8, copies=1, lr=0.05)
    t = r.embed(target)
    out = r(crop, crop, t, [256])
    sim = lambda x: sum(float((r.embed(x)[m] * t[m]).sum()) for m in t)  # noqa: E731
    assert sim(out) > sim(crop) + 0.1


def test_the_warp_leaves_the_blending_rim_alone(crop: torch.Tensor, target: torch.Tensor) -> None:
    r = _refiner(["sface"], steps=6, lr=0.5, max_shift=4.0, lum_eps=0.0, copies=1)
    out = r(crop, crop, r.embed(target), [256])
    mask = torch.from_numpy(np.array(face_mask(256)))
    assert (out - crop)[0][:, mask <= 0.5].abs().max() < 1e-5  # no displacement near the seam
    assert (out - crop)[0][:, mask > 0.9].abs().max() > 0.05  # but the face did move


def test_a_face_cut_by_the_border_is_refined_on_its_part_inside_the_photo(
    crop: torch.Tensor, target: torch.Tensor
) -> None:
    # the right 40 % of the crop lies beyond the photo: reflected padding, never pasted.
    # What fills it must not change the refinement of the part inside (without the warp and
    # the texture bound, whose neighbourhoods reach across the border, and without the
    # expression terms, which read the whole crop)
    inside = torch.ones(1, 1, 256, 256)
    inside[..., 154:] = 0.0
    padded = crop.clone()
    padded[..., 154:] = torch.rand(1, 3, 256, 102, generator=torch.Generator().manual_seed(1))
    kw = dict(steps=4, lr=0.2, max_shift=0.0, lum_texture=0.0, w_geometry=0.0, w_classifier=0.0)
    r = _refiner(["sface"], **kw, copies=2)  # type: ignore[arg-type]
    aim = r.embed(target)
    a = r(crop, crop, aim, [256], inside=inside)
    b = r(padded, padded, aim, [256], inside=inside)
    keep = inside.bool().expand_as(a)
    assert (a - crop)[keep].abs().max() > 1e-3  # it did refine the part inside
    torch.testing.assert_close(a[keep], b[keep], atol=1e-5, rtol=0)
    # without the mask the padding is taken for part of the face
    a0 = r(crop, crop, aim, [256])
    b0 = r(padded, padded, aim, [256])
    assert (a0 - b0)[keep].abs().max() > 1e-3


def test_no_steps_returns_the_start_unchanged_or_only_template_warped(crop: torch.Tensor) -> None:
    tinted = (crop + torch.tensor([0.1, -0.05, 0.05]).view(1, 3, 1, 1)).clamp(0, 1)
    r = _refiner(["sface"], steps=0, template_warp=0.0)
    assert torch.equal(r(crop, tinted, r.embed(crop), [256]), tinted)
    r = _refiner(["sface"], steps=0, template_warp=1.5)
    warped = r(crop, tinted, r.embed(crop), [256])
    assert not torch.equal(warped, tinted)
    # the warp follows the original's landmarks, not the start's
    points = r.geometry.points_net.landmarks(crop)
    assert torch.equal(warped, r.template_morph(tinted, points))


def test_the_time_limit_stops_after_the_step_that_passes_it(
    crop: torch.Tensor, target: torch.Tensor
) -> None:
    """A limit that the first step already passes keeps that step's result (as one step would
    give), the progress reporting that one step; without a limit all the steps run."""
    t = _refiner(["sface"]).embed(target)
    one = _refiner(["sface"], steps=1, copies=1, lr=0.05)(crop, crop, t, [256])
    calls: list[tuple[int, int]] = []
    limited = _refiner(["sface"], steps=6, copies=1, lr=0.05, max_seconds=1e-9)
    out = limited(crop, crop, t, [256], lambda k, n: calls.append((k, n)))
    assert torch.equal(out, one)
    assert calls == [(1, 6)]
    calls.clear()
    _refiner(["sface"], steps=3, copies=1, lr=0.05)(
        crop, crop, t, [256], lambda k, n: calls.append((k, n))
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_the_time_limit_is_per_face(
    crop: torch.Tensor, target: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of n faces gets n times the limit: with a clock that advances one second per
    reading, a limit of 1.5 s stops one face after its second step (2 s > 1.5 s) and two
    faces after their fourth (4 s > 3 s)."""
    import pareidolia.refine as refine_module

    clock = iter(range(1000))
    monkeypatch.setattr(refine_module.time, "perf_counter", lambda: float(next(clock)))
    t = _refiner(["sface"]).embed(target)
    for faces, steps in ((1, 2), (2, 4)):
        calls: list[int] = []
        r = _refiner(["sface"], steps=8, copies=1, lr=0.05, max_seconds=1.5)
        x = crop.expand(faces, -1, -1, -1)
        r(x, x, t, [256] * faces, lambda k, n, seen=calls: seen.append(k))
        assert calls == list(range(1, steps + 1))


def test_refinement_moves_the_held_out_model(crop: torch.Tensor, target: torch.Tensor) -> None:
    """Optimised against sface, faceres and mobileface only: dlib (held out) moves toward the
    target and away from the original; the strong preset takes the astronaut past dlib's
    same-person distance (0.6) to her own original."""
    from pareidolia.faces.align import ChipSampler
    from pareidolia.refine import STRENGTHS
    from pareidolia.zoo import registry

    dlib = registry.load("dlib", "cpu")
    chip = ChipSampler(registry.get("dlib").chip, 256)
    th = thresholds("dlib")
    with torch.no_grad():
        e_orig, e_target = dlib(chip(crop)), dlib(chip(target))
    moved = {}
    for name in ("natural", "strong"):
        config, _ = STRENGTHS[name]
        r = Refiner(["sface", "faceres", "mobileface"], "happy", config, zoo_ensembles(256, "cpu"))
        out = r(crop, crop, r.embed(target), [256])
        with torch.no_grad():
            e = dlib(chip(out))
        moved[name] = (float(th.score(e, e_orig)), float(th.score(e, e_target)))
    to_target_before = float(th.score(e_orig, e_target))
    assert moved["natural"][1] < to_target_before
    assert moved["natural"][0] > 0.3  # measured 0.443; a JPEG 75 copy stays within 0.1
    assert not th.matches(moved["strong"][0], "0.01")  # measured 0.636


def test_the_expression_warp_moves_only_the_template_region_toward_the_template(
    crop: torch.Tensor,
) -> None:
    """With the general warp and the luminance field off, the expression warp alone moves the
    happy template's landmarks (mouth corners up and out) and leaves the forehead as it was."""
    geometry_only = dict(max_shift=0.0, lum_eps=0.0, w_target=0, w_dodge=0, w_classifier=0)
    r = _refiner(["sface"], steps=10, lr=0.2, copies=1, w_geometry=100.0, **geometry_only)
    assert torch.equal(r(crop, crop, r.embed(crop), [256]), crop)  # no bound: nothing moves
    r = _refiner(
        ["sface"],
        steps=10,
        lr=0.2,
        copies=1,
        w_geometry=100.0,
        expression_shift=6.0,
        **geometry_only,
    )
    out = r(crop, crop, r.embed(crop), [256])
    pts = r.geometry.points_net.landmarks
    assert r.geometry(out, crop).item() < 0.7 * r.geometry(crop, crop).item()
    moves = displacements(pts(out), pts(crop))
    assert float(-moves[0, [48, 54], 1].mean()) > 0.01  # corners up
    assert float(moves[0, 54, 0] - moves[0, 48, 0]) > 0.01  # and apart
    assert (out - crop)[0, :, 30:70, 90:166].abs().max() < 1e-3  # the forehead stays


@pytest.mark.parametrize("emotion", ["happy", "surprised"])
def test_the_template_warp_moves_the_face_as_the_template_says(
    crop: torch.Tensor, emotion: str
) -> None:
    """The thin-plate-spline warp (twice the template) moves the face so that the landmark net
    finds the mouth corners up and out and the lower lids up (*happy*; measured on the
    astronaut 0.06 / 0.09 / 0.024 IOD), or the brows up (*surprised*: 0.07), and nothing at the
    paste seam moves."""
    r = Refiner(["sface"], emotion, RefineConfig(template_warp=2.0), zoo_ensembles(256, "cpu"))
    pts = r.geometry.points_net.landmarks
    out = r.template_morph(crop, pts(crop))
    moves = displacements(pts(out), pts(crop))[0]
    if emotion == "happy":
        assert float(-moves[[48, 54], 1].mean()) > 0.03  # corners up
        assert float(moves[54, 0] - moves[48, 0]) > 0.05  # and apart
        assert float(-moves[[40, 41, 46, 47], 1].mean()) > 0.01  # the cheeks lift the lids
    else:
        assert float(-moves[17:27, 1].mean()) > 0.03  # brows up
    seam = torch.from_numpy(np.array(face_mask(256)) < 0.02)
    assert (out - crop)[0][:, seam].abs().max() < 1e-3
    assert torch.equal(r.template_morph(crop, pts(crop)), out)  # deterministic


def test_the_smile_lift_is_the_corners_height_over_the_lips_middle_in_iod() -> None:
    torch.manual_seed(0)
    p = torch.rand(1, 68, 2) * 100
    p[0, 36:42] = torch.tensor([30.0, 40.0])  # eye centres 40 px apart
    p[0, 42:48] = torch.tensor([70.0, 40.0])
    p[0, [51, 57, 62, 66], 1] = 90.0
    p[0, [48, 54], 1] = 86.0  # corners 4 px above the lips' middle: a smile
    assert float(smile_lift(p)) == pytest.approx(0.1)
    p[0, [48, 54], 1] = 92.0  # drooping corners
    assert float(smile_lift(p)) == pytest.approx(-0.05)
    assert float(smile_lift(3 * p)) == pytest.approx(-0.05)  # scale-free


def test_a_face_that_already_smiles_gets_less_of_the_template_warp(crop: torch.Tensor) -> None:
    """With ``smile_full`` the warp shrinks with the smile the face has: the astronaut (who
    smiles) moves less than with the full warp, not at all once her smile reaches it, and a
    *surprised* warp is never scaled."""
    fr = zoo_ensembles(256, "cpu")
    full = Refiner(["sface"], "happy", RefineConfig(template_warp=1.5), fr)
    pts = full.geometry.points_net.landmarks(crop)
    lift = float(smile_lift(full.crop_points(pts)))
    assert lift > 0.03  # she smiles
    plain = full.template_morph(crop, pts)
    half = Refiner(["sface"], "happy", RefineConfig(template_warp=1.5, smile_full=2 * lift), fr)
    assert float(half.warp_scale(half.crop_points(pts))) == pytest.approx(0.5, abs=1e-6)
    scaled = half.template_morph(crop, pts)
    change, change_full = (scaled - crop).abs().mean(), (plain - crop).abs().mean()
    assert 0.2 * change_full < change < 0.8 * change_full
    none = Refiner(["sface"], "happy", RefineConfig(template_warp=1.5, smile_full=lift / 2), fr)
    assert float(none.warp_scale(none.crop_points(pts))) == 0.0
    assert (none.template_morph(crop, pts) - crop).abs().max() < 2e-3
    surprised = Refiner(
        ["sface"], "surprised", RefineConfig(template_warp=1.5, smile_full=lift), fr
    )
    assert float(surprised.warp_scale(surprised.crop_points(pts))) == 1.0


def test_the_identity_terms_cannot_spend_the_expression_warp(
    crop: torch.Tensor, target: torch.Tensor
) -> None:
    """The expression warp answers to the landmark template alone: with a negligible template
    weight and strong identity terms it stays where it started."""
    r = _refiner(
        ["sface", "mobileface"],
        steps=6,
        lr=0.5,
        copies=1,
        max_shift=0.0,
        lum_eps=0.0,
        expression_shift=8.0,
        w_geometry=1e-9,
        w_classifier=0,
    )
    out = r(crop, crop, r.embed(target), [256])
    assert (out - crop).abs().max() < 2e-3


def test_the_template_cannot_be_met_by_shading_when_the_expression_warp_is_on(
    crop: torch.Tensor,
) -> None:
    """With the expression warp on, the landmark template answers to it alone: a luminance
    field with room to move and nothing but the template to serve stays at zero (shading that
    moves the landmark net's points is not an expression), while the warp itself moves."""
    kw = dict(max_shift=0.0, lum_eps=0.1, lum_texture=0.0, w_target=0, w_dodge=0, w_classifier=0)
    r = _refiner(["sface"], steps=6, lr=0.3, copies=1, w_geometry=100.0, **kw)
    assert (r(crop, crop, r.embed(crop), [256]) - crop).abs().max() > 0.02  # without: shading
    r = _refiner(["sface"], steps=6, lr=0.3, copies=1, w_geometry=100.0, expression_shift=4.0, **kw)
    out = r(crop, crop, r.embed(crop), [256])
    warp_only = _refiner(
        ["sface"],
        steps=6,
        lr=0.3,
        copies=1,
        w_geometry=100.0,
        expression_shift=4.0,
        **{**kw, "lum_eps": 0.0},
    )(crop, crop, r.embed(crop), [256])
    assert (out - crop).abs().max() > 0.02  # the warp moved
    assert torch.allclose(out, warp_only, atol=1e-5)  # and the luminance field did not


def test_the_luminance_bound_grows_with_texture_and_holds(
    crop: torch.Tensor, target: torch.Tensor
) -> None:
    eps = 6 / 255
    r = _refiner(
        ["sface"],
        steps=4,
        lr=0.5,
        copies=1,
        max_shift=0.0,
        lum_eps=eps,
        lum_texture=1.0,
        w_geometry=0,
        w_classifier=0,
    )
    bound = r.luminance_bound(crop)
    assert isinstance(bound, torch.Tensor) and bound.shape == (1, 1, 256, 256)
    assert float(bound.min()) >= eps - 1e-7 and float(bound.max()) <= 2 * eps + 1e-7
    # the eyes and mouth (textured) get more room than the cheek below the image-left eye
    assert float(bound[0, 0, 100:115, 85:110].mean()) > float(bound[0, 0, 150:165, 70:85].mean())
    out = r(crop, crop, r.embed(target), [256])
    d = (out - crop).mean(1, keepdim=True)
    inside = ((crop > 0.05) & (crop < 0.95)).all(1, keepdim=True)
    assert (d.abs() <= bound + 1e-6)[inside].all()
    assert float(d.abs().max()) > eps  # it used the larger room where there was some


def test_bad_config_is_one_clear_error() -> None:
    from pareidolia.errors import UserError

    with pytest.raises(UserError, match="copies"):
        RefineConfig(copies=0)
    with pytest.raises(UserError, match="time limit"):
        RefineConfig(max_seconds=0.0)
    with pytest.raises(UserError, match="expression_shift"):
        RefineConfig(expression_shift=-1.0)
    with pytest.raises(UserError, match="smile_full"):
        RefineConfig(smile_full=-0.1)
