"""Device choice and the state the program keeps between calls: one device picker, and loaded
networks cached per device (never moved between devices in place) or per thread."""

from __future__ import annotations

import threading

import pytest
import torch

from pareidolia.errors import OptionError
from pareidolia.runtime import pick_device


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(OptionError, match="not a device") as caught:
        pick_device("gpu0")
    assert caught.value.worded({"device": "--device"}).startswith("--device 'gpu0': not a device")
    if not torch.cuda.is_available():
        with pytest.raises(OptionError, match="no CUDA device"):
            pick_device("cuda:0")


def test_the_benchmark_loads_its_base_network_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """A network cached for one device is never moved to another in place."""
    import pareidolia.diffusion.models as models
    from pareidolia.evaluation import bench

    monkeypatch.setattr(models, "load_score_model", lambda spec: (torch.nn.Linear(2, 2), {}))
    bench.base_network.cache_clear()
    try:
        on_cpu, _ = bench.base_network("tiny", torch.device("cpu"))
        on_meta, _ = bench.base_network("tiny", torch.device("meta"))
        assert bench.base_network("tiny", torch.device("cpu"))[0] is on_cpu
    finally:
        bench.base_network.cache_clear()
    assert on_meta is not on_cpu and on_meta.weight.device.type == "meta"
    assert on_cpu.weight.device.type == "cpu"


def test_each_thread_has_its_own_detector() -> None:
    """The detector is reconfigured on every call (input size, threshold): not shared."""
    from pareidolia.faces import detect

    mine = detect._detector()
    assert detect._detector() is mine
    theirs: list[object] = []
    worker = threading.Thread(target=lambda: theirs.append(detect._detector()))
    worker.start()
    worker.join()
    assert theirs and theirs[0] is not mine


def test_the_landmark_net_is_cached_per_device() -> None:
    from pareidolia import locate

    net = locate._landmark_net("cpu")
    assert locate._landmark_net("cpu") is net
    assert next(net.parameters()).device.type == "cpu"
