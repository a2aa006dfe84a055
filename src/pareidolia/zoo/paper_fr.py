"""The four FR models of the paper protocol, loaded from checkpoints the user brings.

Every paper in the makeup-attack line (Adv-Makeup, AMT-GAN, CLIP2Protect, DiffAM) evaluates
impersonation against the same four face-recognition networks and the same LFW thresholds
(METHOD.md §5). Their weights are distributed by those projects, not by any package registry,
so none ship with pareidolia and none can be fetched here: the user downloads them and passes
the file to :func:`load_paper_fr`. The architectures are re-implemented in
:mod:`pareidolia.zoo.ir`, :mod:`pareidolia.zoo.facenet` and :mod:`pareidolia.zoo.mobilefacenet`
with the upstream parameter names, so the files load with ``strict=True``.

===============  ====================  ===================  =====  ===  =========================
name             file                  network              input  dim  cosine τ, FAR 0.1/0.01/0.001
===============  ====================  ===================  =====  ===  =========================
``ir152``        ``ir152.pth``         IR-152               112    512  0.094632 / 0.166788 / 0.227922
``irse50``       ``irse50.pth``        IR-SE-50             112    512  0.144840 / 0.241045 / 0.312703
``facenet``      ``facenet.pth``       InceptionResnetV1    160    512  0.256587 / 0.409131 / 0.591191
``mobile_face``  ``mobile_face.pth``   MobileFaceNet        112    512  0.183635 / 0.301611 / 0.380878
===============  ====================  ===================  =====  ===  =========================

Input convention of all four: RGB in [−1, 1], bilinearly resized (no antialiasing,
``align_corners=False``, as ``F.interpolate(x, size, mode="bilinear")`` in the attack repos) to
the model's input size. :class:`PaperFR` does that from faces in [0, 1] of any size.

These models are *not* in the offline zoo's registry (:func:`pareidolia.zoo.registry.names`):
that zoo's models ship with checked weights and stay the default; :data:`PAPER_FR` is for the
paper-protocol bench, which must also record how faces were cut out (:func:`paper_preprocess`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from pareidolia.checksums import file_sha256
from pareidolia.errors import UserError
from pareidolia.zoo import facenet, ir, mobilefacenet
from pareidolia.zoo.chip_model import ChipModel
from pareidolia.zoo.thresholds import Thresholds

# Where each checkpoint's threshold came from (the same text for every FAR level).
_THRESHOLD_SOURCE = (
    "documented: LFW cosine threshold used by Adv-Makeup / AMT-GAN / CLIP2Protect / DiffAM "
    "(METHOD.md §5)"
)

# Keys under which training scripts commonly nest a state dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "backbone", "params")
_SHOW_KEYS = 4  # how many offending keys an error message names


@dataclass(frozen=True)
class PaperFRSpec:
    """One paper-protocol FR model: its network, input convention and decision thresholds."""

    name: str
    architecture: str
    checkpoint: str  # file name the attack repos distribute
    input_size: int
    output_dim: int
    parameters: int  # exact parameter count of the embedding network
    thresholds: Thresholds  # cosine, FAR "0.1" / "0.01" / "0.001"
    source: str  # how the attack repos build the network the checkpoint was saved from
    factory: Callable[[], nn.Module]
    # Checkpoint key prefixes that belong to heads the embedding does not use; dropped on load.
    ignored_prefixes: tuple[str, ...] = ()

    @property
    def preprocessing(self) -> str:
        """The input convention, in words."""
        s = self.input_size
        return f"RGB in [-1, 1], bilinear resize to {s}x{s} (align_corners=False, no antialias)"


def _thresholds(name: str, t01: float, t001: float, t0001: float) -> Thresholds:
    at = {"0.1": t01, "0.01": t001, "0.001": t0001}
    return Thresholds(name, "cosine", at, dict.fromkeys(at, _THRESHOLD_SOURCE))


PAPER_FR: dict[str, PaperFRSpec] = {
    spec.name: spec
    for spec in (
        PaperFRSpec(
            name="ir152",
            architecture="IR-152 (ArcFace improved-residual ResNet-152)",
            checkpoint="ir152.pth",
            input_size=ir.INPUT_SIZE,
            output_dim=ir.EMBEDDING_DIM,
            parameters=70_737_600,
            thresholds=_thresholds("ir152", 0.094632, 0.166788, 0.227922),
            source="ir152.IR_152((112, 112)) (face.evoLVe model_irse layout)",
            factory=ir.ir152,
        ),
        PaperFRSpec(
            name="irse50",
            architecture="IR-SE-50 (ArcFace improved-residual ResNet-50 with squeeze-excitation)",
            checkpoint="irse50.pth",
            input_size=ir.INPUT_SIZE,
            output_dim=ir.EMBEDDING_DIM,
            parameters=43_797_696,
            thresholds=_thresholds("irse50", 0.144840, 0.241045, 0.312703),
            source="irse.Backbone(50, 0.6, 'ir_se') (InsightFace_Pytorch layout)",
            factory=ir.irse50,
        ),
        PaperFRSpec(
            name="facenet",
            architecture="FaceNet InceptionResnetV1 (facenet-pytorch, VGGFace2)",
            checkpoint="facenet.pth",
            input_size=facenet.INPUT_SIZE,
            output_dim=facenet.EMBEDDING_DIM,
            parameters=23_482_624,
            thresholds=_thresholds("facenet", 0.256587, 0.409131, 0.591191),
            source="facenet.InceptionResnetV1(num_classes=8631) (facenet-pytorch layout)",
            factory=facenet.facenet,
            ignored_prefixes=("logits.",),  # the 8631-identity VGGFace2 classifier
        ),
        PaperFRSpec(
            name="mobile_face",
            architecture="MobileFaceNet",
            checkpoint="mobile_face.pth",
            input_size=mobilefacenet.INPUT_SIZE,
            output_dim=mobilefacenet.EMBEDDING_DIM,
            parameters=1_200_512,
            thresholds=_thresholds("mobile_face", 0.183635, 0.301611, 0.380878),
            source="irse.MobileFaceNet(512) (InsightFace_Pytorch layout)",
            factory=mobilefacenet.mobile_face,
        ),
    )
}


def paper_spec(name: str) -> PaperFRSpec:
    """The spec of paper model ``name``; a :class:`UserError` lists the known names."""
    try:
        return PAPER_FR[name]
    except KeyError:
        raise UserError(f"unknown paper FR model {name!r}; known: {', '.join(PAPER_FR)}") from None


# --------------------------------------------------------------------------------------------
# Face preparation: the two variants of METHOD.md §5


PreprocessMode = Literal["resize", "crop"]

_PREPROCESS_DESCRIPTIONS: dict[str, str] = {
    "resize": (
        "whole aligned image (e.g. 256x256) bilinearly resized to the model input; "
        "hair and background included, as in AMT-GAN's and DiffAM's evaluation code"
    ),
    "crop": (
        "face box cropped from the image first, then bilinearly resized to the model input; "
        "tighter framing, as in papers that run a face detector before the FR model"
    ),
}


@dataclass(frozen=True)
class PaperPreprocess:
    """How faces are cut out before a paper model sees them; the bench records :attr:`mode`.

    Calling it maps images (N, 3, H, W) in [0, 1] to (N, 3, size, size) in [0, 1]; the result
    goes to :class:`PaperFR`, which only maps it to [−1, 1]. Differentiable in the pixels.
    """

    mode: PreprocessMode
    description: str

    def __call__(
        self, images: torch.Tensor, size: int, boxes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Prepare ``images`` for a model of input ``size``.

        ``boxes`` (N, 4), pixel (x0, y0, x1, y1), are required in ``crop`` mode and refused in
        ``resize`` mode, so a bench cannot silently record the wrong mode.
        """
        _check_images(images)
        if self.mode == "resize":
            if boxes is not None:
                raise ValueError("resize mode uses the whole image; use mode 'crop' for boxes")
            return _resize(images, size)
        if boxes is None or boxes.shape != (images.shape[0], 4):
            raise ValueError(f"crop mode needs boxes of shape ({images.shape[0]}, 4)")
        h, w = images.shape[-2:]
        crops = []
        for image, box in zip(images, boxes.tolist(), strict=True):
            x0, y0 = max(0, round(box[0])), max(0, round(box[1]))
            x1, y1 = min(w, round(box[2])), min(h, round(box[3]))
            if x1 <= x0 or y1 <= y0:
                raise ValueError(f"empty face box {box} in a {w}x{h} image")
            crops.append(_resize(image[None, :, y0:y1, x0:x1], size))
        return torch.cat(crops)

    def record(self) -> dict[str, str]:
        """What a results file should say about face preparation."""
        return {"preprocess": self.mode, "preprocess_description": self.description}


