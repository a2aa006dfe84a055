"""The benchmark: MAP and the noise-based baselines, every method × every held-out victim.

For each victim FR model the other models are the surrogates (leave-one-out, METHOD.md §5);
each method protects the protocol's test faces toward the target with those surrogates, and
:mod:`pareidolia.evaluation.metrics` measures the result against the victim (black box) and,
for reference, every other model (white box). A row ``none`` (the unprotected faces) anchors
the table.

Protected crops are stored as uint8 (the pictures a user would get; every metric is computed
from them) in ``OUT/cells/<dataset>/<victim>/<method>.npz`` as soon as they exist, so
``--resume`` continues an interrupted run where it stopped; MAP protectors trained here live in
``OUT/protectors/<name>/`` (checkpoints, resumable) and ``OUT/protectors/<name>.safetensors``,
``<name>`` being the victim (offline: one target) or ``<victim>-<target>`` (paper protocol: one
protector per target, tuned against the paper FR models). ``map-adapt`` additionally fine-tunes
a copy of the protector on each face alone before applying it (``pareidolia protect --adapt``).
MAP's score network computes in ``dtype`` (float32, or bfloat16 autocast) when protectors are
trained, adapted and applied; it is recorded with the device in ``results.json``'s ``machine``.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch import nn

from pareidolia.baselines import BASELINES
from pareidolia.errors import OptionError, UserError
from pareidolia.evaluation import metrics as M
from pareidolia.evaluation.protocol import (
    OFFLINE_TARGET,
    PAPER_CROP_BOX,
    PAPER_TARGETS,
    judge_rate,
    target_test_photo,
    zoo_verifiers,
)
from pareidolia.faces.align import to_tensor, to_uint8
from pareidolia.io import atomic_write_bytes, iter_image_files, read_photo
from pareidolia.objectives.identity import (
    EnsembleFactory,
    IdentityLoss,
    SurrogateEnsemble,
    zoo_ensembles,
)
from pareidolia.runtime import ADAPT_STEPS, FAR, WORKING_SIZE, dtype_name, pick_device, pick_dtype
from pareidolia.zoo.chip_model import ChipModel
from pareidolia.zoo.thresholds import FARS

FORMAT = "pareidolia.bench/1"
Protocol = Literal["offline", "paper"]
Preprocess = Literal["resize", "crop"]


@dataclass(frozen=True)
class MethodSpec:
    """One benchmarked method: ``baseline`` names a :data:`BASELINES` entry (with ``config``
    overrides); ``map`` and ``none`` are MAP and the unprotected faces."""

    key: str
    family: Literal["none", "map", "noise"]
    baseline: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def method_specs(quick: bool) -> list[MethodSpec]:
    """The benchmark's methods and budgets: ε = 16/255 for every noise baseline (PGD also at
    8/255) except TIP-IM, whose released code uses ε = 12/255; ``quick`` cuts the iterations."""
    few = {"steps": 2} if quick else {}
    adapt = 1 if quick else ADAPT_STEPS

    def noise(key: str, name: str, eps: int, note: str, iterative: bool = True) -> MethodSpec:
        config = {"epsilon": eps / 255, **(few if iterative else {})}
        return MethodSpec(key, "noise", name, config, f"L∞ ε = {eps}/255; {note}")

    return [
        MethodSpec("none", "none", note="the unprotected faces"),
        MethodSpec("map", "map", note="MAP protector (expression edit), one per victim"),
        MethodSpec(
            "map-adapt",
            "map",
            config={"adapt_steps": adapt},
            note=f"ours: the MAP protector fine-tuned on each face alone for {adapt} steps "
            "first (pareidolia protect --adapt)",
        ),
        noise("pgd-8", "pgd", 8, "PGD, Madry et al."),
        noise("pgd-16", "pgd", 16, "PGD, Madry et al."),
        noise("fgsm", "fgsm", 16, "one step of size ε", iterative=False),
        noise("mi-fgsm", "mi-fgsm", 16, "MI-FGSM's paper budget"),
        noise("ti-dim", "ti-dim", 16, "TI-DIM's paper budget"),
        noise("tip-im", "tip-im", 12, "TIP-IM's released code budget (12 on 0–255)"),
        *(
            noise(f"lum-eot-{e}", "lum-eot", e, "ours: luminance-only field with EOT")
            for e in (8, 12, 16)
        ),
    ]


@dataclass(frozen=True)
class BenchConfig:
    """Everything a benchmark run depends on; recorded in ``results.json``."""

    protocol: Protocol
    out: Path
    quick: bool = False
    resume: bool = False
    faces: Path | None = None  # offline face set (built there when missing)
    target: str = OFFLINE_TARGET
    emotion: str = "happy"
    victims: tuple[str, ...] = ()  # empty: every FR model of the protocol (quick: two)
    methods: tuple[str, ...] = ()  # empty: all of method_specs
    map_epochs: int | None = None
    protectors: dict[str, Path] = field(default_factory=dict)
    model: str = "prior:"  # MAP's base score network (load_score_model spec; default shipped)
    fid_weights: Path | None = None
    lpips_weights: Path | None = None
    celeba: Path | None = None
    ladn: Path | None = None
    fr_weights: Path | None = None
    fr_preprocess: Preprocess = "resize"
    device: str = "auto"
    dtype: str = "float32"  # MAP's score network (a pareidolia.runtime.pick_dtype name)
    seed: int = 0
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, Path):
                d[k] = str(v)
        d["protectors"] = {k: str(v) for k, v in self.protectors.items()}
        d["victims"], d["methods"] = list(self.victims), list(self.methods)
        return d


@dataclass
class Group:
    """Test faces protected toward one target: uint8 crops, the target's enrollment crop (the
    attack's aim) and its *different* test photo (the judge's reference)."""

    names: list[str]
    faces: np.ndarray  # (N, S, S, 3) uint8
    target_name: str
    target_enroll: np.ndarray  # (S, S, 3) uint8
    target_test: np.ndarray  # (S, S, 3) uint8


@dataclass
class Dataset:
    """A protocol's test set: one or more groups of faces, each with its own target."""

    name: str
    groups: list[Group]

    @property
    def faces(self) -> np.ndarray:
        return np.concatenate([g.faces for g in self.groups])


