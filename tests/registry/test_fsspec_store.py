"""The blob store on an fsspec filesystem (memory:// here; s3:// and gs:// use the same code path)."""

from __future__ import annotations

import pytest

from registry import Registry
from registry.errors import IntegrityError

fsspec = pytest.importorskip("fsspec")


@pytest.fixture
def url_registry(tmp_path):
    store = f"memory://adapter-hub-test-{tmp_path.name}"
    reg = Registry.open(f"sqlite:///{tmp_path}/r.db", store=store)
    yield reg
    memory = fsspec.filesystem("memory")
    if memory.exists(store.removeprefix("memory://")):
        memory.rm(store.removeprefix("memory://"), recursive=True)


def test_register_export_fsck_gc_on_fsspec(url_registry, adapter_dir, tmp_path):
    reg = url_registry
    src = adapter_dir(0)
    v = reg.register(src, task="a")
    reg.register(adapter_dir(1), task="a")
    assert reg.store.url.startswith("memory://")
    out = reg.export(v.ref, tmp_path / "out")
    assert (out / "adapter_model.safetensors").read_bytes() == (src / "adapter_model.safetensors").read_bytes()
    assert reg.fsck().ok
    reg.delete("a:2")
    assert reg.gc(grace=0).removed_blobs == 1
    # the store location is remembered by the database
    again = Registry.open(f"sqlite:///{tmp_path}/r.db")
    assert again.store.url == reg.store.url and again.path("a:1").is_dir()


def test_corruption_detected_on_fsspec(url_registry, adapter_dir, tmp_path):
    reg = url_registry
    reg.register(adapter_dir(0), task="a")
    blob = next(b for p, b, _ in reg.files("a:1") if p == "adapter_model.safetensors")
    key = reg.store._key(blob)
    data = bytearray(reg.store.fs.cat_file(key))
    data[100] ^= 0xFF
    reg.store.fs.pipe_file(key, bytes(data))
    with pytest.raises(IntegrityError, match="a:1 file adapter_model.safetensors"):
        reg.export("a:1", tmp_path / "out")
    assert reg.fsck().corrupt == ["a:1 adapter_model.safetensors"]


def test_gc_removes_stale_remote_temp_files_only_after_grace(url_registry, monkeypatch):
    import registry.store

    reg = url_registry
    key = f"{reg.store.base}/tmp/put-leftover"  # no writer named: it may be another host's upload in progress
    reg.store.fs.pipe_file(key, b"half a blob")
    assert [n for n, _ in reg.store.iter_temp()] == [key]
    assert reg.gc(grace=3600).removed_temp == 0 and reg.store.fs.exists(key)
    assert reg.gc(grace=0).removed_temp == 0 and reg.store.fs.exists(key)  # younger than FOREIGN_TEMP_MIN_AGE
    monkeypatch.setattr(registry.store, "FOREIGN_TEMP_MIN_AGE", 0.0)
    assert reg.gc(grace=0).removed_temp == 1 and not reg.store.fs.exists(key)


def test_gc_removes_a_dead_local_writers_temp_file_at_once(url_registry):
    import subprocess
    import sys

    from registry.store import writer_prefix

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    name = writer_prefix("put").replace(f"-{__import__('os').getpid()}-", f"-{int(dead.stdout)}-") + "x"
    reg = url_registry
    mine, theirs = f"{reg.store.base}/tmp/{writer_prefix('put')}x", f"{reg.store.base}/tmp/{name}"
    reg.store.fs.pipe_file(mine, b"being written by this process")
    reg.store.fs.pipe_file(theirs, b"left by a killed writer")
    assert reg.gc(grace=0).removed_temp == 1
    assert reg.store.fs.exists(mine) and not reg.store.fs.exists(theirs)
