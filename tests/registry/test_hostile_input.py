"""Rows are input, not trusted code; files and folders can be damaged or hostile. Each case gets a clear
one-line error, a non-zero exit on the CLI, nothing written outside the registry or the output folder,
and a registry left byte-for-byte as it was (snapshot compared)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from adapter_hub.cli import cli
from registry import Registry
from registry.errors import AdapterFormatError, IntegrityError, RefError, RegistryError
from registry.testing import write_adapter


def run(reg_location, *args):
    result = CliRunner().invoke(cli, ["--registry", str(reg_location), *args])
    return result


def one_line_error(result, *needles):
    """A failed command: non-zero exit, no traceback anywhere, and stderr exactly one line, `error: ...`,
    holding every needle."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _sql(reg, statement, **params):
    with reg.engine.begin() as conn:
        conn.execute(text(statement), params)


# ---- crafted rows ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_path", ["../../x", "{tmp}/escape-abs", "sub/../../y", ".hidden", ""])
def test_export_refuses_a_crafted_file_path(reg, adapter_dir, tmp_path, snapshot, bad_path):
    bad_path = bad_path.replace("{tmp}", str(tmp_path))  # an absolute path, inside this test's folder
    reg.register(adapter_dir(0), task="a")
    _sql(reg, "UPDATE version_file SET path = :p WHERE path = 'adapter_config.json'", p=bad_path)
    before = snapshot(reg)
    dest = tmp_path / "out" / "deep" / "dest"
    with pytest.raises(IntegrityError, match=r"a:1.*unsafe file path"):
        reg.export("a:1", dest)
    line = one_line_error(run(reg.location, "export", "a:1", str(tmp_path / "out2")), "a:1", "unsafe file path")
    assert "refusing" in line
    assert not (tmp_path / "x").exists() and not (tmp_path / "escape-abs").exists()
    assert not dest.exists() and not (tmp_path / "out2").exists()
    with pytest.raises(IntegrityError):
        reg.path("a:1")
    assert snapshot(reg) == before


def test_a_crafted_version_digest_never_touches_a_folder_outside(reg, adapter_dir, tmp_path, snapshot):
    reg.register(adapter_dir(0), task="a")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("mine")
    rel = os.path.relpath(victim, reg.checkouts)
    _sql(reg, "UPDATE version SET digest = :d", d=f"sha256:{rel}")
    before = snapshot(reg)
    with pytest.raises(IntegrityError, match="invalid blob digest"):
        reg.path("a:1")
    assert (victim / "precious.txt").read_text() == "mine" and sorted(p.name for p in victim.iterdir()) == ["precious.txt"]
    assert snapshot(reg) == before


def test_a_crafted_blob_digest_is_refused_before_any_path_is_built(reg, adapter_dir, tmp_path):
    reg.register(adapter_dir(0), task="a")
    _sql(reg, "UPDATE version_file SET blob = '../../../../etc/passwd'")
    with pytest.raises(IntegrityError, match="invalid blob digest"):
        reg.export("a:1", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_adapter_folder_with_a_symlink_is_refused(reg, adapter_dir, snapshot):
    folder = adapter_dir(0)
    (folder / "README.md").symlink_to("/etc/passwd")
    before = snapshot(reg)
    with pytest.raises(AdapterFormatError, match="README.md is a symbolic link"):
        reg.register(folder, task="a")
    one_line_error(run(reg.location, "register", str(folder), "--task", "a"), "symbolic link")
    assert snapshot(reg) == before


def test_integer_lora_tensors_are_refused(reg, tmp_path, snapshot):
    import numpy as np
    from safetensors.numpy import save_file

    folder = write_adapter(tmp_path / "ints")
    tensors = {f"base_model.model.m.lora_{w}.weight": np.ones(shape, dtype=np.int32)
               for w, shape in (("A", (2, 16)), ("B", (16, 2)))}
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                                            "target_modules": ["m"]}))
    before = snapshot(reg)
    with pytest.raises(AdapterFormatError, match="dtype I32; LoRA factors must be floating point"):
        reg.register(folder, task="a")
    assert snapshot(reg) == before


# ---- output folders -------------------------------------------------------------------------------


def test_export_refuses_a_non_empty_destination_unless_forced(reg, adapter_dir, tmp_path):
    reg.register(adapter_dir(0), task="a")
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "report.md").write_text("my own notes")
    one_line_error(run(reg.location, "export", "a:1", str(dest)), "not empty", "--force")
    assert (dest / "report.md").read_text() == "my own notes"
    result = run(reg.location, "export", "a:1", str(dest), "--force")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in dest.iterdir()) == ["adapter_config.json", "adapter_hub_export.json",
                                                      "adapter_model.safetensors"]


