"""``pareidolia train`` (fine-tune a MAP protector) and ``pareidolia apply`` (edit aligned crops).

- ``train --faces DIR --target IMG --emotion E [--victim M] --out FILE``: the training faces are
  every face found in the photos of DIR (or, for a face-set folder made by ``prior data``, its
  training split); the target is the largest face of IMG. Working files (latent cache,
  checkpoint, JSONL log) go to ``FILE.work/``; ``--resume`` continues an interrupted run from
  there. Settings come from the ``ProtectorConfig`` defaults, then ``--config FILE.toml``, then
  the flags. Under ``accelerate launch`` or ``torchrun`` (``-m pareidolia train …``) each
  process trains on its part of every batch (:mod:`pareidolia.data_parallel`); the first alone
  writes the work files and the protector. ``--guide clip`` (TOML ``guide = "clip"``) tunes
  with the paper's CLIP directional loss; its weights (``--clip-model`` / ``--clip-pretrained``)
  are read from the cache folder that ``pareidolia fetch clip`` fills, or from a file, never
  downloaded here. ``--dtype bfloat16`` runs the score network under autocast;
  ``--grad-checkpoint`` (TOML ``checkpoint_gen = true``) trades time for memory without
  changing the result (a run may be resumed with it switched).
- ``apply --protector FILE CROPS… [-o DIR]``: aligned working crops in (square images, e.g. what
  ``prior data`` writes), protected crops out with a ``_protected`` suffix; nothing overwritten.
"""

from __future__ import annotations

import argparse
import json
import time
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pareidolia.commands.options import (
    add_device_option,
    add_dtype_option,
    add_model_option,
    device_of,
    dtype_of,
)
from pareidolia.errors import NoFaceError, UserError
from pareidolia.runtime import DEFAULT_CLIP_MODEL, DEFAULT_CLIP_PRETRAINED, WORKING_SIZE, dtype_name

if TYPE_CHECKING:
    import torch

WORK_SUFFIX = ".work"


def training_faces(folder: Path) -> tuple[list[str], torch.Tensor]:
    """(names, (N, 3, 256, 256) in [0, 1]) of the training faces in ``folder``."""
    from pareidolia.faces.align import to_tensor
    from pareidolia.io import iter_image_files
    from pareidolia.locate import face_crops
    from pareidolia.prior.facesets import MANIFEST, load_faceset

    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder of face photos")
    if (folder / MANIFEST).is_file():
        pairs = load_faceset(folder).faces("train")
    else:
        pairs = []
        for path in iter_image_files([folder]):
            crops = face_crops(path, WORKING_SIZE)
            pairs += [(f"{path.name}#{i}", c) for i, c in enumerate(crops)]
    if not pairs:
        raise NoFaceError(f"{folder}: no face large enough to train on")
    return [n for n, _ in pairs], to_tensor([c for _, c in pairs])


PAPER_DEFAULT_VICTIM = "ir152"
"""The victim of ``train --fr-zoo paper`` without ``--victim`` (the other three are surrogates)."""


