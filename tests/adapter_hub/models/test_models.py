"""Base models: an unknown hub id fails at once when the Hub cannot be reached (no minutes of retries)."""

from __future__ import annotations

import time

import pytest

import adapter_hub.models.loading as models
from adapter_hub.models.devices import resolve_dtype


def test_an_unknown_model_fails_fast_when_the_hub_is_unreachable(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "HUB_HOST", ("127.0.0.1", 9))  # nothing listens: refused at once, as offline
    start = time.monotonic()
    with pytest.raises(OSError, match="not a local folder nor in the Hugging Face cache, and the Hub is unreachable"):
        models.load_base_model("someone/no-such-model-here")
    with pytest.raises(OSError, match="unreachable"):
        models.load_tokenizer("someone/no-such-model-here")
    assert time.monotonic() - start < 15


def test_hf_hub_offline_is_respected_without_a_connection_attempt(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("tried the network although HF_HUB_OFFLINE is set")

    monkeypatch.setattr("socket.create_connection", no_network)
    with pytest.raises(OSError, match=r"disabled \(HF_HUB_OFFLINE\)"):
        models.load_base_model("someone/no-such-model-here")


def test_a_local_folder_loads_without_the_network(tmp_path, monkeypatch):
    model = models.load_base_model("tiny-llama")
    model.save_pretrained(tmp_path / "m")
    monkeypatch.setattr("socket.create_connection", lambda *a, **k: (_ for _ in ()).throw(AssertionError("network")))
    loaded = models.load_base_model(str(tmp_path / "m"))
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())


def test_dtype_settings():
    import torch

    assert resolve_dtype("auto", "cpu") == torch.float32  # bf16 only on a CUDA device that supports it
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16 and resolve_dtype("fp16") == torch.float16
    with pytest.raises(ValueError, match="dtype must be auto"):
        resolve_dtype("int8")
    model = models.load_base_model("tiny-llama", dtype="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_the_bf16_probe_agrees_with_the_kernels_cpu_flags():
    from pathlib import Path

    import adapter_hub.models.devices as devices

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo to check the probe against (not Linux)")
    flags = next(line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("flags"))
    assert devices.cpu_bf16_native() == ("avx512_bf16" in flags or "amx_tile" in flags)
