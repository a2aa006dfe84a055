"""Evaluation protocols: who is protected, toward whom, and which FR model judges (METHOD.md §5).

A protocol fixes the *test faces*, the *target* (an enrollment photo the attack aims at and a
different test photo it is judged against) and the *verifiers* (FR models with their decision
thresholds). Two protocols exist:

- **offline** — everything ships with pareidolia or comes from registry packages: the held-out
  faces of the face set, insightface t1.jpg's first face as target, and the zoo's four FR
  models with their calibrated thresholds. No second photo of anyone exists offline, so the
  target's test photo is an edited copy of the enrollment crop (:func:`target_test_photo`).
- **paper** — CelebA-HQ / LADN faces, the four CelebA target → test pairs and the IR152,
  IRSE50, FaceNet and MobileFace models with the thresholds every paper of this line uses.

The functions here measure faces against a target; :mod:`pareidolia.evaluation.metrics` holds
the protocol-free arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pareidolia.evaluation.variants import jpeg
from pareidolia.faces.align import ChipSampler
from pareidolia.runtime import FAR, WORKING_SIZE
from pareidolia.zoo import registry
from pareidolia.zoo.spec import EMOTIONS
from pareidolia.zoo.thresholds import Thresholds, thresholds

OFFLINE_TARGET = "default"  # the shipped synthetic target; or the name of a held-out face

# METHOD.md §5: the paper protocol's CelebA target → test photo pairs. (Its four FR models and
# their thresholds are :data:`pareidolia.zoo.paper_fr.PAPER_FR`.)
PAPER_TARGETS: tuple[tuple[str, str], ...] = (
    ("005869", "008793"),
    ("085807", "047073"),
    ("116481", "055622"),
    ("169284", "166607"),
)
# The face box of ``--fr-preprocess crop`` on a 256 px aligned face, pixels (x0, y0, x1, y1):
# rows 35–223, columns 32–220, the ID-loss crop of pSp-style code for FFHQ-aligned 256 px faces.
PAPER_CROP_BOX = (32, 35, 220, 223)


def target_test_photo(crop: np.ndarray) -> np.ndarray:
    """The target's second photo for the offline protocol: the enrollment crop mirrored,
    brightened ×1.2 and saved as JPEG quality 40 (no second photo of anyone exists offline)."""
    out = np.clip(crop[:, ::-1].astype(np.float32) * 1.2, 0, 255).astype(np.uint8)
    return jpeg(np.ascontiguousarray(out), 40)


@dataclass
class Verifier:
    """One FR model as a judge: working crops in [0, 1] → embeddings, plus its decision rule
    (cosine above or distance below a threshold per FAR)."""

    name: str
    embed: Callable[[torch.Tensor], torch.Tensor]
    rule: Thresholds

    @torch.no_grad()
    def embeddings(self, faces: torch.Tensor, batch: int = 16) -> torch.Tensor:
        """Embeddings of ``faces`` (N, 3, S, S), computed in batches without autograd."""
        return torch.cat([self.embed(faces[i : i + batch]) for i in range(0, len(faces), batch)])


def zoo_verifiers(
    models: Sequence[str] | None = None,
    size: int = WORKING_SIZE,
    device: torch.device | str = "cpu",
) -> list[Verifier]:
    """The zoo's FR models (default all four) reading their chips from ``size``-pixel crops,
    with the calibrated thresholds of ``thresholds.json``."""
    out = []
    for name in models or registry.names("fr"):
        net = registry.load(name, device)
        chip = ChipSampler(registry.get(name).chip, size).to(device)

        def embed(
            x: torch.Tensor, net: torch.nn.Module = net, chip: ChipSampler = chip
        ) -> torch.Tensor:
            return net(chip(x))

        out.append(Verifier(name, embed, thresholds(name)))
    return out


@torch.no_grad()
def psr_by_far(
    faces: torch.Tensor, target_test: torch.Tensor, verifiers: Sequence[Verifier] | None = None
) -> dict[str, dict[str, float]]:
    """Impersonation success rate per FR model and FAR: the share of ``faces`` that each model
    matches to the target's test photo ``target_test`` (1, 3, S, S)."""
    from pareidolia.evaluation.metrics import match_rates

    out = {}
    for v in verifiers or zoo_verifiers(size=faces.shape[-1], device=faces.device):
        scores = v.rule.score(v.embeddings(faces), v.embeddings(target_test))
        out[v.name] = match_rates(scores, v.rule)
    return out


def psr(
    faces: torch.Tensor,
    target_test: torch.Tensor,
    far: str = FAR,
    verifiers: Sequence[Verifier] | None = None,
) -> dict[str, float]:
    """Share of ``faces`` each FR model matches to the target's test photo at one FAR."""
    return {m: rates[far] for m, rates in psr_by_far(faces, target_test, verifiers).items()}


@torch.no_grad()
def judge_rate(faces: torch.Tensor, emotion: str) -> float:
    """Share of faces the independent judge (human's mini-Xception emotion net, not used in
    training) labels ``emotion``."""
    judge = registry.load("mini_xception", faces.device)
    chip = ChipSampler("emotion64", faces.shape[-1]).to(faces.device)
    labels = torch.cat([judge(chip(faces[i : i + 16])).argmax(1) for i in range(0, len(faces), 16)])
    return float((labels == EMOTIONS.index(emotion)).float().mean())
