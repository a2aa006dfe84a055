"""The benchmark's human-readable outputs: ``results.md`` (one table row per method × victim)
and three PNG figures (PSR against PSNR, residual power spectra, example faces), all written
atomically. matplotlib comes with the ``bench`` extra (``pip install pareidolia[bench]``).
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from pareidolia.errors import UserError
from pareidolia.evaluation.metrics import PSNR_CAP
from pareidolia.io import atomic_write_bytes
from pareidolia.zoo.thresholds import FARS

FIGURES = ("psr_vs_psnr.png", "residual_spectrum.png", "examples.png")
SPECTRUM_METHODS = ("map", "map-adapt", "pgd-16", "tip-im")


def check_plotting() -> None:
    """Raise a :class:`UserError` before any work when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise UserError(
            "the benchmark draws its figures with matplotlib: pip install 'pareidolia[bench]'"
        ) from e


def _pct(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.0f} %"


def render_markdown(results: dict[str, Any]) -> str:
    """The results table: PSR of the held-out victim at each FAR, dodging, quality, judge rate,
    robust PSR (JPEG 75 / 0.5× resize, FAR 0.01) and seconds per face."""
    paper = results["protocol"] == "paper"
    head = ["method", "victim", "PSR@0.1", "PSR@0.01", "PSR@0.001", "dodging", "PSNR (dB)",
            "SSIM", "ΔE00 mean / p95", "judge rate", "robust PSR (JPEG75 / 0.5×)",
            "s/face"]  # fmt: skip
    if paper:
        head.insert(0, "dataset")
    lines = [
        f"# pareidolia bench — {results['protocol']} protocol",
        "",
        f"PSR = share of protected faces the held-out victim matches to the target's test photo "
        f"(black box: surrogates are the other FR models). Judge rate = share labelled "
        f"'{results['config']['emotion']}' by the independent emotion net. "
        f"Machine: {results['machine']['platform']}, torch {results['machine']['torch']}, "
        f"{results['machine']['device']}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for c in results["cells"]:
        row = [
            c["method"],
            c["victim"],
            *(_pct(c["psr"][far]) for far in FARS),
            _pct(c["dodging"]),
            "∞" if c["psnr"] >= PSNR_CAP else f"{c['psnr']:.2f}",
            f"{c['ssim']:.3f}",
            f"{c['de00_mean']:.2f} / {c['de00_p95']:.1f}" if "de00_mean" in c else "–",
            _pct(c["judge_rate"]),
            f"{_pct(c['robust_psr']['jpeg75'])} / {_pct(c['robust_psr']['resize0.5'])}",
            f"{c['seconds_per_face']:.2f}",
        ]
        if paper:
            row.insert(0, c["dataset"])
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Budgets:", ""]
    lines += [f"- `{k}`: {m['note']}" for k, m in results["methods"].items()]
    for key in ("fid", "lpips"):
        skipped = {c[key].get("skipped") for c in results["cells"] if c[key]["value"] is None}
        lines += [f"- {key.upper()}: {s}" for s in sorted(x for x in skipped if x)]
    lines += [f"- {n}" for n in results.get("notes", [])]
    return "\n".join(lines) + "\n"


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def figure_psr_psnr(results: dict[str, Any]) -> bytes:
    """Scatter: PSR of the victim at FAR 0.01 against PSNR, one colour per method, one point
    per victim."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    by_method: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for c in results["cells"]:
        if c["method"] != "none":
            by_method[c["method"]].append((c["psnr"], 100 * c["psr"][results["headline_far"]]))
    for method, pts in by_method.items():
        xs, ys = zip(*pts, strict=True)
        ax.scatter(xs, ys, label=method, alpha=0.8)
    ax.set_xlabel("PSNR to the original (dB)")
    ax.set_ylabel(f"PSR of the held-out victim at FAR {results['headline_far']} (%)")
    ax.set_title("Protection against image quality (one point per victim)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def figure_spectrum(results: dict[str, Any]) -> bytes:
    """Residual power spectra (x̂ − x, azimuthally averaged, mean over faces and victims) of
    MAP, PGD (ε 16/255) and TIP-IM on a log scale."""
    import matplotlib.pyplot as plt

    freqs = np.asarray(results["spectrum_frequencies"])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    present = [m for m in results["methods"] if m != "none"]
    chosen = [m for m in SPECTRUM_METHODS if m in present] or present  # else whatever ran
    for method in chosen:
        rows = [c["residual_power"] for c in results["cells"] if c["method"] == method]
        if rows:
            power = np.mean(rows, axis=0)
            ax.plot(freqs[1:], np.maximum(power[1:], 1e-20), label=method)
    if not chosen:
        ax.text(0.5, 0.5, "no protected faces", ha="center", va="center", transform=ax.transAxes)
    ax.set_yscale("log")
    ax.set_xlabel("spatial frequency (cycles / pixel)")
    ax.set_ylabel("power of the residual x̂ − x")
    ax.set_title("Where each method puts its change")
    if chosen:
        ax.legend()
    ax.grid(alpha=0.3, which="both")
    return _png(fig)


def figure_examples(originals: np.ndarray, examples: dict[str, np.ndarray], n: int = 3) -> bytes:
    """Grid: per face, a row of the original and each method's output, and below it a row of
    the amplified differences 5·(x̂ − x) + 0.5."""
    import matplotlib.pyplot as plt

    methods = [m for m in examples if m != "none"]
    n = min(n, len(originals))
    cols = 1 + len(methods)
    fig, axes = plt.subplots(2 * n, cols, figsize=(1.6 * cols, 3.3 * n), squeeze=False)
    for i in range(n):
        x = originals[i].astype(np.float32) / 255
        axes[2 * i, 0].imshow(originals[i])
        axes[2 * i, 0].set_title("original" if i == 0 else "", fontsize=8)
        for j, m in enumerate(methods, start=1):
            y = examples[m][i].astype(np.float32) / 255
            axes[2 * i, j].imshow(examples[m][i])
            axes[2 * i + 1, j].imshow(np.clip(5 * (y - x) + 0.5, 0, 1))
            if i == 0:
                axes[0, j].set_title(m, fontsize=8)
        axes[2 * i + 1, 0].text(0.5, 0.5, "5·(x̂−x)+0.5", ha="center", va="center", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return _png(fig)


def write_reports(
    out: Path, results: dict[str, Any], originals: np.ndarray, examples: dict[str, np.ndarray]
) -> None:
    """Write results.md and the three figures into ``out`` (atomically, replacing old ones)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    atomic_write_bytes(out / "results.md", render_markdown(results).encode(), overwrite=True)
    figures = {
        FIGURES[0]: figure_psr_psnr(results),
        FIGURES[1]: figure_spectrum(results),
        FIGURES[2]: figure_examples(originals, examples),
    }
    for name, data in figures.items():
        atomic_write_bytes(out / name, data, overwrite=True)
