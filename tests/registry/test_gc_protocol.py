"""gc and fsck --repair never delete a blob that a committed or in-flight registration needs, on SQLite and
PostgreSQL: one deterministic interleaving per case (they failed before blob pins), then ≥ 30 s of gc and
repair loops beside several registering processes; concurrent gc's and concurrent checkouts."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

import registry.registration
from registry import Registry
from registry.store import sha256_file
from registry.testing import write_adapter

LOOP_SECONDS = 30.0
FILES = ("adapter_config.json", "adapter_model.safetensors")


@pytest.fixture(params=["sqlite", "postgres"])
def location(request, tmp_path):
    """(registry location, store) on each backend; the PostgreSQL one on the session's throwaway server."""
    if request.param == "sqlite":
        return str(tmp_path / "registry"), None
    return request.getfixturevalue("postgres_url"), str(tmp_path / "blobs")


def _open(location, store, **kw) -> Registry:
    return Registry.open(location, store=store, **kw)


def _paused_registration(reg: Registry, folder: Path, task: str, monkeypatch):
    """Start registering `folder` in a thread that stops just before its version transaction (after its
    blobs are in the store); returns (thread, ready event, go event, result dict)."""
    ready, go, result = threading.Event(), threading.Event(), {}
    original = registry.registration.session_scope

    def paused(engine, *, write=False):
        if write and threading.current_thread().name == "registrar":
            ready.set()
            assert go.wait(60)
        return original(engine, write=write)

    monkeypatch.setattr(registry.registration, "session_scope", paused)

    def body():
        try:
            result["version"] = reg.register(folder, task=task)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            result["error"] = exc

    thread = threading.Thread(target=body, name="registrar")
    thread.start()
    assert ready.wait(60), result
    return thread, go, result


def _orphaned_content(reg: Registry, tmp_path: Path) -> Path:
    """Content registered once, then deleted: its blobs are old orphans that gc would free."""
    folder = write_adapter(tmp_path / "content", seed=7)
    reg.register(folder, task="old")
    reg.delete("old:1")
    return folder


