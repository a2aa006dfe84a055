"""Gradient surgery (METHOD.md §3.4): analytic checks of none / PCGrad / GradVac."""

from __future__ import annotations

import math

import pytest
import torch

from pareidolia.projection import (
    GradVac,
    combine_none,
    combine_pcgrad,
    make_combiner,
    project,
)


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def close(got: list[torch.Tensor], want: list[torch.Tensor], atol: float = 1e-12) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, atol=atol, rtol=0)


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a @ b) / (a.norm() * b.norm()))


# --- none -------------------------------------------------------------------------------------


def test_none_is_the_sum() -> None:
    g_a = [t(1, 2), torch.ones(2, 3, dtype=torch.float64)]
    g_e = [t(-3, 5), 2 * torch.ones(2, 3, dtype=torch.float64)]
    want = [t(-2, 7), 3 * torch.ones(2, 3, dtype=torch.float64)]
    close(combine_none(g_a, g_e), want)
    close(make_combiner("none")(g_a, g_e), want)
    close(project("none", g_a, g_e), want)


# --- PCGrad -----------------------------------------------------------------------------------


def test_pcgrad_conflicting_2d_by_hand() -> None:
    # g_A = (1, 0), g_E = (-1, 1): g_A·g_E = -1, ‖g_E‖² = 2, ‖g_A‖² = 1.
    # g_A' = (1, 0) − (−1/2)(−1, 1) = (1/2, 1/2)
    # g_E' = (−1, 1) − (−1/1)(1, 0) = (0, 1)
    # sum  = (1/2, 3/2)
    got = combine_pcgrad([t(1, 0)], [t(-1, 1)])
    close(got, [t(0.5, 1.5)])
    close(project("pcgrad", [t(1, 0)], [t(-1, 1)]), [t(0.5, 1.5)])


def test_pcgrad_projected_parts_are_orthogonal_to_the_originals() -> None:
    torch.manual_seed(0)
    a = torch.randn(50, dtype=torch.float64)
    e = -a + 0.3 * torch.randn(50, dtype=torch.float64)  # strongly conflicting
    assert a @ e < 0
    a_p = a - (a @ e) / (e @ e) * e
    e_p = e - (e @ a) / (a @ a) * a
    assert abs(float(a_p @ e)) < 1e-10 and abs(float(e_p @ a)) < 1e-10
    close(combine_pcgrad([a], [e]), [a_p + e_p], atol=1e-10)


@pytest.mark.parametrize(
    ("a", "e"),
    [((1.0, 2.0), (3.0, 1.0)), ((1.0, 0.0), (0.0, 5.0))],
    ids=["aligned", "orthogonal"],
)
def test_pcgrad_leaves_non_conflicting_pairs_alone(
    a: tuple[float, float], e: tuple[float, float]
) -> None:
    close(combine_pcgrad([t(*a)], [t(*e)]), [t(*a) + t(*e)])


def test_pcgrad_zero_norm_gives_the_other_gradient() -> None:
    close(combine_pcgrad([t(0, 0)], [t(-1, 1)]), [t(-1, 1)])
    close(combine_pcgrad([t(1, 2)], [t(0, 0)]), [t(1, 2)])
    close(combine_pcgrad([t(0, 0)], [t(0, 0)]), [t(0, 0)])


def test_pcgrad_uses_the_global_dot_product_across_tensors() -> None:
    # Tensor 0 conflicts (1·−3), tensor 1 agrees (1·1): global dot −2 < 0, so project.
    # ‖g_E‖² = 10, ‖g_A‖² = 2.
    # g_A' = (1, 1) + (2/10)(−3, 1) = (0.4, 1.2);  g_E' = (−3, 1) + (2/2)(1, 1) = (−2, 2)
    # sum = (−1.6, 3.2), split back into the two tensors.
    got = combine_pcgrad([t(1), t(1)], [t(-3), t(1)])
    close(got, [t(-1.6), t(3.2)], atol=1e-12)

    # Tensor 0 conflicts but the global dot is +2: no projection at all (not per tensor).
    got = combine_pcgrad([t(1), t(3)], [t(-1), t(1)])
    close(got, [t(0), t(4)])