def test_a_killed_export_leaves_no_debris_after_the_next_one(reg, adapter_dir, tmp_path):
    reg.register(adapter_dir(0, r=8, dim=2048), task="a")
    dest = tmp_path / "exported"
    code = ("import os, sys, registry.store as st; from registry import Registry\n"
            "reg = Registry.open(sys.argv[1], create=False)\n"
            "copy = st.BlobStore.copy_out\n"
            "def dying(self, *a, **k):\n    copy(self, *a, **k); os.kill(os.getpid(), 9)\n"
            "st.BlobStore.copy_out = dying\n"
            "reg.export('a:1', sys.argv[2])\n")
    proc = subprocess.run([sys.executable, "-c", code, reg.location, str(dest)], timeout=60)
    assert proc.returncode < 0
    debris = [p.name for p in tmp_path.iterdir() if p.name.startswith(".exported.")]
    assert debris and not dest.exists()  # the kill hit mid-export: DEST never appeared half-written
    reg.export("a:1", dest)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".exported.")] == []
    assert (dest / "adapter_model.safetensors").is_file()


def test_bench_report_refuses_a_folder_with_the_users_files(reg, tmp_path, snapshot):
    run_info = reg.runs.create("r1", {"tasks": ["a"]})
    reg.runs.update("r1", status="done", results={"tasks": ["a"], "strategies": {
        "seq": {"strategy": "seq", "params": {}, "matrix": [[0.5]], "metrics": {"acc": 0.5}}}})
    out = tmp_path / "reports"
    out.mkdir()
    (out / "report.md").write_text("the user's report")
    (out / "results.json").write_text("{}")
    one_line_error(run(reg.location, "bench", "report", run_info.name, "--out", str(out)), "not empty", "--force")
    assert (out / "report.md").read_text() == "the user's report" and (out / "results.json").read_text() == "{}"
    result = run(reg.location, "bench", "report", "r1", "--out", str(out), "--force")
    assert result.exit_code == 0, result.output
    assert "the user's report" not in (out / "report.md").read_text()
    # bench run --report into a non-empty folder is refused before any training (and any run row)
    config = tmp_path / "c.toml"
    config.write_text('tasks = ["builtin:topic"]\nbase_model = "tiny-llama"\n[[strategies]]\nname = "seq"\n')
    before = snapshot(reg)
    result = run(reg.location, "bench", "run", str(config), "--report", str(out))
    assert result.exit_code != 0 and "not empty" in result.output and snapshot(reg) == before
    # so is --export into a folder that does not exist (the export would fail only after the first cell)
    result = run(reg.location, "bench", "run", str(config), "--export", str(tmp_path / "nowhere" / "run.json"))
    assert result.exit_code != 0 and "--export" in result.output and "no folder" in result.output
    assert snapshot(reg) == before and not (tmp_path / "nowhere").exists()