@pytest.mark.parametrize("sweeper", ["gc", "fsck --repair"])
def test_sweep_beside_a_registration_reusing_orphan_blobs(location, tmp_path, monkeypatch, sweeper):
    reg = _open(*location)
    folder = _orphaned_content(reg, tmp_path)
    thread, go, result = _paused_registration(reg, folder, "new", monkeypatch)
    other = _open(*location)  # the sweeper is another client of the same registry
    # what protects the paused registration is its pin rows, committed before its blobs reached the store:
    # both of the folder's blobs (orphans of old:1, which gc would otherwise free) are pinned right now
    with other.engine.connect() as conn:
        pinned = {row[0] for row in conn.execute(text("SELECT blob FROM blob_pin"))}
    assert pinned == {sha256_file(folder / name)[0] for name in ("adapter_config.json", "adapter_model.safetensors")}
    assert all(other.store.exists(b) for b in pinned)
    if sweeper == "gc":
        other.gc(grace=0)
    else:
        other.fsck(repair=True)
    go.set()
    thread.join(60)
    assert "error" not in result, result
    assert result["version"].ref == "new:1"
    report = other.fsck()
    assert report.missing == [] and report.corrupt == [], report
    assert sorted(p.name for p in other.path("new:1").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    # once the version is committed its blobs are referenced; with nothing in flight, the orphans of a
    # deleted version that nothing else uses do go
    lonely = reg.register(write_adapter(tmp_path / "lonely", seed=8), task="lonely")
    weights = next(b for p, b, _ in reg.files(lonely.ref) if p == "adapter_model.safetensors")
    reg.delete("lonely:1")  # its config file is byte-identical to new:1's, so only the weights are free
    assert other.gc(grace=0).removed_blobs == 1 and not other.store.exists(weights) and other.fsck().ok


def test_pins_of_a_killed_registration_are_dropped_and_its_blobs_freed(location, tmp_path):
    reg = _open(*location)
    folder = write_adapter(tmp_path / "a", seed=1)
    code = ("import os, signal, sys; import registry.registration as api; from registry import Registry\n"
            "reg = Registry.open(sys.argv[1], store=sys.argv[2] or None, create=False)\n"
            "scope = api.session_scope\n"  # dies with its blobs stored and pinned, before the version commits
            "api.session_scope = lambda e, write=False: os.kill(os.getpid(), 9) if write else scope(e)\n"
            "reg.register(sys.argv[3], task='t')\n")
    proc = subprocess.run([sys.executable, "-c", code, location[0], location[1] or "", str(folder)], timeout=60)
    assert proc.returncode < 0
    assert len(reg.fsck().orphans) == 2  # pinned by a dead process
    assert reg.gc(grace=0).removed_blobs == 2 and reg.fsck().orphans == []


LOOPER = """
import json, random, sys, time
from pathlib import Path
from registry import Registry
from registry.errors import RefError
from registry.testing import write_adapter
location, store, role, seconds, scratch, go = sys.argv[1:7]
reg = Registry.open(location, store=store or None, create=False)
while not Path(go).exists():
    time.sleep(0.01)
end = time.time() + float(seconds)
rng = random.Random(role)
pool = [write_adapter(Path(scratch) / f"{role}-{i}", seed=i) for i in range(6)] if role.startswith("w") else []
rounds = 0
while time.time() < end:
    rounds += 1
    if role == "gc":
        reg.gc(grace=0)
    elif role == "repair":
        reg.fsck(repair=True)
    else:  # a registrar: re-registers a small pool of content (so blobs of deleted versions come back)
        v = reg.register(rng.choice(pool), task=role, on_duplicate="new")
        print("C", v.ref, flush=True)
        if rng.random() < 0.6:
            live = [x.ref for x in reg.versions(role)]
            victim = rng.choice(live)
            reg.delete(victim)
            print("D", victim, flush=True)
print("rounds", rounds, flush=True)
"""


def test_gc_and_repair_loops_beside_registering_processes(location, tmp_path):
    reg = _open(*location)
    go = tmp_path / "go"
    roles = ["gc", "repair", "w1", "w2", "w3"]
    procs = {role: subprocess.Popen([sys.executable, "-c", LOOPER, location[0], location[1] or "", role,
                                     str(LOOP_SECONDS), str(tmp_path / "scratch"), str(go)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for role in roles}
    time.sleep(1.0)
    go.touch()
    committed, deleted, rounds = set(), set(), {}
    for role, proc in procs.items():
        out, err = proc.communicate(timeout=LOOP_SECONDS + 240)
        assert proc.returncode == 0, f"{role}: {err[-2000:]}"
        for line in out.splitlines():
            kind, value = line.split(" ", 1)
            if kind == "C":
                committed.add(value)
            elif kind == "D":
                deleted.add(value)
            else:
                rounds[role] = int(value)
    assert rounds["gc"] > 5 and rounds["repair"] > 5 and len(committed) > 30, (rounds, len(committed))
    report = reg.fsck()
    assert report.missing == [] and report.corrupt == [] and report.dangling_aliases == [], report
    live = committed - deleted
    assert {v.ref for role in roles[2:] for v in reg.versions(role)} == live
    originals = {}  # every pool folder a writer drew from, by the sha256 of its bytes
    for source in (tmp_path / "scratch").iterdir():
        originals[tuple(sha256_file(source / n)[0] for n in FILES)] = source
    for ref in sorted(live):  # every committed live version loads, its bytes those of a folder written
        folder = reg.path(ref)
        assert tuple(sha256_file(folder / n)[0] for n in FILES) in originals, ref


GC_WORKER = """
import json, sys, time
from pathlib import Path
from registry import Registry
location, store, go = sys.argv[1:4]
reg = Registry.open(location, store=store or None, create=False)
while not Path(go).exists():
    time.sleep(0.005)
print(json.dumps(reg.gc(grace=0).to_dict()))
"""


def test_two_gcs_at_once_free_each_orphan_exactly_once(location, tmp_path):
    reg = _open(*location)
    for i in range(40):
        reg.register(write_adapter(tmp_path / f"a{i}", seed=i), task="t")
    for i in range(1, 41):
        reg.delete(f"t:{i}")
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", GC_WORKER, location[0], location[1] or "", str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(1.0)
    go.touch()
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        reports.append(json.loads(out))
    assert sum(r["removed_blobs"] for r in reports) == 41  # 40 weights + the one config they share, each freed once
    assert reg.fsck().ok and reg.fsck().orphans == []


MATERIALISER = """
import sys, time
from pathlib import Path
from registry import Registry
location, go, refs = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
reg = Registry.open(location, create=False)
while not Path(go).exists():
    time.sleep(0.002)
for _ in range(4):
    for ref in refs:
        folder = reg.path(ref)
        assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
        task, n = ref.split(":")
        source = Path(sys.argv[4]) / f"a{int(n) - 1}"
        for name in ("adapter_config.json", "adapter_model.safetensors"):  # the bytes that were registered
            assert (folder / name).read_bytes() == (source / name).read_bytes(), (ref, name)
print("ok")
"""


def test_six_processes_materialise_the_same_versions(tmp_path):
    reg = Registry.open(tmp_path / "registry")
    refs = [reg.register(write_adapter(tmp_path / f"a{i}", seed=i, r=8, dim=512), task="t").ref for i in range(10)]
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", MATERIALISER, reg.location, str(go), ",".join(refs), str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    time.sleep(1.0)
    go.touch()
    for p in procs:  # 6 × 40 calls, all racing for the same 10 checkouts
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", err[-2000:]
    assert sorted(e.name for e in reg.checkouts.iterdir()) == sorted(v.digest[7:] for v in reg.versions("t"))