def _config(args: argparse.Namespace) -> Any:
    from pareidolia.protector import ProtectorConfig, fr_model_names

    values: dict[str, Any] = {}
    if args.config:
        try:
            values.update(tomllib.loads(Path(args.config).read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
            raise UserError(f"{args.config}: cannot read the config: {e}") from e
    flags = {
        "emotion": args.emotion, "victim": args.victim, "epochs": args.epochs, "lr": args.lr,
        "t0": args.t0, "projection": args.projection, "seed": args.seed,
        "fr_zoo": args.fr_zoo, "guide": args.guide, "clip_model": args.clip_model,
        "clip_pretrained": args.clip_pretrained, "batch": args.batch,
        "checkpoint_gen": args.grad_checkpoint or None,
    }  # fmt: skip
    values.update({k: v for k, v in flags.items() if v is not None})
    if values.get("fr_zoo") == "paper":
        values.setdefault("victim", PAPER_DEFAULT_VICTIM)
    if "victim" in values and "surrogates" not in values:
        names = fr_model_names(str(values.get("fr_zoo", "offline")))
        values["surrogates"] = [m for m in names if m != values["victim"]]
    return ProtectorConfig.from_dict(values)


def paper_fr(args: argparse.Namespace, device: torch.device) -> Any:
    """The surrogate ensembles of a ``--fr-zoo paper`` protector: the paper's FR models from
    ``--fr-weights DIR`` (as ``bench --protocol paper``); one line naming what is missing."""
    from pareidolia.evaluation.protocol import PAPER_CROP_BOX
    from pareidolia.objectives.identity import SurrogateEnsemble
    from pareidolia.zoo.paper_fr import PAPER_FR, paper_chip_models, paper_preprocess

    if not args.fr_weights:
        files = ", ".join(s.checkpoint for s in PAPER_FR.values())
        raise UserError(f"--fr-zoo paper needs --fr-weights DIR, a folder with {files}")
    prep = paper_preprocess(args.fr_preprocess)
    models = paper_chip_models(args.fr_weights, device, prep, PAPER_CROP_BOX)

    def fr(names: Any) -> Any:
        return SurrogateEnsemble([m for m in models if m.name in names])

    return fr


def _cmd_train(args: argparse.Namespace) -> int:
    from pareidolia.data_parallel import join_world
    from pareidolia.diffusion.models import shared_score_model
    from pareidolia.locate import target_face
    from pareidolia.protector import expression_guide, finetune, save_protector

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UserError(f"{out}: already exists; choose another --out or pass --overwrite")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: output folder does not exist")
    config = _config(args)
    world, device = join_world(device_of(args))  # one process, or one of a launcher's
    dtype = dtype_of(args, device)
    if args.fr_weights and config.fr_zoo != "paper":
        raise UserError("--fr-weights is for --fr-zoo paper (the offline zoo ships its weights)")
    fr = paper_fr(args, device) if config.fr_zoo == "paper" else None
    guide = expression_guide(config, WORKING_SIZE, device)  # the CLIP weights before any work
    names, faces = training_faces(Path(args.faces))
    target = target_face(Path(args.target), WORKING_SIZE)
    unet, score_cfg = shared_score_model(args.model, device)
    work = out.with_name(out.name + WORK_SUFFIX)
    if world.main:
        print(f"training on {len(names)} faces; target {args.target}; work folder {work}")
        where = f"{score_cfg.source} on {device}, {dtype_name(dtype)}"
        print(f"config: {config.to_json()}; base network {where}")
    if world.main and world.size > 1:
        print(f"{world.size} processes, each on its part of every batch of {config.batch}")
    start = time.perf_counter()
    protector = finetune(
        unet, score_cfg, faces.to(device), target.to(device), config, work,
        progress=not args.quiet, resume=args.resume, fr=fr, guide=guide, world=world,
        dtype=dtype,
    )  # fmt: skip
    protector.metrics["train_seconds"] = round(time.perf_counter() - start, 1)
    if world.main:
        save_protector(out, protector, overwrite=args.overwrite)
        print(f"{out}: protector written ({json.dumps(protector.metrics)})")
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    from pareidolia.diffusion.models import shared_score_model
    from pareidolia.faces.align import to_tensor, to_uint8
    from pareidolia.io import output_path_for, read_photo, write_photo
    from pareidolia.protector import apply_protector, load_protector

    device = device_of(args)
    dtype = dtype_of(args, device)
    out_dir = Path(args.output) if args.output else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    photos = [read_photo(Path(p)) for p in args.crops]  # every input checked before any work
    for ph in photos:
        h, w = ph.rgb.shape[:2]
        if h != w or h < 64:
            raise UserError(
                f"{ph.path}: not an aligned face crop ({w}×{h}); crops are square, ≥ 64 px "
                "(use `pareidolia protect` for photos)"
            )
    unet, score_cfg = shared_score_model(args.model, device)
    protector = load_protector(args.protector, unet, score_cfg)
    for ph in photos:
        start = time.perf_counter()
        edited = to_uint8(apply_protector(protector, to_tensor(ph.rgb), dtype=dtype).cpu())[0]
        dest = write_photo(output_path_for(ph.path, out_dir), edited, like=ph)
        print(f"{ph.path} -> {dest} ({time.perf_counter() - start:.2f} s)")
    return 0


def add_train_parsers(sub: Any) -> None:
    """Register ``train`` and ``apply`` on the top-level sub-parser action."""
    t = sub.add_parser("train", help="fine-tune a MAP protector for a target identity and emotion")
    t.add_argument("--faces", required=True, help="folder of training face photos (or a face set)")
    t.add_argument("--target", required=True, help="photo of the target identity")
    t.add_argument("--emotion", help="happy (default), surprised, angry, sad, fearful or disgusted")
    t.add_argument("--victim", help="FR model held out of training (default: dlib)")
    t.add_argument("--out", required=True, help="protector file to write (.safetensors)")
    t.add_argument("--config", help="TOML file of ProtectorConfig fields")
    t.add_argument("--epochs", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--t0", type=int)
    t.add_argument("--projection", choices=["gradvac", "pcgrad", "none"])
    t.add_argument("--seed", type=int)
    t.add_argument("--batch", type=int, help="faces per step (default 1); under `accelerate "
                   "launch` or `torchrun`, split between the processes")  # fmt: skip
    t.add_argument("--guide", choices=("classifier", "clip"),
                   help="L_E's expression guide: the face-api classifier (default, offline) or "
                   "the paper's CLIP directional loss (needs open_clip_torch and `pareidolia "
                   "fetch clip`)")  # fmt: skip
    t.add_argument("--clip-model", metavar="NAME",
                   help=f"--guide clip: the open_clip model (default {DEFAULT_CLIP_MODEL})")  # fmt: skip
    t.add_argument("--clip-pretrained", metavar="TAG_OR_FILE",
                   help=f"--guide clip: its weights, {DEFAULT_CLIP_PRETRAINED} (default: the "
                   "file `pareidolia fetch clip` downloads) or a weights file")  # fmt: skip
    add_model_option(t, "prior:", " (default prior)")
    add_device_option(t)
    add_dtype_option(t)
    t.add_argument("--grad-checkpoint", action="store_true",
                   help="recompute activations in the backward pass (each generation step and "
                   "the network's blocks): less memory, more time, the same result (TOML "
                   "checkpoint_gen = true)")  # fmt: skip
    t.add_argument("--fr-zoo", choices=("offline", "paper"),
                   help="surrogate and victim FR models: the offline zoo's (default), or the "
                   "paper's IR152, IRSE50, FaceNet and MobileFace (needs --fr-weights; victim "
                   f"default {PAPER_DEFAULT_VICTIM})")  # fmt: skip
    t.add_argument(
        "--fr-weights", help="--fr-zoo paper: folder with ir152.pth irse50.pth facenet.pth "
        "mobile_face.pth"
    )  # fmt: skip
    t.add_argument("--fr-preprocess", choices=("resize", "crop"), default="resize",
                   help="--fr-zoo paper: resize the whole 256 crop, or crop the face first")  # fmt: skip
    t.add_argument("--resume", action="store_true", help="continue from OUT.work/checkpoint.pt")
    t.add_argument("--overwrite", action="store_true", help="replace an existing protector file")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)

    a = sub.add_parser("apply", help="protect aligned face crops with a protector")
    a.add_argument("--protector", required=True, help="protector file from `pareidolia train`")
    a.add_argument("crops", nargs="+", help="aligned square face crops")
    a.add_argument("-o", "--output", help="output folder (default: next to each crop)")
    add_model_option(a, "prior:", " (default prior)")
    add_device_option(a)
    add_dtype_option(a)
    a.set_defaults(func=_cmd_apply)
