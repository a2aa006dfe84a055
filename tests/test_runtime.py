"""Device and dtype choice and the state the program keeps between calls: one device picker,
one dtype picker and autocast context, and loaded networks cached per device (never moved
between devices in place) or per thread."""

from __future__ import annotations

import threading

import pytest
import torch

from pareidolia.errors import OptionError
from pareidolia.runtime import autocast, dtype_name, pick_device, pick_dtype


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(OptionError, match="not a device") as caught:
        pick_device("gpu0")
    assert caught.value.worded({"device": "--device"}).startswith("--device 'gpu0': not a device")
    if not torch.cuda.is_available():
        with pytest.raises(OptionError, match="no CUDA device"):
            pick_device("cuda:0")


def test_pick_dtype_and_its_one_line_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert pick_dtype("float32", cpu) == torch.float32
    assert pick_dtype("bfloat16", cpu) == torch.bfloat16
    assert pick_dtype("auto", cpu) == torch.float32  # auto picks bfloat16 on a GPU only
    assert dtype_name(torch.bfloat16) == "bfloat16"
    with pytest.raises(OptionError) as caught:
        pick_dtype("float16", cpu)
    assert caught.value.worded({"dtype": "--dtype"}) == (
        "--dtype 'float16': not a dtype (float32, bfloat16, auto)"
    )
    for supported in (False, True):  # a GPU before Ampere, and one after (no GPU needed)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported, **_: s)
        assert pick_dtype("auto", cuda) == (torch.bfloat16 if supported else torch.float32)
    assert pick_dtype("bfloat16", cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **_: False)
    with pytest.raises(OptionError) as caught:
        pick_dtype("bfloat16", cuda)
    assert caught.value.worded({"dtype": "--dtype"}) == (
        "--dtype bfloat16: cuda cannot compute in bfloat16"
    )
    with pytest.raises(OptionError, match="meta cannot compute in bfloat16"):
        pick_dtype("bfloat16", torch.device("meta"))


def test_autocast_is_nothing_for_float32_and_bfloat16_matmuls_otherwise() -> None:
    a = torch.ones(2, 2)
    with autocast(torch.device("cpu"), torch.float32):
        assert (a @ a).dtype == torch.float32
    with autocast(torch.device("cpu"), torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
    assert (a @ a).dtype == torch.float32


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
