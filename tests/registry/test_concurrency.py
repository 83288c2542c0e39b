"""Concurrent writers in separate processes never share or skip a version number, on SQLite and PostgreSQL;
a writer SIGKILLed at any point leaves no row without its blobs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path


from registry import Registry
from registry.testing import write_adapter

WORKERS, PER_WORKER = 8, 25

WORKER = """
import json, sys, time
from pathlib import Path
from registry import Registry
from registry.testing import write_adapter
location, store, worker, count, scratch, go = sys.argv[1:7]
reg = Registry.open(location, store=store or None, create=False)
folders = [write_adapter(Path(scratch) / f"w{worker}-{i}", seed=int(worker) * 1000 + i) for i in range(int(count))]
while not Path(go).exists():  # start together: maximum contention
    time.sleep(0.005)
numbers = [reg.register(f, task="shared").number for f in folders]
print(json.dumps(numbers))
"""


def _run_writers(location: str, store: str, tmp_path: Path) -> list[int]:
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, location, store, str(w),
                               str(PER_WORKER), str(tmp_path / "scratch"), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(WORKERS)]
    time.sleep(1.0)
    go.touch()
    numbers = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "Error" not in err and "locked" not in err, err
        numbers += json.loads(out)
    return numbers


def _check_exactly_1_to_200(numbers: list[int], reg: Registry) -> None:
    total = WORKERS * PER_WORKER
    assert sorted(numbers) == list(range(1, total + 1))
    assert [v.number for v in reg.versions("shared")] == list(range(1, total + 1))
    assert len({v.digest for v in reg.versions("shared")}) == total
    assert reg.fsck().ok


def test_eight_writers_on_sqlite(tmp_path):
    reg = Registry.open(tmp_path / "registry")
    numbers = _run_writers(str(tmp_path / "registry"), "", tmp_path)
    _check_exactly_1_to_200(numbers, reg)


def test_eight_writers_on_postgres(postgres_url, tmp_path):
    reg = Registry.open(postgres_url, store=str(tmp_path / "blobs"))
    numbers = _run_writers(postgres_url, "", tmp_path)  # the store location is remembered by the database
    _check_exactly_1_to_200(numbers, reg)


CRASHER = """
import os, signal, sys
from pathlib import Path
import registry.registration, registry.store
from registry import Registry
from registry.testing import write_adapter
location, scratch, start, point, after = sys.argv[1:6]
reg = Registry.open(location, create=False)
done = 0

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def arm(module, name, when):
    # Wrap module.name so the process SIGKILLs itself there, once `after` registrations have completed.
    original = getattr(module, name)
    def wrapper(*args, **kwargs):
        if done >= int(after) and when == "before":
            die()
        result = original(*args, **kwargs)
        if done >= int(after) and when == "after":
            die()
        return result
    setattr(module, name, wrapper)

if point == "mid-copy":          # inside BlobStore.put_file: bytes written, not yet fsynced/renamed
    arm(registry.store.os, "fsync", "before")
elif point == "blobs-durable":   # every blob stored, the database transaction not yet begun
    arm(registry.registration, "session_scope", "before")
elif point == "in-transaction":  # rows inserted inside the open transaction, not committed
    arm(registry.registration.queries, "resolve", "before")
i = int(start)
while True:  # register until killed; big-ish tensors so a random kill often lands mid-copy
    folder = write_adapter(Path(scratch) / f"c{i}", seed=i, r=8, dim=4096)
    reg.register(folder, task="crashy")
    done += 1
    print(i, flush=True)
    i += 1
"""

# Random moments, plus each critical point hit deterministically (after a random number of clean registrations).
ROUNDS = ["random"] * 6 + ["mid-copy", "blobs-durable", "in-transaction"] * 2


def test_sigkill_at_random_points_leaves_a_consistent_registry(tmp_path):
    location = str(tmp_path / "registry")
    reg = Registry.open(location)
    rng = random.Random(1234)
    orphans_seen = temp_seen = 0
    for round_, point in enumerate(ROUNDS):
        after = rng.randint(1, 3)
        proc = subprocess.Popen([sys.executable, "-c", CRASHER, location, str(tmp_path / "s"),
                                 str(round_ * 1000), point, str(after if point != "random" else 10**9)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if point == "random":
            proc.stdout.readline()  # wait until it is registering, then kill it at a random moment
            time.sleep(rng.uniform(0.0, 0.4))
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
        report = reg.fsck()
        assert report.missing == [] and report.corrupt == [], f"round {round_} ({point}): {report}"
        orphans_seen += len(report.orphans)
        temp_seen += len(report.temp_files)
        reg.gc(grace=0)
        after_gc = reg.fsck()
        assert after_gc.ok and after_gc.orphans == [] and after_gc.temp_files == []
        numbers = [v.number for v in reg.versions("crashy")]
        assert numbers == list(range(1, len(numbers) + 1)), "numbers must be contiguous: no gap, no reuse"
        nxt = reg.register(write_adapter(tmp_path / f"after{round_}", seed=10**6 + round_), task="crashy")
        assert nxt.number == len(numbers) + 1
    assert orphans_seen > 0 and temp_seen > 0  # the dangerous windows really were hit
