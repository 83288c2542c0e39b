"""Registry test fixtures: torch-free adapter folders, registries on SQLite (the PostgreSQL server and
databases are in tests/conftest.py, shared with the executor tests)."""

from __future__ import annotations

import uuid

import pytest

from registry.testing import snapshot as _snapshot
from registry.testing import write_adapter


@pytest.fixture
def adapter_dir(tmp_path):
    """adapter_dir(seed) -> a fresh adapter folder with content determined by the seed."""
    return lambda seed=0, **kw: write_adapter(tmp_path / f"adapter-{seed}-{uuid.uuid4().hex[:6]}", seed, **kw)


@pytest.fixture
def snapshot():
    """snapshot(registry) -> everything a failed command must leave unchanged."""
    return _snapshot


@pytest.fixture
def reg(tmp_path):
    from registry import Registry

    registry = Registry.open(tmp_path / "registry")
    yield registry
    registry.close()
