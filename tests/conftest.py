"""Shared fixtures: tiny models (built once per session, copied per test), temp registries, GPU skips."""

from __future__ import annotations

import copy
import os

import pytest
import torch

# Fewer threads than cores keeps per-test timings steady on the 2-core CI machine.
torch.set_num_threads(int(os.environ.get("ADAPTER_HUB_TEST_THREADS", "2")))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY = ["tiny-llama", "tiny-gpt2"]


@pytest.fixture(scope="session")
def _tiny_models():
    from adapter_hub.models import load_base_model

    return {name: load_base_model(name) for name in TINY}


@pytest.fixture
def tiny_model(_tiny_models):
    """A fresh copy of a tiny model: call tiny_model('tiny-llama')."""
    return lambda name="tiny-llama": copy.deepcopy(_tiny_models[name])


@pytest.fixture(scope="session")
def tokenizer():
    from adapter_hub.models import load_tokenizer

    return load_tokenizer("tiny-llama")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """No test writes to the user's real cache or registry."""
    monkeypatch.setenv("ADAPTER_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ADAPTER_HUB_HOME", str(tmp_path / "default-registry"))
    monkeypatch.delenv("ADAPTER_HUB_REGISTRY", raising=False)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: run scripts/gpu_check.sh on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
