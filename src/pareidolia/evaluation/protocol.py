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

from collections.abc import Sequence

import numpy as np
import torch

from pareidolia.evaluation.variants import jpeg
from pareidolia.runtime import FAR, WORKING_SIZE
from pareidolia.zoo import registry
from pareidolia.zoo.chip_model import ChipModel, shared_zoo_model, zoo_model
from pareidolia.zoo.registry import JUDGE
from pareidolia.zoo.spec import EMOTIONS

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


def zoo_verifiers(
    models: Sequence[str] | None = None,
    size: int = WORKING_SIZE,
    device: torch.device | str = "cpu",
) -> list[ChipModel]:
    """The zoo's FR models (default all four) as judges: reading their chips from
    ``size``-pixel crops, with the calibrated thresholds of ``thresholds.json``."""
    return [zoo_model(name, size, device) for name in models or registry.names("fr")]


@torch.no_grad()
def psr_by_far(
    faces: torch.Tensor, target_test: torch.Tensor, verifiers: Sequence[ChipModel] | None = None
) -> dict[str, dict[str, float]]:
    """Impersonation success rate per FR model and FAR: the share of ``faces`` that each model
    matches to the target's test photo ``target_test`` (1, 3, S, S)."""
    from pareidolia.evaluation.metrics import match_rates

    out = {}
    for v in verifiers or zoo_verifiers(size=faces.shape[-1], device=faces.device):
        scores = v.rule.score(v.embed_crops(faces), v.embed_crops(target_test))
        out[v.name] = match_rates(scores, v.rule)
    return out


def psr(
    faces: torch.Tensor,
    target_test: torch.Tensor,
    far: str = FAR,
    verifiers: Sequence[ChipModel] | None = None,
) -> dict[str, float]:
    """Share of ``faces`` each FR model matches to the target's test photo at one FAR."""
    return {m: rates[far] for m, rates in psr_by_far(faces, target_test, verifiers).items()}


@torch.no_grad()
def judge_rate(faces: torch.Tensor, emotion: str) -> float:
    """Share of faces the independent judge (human's mini-Xception emotion net, not used in
    training) labels ``emotion``."""
    judge = shared_zoo_model(JUDGE, faces.shape[-1], faces.device)
    labels = judge.embed_crops(faces).argmax(1)
    return float((labels == EMOTIONS.index(emotion)).float().mean())