def test_pcgrad_multi_shape_and_inputs_untouched() -> None:
    torch.manual_seed(1)
    g_a = [torch.randn(3, 4), torch.randn(5)]
    g_e = [-x + 0.1 * torch.randn_like(x) for x in g_a]
    saved = [x.clone() for x in (*g_a, *g_e)]
    got = combine_pcgrad(g_a, g_e)
    for x, y in zip((*g_a, *g_e), saved, strict=True):
        assert torch.equal(x, y)
    flat_a = torch.cat([x.reshape(-1) for x in g_a]).double()
    flat_e = torch.cat([x.reshape(-1) for x in g_e]).double()
    want = (
        flat_a
        - (flat_a @ flat_e) / (flat_e @ flat_e) * flat_e
        + flat_e
        - (flat_e @ flat_a) / (flat_a @ flat_a) * flat_a
    )
    assert [x.shape for x in got] == [x.shape for x in g_a]
    assert all(x.dtype == torch.float32 for x in got)
    torch.testing.assert_close(
        torch.cat([x.reshape(-1) for x in got]).double(), want, atol=1e-5, rtol=1e-5
    )


def test_combiners_check_their_inputs() -> None:
    with pytest.raises(ValueError):
        combine_pcgrad([t(1, 2)], [t(1, 2), t(1)])
    with pytest.raises(ValueError):
        combine_none([t(1, 2)], [t(1, 2, 3)])
    with pytest.raises(ValueError):
        make_combiner("adam")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        project("gradvac", [t(1)], [t(1)])
    assert combine_pcgrad([], []) == []


# --- GradVac ----------------------------------------------------------------------------------


def with_target(phi_hat: list[float], beta: float = 0.1) -> GradVac:
    gv = GradVac(beta)
    gv.load_state_dict({"beta": beta, "phi_hat": torch.tensor(phi_hat)})
    return gv


def test_gradvac_rejects_bad_beta() -> None:
    for beta in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            GradVac(beta)
    assert isinstance(make_combiner("gradvac", beta=0.5), GradVac)


def test_gradvac_leaves_pairs_at_or_above_target_alone() -> None:
    gv = GradVac(beta=0.2)  # target starts at 0
    a, e = t(1, 2), t(3, 1)  # cos > 0 = target
    close(gv([a], [e]), [a + e])
    gv = with_target([0.5], beta=0.2)
    a, e = t(1, 0), t(1, math.sqrt(3))  # cos exactly 0.5 = target: not below
    close(gv([a], [e]), [a + e])


def test_gradvac_first_step_by_hand() -> None:
    # φ̂ = 0, g_A = (1, 0), g_E = (−1, 1): φ = −1/√2, ‖g_A‖ = 1, ‖g_E‖ = √2.
    # coefficient = 1·(0·(1/√2) − (−1/√2)·1) / (√2·1) = 1/2, so g_A' = (1/2, 1/2) ⟂ g_E.
    gv = GradVac(beta=0.25)
    got = gv([t(1, 0)], [t(-1, 1)])
    close(got, [t(-0.5, 1.5)], atol=1e-6)
    # EMA with the observed (pre-adjustment) cosine: 0.75·0 + 0.25·(−1/√2)
    assert gv.phi_hat is not None
    assert gv.phi_hat.tolist() == pytest.approx([-0.25 / math.sqrt(2)], abs=1e-7)


@pytest.mark.parametrize("target", [0.5, 0.0, -0.3, 0.9])
def test_gradvac_adjusted_cosine_equals_target(target: float) -> None:
    torch.manual_seed(2)
    a = torch.randn(64, dtype=torch.float64)
    e = -0.5 * a + torch.randn(64, dtype=torch.float64)
    phi = cos(a, e)
    assert phi < target
    beta = 0.3
    gv = with_target([target], beta=beta)
    (out,) = gv([a], [e])
    a_adj = out - e
    assert cos(a_adj, e) == pytest.approx(target, abs=1e-5)
    assert gv.phi_hat is not None
    assert float(gv.phi_hat[0]) == pytest.approx((1 - beta) * target + beta * phi, abs=1e-6)


def test_gradvac_adjusted_cosine_float32_multi_dim() -> None:
    torch.manual_seed(3)
    a = torch.randn(8, 16)
    e = -a + 0.5 * torch.randn(8, 16)
    gv = with_target([0.2])
    (out,) = gv([a], [e])
    assert out.dtype == torch.float32 and out.shape == (8, 16)
    a_adj = (out - e).reshape(-1).double()
    assert cos(a_adj, e.reshape(-1).double()) == pytest.approx(0.2, abs=1e-5)