# ----------------------------------------------------------------------------- set-up


def machine_info(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Where the numbers were measured: OS, CPU, Python/torch versions, threads, device and
    the score network's compute dtype."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "dtype": dtype_name(dtype),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def prepare_out(out: Path, resume: bool) -> None:
    """Create ``out``; refuse an existing non-empty folder unless resuming."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not resume:
        raise OptionError(
            f"{out}: folder is not empty; pass {{resume}} to continue that run or choose another "
            "{out}",
            "resume",
            "out",
        )
    out.mkdir(parents=True, exist_ok=True)


def _square(rgb: np.ndarray, path: Path) -> np.ndarray:
    h, w = rgb.shape[:2]
    if h != w:
        raise UserError(f"{path}: {w}×{h} is not a square aligned face crop")
    if h == WORKING_SIZE:
        return rgb
    interp = cv2.INTER_AREA if h > WORKING_SIZE else cv2.INTER_CUBIC
    return cv2.resize(rgb, (WORKING_SIZE, WORKING_SIZE), interpolation=interp)


def offline_dataset(cfg: BenchConfig) -> tuple[Dataset, np.ndarray]:
    """The offline protocol's test set (held-out faces but the target) and training faces."""
    from pareidolia.prior.facesets import ensure_faceset, packages_dir

    root = cfg.faces or packages_dir().parent / "faceset"
    fs = ensure_faceset(Path(root))
    held = dict(fs.faces("heldout"))
    if cfg.target == OFFLINE_TARGET:
        from pareidolia.default_protectors import default_target_crop

        enroll = default_target_crop()
    elif cfg.target in held:
        enroll = held.pop(cfg.target)
    else:
        raise UserError(
            f"{root}: no held-out face {cfg.target!r} (have {', '.join(held)}, or "
            f"{OFFLINE_TARGET!r} for the shipped target)"
        )
    names = list(held)[: 3 if cfg.quick else None]
    train = np.stack([c for _, c in fs.faces("train")][: 4 if cfg.quick else None])
    group = Group(
        names, np.stack([held[n] for n in names]), cfg.target, enroll, target_test_photo(enroll)
    )
    return Dataset("offline", [group]), train


def _require_dir(path: Path | None, option: str) -> Path:
    """``path``, the folder of the config's ``option``; :class:`OptionError` when not given or
    not a folder."""
    if path is None:
        raise OptionError(f"the paper protocol needs {{{option}}} DIR", option)
    if not path.is_dir():
        raise OptionError(f"{path}: {{{option}}} folder not found", option)
    return path


def _image(folder: Path, stem: str, option: str) -> Path:
    for suffix in (".png", ".jpg", ".jpeg"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    raise OptionError(
        f"{folder / stem}.png: missing ({{{option}}} must hold the CelebA photo {stem})", option
    )


def paper_datasets(cfg: BenchConfig) -> list[Dataset]:
    """CelebA-HQ (``--celeba DIR``: ``test/`` faces, ``targets/<id>.png|jpg``) and, when given,
    LADN (``--ladn DIR``: its test faces); each set, sorted by file name, is cut into four equal
    groups, group k protected toward target k (METHOD.md §5)."""
    celeba = _require_dir(cfg.celeba, "celeba")
    targets_dir = _require_dir(celeba / "targets", "celeba")
    targets = [
        (
            t,
            _square(read_photo(_image(targets_dir, t, "celeba")).rgb, targets_dir / t),
            _square(read_photo(_image(targets_dir, s, "celeba")).rgb, targets_dir / s),
        )
        for t, s in PAPER_TARGETS
    ]
    sets = [("celeba-hq", _require_dir(celeba / "test", "celeba"))]
    if cfg.ladn is not None:
        sets.append(("ladn", _require_dir(cfg.ladn, "ladn")))
    out = []
    for name, folder in sets:
        files = iter_image_files([folder])
        if len(files) < len(targets):
            raise UserError(f"{folder}: {len(files)} images; need at least {len(targets)}")
        chunks = np.array_split(np.arange(len(files)), len(targets))
        groups = []
        for (tname, enroll, test), idx in zip(targets, chunks, strict=True):
            chosen = [files[i] for i in idx[: 1 if cfg.quick else None]]
            faces = np.stack([_square(read_photo(p).rgb, p) for p in chosen])
            groups.append(Group([p.name for p in chosen], faces, tname, enroll, test))
        out.append(Dataset(name, groups))
    return out


def paper_train_faces(cfg: BenchConfig) -> np.ndarray | None:
    """MAP's training faces on the paper protocol: ``--celeba DIR``'s ``train/`` folder (the
    paper's CelebA-HQ training split, aligned 256 crops), or None when it is absent."""
    assert cfg.celeba is not None
    folder = cfg.celeba / "train"
    if not folder.is_dir():
        return None
    files = iter_image_files([folder])[: 2 if cfg.quick else None]
    if not files:
        raise UserError(f"{folder}: no images (MAP's training faces)")
    return np.stack([_square(read_photo(p).rgb, p) for p in files])


def paper_verifiers(cfg: BenchConfig, device: torch.device) -> list[ChipModel]:
    """IR152, IRSE50, FaceNet and MobileFace from ``--fr-weights DIR`` with the paper's cosine
    thresholds (:mod:`pareidolia.zoo.paper_fr`); faces resized whole, or cut to
    :data:`PAPER_CROP_BOX` first with ``--fr-preprocess crop``."""
    from pareidolia.zoo.paper_fr import paper_chip_models, paper_preprocess

    folder = _require_dir(cfg.fr_weights, "fr_weights")
    return paper_chip_models(folder, device, paper_preprocess(cfg.fr_preprocess), PAPER_CROP_BOX)


# ----------------------------------------------------------------------------- MAP


@functools.cache
def base_network(spec: str, device: torch.device) -> tuple[Any, Any]:
    """MAP's base score network and its config (``--model``) on ``device``, loaded once per
    run and device (never moved: a cached network stays where it was put)."""
    from pareidolia.diffusion.models import shared_score_model

    return shared_score_model(spec, device)  # the one the photo pipeline shares


def check_given_protectors(cfg: BenchConfig, victims: Sequence[str], device: torch.device) -> None:
    """Fail before any work when a ``--protector`` file is unreadable, made from another base
    network, or holds out a different victim than the one it is given for."""
    if not cfg.protectors:
        return
    from pareidolia.protector import load_protector

    unet, score_cfg = base_network(cfg.model, device)
    for victim, path in cfg.protectors.items():
        if victim not in victims:
            raise OptionError(
                f"{{protectors}} {victim}=…: {victim!r} is not a victim of this run "
                f"({', '.join(victims)})",
                "protectors",
            )
        held_out = load_protector(path, unet, score_cfg).config.victim
        if held_out != victim:
            raise UserError(f"{path}: this protector holds out {held_out!r}, not {victim!r}")


def map_protector(
    cfg: BenchConfig,
    name: str,
    victim: str,
    surrogates: Sequence[str],
    train: np.ndarray,
    target: np.ndarray,
    device: torch.device,
    fr: EnsembleFactory,
    dtype: torch.dtype,
) -> tuple[Any, dict[str, Any]]:
    """The protector ``name`` (the victim's name; ``VICTIM-TARGET`` on the paper protocol): the
    one given with ``--protector``, a finished one in ``OUT/protectors``, or one trained now
    (resumable) with the default config against the FR models ``fr`` builds."""
    from pareidolia.protector import ProtectorConfig, finetune, load_protector, save_protector

    unet, score_cfg = base_network(cfg.model, device)
    saved = cfg.out / "protectors" / f"{name}.safetensors"
    given = cfg.protectors.get(victim)
    if given is not None or saved.is_file():
        path = given or saved
        p = load_protector(path, unet, score_cfg)
        return p, {"source": str(path), "config": p.config.to_dict(), "train_seconds": None}
    config = ProtectorConfig(
        victim=victim,
        surrogates=tuple(surrogates),
        emotion=cfg.emotion,
        seed=cfg.seed,
        fr_zoo="paper" if cfg.protocol == "paper" else "offline",
    )
    epochs = cfg.map_epochs or (1 if cfg.quick else None)
    if epochs:
        config = dataclasses.replace(config, epochs=epochs)
    start = time.perf_counter()
    p = finetune(
        unet,
        score_cfg,
        to_tensor(list(train)).to(device),
        to_tensor(target).to(device),
        config,
        cfg.out / "protectors" / name,
        progress=cfg.progress,
        resume=cfg.resume,
        fr=fr,
        dtype=dtype,
    )
    seconds = time.perf_counter() - start
    save_protector(saved, p, overwrite=True)
    info = {
        "source": "trained",
        "path": str(saved),
        "config": config.to_dict(),
        "train_faces": len(train),
        "train_seconds": round(seconds, 1),
    }
    return p, info


# ----------------------------------------------------------------------------- cells


def cell_key(cfg: BenchConfig, spec: MethodSpec, dataset: Dataset, victim: str) -> str:
    """What a stored cell was computed from; a resumed run reuses a cell only when it matches
    (other faces, budgets or protectors recompute it)."""
    key: dict[str, Any] = {
        "dataset": dataset.name,
        "faces": [g.names for g in dataset.groups],
        "targets": [g.target_name for g in dataset.groups],
        "victim": victim,
        "method": _method_record(spec),
        "seed": cfg.seed,
    }
    if spec.family == "map":
        key["map_epochs"] = cfg.map_epochs or (1 if cfg.quick else None)
        key["protector"] = str(cfg.protectors.get(victim))
        key["emotion"] = cfg.emotion
        key["model"] = cfg.model
        if cfg.dtype != "float32":  # cells stored before the dtype was recorded: float32
            key["dtype"] = cfg.dtype
    return json.dumps(key, sort_keys=True)


def _save_cell(path: Path, key: str, protected: np.ndarray, seconds_per_face: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(
        buf, key=np.array(key), protected=protected, seconds_per_face=np.float64(seconds_per_face)
    )
    atomic_write_bytes(path, buf.getvalue(), overwrite=True)


def _load_cell(path: Path, key: str) -> tuple[np.ndarray, float] | None:
    """A stored cell computed from ``key``; None when absent, stale or damaged (recompute)."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            if str(z["key"]) != key:
                return None
            return z["protected"], float(z["seconds_per_face"])
    except Exception:  # a damaged cell is recomputed
        return None


@dataclass
class _Victim:
    """What the methods run against one victim share, each made on first use: one identity
    loss per target over the ``ensemble`` of surrogates, and the MAP protectors (one per victim
    on the offline protocol, one per victim and target on the paper's, their score network
    computing in ``dtype``), recorded in ``map_info``."""

    cfg: BenchConfig
    victim: str
    surrogates: list[str]
    ensemble: nn.Module
    fr: EnsembleFactory
    train: np.ndarray | None
    device: torch.device
    dtype: torch.dtype
    map_info: dict[str, Any]
    losses: dict[str, IdentityLoss] = field(default_factory=dict)
    protectors: dict[str, Any] = field(default_factory=dict)

    def loss_for(self, g: Group) -> IdentityLoss:
        """The identity loss toward ``g``'s target."""
        if g.target_name not in self.losses:
            target = to_tensor(g.target_enroll).to(self.device)
            self.losses[g.target_name] = IdentityLoss(self.ensemble, target)
        return self.losses[g.target_name]

    def protector_for(self, g: Group) -> Any:
        """The MAP protector for ``g``'s faces, trained (or loaded) the first time."""
        cfg = self.cfg
        name = self.victim if cfg.protocol == "offline" else f"{self.victim}-{g.target_name}"
        if name not in self.protectors:
            _log(cfg, f"MAP protector {name}")
            assert self.train is not None
            self.protectors[name], self.map_info[name] = map_protector(
                cfg,
                name,
                self.victim,
                self.surrogates,
                self.train,
                g.target_enroll,
                self.device,
                self.fr,
                self.dtype,
            )
        return self.protectors[name]


def _protect(
    spec: MethodSpec,
    dataset: Dataset,
    loss_for: Callable[[Group], IdentityLoss],
    protector_for: Callable[[Group], Any],
    fr: EnsembleFactory,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[np.ndarray, float]:
    """(uint8 protected faces of every group, seconds per face) for one method (MAP's score
    network computing in ``dtype``)."""
    if spec.family == "none":
        return dataset.faces.copy(), 0.0
    # MAP's protectors are trained (or loaded) before the clock starts: s/face is applying only
    tools = [protector_for(g) for g in dataset.groups] if spec.family == "map" else []
    outs, start = [], time.perf_counter()
    for i, g in enumerate(dataset.groups):
        x = to_tensor(list(g.faces)).to(device)
        if spec.family == "map":
            y = _apply_map(tools[i], x, g, spec.config.get("adapt_steps", 0), fr, dtype)
        else:
            assert spec.baseline is not None
            y = BASELINES[spec.baseline](**spec.config).protect(x, loss_for(g))
        outs.append(to_uint8(y))
    seconds = (time.perf_counter() - start) / max(1, len(dataset.faces))
    return np.concatenate(outs), seconds


def _apply_map(
    protector: Any,
    x: torch.Tensor,
    group: Group,
    adapt_steps: int,
    fr: EnsembleFactory,
    dtype: torch.dtype,
) -> torch.Tensor:
    """MAP on crops ``x`` in ``dtype``; with ``adapt_steps``, each face gets its own copy of the
    protector fine-tuned on that face alone toward the group's target first."""
    from pareidolia.protector import adapt_protector, apply_protector

    if not adapt_steps:
        return apply_protector(protector, x, dtype=dtype)
    target = to_tensor(group.target_enroll).to(x.device)
    return torch.cat(
        [
            apply_protector(
                adapt_protector(protector, face[None], target, adapt_steps, fr, dtype),
                face[None],
                dtype=dtype,
            )
            for face in x
        ]
    )


@dataclass
class Judges:
    """Embeddings computed once per dataset: originals and targets' test photos per model."""

    verifiers: list[ChipModel]
    device: torch.device
    originals: dict[str, torch.Tensor] = field(default_factory=dict)
    targets: dict[str, torch.Tensor] = field(default_factory=dict)  # (N, D): each face's target

    @classmethod
    def build(cls, verifiers: list[ChipModel], dataset: Dataset, device: torch.device) -> Judges:
        j = cls(verifiers, device)
        x = to_tensor(list(dataset.faces)).to(device)
        for v in verifiers:
            j.originals[v.name] = v.embed_crops(x)
            per_group = [
                v.embed_crops(to_tensor(g.target_test).to(device)).expand(len(g.faces), -1)
                for g in dataset.groups
            ]
            j.targets[v.name] = torch.cat(per_group)
        return j

    def embed(self, name: str, faces: np.ndarray) -> torch.Tensor:
        v = next(v for v in self.verifiers if v.name == name)
        return v.embed_crops(to_tensor(list(faces)).to(self.device))


def cell_metrics(
    judges: Judges,
    victim: str,
    originals: np.ndarray,
    protected: np.ndarray,
    emotion: str,
    device: torch.device,
    fid: M.FidFeatures | None,
    lpips: M.Lpips | None,
) -> dict[str, Any]:
    """Every metric of one (method, victim) cell, from the uint8 faces."""
    rules = {v.name: v.rule for v in judges.verifiers}
    rule = rules[victim]
    all_models = {}
    for name in rules:
        imp = M.impersonation(rules[name], judges.embed(name, protected), judges.targets[name])
        all_models[name] = imp["psr"]
    victim_emb = judges.embed(victim, protected)
    imp = M.impersonation(rule, victim_emb, judges.targets[victim])
    robust = {}
    for variant, faces in M.robustness_variants(protected).items():
        scores = rule.score(judges.embed(victim, faces), judges.targets[victim])
        robust[variant] = M.match_rates(scores, rule, (FAR,))[FAR]
    _, power = M.residual_spectrum(originals, protected)
    return {
        "psr": imp["psr"],
        "psr_all_models": all_models,
        "score_metric": rule.metric,
        "mean_score_to_target": imp["mean_score"],
        "dodging": M.dodging_rate(rule, victim_emb, judges.originals[victim], FAR),
        **M.quality(originals, protected),
        **M.colour_shifts(originals, protected),
        "judge_rate": judge_rate(to_tensor(list(protected)).to(device), emotion),
        "robust_psr": robust,
        "fid": M.optional_metric(
            "FID", (lambda: fid.fid(originals, protected)) if fid else None, "--fid-weights"
        ),
        "lpips": M.optional_metric(
            "LPIPS", (lambda: lpips(originals, protected)) if lpips else None, "--lpips-weights"
        ),
        "residual_power": power.tolist(),
    }


# ----------------------------------------------------------------------------- the run


def _victims(cfg: BenchConfig, models: list[str]) -> list[str]:
    unknown = [v for v in cfg.victims if v not in models]
    if unknown:
        raise UserError(f"unknown victim(s) {', '.join(unknown)}; choose from {', '.join(models)}")
    victims = list(cfg.victims) or models
    return victims[:2] if cfg.quick and not cfg.victims else victims


def _specs(cfg: BenchConfig) -> list[MethodSpec]:
    specs = method_specs(cfg.quick)
    known = [s.key for s in specs]
    unknown = [m for m in cfg.methods if m not in known]
    if unknown:
        raise UserError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return [s for s in specs if not cfg.methods or s.key in cfg.methods]


def _log(cfg: BenchConfig, msg: str) -> None:
    if cfg.progress:
        print(f"bench: {msg}", flush=True)


def _method_record(spec: MethodSpec) -> dict[str, Any]:
    """A method as results.json states it: the overrides and the full effective config."""
    record: dict[str, Any] = {"family": spec.family, "baseline": spec.baseline}
    record.update(overrides=spec.config, note=spec.note)
    if spec.baseline is not None:
        record["config"] = asdict(BASELINES[spec.baseline](**spec.config).config)
    return record


def _preprocess_record(cfg: BenchConfig) -> dict[str, Any] | None:
    """How the paper protocol's FR models saw the faces (None for the offline protocol)."""
    if cfg.protocol != "paper":
        return None
    from pareidolia.zoo.paper_fr import paper_preprocess

    record: dict[str, Any] = dict(paper_preprocess(cfg.fr_preprocess).record())
    if cfg.fr_preprocess == "crop":
        record["box_xyxy_at_256"] = list(PAPER_CROP_BOX)
    return record


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run the benchmark ``cfg`` describes and write results.json, results.md and figures into
    ``cfg.out``; returns the results. Bad input raises :class:`UserError` before any work."""
    from pareidolia.evaluation.report import check_plotting, write_reports
    from pareidolia.objectives.expression import check_target_emotion

    check_plotting()
    if cfg.protocol == "paper" and cfg.protectors:
        raise OptionError(
            "{protectors} is for the offline protocol; the paper protocol trains one protector "
            "per victim and target into OUT/protectors (reused by {resume})",
            "protectors",
            "resume",
        )
    try:
        check_target_emotion(cfg.emotion)
    except ValueError as e:
        raise OptionError(f"{{emotion}}: {e}", "emotion") from e
    started = time.time()
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device)
    fid = M.FidFeatures(cfg.fid_weights) if cfg.fid_weights else None
    lpips = M.Lpips(cfg.lpips_weights) if cfg.lpips_weights else None
    if cfg.protocol == "paper":
        datasets = paper_datasets(cfg)
        verifiers = paper_verifiers(cfg, device)
        train = paper_train_faces(cfg)
    else:
        dataset, train = offline_dataset(cfg)
        datasets = [dataset]
        verifiers = zoo_verifiers(size=WORKING_SIZE, device=device)
    models = [v.name for v in verifiers]
    victims, specs = _victims(cfg, models), _specs(cfg)
    notes: list[str] = []
    if train is None and any(s.family == "map" for s in specs):
        specs = [s for s in specs if s.family != "map"]
        notes.append(
            "MAP skipped: it needs CelebA-HQ training faces in --celeba DIR/train (the paper "
            "protocol trains one protector per victim and target on them)"
        )
    if any(s.family == "map" for s in specs):
        check_given_protectors(cfg, victims, device)
    elif cfg.protectors:
        notes.append("--protector given but MAP is not among the methods run: ignored")
    prepare_out(cfg.out, cfg.resume)
    torch.manual_seed(cfg.seed)

    cells: list[dict[str, Any]] = []
    map_info: dict[str, Any] = {}
    examples: dict[str, np.ndarray] = {}
    judges_by = {d.name: Judges.build(verifiers, d, device) for d in datasets}
    if cfg.protocol == "offline":
        fr = zoo_ensembles(WORKING_SIZE, device)
    else:

        def fr(names: Sequence[str]) -> nn.Module:
            return SurrogateEnsemble([v for v in verifiers if v.name in names])

    for victim in victims:
        surrogates = [m for m in models if m != victim]
        against = _Victim(
            cfg, victim, surrogates, fr(surrogates), fr, train, device, dtype, map_info
        )
        for dataset in datasets:
            judges = judges_by[dataset.name]
            for spec in specs:
                path = cfg.out / "cells" / dataset.name / victim / f"{spec.key}.npz"
                key = cell_key(cfg, spec, dataset, victim)
                cached = _load_cell(path, key) if cfg.resume else None
                if cached is None:
                    _log(cfg, f"{dataset.name} / {victim} / {spec.key}")
                    protected, spf = _protect(
                        spec, dataset, against.loss_for, against.protector_for, fr, device, dtype
                    )
                    _save_cell(path, key, protected, spf)
                else:
                    protected, spf = cached
                row = {
                    "dataset": dataset.name,
                    "method": spec.key,
                    "victim": victim,
                    "surrogates": surrogates,
                    "faces": len(protected),
                    "seconds_per_face": spf,
                    **cell_metrics(
                        judges, victim, dataset.faces, protected, cfg.emotion, device, fid, lpips
                    ),
                }
                cells.append(row)
                if victim == victims[0] and dataset is datasets[0]:
                    examples[spec.key] = protected
        if cfg.protocol == "offline" and "map" in [s.key for s in specs] and victim not in map_info:
            map_info[victim] = {"source": "stored cell of a resumed run (see OUT/protectors)"}

    freqs, _ = M.radial_power_spectrum(np.zeros((WORKING_SIZE, WORKING_SIZE)))
    results = {
        "format": FORMAT,
        "protocol": cfg.protocol,
        "config": cfg.to_dict(),
        "machine": machine_info(device, dtype),
        "fars": list(FARS),
        "headline_far": FAR,
        "verifiers": {
            v.name: {"metric": v.rule.metric, "thresholds": v.rule.at} for v in verifiers
        },
        "datasets": {
            d.name: {"groups": [{"target": g.target_name, "faces": g.names} for g in d.groups]}
            for d in datasets
        },
        "fr_preprocess": _preprocess_record(cfg),
        "methods": {s.key: _method_record(s) for s in specs},
        "map": map_info,
        "notes": notes,
        "spectrum_frequencies": freqs.tolist(),
        "cells": cells,
        "started": started,
        "wall_seconds": round(time.time() - started, 1),
    }
    originals = datasets[0].faces
    write_reports(cfg.out, results, originals, examples)
    atomic_write_bytes(
        cfg.out / "results.json", json.dumps(results, indent=2).encode(), overwrite=True
    )
    return results
