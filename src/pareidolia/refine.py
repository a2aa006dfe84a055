"""Per-photo refinement of the MAP edit [ours]: a smooth warp and a bounded luminance
field, optimised per face against the surrogate FR models with expectation over transformations.

The MAP protector edits every face in one pass; on faces it never saw, that pass moves FR models
outside its training ensemble on a minority of faces (README, "Results"). The refinement starts
from the protector's output, first warped by the **template warp** (``template_warp``; by default
1.5 times the *happy* template, none for *surprised*, :data:`TEMPLATE_WARP`): a thin-plate
spline that moves the original's landmarks by the emotion's template, so the face takes the
expression by its geometry (:meth:`Refiner.template_morph`). It then optimises two
small edits of it, per face, for a fixed number of steps (the photo pipeline restores the MAP
edit's chroma first, :func:`pareidolia.protect.edit_crops`):

- a **displacement field** ``flow`` (the identity warp): a ``flow_grid``² field upsampled
  bicubically to the working crop, bounded by ``max_shift`` pixels (tanh) and faded to zero at
  the blending oval's rim, so the face's geometry moves smoothly and nothing ghosts at the
  paste-back seam. It answers to every term: part of the identity change, and the landmark
  template (:mod:`pareidolia.objectives.geometry`);
- a **luminance field** ``dy``: a ``lum_grid``² field upsampled bilinearly, bounded by
  ``lum_eps`` on smooth skin and up to ``(1 + lum_texture)·lum_eps`` on texture (tanh),
  added equally to R, G and B (no chroma change at all);
- optionally (``expression_shift`` > 0; off by default) an **expression warp**: a second
  displacement field bounded by ``expression_shift`` pixels at the emotion template's landmarks
  and by zero 0.7 inter-ocular distances from them (:meth:`Refiner.expression_bound`). It
  answers to the landmark template alone: the identity terms see it detached, and the template
  sees nothing else (no shading, no identity warp), so the points the landmark net reports
  move because the face's geometry moved.

The loss, on the crop as it will be pasted (original + oval mask × change):

    w_target · mean_m (1 − cos(f_m(T(x̂)), f_m(target)))  +  w_dodge · mean_m cos(f_m(T(x̂)), f_m(x))
    + w_geometry · L_geom(x̂, x)  +  w_classifier · L_E(x̂)

with T a random transformation per copy (EOT): the face's own size in the photo, a random
down-scale to 0.5–1.0 of it, Gaussian blur, a shift of up to 3 px, sensor noise, and real JPEG
(quality 70–95, straight-through gradient). Adam on the tanh pre-activations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pareidolia.errors import UserError
from pareidolia.faces.blend import face_mask
from pareidolia.faces.templates import CHIPS, chip_affine, working_template
from pareidolia.faces.tps import tps_morph
from pareidolia.objectives.expression import ClassifierGuide
from pareidolia.objectives.fidelity import gaussian_blur
from pareidolia.objectives.geometry import (
    TEMPLATES,
    LandmarkExpressionLoss,
    inter_ocular,
    smile_lift,
)
from pareidolia.objectives.identity import EnsembleFactory

__all__ = [
    "STRENGTHS",
    "TEMPLATE_WARP",
    "RefineConfig",
    "Refiner",
    "eot_copies",
    "jpeg_straight_through",
]

StepProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class RefineConfig:
    """Hyper-parameters of the per-face refinement (all ours; tuned on the training faces)."""

    # 15 steps at 0.12 (30 at 0.06 before): the same dodging and held-out cosine on the
    # training faces, 0.2 dB less, in half the time (benchmarks/tune_refine.py --set steps=…)
    steps: int = 15
    lr: float = 0.12  # Adam on tanh pre-activations
    # the identity warp: 20 × 20 control cells bounded by 1.5 px of the 256 px working crop
    # (10 × 10 at 2 px before: on the 16 held-out faces the same look, 0.5 dB more PSNR, and
    # more dodging, most with two surrogates; benchmarks/heldout.py's ``coarse-warp`` row)
    flow_grid: int = 20
    max_shift: float = 1.5
    expression_shift: float = 0.0  # bound of the expression warp near the template's landmarks
    # the emotion's landmark template, this many times, as a TPS warp (None: TEMPLATE_WARP's)
    template_warp: float | None = None
    # [ours] happy's template warp shrinks linearly with the smile the face already has
    # (objectives.geometry.smile_lift), to none at this lift in IOD (0: the full warp always)
    smile_full: float = 0.0
    lum_grid: int = 64
    lum_eps: float = 8.0 / 255.0  # the bound on smooth skin
    lum_texture: float = 1.0  # the bound grows up to (1 + this)× where the face is textured
    w_target: float = 1.0
    w_dodge: float = 3.0
    w_geometry: float = 20.0
    w_classifier: float = 0.05
    copies: int = 3  # EOT copies per face and step
    jpeg: bool = True  # real JPEG in the loop (straight-through gradient)
    # a time limit per face: a batch of n faces stops after the step that passes n × this
    # many seconds, keeping what it reached (None: all the steps)
    max_seconds: float | None = None
    guide_steps: int = 0  # identity-guidance steps per generation step (0: no guidance)
    guide_size: float = 0.0015  # network units ([−1, 1]) per guidance step
    guide_grid: int = 32  # the guidance gradient is low-passed to this field size
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.steps < 0:
            problems.append(f"steps must be 0 or more, got {self.steps}")
        bounds = (
            self.max_shift,
            self.expression_shift,
            0.0 if self.template_warp is None else self.template_warp,
            self.lum_eps,
            self.lum_texture,
            self.smile_full,
        )
        if self.lr <= 0 or min(bounds) < 0:
            problems.append(
                "need lr > 0 and max_shift, expression_shift, template_warp, lum_eps, "
                "lum_texture, smile_full >= 0"
            )
        if self.flow_grid < 2 or self.lum_grid < 2:
            problems.append("flow_grid and lum_grid must be at least 2")
        if min(self.w_target, self.w_dodge, self.w_geometry, self.w_classifier) < 0:
            problems.append("loss weights must be non-negative")
        if self.copies < 1:
            problems.append(f"copies must be at least 1, got {self.copies}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            problems.append(f"the time limit must be over 0 seconds, got {self.max_seconds}")
        if problems:
            raise UserError("invalid refinement config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


TPS_STEP = 4  # the template warp's spline is fitted on 4 × 4 px blocks (faces.tps.tps_morph)

TEMPLATE_WARP: dict[str, float] = {"happy": 1.5, "surprised": 0.0}
"""The template warp of each emotion when the config leaves it open [ours], chosen on the
training faces (``benchmarks/tune_refine.py --set template_warp=K``): for *happy* 1.5 templates
turn the judge's reading from 4 to 7 of 8 faces; for *surprised* the judge reads no surprise
at any warp (brows and lids alone do not make it) while the face changes a lot, so none."""

# --strength presets [ours]: (refinement, share of the MAP edit kept), chosen on the training
# faces (benchmarks/tune_refine.py): "natural" keeps the face-oval PSNR near 30 dB and barely
# moves held-out FR models; "balanced" (the default) moves them at about 24 dB with faint
# mottling; "strong" dodges more at a change anyone sees. All three change the identity through
# the luminance field and the identity warp: without the warp (the expression warp in its
# place, benchmarks/heldout.py's ``default-no-warp`` row) the face keeps its shape and 1.7 dB
# more PSNR, but held-out dlib dodges 27 % of the faces instead of 64 %.
STRENGTHS: dict[str, tuple[RefineConfig, float]] = {
    "natural": (
        RefineConfig(steps=24, lr=0.03, flow_grid=10, max_shift=1.5, template_warp=0.0),
        0.25,
    ),
    "balanced": (RefineConfig(), 0.25),
    "strong": (
        RefineConfig(
            steps=30,
            lr=0.1,
            lum_eps=11.0 / 255.0,
            flow_grid=10,
            max_shift=3.0,
            template_warp=0.0,
        ),
        0.5,
    ),
}


def jpeg_straight_through(x: torch.Tensor, quality: Sequence[int]) -> torch.Tensor:
    """Real JPEG of each crop (B, 3, H, W) in [0, 1] at ``quality[i]`` in the forward pass, the
    identity in the backward pass (BPDA)."""
    out = []
    arr = (x.detach().clamp(0, 1) * 255.0).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    for img, q in zip(arr, quality, strict=True):
        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(q)])
        dec = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
        if dec is None:
            raise RuntimeError("JPEG round trip failed")
        out.append(torch.from_numpy(np.ascontiguousarray(dec[:, :, ::-1])))
    jpg = torch.stack(out).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255.0
    return x + (jpg - x).detach()


def _resample(x: torch.Tensor, side: int) -> torch.Tensor:
    """Down to ``side`` px (anti-aliased) and back up to the crop size: the face as a model sees
    it after the photo held it at that size."""
    size = x.shape[-1]
    if side >= size:
        return x
    small = F.interpolate(
        x, size=(side, side), mode="bilinear", antialias=True, align_corners=False
    )
    return F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)


def eot_copies(
    x: torch.Tensor,
    own_side: Sequence[int],
    copies: int,
    gen: torch.Generator | Sequence[torch.Generator],
    jpeg: bool,
) -> torch.Tensor:
    """``copies`` transformed versions of each crop (B, 3, S, S) → (copies·B, 3, S, S), copy-major.

    Copy 0 is the face at its own size in the photo (``own_side[i]`` px), JPEG 90; the others
    are randomly down-scaled to 0.5–1.0 of that, blurred (σ ≤ 1 px), shifted by up to 3 px,
    noised (σ 1/255) and JPEG-compressed at quality 70–95. ``gen``: one generator for all
    faces, or one per face (face i's draws then do not depend on the other faces)."""
    gens = [gen] * x.shape[0] if isinstance(gen, torch.Generator) else list(gen)
    out = []
    for k in range(copies):
        batch = []
        quality = []
        for i, g in enumerate(gens):
            xi = x[i : i + 1]
            side = int(own_side[i])
            if k == 0:
                xi = _resample(xi, side)
                quality.append(90)
            else:
                r = float(torch.empty(1).uniform_(0.5, 1.0, generator=g))
                xi = _resample(xi, max(24, round(side * r)))
                sigma = float(torch.empty(1).uniform_(0.0, 1.0, generator=g))
                xi = xi if sigma < 0.3 else gaussian_blur(xi, sigma)
                dx, dy = (int(v) for v in torch.randint(-3, 4, (2,), generator=g))
                xi = torch.roll(xi, shifts=(dy, dx), dims=(2, 3))
                noise = torch.randn(xi.shape, generator=g).to(xi.device, xi.dtype)
                xi = (xi + noise / 255.0).clamp(0, 1)
                quality.append(int(torch.randint(70, 96, (1,), generator=g)))
            batch.append(xi)
        xb = torch.cat(batch)
        out.append(jpeg_straight_through(xb, quality) if jpeg else xb)
    return torch.cat(out)


def identity_grid(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Identity sampling grid (1, S, S, 2) for grid_sample with align_corners=False."""
    lin = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([xx, yy], dim=-1)[None]


def warp_fade(size: int) -> np.ndarray:
    """Where a warp of the working crop may move pixels (S, S) in [0, 1]: it fades out well
    inside the face oval, so no pixel near the paste seam is displaced."""
    return (np.clip((np.array(face_mask(size)) - 0.5) * 2.0, 0.0, 1.0) ** 2).astype(np.float32)


def _face_generators(seed: int, faces: int) -> list[torch.Generator]:
    """One random generator per face, each seeded alike: a face's random transformations are
    those it would get alone, whatever else shares its batch."""
    return [torch.Generator().manual_seed(seed) for _ in range(faces)]


class Refiner(nn.Module):
    """The refinement's models, loaded once: surrogate FR ensemble, landmark net, expression
    classifier. Call it on a batch of faces (of one photo or of several): each face has its own
    parameters, random transformations and loss (the batch's loss is the faces' sum), so a
    face's result does not depend on what else is in its batch (up to float rounding)."""

    def __init__(
        self,
        surrogates: Sequence[str],
        emotion: str,
        config: RefineConfig,
        fr: EnsembleFactory,
        working_size: int = 256,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.config = config
        self.size = working_size
        self.device_ = torch.device(device)
        self.ensemble = fr(list(surrogates))
        self.geometry = LandmarkExpressionLoss(emotion, working_size, device)
        warp = config.template_warp
        self.template_warp = TEMPLATE_WARP.get(emotion, 0.0) if warp is None else warp
        self.classifier = ClassifierGuide(emotion, working_size, device)
        m = face_mask(working_size)
        self.register_buffer(
            "paste_mask", torch.from_numpy(np.array(m))[None, None], persistent=False
        )
        self.register_buffer(
            "flow_mask", torch.from_numpy(warp_fade(working_size))[None, None], persistent=False
        )
        self.register_buffer("grid", identity_grid(working_size, self.device_), persistent=False)
        self.paste_mask: torch.Tensor
        self.flow_mask: torch.Tensor
        self.grid: torch.Tensor

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unit embeddings per surrogate of crops (B, 3, S, S) in [0, 1]."""
        return {k: v.detach() for k, v in self.ensemble(x.to(self.device_)).items()}

    def crop_points(self, points: torch.Tensor) -> torch.Tensor:
        """Landmarks (B, 68, 2) from landmark-chip pixels to working-crop pixels (the inverse
        of the chip's alignment)."""
        to_chip = chip_affine(
            working_template(self.size), CHIPS[self.geometry.points_net.sampler.chip]
        )
        a = torch.tensor(to_chip[:, :2], dtype=points.dtype, device=points.device)
        b = torch.tensor(to_chip[:, 2], dtype=points.dtype, device=points.device)
        return (points - b) @ torch.linalg.inv(a).T

    def template_morph(self, start: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """``start`` (B, 3, S, S) warped by a thin-plate spline that moves each face's
        landmarks ``points`` (B, 68, 2, landmark-chip pixels) by :attr:`template_warp` times the
        emotion's template (in the face's inter-ocular distances), zero at the paste seam.
        On a turned face each half's moves shrink with that half's width (outer eye corner to
        the nose bridge) against the other's, so the far half is not pulled as far as the
        near one; a face in profile (one half under 35 % of the other) is left as it is. With
        ``smile_full`` > 0, a *happy* face that already smiles gets less of the warp
        (:meth:`warp_scale`)."""
        crop_pts = self.crop_points(points).double().cpu()
        iod = inter_ocular(crop_pts).numpy()
        scale = self.warp_scale(crop_pts).numpy()
        template = TEMPLATES[self.geometry.emotion]
        idx = sorted(template)
        want = np.array([template[i] for i in idx])
        fade = self.flow_mask[0, 0].double().cpu().numpy()
        out = []
        for i, p in enumerate(crop_pts.numpy()):
            bridge = p[27, 0]
            halves = np.array([bridge - p[36, 0], p[45, 0] - bridge]).clip(1e-6)
            if halves.min() < 0.35 * halves.max():
                out.append(start[i : i + 1])
                continue
            share = (halves / halves.max())[(p[idx, 0] > bridge).astype(int)]
            dst = p.copy()
            dst[idx] += self.template_warp * scale[i] * iod[i] * want * share[:, None]
            out.append(tps_morph(start[i : i + 1], p, dst, fade, self.grid, step=TPS_STEP))
        return torch.cat(out)

    def warp_scale(self, points: torch.Tensor) -> torch.Tensor:
        """The share (B,) of the template warp each face with landmarks ``points`` (B, 68, 2)
        gets [ours]: 1, or for *happy* with ``smile_full`` > 0, 1 − smile / ``smile_full``
        clipped to [0, 1], so a face that already smiles broadly is not pulled into a grin."""
        full = self.config.smile_full
        if full <= 0 or self.geometry.emotion != "happy":
            return torch.ones(points.shape[0], dtype=points.dtype)
        return (1.0 - smile_lift(points.cpu()) / full).clamp(0.0, 1.0)

    def expression_bound(self, points: torch.Tensor) -> torch.Tensor:
        """The expression warp's bound (B, 1, S, S) in crop pixels for faces with landmarks
        ``points`` (B, 68, 2, landmark-chip pixels): ``expression_shift`` at the emotion
        template's landmarks (the mouth corners and lower lids for *happy*; brows, lids, mouth
        and jaw for *surprised*), falling smoothly to zero at 0.7 inter-ocular distances from
        them."""
        c, s = self.config, self.size
        crop_pts = self.crop_points(points)
        centres = crop_pts[:, sorted(TEMPLATES[self.geometry.emotion])]  # (B, K, 2)
        radius = (0.7 * inter_ocular(crop_pts)).clamp_min(2.0)  # (B,)
        pix = (self.grid[0] + 1.0) * (s / 2.0) - 0.5  # (S, S, 2) crop pixel centres
        d2 = (pix[None, None] - centres[:, :, None, None]).pow(2).sum(-1)  # (B, K, S, S)
        # a smooth bump that is exactly zero beyond ``radius``
        u = (1.0 - d2 / radius[:, None, None, None] ** 2).clamp_min(0.0) ** 2
        return c.expression_shift * u.amax(1, keepdim=True)

    def luminance_bound(self, x0: torch.Tensor) -> torch.Tensor | float:
        """The luminance field's bound (B, 1, S, S) for originals ``x0``: ``lum_eps`` on smooth
        skin, up to ``(1 + lum_texture) · lum_eps`` where the original is textured (local
        luminance contrast over 7 px, relative to the face's own mean contrast), where a
        change is masked by what is already there."""
        c = self.config
        if c.lum_texture <= 0:
            return c.lum_eps
        y = (x0 * torch.tensor([0.299, 0.587, 0.114], device=x0.device)[:, None, None]).sum(
            1, keepdim=True
        )
        mean = F.avg_pool2d(F.pad(y, (3, 3, 3, 3), mode="reflect"), 7, stride=1)
        sq = F.avg_pool2d(F.pad(y * y, (3, 3, 3, 3), mode="reflect"), 7, stride=1)
        contrast = (sq - mean * mean).clamp_min(0.0).sqrt()
        face = self.paste_mask > 0.5
        ref = (contrast * face).sum((2, 3), keepdim=True) / face.sum().clamp_min(1)
        texture = (contrast / ref.clamp_min(1e-4) / 2.0).clamp(0.0, 1.0)
        return c.lum_eps * (1.0 + c.lum_texture * texture)

    def edit(
        self,
        start: torch.Tensor,
        theta_flow: torch.Tensor,
        theta_lum: torch.Tensor,
        expression: tuple[torch.Tensor, torch.Tensor] | None = None,
        lum_bound: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """``start`` warped by the bounded flow, plus the bounded luminance field.
        ``expression`` = (pre-activations, bound from :meth:`expression_bound`) adds the
        expression warp; ``lum_bound`` (:meth:`luminance_bound`) replaces ``lum_eps``."""
        c, s = self.config, self.size

        def warp(theta: torch.Tensor, bound: torch.Tensor | float) -> torch.Tensor:
            up = F.interpolate(torch.tanh(theta), size=(s, s), mode="bicubic", align_corners=False)
            return up * bound * self.flow_mask

        flow = warp(theta_flow, c.max_shift)
        if expression is not None:
            flow = flow + warp(*expression)
        grid = self.grid + flow.permute(0, 2, 3, 1) * (2.0 / s)
        warped = F.grid_sample(
            start, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        dy = F.interpolate(torch.tanh(theta_lum), size=(s, s), mode="bilinear", align_corners=False)
        dy = dy * (c.lum_eps if lum_bound is None else lum_bound)
        return (warped + dy).clamp(0.0, 1.0)

    def _paste(
        self, x0: torch.Tensor, x: torch.Tensor, inside: torch.Tensor | None
    ) -> torch.Tensor:
        """The crop as it will be pasted: the original, plus the change under the face oval
        where the crop lies inside the photo (``inside`` (B, 1, S, S), None: everywhere); the
        reflected padding beyond the photo's border is never pasted, so it stays the
        original."""
        keep = self.paste_mask if inside is None else self.paste_mask * inside
        return x0 + keep * (x - x0)

    @staticmethod
    def _seen(x: torch.Tensor, inside: torch.Tensor | None) -> torch.Tensor:
        """The crop as an FR system sees it: black beyond the photo's border (as
        :func:`~pareidolia.faces.align.crop_chip` cuts the chips that are measured)."""
        return x if inside is None else x * inside

    def _aims(
        self, x0: torch.Tensor, target: dict[str, torch.Tensor], inside: torch.Tensor | None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(own embeddings, unit target embeddings, per-model original-to-target gap)."""
        own = self.embed(self._seen(x0, inside))
        t_emb = {m: F.normalize(target[m].to(x0.device, torch.float32), dim=-1) for m in target}
        # each model's terms in units of its own original-to-target separation, so a model
        # whose embeddings of different people lie close (dlib) counts as much as the others
        gap = {m: (1.0 - (own[m] * t_emb[m]).sum(-1)).clamp_min(0.05) for m in target}
        return own, t_emb, gap

    def _identity(
        self,
        views: torch.Tensor,
        copies: int,
        aims: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]],
    ) -> torch.Tensor:
        """w_target · (1 − cos to the target) + w_dodge · cos to the original, per model in
        units of its gap, averaged over models and copies, summed over faces."""
        own, t_emb, gap = aims
        c = self.config
        emb = self.ensemble(views)
        b = views.shape[0] // copies
        per_model = []
        for m in t_emb:
            e = emb[m].view(copies, b, -1)
            to_target = (1.0 - (e * t_emb[m]).sum(-1)) / gap[m]
            to_own = (e * own[m][None]).sum(-1) / gap[m]
            per_model.append((c.w_target * to_target + c.w_dodge * to_own).mean(0))
        return torch.stack(per_model).mean(0).sum()

    def guide(
        self,
        originals: torch.Tensor,
        target: dict[str, torch.Tensor],
        own_side: Sequence[int],
        to_crop: Callable[[torch.Tensor], torch.Tensor],
        inside: torch.Tensor | None = None,
    ) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """Identity guidance for the protector's generation [ours]: ``guide(x̂₀, t)`` takes
        ``guide_steps`` steps of size ``guide_size`` (network units) along the identity loss's
        gradient, measured on the pasted crop (``to_crop`` maps network space to crops), made
        equal on R, G and B (luminance only), low-passed to a ``guide_grid``² field and
        normalised to unit mean magnitude per face. ``inside``: as in :meth:`forward`."""
        c = self.config
        x0 = originals.to(self.device_, torch.float32)
        inside = None if inside is None else inside.to(self.device_, torch.float32)
        aims = self._aims(x0, target, inside)
        gen = _face_generators(c.seed + 1, x0.shape[0])

        def guide(x_net: torch.Tensor, t: int) -> torch.Tensor:
            for _ in range(c.guide_steps):
                x = x_net.detach().requires_grad_(True)
                seen = self._seen(self._paste(x0, to_crop(x), inside), inside)
                views = eot_copies(seen, own_side, 1, gen, jpeg=False)
                (g,) = torch.autograd.grad(self._identity(views, 1, aims), x)
                g = F.adaptive_avg_pool2d(g.mean(1, keepdim=True), c.guide_grid)
                g = F.interpolate(g, size=x.shape[-2:], mode="bilinear", align_corners=False)
                g = g / g.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
                x_net = (x_net - c.guide_size * g).clamp(-1.0, 1.0)
            return x_net

        return guide

    def forward(
        self,
        originals: torch.Tensor,
        starts: torch.Tensor,
        target: dict[str, torch.Tensor],
        own_side: Sequence[int],
        progress: StepProgress | None = None,
        inside: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Refine ``starts`` (B, 3, S, S) in [0, 1], edits of ``originals``, toward ``target``
        (unit embeddings (1, D) per surrogate). ``own_side[i]`` is face i's size in the photo
        in pixels of the crop's side. ``inside`` (B, 1, S, S), 1 where the crop lies inside
        its photo (None: everywhere): a face cut by the photo's edge is refined, and its
        identity measured, on its part inside the photo alone. Returns the refined crops."""
        c = self.config
        dev = self.device_
        x0 = originals.to(dev, torch.float32)
        inside = None if inside is None else inside.to(dev, torch.float32)
        start = starts.to(dev, torch.float32)
        if self.template_warp > 0:  # the template's geometry first; the optimisation works on it
            with torch.no_grad():
                start = self.template_morph(start, self.geometry.points_net.landmarks(x0))
        if c.steps == 0:
            return start.cpu()
        b = x0.shape[0]
        gen = _face_generators(c.seed, b)
        theta_flow = torch.zeros(b, 2, c.flow_grid, c.flow_grid, device=dev, requires_grad=True)
        theta_lum = torch.zeros(b, 1, c.lum_grid, c.lum_grid, device=dev, requires_grad=True)
        opt = torch.optim.Adam([theta_flow, theta_lum], lr=c.lr)
        aims = self._aims(x0, target, inside)
        with torch.no_grad():
            p_orig = self.geometry.points_net.landmarks(x0)
        lum_bound = self.luminance_bound(x0)
        expression = None
        if c.expression_shift > 0 and c.w_geometry > 0:
            # the expression warp answers to the landmark template alone: the identity terms
            # see it detached, so they cannot spend its larger bound on reshaping the face
            theta_expr = torch.zeros_like(theta_flow, requires_grad=True)
            opt.add_param_group({"params": [theta_expr]})
            expression = (theta_expr, self.expression_bound(p_orig))
        began = time.perf_counter()
        limit = None if c.max_seconds is None else c.max_seconds * b
        for step in range(c.steps):
            if expression is None:
                pasted_id = pasted_geo = self._paste(
                    x0, self.edit(start, theta_flow, theta_lum, None, lum_bound), inside
                )
            else:
                # the two parts answer to their own terms: the identity terms see the
                # expression warp detached (they cannot spend its larger bound on reshaping
                # the face), and the landmark template sees only the expression warp (shading
                # that moves the landmark net's points without moving the face cannot count)
                fixed = (expression[0].detach(), expression[1])
                pasted_id = self._paste(
                    x0, self.edit(start, theta_flow, theta_lum, fixed, lum_bound), inside
                )
                pasted_geo = self._paste(
                    x0,
                    self.edit(
                        start, theta_flow.detach(), theta_lum.detach(), expression, lum_bound
                    ),
                    inside,
                )
            views = eot_copies(self._seen(pasted_id, inside), own_side, c.copies, gen, c.jpeg)
            loss = self._identity(views, c.copies, aims)
            if c.w_geometry > 0:
                pts = self.geometry.points_net.landmarks(pasted_geo)
                loss = loss + c.w_geometry * self.geometry.loss_from_points(pts, p_orig).sum()
            if c.w_classifier > 0:
                loss = loss + c.w_classifier * self.classifier(pasted_id).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress is not None:
                progress(step + 1, c.steps)
            if limit is not None and time.perf_counter() - began > limit:
                break
        with torch.no_grad():
            return self.edit(start, theta_flow, theta_lum, expression, lum_bound).cpu()