def test_gradvac_tensors_are_independent() -> None:
    torch.manual_seed(4)
    a0, e0 = t(1, 0), t(-1, 1)  # conflicting with target 0.4
    a1, e1 = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    e1 = a1 + 0.1 * e1  # aligned, cos ≈ 1 > target
    a2, e2 = t(2, 1, 0), t(-1, 3, 1)  # cos = 1/(√5·√11) ≈ 0.135 < 0.4

    both = with_target([0.4, 0.4, 0.4], beta=0.5)
    got = both([a0, a1, a2], [e0, e1, e2])

    for k, (a, e) in enumerate([(a0, e0), (a1, e1), (a2, e2)]):
        alone = with_target([0.4], beta=0.5)
        close([got[k]], alone([a], [e]), atol=1e-6)
        assert both.phi_hat is not None and alone.phi_hat is not None
        assert float(both.phi_hat[k]) == pytest.approx(float(alone.phi_hat[0]), abs=1e-7)
        assert float(both.phi_hat[k]) == pytest.approx(0.5 * 0.4 + 0.5 * cos(a, e), abs=1e-6)

    close([got[1]], [a1 + e1])  # the aligned tensor is untouched
    assert cos(got[0] - e0, e0) == pytest.approx(0.4, abs=1e-5)
    assert cos(got[2] - e2, e2) == pytest.approx(0.4, abs=1e-5)


def test_gradvac_zero_norm_is_safe_and_skips_the_ema() -> None:
    gv = with_target([0.5, 0.5, 0.5], beta=0.5)
    got = gv([t(0, 0), t(1, 2), t(0, 0)], [t(-1, 1), t(0, 0), t(0, 0)])
    close(got, [t(-1, 1), t(1, 2), t(0, 0)])
    assert gv.phi_hat is not None
    assert gv.phi_hat.tolist() == pytest.approx([0.5, 0.5, 0.5])


def test_gradvac_extreme_targets_stay_finite() -> None:
    for target in (1.0, -1.0):
        gv = with_target([target], beta=1.0)
        (out,) = gv([t(1, 0)], [t(-1, 1)])
        assert torch.isfinite(out).all()
    gv = GradVac(beta=1.0)  # exactly opposite gradients
    (out,) = gv([t(1, 0)], [t(-2, 0)])
    assert torch.isfinite(out).all()
    assert gv.phi_hat is not None and torch.isfinite(gv.phi_hat).all()


def test_gradvac_state_dict_round_trip() -> None:
    torch.manual_seed(5)
    g = [[torch.randn(4), torch.randn(2, 3)] for _ in range(6)]
    ref = GradVac(beta=0.3)
    assert ref.state_dict()["phi_hat"] is None
    for i in range(3):
        ref(g[i], g[i + 1])
    state = ref.state_dict()
    assert state["beta"] == 0.3 and state["phi_hat"].shape == (2,)

    resumed = GradVac(beta=0.9)  # beta comes back from the checkpoint
    resumed.load_state_dict(state)
    assert resumed.beta == 0.3
    state["phi_hat"].zero_()  # the saved copy is detached from both instances
    for i in range(3, 5):
        close(resumed(g[i], g[i + 1]), ref(g[i], g[i + 1]), atol=0)
    assert resumed.phi_hat is not None and ref.phi_hat is not None
    assert torch.equal(resumed.phi_hat, ref.phi_hat)

    # via torch.save / torch.load, as a trainer checkpoint would
    import io

    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    buf.seek(0)
    again = GradVac(beta=0.5)
    again.load_state_dict(torch.load(buf, weights_only=True))
    assert again.phi_hat is not None and torch.equal(again.phi_hat, ref.phi_hat)

    with pytest.raises(ValueError):
        ref([torch.randn(4)], [torch.randn(4)])  # targets are for 2 tensors


def test_project_dispatches_gradvac_to_its_instance() -> None:
    gv = GradVac(beta=0.25)
    close(project("gradvac", [t(1, 0)], [t(-1, 1)], gradvac=gv), [t(-0.5, 1.5)], atol=1e-6)
    assert gv.phi_hat is not None