def paper_preprocess(mode: PreprocessMode) -> PaperPreprocess:
    """The face preparation variant ``mode``.

    - ``"resize"``: the whole aligned image (the paper data are 256×256 CelebA-HQ / LADN
      crops) is resized to the model input: face plus hair and background.
    - ``"crop"``: the face box is cut out first, then resized: the FR model sees mostly face.

    METHOD.md §5 notes that papers differ here, and PSR depends on it, so every paper-protocol
    result must state which one it used (:meth:`PaperPreprocess.record`).
    """
    if mode not in _PREPROCESS_DESCRIPTIONS:
        raise ValueError(f"preprocess mode must be one of {sorted(_PREPROCESS_DESCRIPTIONS)}")
    return PaperPreprocess(mode, _PREPROCESS_DESCRIPTIONS[mode])


def _check_images(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected faces of shape (N, 3, H, W), got {tuple(x.shape)}")


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize as the attack repos do it; a no-op at the right size."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------------------------
# The model wrapper


class PaperFR(nn.Module):
    """A paper-protocol FR network behind the zoo's input convention.

    Takes faces (N, 3, H, W) as RGB in [0, 1] of any size, resizes them bilinearly to the
    model's input, maps them to [−1, 1] and returns the raw (N, 512) embedding. The network
    stays in eval mode (``train()`` does not switch its batch norms to batch statistics) and its
    parameters do not require gradients; gradients still reach the input.
    """

    def __init__(self, spec: PaperFRSpec, net: nn.Module, checkpoint: Path | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.net = net.eval().requires_grad_(False)
        self.checkpoint = checkpoint

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    def train(self, mode: bool = True) -> PaperFR:
        """Sets the wrapper's flag only: the frozen network always runs in eval mode."""
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x)
        return self.net(_resize(x, self.spec.input_size) * 2.0 - 1.0)

    def checkpoint_sha256(self) -> str | None:
        """sha256 of the file the weights came from, for results files (None if built bare)."""
        return None if self.checkpoint is None else file_sha256(self.checkpoint)


# --------------------------------------------------------------------------------------------
# Checkpoint loading


def read_paper_checkpoint(name: str, path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` for paper model ``name``, checked against the architecture.

    Accepts a bare state dict or one nested under a common key (``state_dict``, ``model``, …),
    strips a ``module.`` prefix (``DataParallel``), drops keys of unused heads (FaceNet's
    ``logits``) and fills in batch-norm ``num_batches_tracked`` counters that old checkpoints
    lack. Raises :class:`UserError` naming the file, the model and the offending keys when the
    file is not a readable checkpoint or does not fit.
    """
    spec = paper_spec(name)
    path = Path(path)
    state = _unwrap(_read_checkpoint_file(path, spec), path, spec)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(spec.ignored_prefixes)}
    as_saved = dict(state)
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        expected = {k: tuple(v.shape) for k, v in spec.factory().state_dict().items()}
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.tensor(0, dtype=torch.long)
    problem = _mismatch(state, expected)
    if problem:
        hint = _looks_like(as_saved, spec)
        raise UserError(
            f"{path}: does not fit paper FR model {spec.name!r} ({spec.architecture}); is this "
            f"the right checkpoint (expected {spec.checkpoint})?{hint} {problem}"
        )
    return state


def load_paper_fr(name: str, path: str | Path, device: torch.device | str = "cpu") -> PaperFR:
    """Build paper model ``name`` with the weights in the user's checkpoint ``path``.

    The file is read with ``torch.load(..., weights_only=True)`` (no code runs from it) and
    loaded with ``strict=True`` after :func:`read_paper_checkpoint`'s checks. Returns the
    :class:`PaperFR` wrapper (faces in [0, 1], any size → raw 512-D embeddings) on ``device``.
    """
    spec = paper_spec(name)
    state = read_paper_checkpoint(name, path)
    net = spec.factory()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:  # e.g. a dtype that cannot be copied; shapes were checked above
        first = str(e).strip().splitlines()[-1].strip()
        raise UserError(f"{path}: cannot load into paper FR model {name!r}: {first}") from None
    return PaperFR(spec, net, Path(path)).to(device)


class _PaperChip(nn.Module):
    """What a paper model reads of a working crop: the face prepared as ``prep`` says
    (:func:`paper_preprocess`) at the model's input ``size``; ``box`` is crop mode's face box,
    pixels (x0, y0, x1, y1)."""

    def __init__(
        self, prep: PaperPreprocess, size: int, box: tuple[int, int, int, int] | None
    ) -> None:
        super().__init__()
        self.prep, self.size, self.box = prep, size, box

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        boxes = None
        if self.prep.mode == "crop":
            boxes = torch.tensor([self.box], dtype=torch.float32).expand(len(x), 4)
        return self.prep(x, self.size, boxes)


def paper_chip_model(
    name: str,
    path: str | Path,
    device: torch.device | str,
    prep: PaperPreprocess,
    box: tuple[int, int, int, int] | None = None,
) -> ChipModel:
    """Paper model ``name`` (weights from the user's ``path``, :func:`load_paper_fr`) as the
    zoo's one model type: reading working crops prepared by ``prep`` (with the face ``box`` in
    crop mode), with the paper's cosine thresholds."""
    spec = paper_spec(name)
    net = load_paper_fr(name, path, device)
    return ChipModel(name, net, _PaperChip(prep, spec.input_size, box), spec.thresholds)


def paper_chip_models(
    folder: str | Path,
    device: torch.device | str,
    prep: PaperPreprocess,
    box: tuple[int, int, int, int] | None = None,
) -> list[ChipModel]:
    """Every model of :data:`PAPER_FR` as :func:`paper_chip_model`, its weights from the
    user's ``folder`` (``ir152.pth``, ``irse50.pth``, ``facenet.pth``, ``mobile_face.pth``).
    One :class:`UserError` names every missing file before anything is loaded."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder (the paper's FR weights)")
    missing = [s.checkpoint for s in PAPER_FR.values() if not (folder / s.checkpoint).is_file()]
    if missing:
        raise UserError(f"{folder}: missing {', '.join(missing)} (the paper's FR weights)")
    return [
        paper_chip_model(name, folder / spec.checkpoint, device, prep, box)
        for name, spec in PAPER_FR.items()
    ]


def _read_checkpoint_file(path: Path, spec: PaperFRSpec) -> Any:
    if not path.is_file():
        raise UserError(
            f"{path}: no such file; paper FR model {spec.name!r} needs {spec.checkpoint} from "
            "the AMT-GAN / DiffAM FR model download (no weights ship with pareidolia)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types here: pickle, zip, EOF, runtime errors
        lines = str(e).strip().splitlines()
        reason = f"{type(e).__name__}: {lines[0] if lines else ''}".strip()
        raise UserError(
            f"{path}: not a PyTorch checkpoint that loads safely ({reason[:200]}); expected "
            f"{spec.checkpoint}, a state dict saved with torch.save (a whole pickled model "
            "must be re-saved as model.state_dict())"
        ) from None


def _is_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _unwrap(obj: object, path: Path, spec: PaperFRSpec) -> dict[str, torch.Tensor]:
    """The state dict in a loaded checkpoint: the object itself or one nested under a key."""
    for _ in range(3):  # wrappers are at most a couple of levels deep
        if _is_state_dict(obj):
            assert isinstance(obj, Mapping)
            return dict(obj)
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    what = (
        f"a mapping with keys {_show([str(k) for k in obj])}"
        if isinstance(obj, Mapping)
        else f"a {type(obj).__name__}"
    )
    raise UserError(
        f"{path}: holds {what}, not a state dict of tensors; is this the right checkpoint "
        f"for paper FR model {spec.name!r} (expected {spec.checkpoint})?"
    )


def _mismatch(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]) -> str:
    """'' when ``state`` fits ``expected`` exactly, else which keys are missing/extra/misshapen."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} (file {tuple(state[k].shape)}, model {shape})"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys: {_show(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} keys: {_show(unexpected)}")
    if wrong:
        parts.append(f"{len(wrong)} keys of the wrong shape: {_show(wrong)}")
    return "; ".join(parts)


def _looks_like(state: Mapping[str, torch.Tensor], spec: PaperFRSpec) -> str:
    """A hint when the file fits another paper model exactly (e.g. irse50.pth given as ir152)."""
    for other in PAPER_FR.values():
        if other.name == spec.name:
            continue
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in other.factory().state_dict().items()}
        keys = {k for k in state if not k.startswith(other.ignored_prefixes)}
        fits = all(k in shapes and tuple(state[k].shape) == shapes[k] for k in keys)
        if fits and all(k in keys or k.endswith("num_batches_tracked") for k in shapes):
            return f" It fits {other.name!r} ({other.checkpoint})."
    return ""


def _show(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW_KEYS])
    return shown + (f", … (+{len(items) - _SHOW_KEYS} more)" if len(items) > _SHOW_KEYS else "")