# ---- damaged database files -----------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated"])
def test_a_damaged_database_file_is_refused_never_recreated(reg, adapter_dir, damage):
    reg.register(adapter_dir(0), task="a")
    location = reg.location
    reg.close()
    db = Path(location) / "registry.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    data = db.read_bytes()
    damaged = {"empty": b"", "garbage": b"this is not a database at all" * 100, "truncated": data[:len(data) // 3]}[damage]
    db.write_bytes(damaged)
    expected = {"empty": "is empty (0 bytes)", "garbage": "not a SQLite database", "truncated": "damaged"}[damage]
    with pytest.raises(RegistryError, match=re.escape(expected)):
        Registry.open(location).tasks()
    for command in (["list"], ["init"], ["register", str(adapter_dir(1)), "--task", "b"], ["gc"], ["fsck"]):
        one_line_error(run(location, *command), expected)
    assert db.read_bytes() == damaged  # never re-created over, never "repaired" into an empty registry


def test_init_refuses_a_folder_of_unknown_content(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8")
    one_line_error(run(folder, "init"), "is not an adapter-hub registry")
    assert sorted(p.name for p in folder.iterdir()) == ["cat.jpg"]


# ---- repairing by re-registering, verified checkouts ----------------------------------------------


def test_re_registering_the_original_bytes_repairs_a_corrupt_blob(reg, adapter_dir):
    folder = adapter_dir(0)
    reg.register(folder, task="a")
    blob = next(b for p, b, _ in reg.files("a:1") if p == "adapter_model.safetensors")
    path = reg.store.blob_path(blob)
    data = bytearray(path.read_bytes())
    data[200] ^= 0x01  # same size, different bytes
    path.write_bytes(bytes(data))
    assert reg.fsck().corrupt == ["a:1 adapter_model.safetensors"]
    reg.register(folder, task="b")  # as fsck's message advises
    assert reg.fsck().ok and reg.fsck().corrupt == []
    assert (reg.path("a:1") / "adapter_model.safetensors").read_bytes() == (folder / "adapter_model.safetensors").read_bytes()


@pytest.mark.parametrize("damage", ["flip", "extra", "missing", "symlink"])
def test_a_damaged_checkout_is_rebuilt_when_served(reg, adapter_dir, tmp_path, damage):
    folder = adapter_dir(0)
    reg.register(folder, task="a")
    checkout = reg.path("a:1")
    weights = checkout / "adapter_model.safetensors"
    if damage == "flip":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "extra":
        (checkout / "adapter_model.bin").write_bytes(b"pickle that would run code")
    elif damage == "missing":
        weights.unlink()
    else:
        other = write_adapter(tmp_path / "other", seed=99) / "adapter_model.safetensors"
        weights.unlink()
        weights.symlink_to(other)
    served = reg.path("a:1")
    assert sorted(p.name for p in served.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert not (served / "adapter_model.safetensors").is_symlink()
    assert (served / "adapter_model.safetensors").read_bytes() == (folder / "adapter_model.safetensors").read_bytes()


# ---- bad input: one line, non-zero exit, nothing changed -------------------------------------------


def test_bad_cli_input_gets_one_line_and_changes_nothing(reg, adapter_dir, snapshot):
    reg.register(adapter_dir(0), task="t")
    before = snapshot(reg)
    folder = str(adapter_dir(1))
    one_line_error(run(reg.location, "show", "t:99999999999999999999999"), "version number is larger")
    one_line_error(run(reg.location, "show", "t:" + "9" * 5000), "version number is larger")
    for bad in ("[1, 2]", "NaN", '{"x": NaN}', "3"):
        result = run(reg.location, "register", folder, "--task", "t", "--metadata", bad)
        assert result.exit_code != 0 and "--metadata" in result.output and "Traceback" not in result.output
    for grace in ("nan", "-1", "inf"):
        result = run(reg.location, "gc", "--grace", grace)
        assert result.exit_code != 0 and "--grace" in result.output
    assert snapshot(reg) == before


def test_json_errors_are_json_objects(reg):
    result = run(reg.location, "show", "nope:1", "--json")
    assert result.exit_code == 1
    payload = json.loads(result.stdout.strip().splitlines()[0])
    assert payload["type"] == "RefError" and "no task named 'nope'" in payload["error"]


def test_unknown_url_scheme_and_unreachable_server(tmp_path):
    one_line_error(run("foo://somewhere/db", "list"), "unknown or unusable database URL scheme 'foo'")
    start = time.monotonic()
    line = one_line_error(run("postgresql+psycopg://nobody:secret@127.0.0.1:1/none", "list"),
                          "cannot connect to the registry database")
    assert "secret" not in line and time.monotonic() - start < 30


def test_read_commands_never_create_a_registry(tmp_path):
    missing = tmp_path / "typo"
    for command in (["list"], ["show", "a:1"], ["versions", "a"], ["gc"], ["fsck"], ["bench", "list"]):
        one_line_error(run(missing, *command), "no registry at", str(missing))
    assert not missing.exists()


def test_a_newer_schema_is_one_line_on_every_command(reg, adapter_dir):
    reg.register(adapter_dir(0), task="a")
    _sql(reg, "UPDATE alembic_version SET version_num = '9999'")
    for command in (["list"], ["show", "a:1"], ["gc"], ["fsck"], ["register", str(adapter_dir(1)), "--task", "a"],
                    ["export", "a:1", str(adapter_dir(1).parent / "x")], ["bench", "list"], ["db", "upgrade"]):
        one_line_error(run(reg.location, *command), "9999")


def test_a_missing_table_is_named(reg, adapter_dir):
    reg.register(adapter_dir(0), task="a")
    _sql(reg, "DROP TABLE alias")
    one_line_error(run(reg.location, "show", "a:1"), "damaged or incomplete", "alias")


def test_disk_full_during_register_leaves_the_registry_unchanged(reg, adapter_dir, snapshot, monkeypatch):
    import errno

    from registry.store import BlobStore

    reg.register(adapter_dir(0), task="a")
    before = snapshot(reg)
    calls = {"n": 0}
    commit = BlobStore.commit

    def filling(self, staged):  # the first blob lands, then the disk is full
        calls["n"] += 1
        if calls["n"] == 2:
            self.discard(staged)
            raise OSError(errno.ENOSPC, "No space left on device")
        return commit(self, staged)

    monkeypatch.setattr(BlobStore, "commit", filling)
    with pytest.raises(OSError, match="No space left"):
        reg.register(adapter_dir(5), task="a")
    assert snapshot(reg) == before  # no row, no pin, and the blob it did store is gone again
    assert list(reg.store.iter_temp()) == []


def test_a_read_only_registry_fails_writes_with_one_line(reg, adapter_dir, snapshot):
    """Read-only as a full disk's remount or a snapshot mount would make it (immutable files: even
    root cannot write them, which is what the tests run as)."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed: cannot make files immutable here")
    reg.register(adapter_dir(0), task="a")
    reg.close()
    root = Path(reg.location)
    frozen = [root, root / "registry.db", *(p for p in root.glob("registry.db-*"))]
    if subprocess.run(["chattr", "+i", *map(str, frozen)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem does not support immutable files")
    try:
        result = run(reg.location, "register", str(adapter_dir(1)), "--task", "b")
        line = one_line_error(result)
        assert "read-only" in line or "Permission denied" in line or "not permitted" in line, line
    finally:
        subprocess.run(["chattr", "-i", *map(str, frozen)], check=True)
    assert [v.ref for v in Registry.open(reg.location).versions("a")] == ["a:1"]
    with pytest.raises(RefError, match="no task named 'b'"):  # the refused register left no task behind
        Registry.open(reg.location).get("b:1")


# ---- the last four inputs an outside check found handled wrongly -----------------------------------


def test_an_unknown_base_model_is_refused_before_the_run_row(reg, tmp_path, snapshot, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network here: the name is neither built in, local nor cached
    config = tmp_path / "c.toml"
    config.write_text('tasks = ["builtin:topic"]\nbase_model = "no-such-model-xyz"\n[[strategies]]\nname = "seq"\n')
    before = snapshot(reg)
    one_line_error(run(reg.location, "bench", "run", str(config)), "base model 'no-such-model-xyz'")
    assert snapshot(reg) == before and reg.runs.list() == []


def test_an_unwritable_out_is_refused_before_anything_is_registered(reg, adapter_dir, tmp_path, snapshot):
    reg.register(adapter_dir(0), task="t")
    before = snapshot(reg)
    for args in (["scale", "t:1", "2", "--task", "s"], ["merge", "t:1", "t:1", "--task", "s"],
                 ["reduce-rank", "t:1", "--rank", "1", "--task", "s"], ["compose", "2*t:1", "--task", "s"]):
        one_line_error(run(reg.location, *args, "--out", "/proc/no-such"), "--out /proc/no-such", "cannot write")
        assert snapshot(reg) == before, args
    assert [v.task for v in reg.search()] == ["t"]


@pytest.mark.parametrize("manifest, named", [("[1, 2]", "a JSON list, expected an object"),
                                              ('{"metadata": [1]}', "metadata must be a JSON object"),
                                              ('{"ref": 3}', "ref must be a string"),
                                              ("{oops", "not JSON")])
def test_import_of_a_malformed_manifest_names_the_manifest(reg, adapter_dir, snapshot, manifest, named):
    folder = adapter_dir(0)
    (folder / "adapter_hub_export.json").write_text(manifest)
    before = snapshot(reg)
    with pytest.raises(AdapterFormatError, match=re.escape(named)):
        reg.import_folder(folder, task="t")
    one_line_error(run(reg.location, "import", str(folder), "--task", "t"), "adapter_hub_export.json", named)
    assert snapshot(reg) == before


@pytest.mark.parametrize("name, named", [(b"notes-\xff.txt", "is not valid UTF-8"),
                                          (b"my notes.txt", "cannot be stored")])
def test_a_file_name_that_cannot_be_stored_is_refused_before_any_blob(reg, adapter_dir, snapshot, name, named):
    folder = adapter_dir(0)
    with open(os.path.join(os.fsencode(folder), name), "wb") as fh:
        fh.write(b"hello")
    before = snapshot(reg)
    with pytest.raises(AdapterFormatError, match=named):
        reg.register(folder, task="t")
    line = one_line_error(run(reg.location, "register", str(folder), "--task", "t"), named)
    assert repr(name)[2:-1].split(" ")[0] in line  # the file is named (its bytes where they are not UTF-8)
    assert snapshot(reg) == before  # no version, and no blob stored on the way (nothing for gc to find)
