"""``pareidolia verify A B``: do two photos show the same person, model by model?

The zoo's FR models, then its FR judges (marked ``independent``: models no part of an edit was
made against, the truer test of a protected photo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pareidolia.errors import NoFaceError
from pareidolia.evaluation.verification import FaceEmbedder, compare
from pareidolia.faces.detect import Face
from pareidolia.io import read_photo
from pareidolia.locate import locate_faces
from pareidolia.report import INDEPENDENT
from pareidolia.zoo import registry


def largest_face(path: Path) -> tuple[Any, Face, int]:
    """(photo, its largest face, number of faces); :class:`NoFaceError` when there is none."""
    photo = read_photo(path)
    faces = locate_faces(photo.rgb)
    if not faces:
        raise NoFaceError(f"{path}: no face found")
    return photo, faces[0], len(faces)


def _face_json(path: Path, face: Face, n: int) -> dict[str, Any]:
    return {
        "path": str(path),
        "faces_found": n,
        "box": [round(float(v), 1) for v in face.box],
        "detector_score": round(face.score, 4),
    }


def verify_files(a: Path, b: Path, far: str = "0.01") -> dict[str, Any]:
    """The verification report of the largest face of ``a`` against that of ``b`` (JSON-ready)."""
    photo_a, face_a, n_a = largest_face(a)
    photo_b, face_b, n_b = largest_face(b)
    judges = registry.names("fr_judge")
    embedder = FaceEmbedder(registry.names("fr") + judges)
    verdicts = compare(
        embedder.embed(photo_a.rgb, face_a.landmarks),
        embedder.embed(photo_b.rgb, face_b.landmarks),
        far,
    )
    return {
        "a": _face_json(a, face_a, n_a),
        "b": _face_json(b, face_b, n_b),
        "far": far,
        "models": [
            {
                "model": v.model,
                "metric": v.metric,
                "score": round(v.score, 4),
                "threshold": round(v.threshold, 4),
                "match": v.match,
                "independent": v.model in judges,
            }
            for v in verdicts
        ],
        "all_match": all(v.match for v in verdicts),
        "none_match": not any(v.match for v in verdicts),
    }


def render_verify(result: dict[str, Any]) -> str:
    """A readable table of :func:`verify_files`' report."""
    width = max(12, *(len(m["model"]) + 1 for m in result["models"]))
    lines = [
        f"A: {result['a']['path']} ({result['a']['faces_found']} face(s), largest used)",
        f"B: {result['b']['path']} ({result['b']['faces_found']} face(s), largest used)",
        "",
        f"{'model':<{width}} {'metric':<10} {'score':>8}  {'rule (FAR ' + result['far'] + ')':<18} decision",
    ]
    for m in result["models"]:
        rule = f"{'>' if m['metric'] == 'cosine' else '<'} {m['threshold']:.3f}"
        decision = "match" if m["match"] else "no match"
        note = f"  {INDEPENDENT}" if m["independent"] else ""
        lines.append(
            f"{m['model']:<{width}} {m['metric']:<10} {m['score']:>8.3f}  {rule:<18} {decision:<8}{note}".rstrip()
        )
    verdict = (
        "same person for every model"
        if result["all_match"]
        else ("different person for every model" if result["none_match"] else "models disagree")
    )
    lines += ["", f"verdict: {verdict}"]
    return "\n".join(lines)
