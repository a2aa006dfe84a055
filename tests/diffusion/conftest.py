"""The diffusion tests run tiny networks: one thread each is faster than several, and stays fast
when the cores are shared (with two threads per process on two busy cores, OpenMP's waiting
made these tests 50 times slower)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
