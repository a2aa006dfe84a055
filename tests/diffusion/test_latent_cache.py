"""The latent cache: hits are exact, and damaged or stale entries are recomputed, never used."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from pareidolia.diffusion.cache import LatentCache, LatentKey

IMAGE = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
KEY = LatentKey.for_image(IMAGE, model_hash="m" * 64, t0=60, n_steps=20)


class Counter:
    """A stand-in for inversion that counts its calls and returns a fresh latent each time."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        return torch.randn(1, 3, 16, 16)


def test_hit_returns_the_identical_tensor(tmp_path: Path) -> None:
    cache, compute = LatentCache(tmp_path), Counter()
    first = cache.get_or_compute(KEY, compute)
    second = cache.get_or_compute(KEY, compute)
    assert compute.calls == 1 and torch.equal(first, second)
    assert [p.name for p in tmp_path.iterdir()] == [cache.path(KEY).name]  # no temp files left


def test_key_covers_image_model_t0_and_steps(tmp_path: Path) -> None:
    cache, compute = LatentCache(tmp_path), Counter()
    cache.get_or_compute(KEY, compute)
    variants = [
        LatentKey.for_image(IMAGE + 1e-3, KEY.model_hash, 60, 20),
        LatentKey.for_image(IMAGE, "n" * 64, 60, 20),
        LatentKey.for_image(IMAGE, KEY.model_hash, 61, 20),
        LatentKey.for_image(IMAGE, KEY.model_hash, 60, 21),
    ]
    for key in variants:
        cache.get_or_compute(key, compute)
    assert compute.calls == 5
    assert LatentKey.for_image(IMAGE.clone(), KEY.model_hash, 60, 20) == KEY


def test_corrupt_truncated_or_stale_entries_are_recomputed(tmp_path: Path) -> None:
    cache, compute = LatentCache(tmp_path), Counter()
    path = cache.store(KEY, torch.zeros(1, 3, 16, 16))

    def damaged(edit: bytes) -> None:
        path.write_bytes(edit)
        latent = cache.get_or_compute(KEY, compute)
        assert not torch.equal(latent, torch.zeros_like(latent))
        assert torch.equal(cache.load(KEY), latent)  # the recomputed entry replaced the bad one

    good = path.read_bytes()
    damaged(good[:-7] + b"\x01" + good[-6:])  # one flipped value: the checksum catches it
    good = path.read_bytes()
    damaged(good[: len(good) // 2])  # truncated
    damaged(b"not a safetensors file")
    assert compute.calls == 3

    other = LatentKey.for_image(IMAGE, KEY.model_hash, 60, 40)
    shutil.copy(path, cache.path(other))  # an entry under the wrong name is stale
    assert cache.load(other) is None


def test_bfloat16_latents_round_trip(tmp_path: Path) -> None:
    cache = LatentCache(tmp_path / "nested")
    latent = torch.randn(2, 3, 8, 8).to(torch.bfloat16)
    cache.store(KEY, latent)
    assert torch.equal(cache.load(KEY), latent)
