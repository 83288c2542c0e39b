"""A changed byte in a stored blob is caught on every read path, named, and reported by fsck."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from adapter_hub.cli import cli
from registry.errors import IntegrityError


def _flip_a_byte(reg, ref, path="adapter_model.safetensors"):
    blob = next(b for p, b, _ in reg.files(ref) if p == path)
    stored = reg.store.blob_path(blob)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    return blob


def test_flipped_byte_is_caught_everywhere(reg, adapter_dir, tmp_path):
    reg.register(adapter_dir(0), task="a")
    reg.register(adapter_dir(1), task="a")
    _flip_a_byte(reg, "a:1")
    for action in (lambda: reg.export("a:1", tmp_path / "out"), lambda: reg.path("a:1"), lambda: reg.load("a:1")):
        with pytest.raises(IntegrityError, match=r"a:1 file adapter_model.safetensors: .* is corrupt"):
            action()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    report = reg.fsck()
    assert report.corrupt == ["a:1 adapter_model.safetensors"] and not report.ok
    assert reg.path("a:2")  # the other version is fine

    result = CliRunner().invoke(cli, ["--registry", reg.location, "fsck"])
    assert result.exit_code == 1 and "corrupt: a:1 adapter_model.safetensors" in result.output
    result = CliRunner().invoke(cli, ["--registry", reg.location, "export", "a:1", str(tmp_path / "o2")])
    assert result.exit_code == 1 and "error: a:1 file adapter_model.safetensors" in result.output


def test_missing_blob_is_reported(reg, adapter_dir):
    reg.register(adapter_dir(0), task="a")
    blob = next(b for p, b, _ in reg.files("a:1") if p == "adapter_config.json")
    reg.store.blob_path(blob).unlink()
    assert reg.fsck().missing == ["a:1 adapter_config.json"]
    with pytest.raises(IntegrityError, match="missing"):
        reg.path("a:1")


def test_gc_frees_only_unreferenced_blobs(reg, adapter_dir):
    shared = adapter_dir(0)
    reg.register(shared, task="a")
    reg.register(shared, task="b")  # same blobs as a:1
    reg.register(adapter_dir(1), task="a")  # its config file is byte-identical too: only its weights are new
    keep = {b for _, b, _ in reg.files("b:1")}
    only_a2 = {b for _, b, _ in reg.files("a:2")} - keep
    assert len(only_a2) == 1
    reg.delete("a:1")
    assert reg.gc(grace=0).removed_blobs == 0  # b:1 still uses every a:1 blob
    reg.delete("a:2")
    report = reg.gc(grace=3600)
    assert report.removed_blobs == 0 and report.kept_recent == 1  # too young: could be a registration in flight
    report = reg.gc(grace=0)
    assert report.removed_blobs == 1 and report.freed_bytes > 1000  # the weights file
    assert {d for d, _ in reg.store.iter_blobs()} == keep
    assert reg.fsck().ok


def test_fsck_repair(reg, adapter_dir):
    reg.register(adapter_dir(0), task="a")
    reg.alias("a:1", "best")
    orphan_src = adapter_dir(5) / "adapter_config.json"
    orphan, _ = reg.store.put_file(orphan_src)
    from sqlalchemy import text

    with reg.engine.begin() as conn:  # simulate an alias left pointing at a deleted version
        conn.execute(text("UPDATE version SET deleted_at = created_at"))
    report = reg.fsck()
    assert report.orphans and report.dangling_aliases == ["a@best -> a:1 (deleted)"] and not report.ok
    repaired = reg.fsck(repair=True)
    assert any("removed alias a@best" in r for r in repaired.repaired) and repaired.ok
    assert reg.fsck().orphans == [] and not reg.store.exists(orphan)
