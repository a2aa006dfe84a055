"""On-disk cache of DDIM inversion latents, so each training face is inverted once.

An entry is one safetensors file whose JSON header carries the entry's key and the sha256 of the
latent. A file that cannot be parsed (truncated, corrupt), whose key differs from the one asked
for (stale: a renamed or colliding file, an older format) or whose tensor fails its checksum is
treated as a miss and recomputed, never used. Writes go to a temporary file in the same folder
and are moved into place with ``os.replace``, so readers see a whole entry or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pareidolia.diffusion.hashing import tensors_sha256

FORMAT = "pareidolia.latent/1"
_TENSOR = "latent"


@dataclass(frozen=True)
class LatentKey:
    """What a latent depends on: the image's content, the inverting network's content hash
    (:attr:`ScoreModelConfig.content_hash`), and the inversion's t0 and step count."""

    image_hash: str
    model_hash: str
    t0: int
    n_steps: int

    @classmethod
    def for_image(cls, image: torch.Tensor, model_hash: str, t0: int, n_steps: int) -> LatentKey:
        """The key of ``image`` (its dtype, shape and values; not its device)."""
        return cls(tensors_sha256({"image": image}), model_hash, t0, n_steps)

    def header(self) -> dict[str, str]:
        """The key as the string fields stored in an entry's header."""
        return {"format": FORMAT, **{k: str(v) for k, v in asdict(self).items()}}

    def digest(self) -> str:
        """File-name-safe digest of the key."""
        return hashlib.sha256(json.dumps(self.header(), sort_keys=True).encode()).hexdigest()


class LatentCache:
    """A folder of latents, one file per :class:`LatentKey`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: LatentKey) -> Path:
        return self.root / f"{key.digest()}.safetensors"

    def load(self, key: LatentKey, device: str | torch.device = "cpu") -> torch.Tensor | None:
        """The cached latent of ``key`` on ``device``, or ``None`` if it is absent or unusable."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                header = f.metadata() or {}
                latent = f.get_tensor(_TENSOR)
        except Exception:  # safetensors reports a damaged file with several exception types
            return None
        expected = {**key.header(), "sha256": tensors_sha256({_TENSOR: latent})}
        if {k: header.get(k) for k in expected} != expected:
            return None
        return latent

    def store(self, key: LatentKey, latent: torch.Tensor) -> Path:
        """Write ``latent`` as the entry of ``key``, atomically replacing any previous one."""
        self.root.mkdir(parents=True, exist_ok=True)
        tensor = latent.detach().to("cpu").contiguous()
        header = {**key.header(), "sha256": tensors_sha256({_TENSOR: tensor})}
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".safetensors")
        os.close(fd)
        try:
            save_file({_TENSOR: tensor}, tmp, metadata=header)
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.path(key)

    def get_or_compute(
        self,
        key: LatentKey,
        compute: Callable[[], torch.Tensor],
        device: str | torch.device = "cpu",
    ) -> torch.Tensor:
        """The cached latent of ``key`` on ``device``; on a miss, ``compute()``, store and return it."""
        hit = self.load(key, device)
        if hit is not None:
            return hit
        latent = compute()
        self.store(key, latent)
        return latent.to(device)
