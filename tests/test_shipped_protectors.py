"""The protectors shipped in the package: checksums, settings, and the held-out numbers recorded
when they were made (by tools/train_default_protectors.py) reproduced here."""

from __future__ import annotations

from pathlib import Path

import pytest

from pareidolia.default_protectors import (
    default_protector,
    default_target_crop,
    shipped_emotions,
)
from pareidolia.faces.align import to_tensor
from pareidolia.prior.facesets import ensure_faceset, packages_dir


def test_happy_and_surprised_ship_for_a_synthetic_target() -> None:
    assert {"happy", "surprised"} <= set(shipped_emotions())
    assert default_target_crop().shape == (256, 256, 3)
    for emotion in shipped_emotions():
        p = default_protector(emotion)
        assert p.config.emotion == emotion and p.config.victim == "dlib"
        assert set(p.target_embeddings) == {"dlib", "sface", "faceres", "mobileface"}


@pytest.mark.slow
@pytest.mark.parametrize("emotion", ["happy", "surprised"])
def test_shipped_protector_reproduces_its_heldout_numbers(emotion: str, tmp_path: Path) -> None:
    """Applied to the 8 held-out real faces, each protector gives the victim (dlib, never seen
    in training) PSR and the quality recorded in its file. One face of slack on each rate:
    another CPU may round a borderline score the other way."""
    from train_default_protectors import heldout_metrics

    faceset = ensure_faceset(packages_dir().parent / "faceset")
    p = default_protector(emotion)
    got = heldout_metrics(p, faceset, to_tensor(default_target_crop()))
    recorded = p.metrics
    one_face = 1.0 / got["heldout_faces"] + 1e-6
    assert got["heldout_psr_before_dlib"] == 0.0
    for key in ("heldout_psr_after_dlib", "heldout_judge_rate_after"):
        assert abs(got[key] - recorded[key]) <= one_face, key
    assert got["heldout_psnr"] == pytest.approx(recorded["heldout_psnr"], abs=0.1)
