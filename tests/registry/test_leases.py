"""Cell leases (registry/leases.py): one holder at a time, takeover of dead or silent holders, fencing
of stale epochs, and finishes of different cells that never lose each other's results."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from registry.leases import CellBusyError, LeaseLostError


@pytest.fixture
def run(reg):
    reg.runs.create("r", {"tasks": ["a"]})
    reg.runs.update("r", results={"tasks": ["a"], "strategies": {"seq": {"strategy": "seq", "cells": {}}}})
    reg.cells.plan("r", ["seq/s0", "seq/s1"])
    return reg


def dead_holder() -> str:
    import socket

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid}"


def test_one_live_holder_at_a_time_and_a_dead_ones_cell_is_taken_over(run):
    assert run.cells.claim("r", "seq/s0", holder="elsewhere:1") == 1
    with pytest.raises(CellBusyError, match="running on .*elsewhere:1"):
        run.cells.claim("r", "seq/s0", holder="elsewhere:2")
    gone = dead_holder()
    assert run.cells.claim("r", "seq/s1", holder=gone) == 1
    assert run.cells.claim("r", "seq/s1", holder="me:1") == 2  # its holder's process is gone: no waiting
    states = {c.cell: c for c in run.cells.list("r")}
    assert (states["seq/s1"].state, states["seq/s1"].epoch, states["seq/s1"].attempts, states["seq/s1"].holder) == \
        ("running", 2, 2, "me:1")


def test_a_silent_holder_loses_the_cell_and_its_late_writes_are_refused(run):
    assert run.cells.claim("r", "seq/s0", holder="slow:1") == 1
    assert run.cells.claim("r", "seq/s0", holder="fast:1", lease_seconds=0.0) == 2  # the lease lapsed
    assert run.cells.heartbeat("r", "seq/s0", 1) is False
    with pytest.raises(LeaseLostError, match="taken over"):
        run.cells.finish("r", "seq/s0", 1, strategy="seq", result={"matrix": [[0.0]]})
    run.cells.fail("r", "seq/s0", 1, "late")  # ignored: not its epoch any more
    assert run.runs.get("r").results["strategies"]["seq"]["cells"] == {}
    assert run.cells.heartbeat("r", "seq/s0", 2) is True
    run.cells.finish("r", "seq/s0", 2, strategy="seq", result={"matrix": [[1.0]], "eval_seconds": 2.0},
                    score_cache={"k": {"accuracy": 1.0}})
    results = run.runs.get("r").results
    assert results["strategies"]["seq"]["cells"]["seq/s0"]["matrix"] == [[1.0]]
    assert results["score_cache"] == {"k": {"accuracy": 1.0}} and results["eval_seconds"] == 2.0
    assert run.cells.claim("r", "seq/s0", holder="fast:2") is None  # done: nothing to claim
    state = {c.cell: c for c in run.cells.list("r")}["seq/s0"]
    assert (state.state, state.error) == ("done", None)


RACER = """
import datetime, json, sys, time
from pathlib import Path
import registry.leases as leases
from registry import Registry
location, store, op, cell, epoch, go, done = sys.argv[1:8]
reg = Registry.open(location, store=store or None, create=False)
real_now = leases.utcnow
def slow_now():  # widen every read-then-write window in the lease code: racers overlap for sure
    time.sleep(0.3)
    return real_now()
leases.utcnow = slow_now
Path(go + "." + cell.replace("/", "-") + "." + str(time.time_ns())).touch()  # ready
while not Path(go).exists():
    time.sleep(0.005)
try:
    if op == "claim":
        out = {"epoch": reg.cells.claim("r", cell)}
    else:
        reg.cells.finish("r", cell, int(epoch), strategy="seq", result={"matrix": [[0.5]], "eval_seconds": 1.0},
                         score_cache={cell: 1})
        out = {"finished": cell}
except Exception as exc:
    out = {"error": type(exc).__name__}
print(json.dumps(out), flush=True)
while not Path(done).exists():  # a claimant stays alive until every racer is through (a dead holder's cell is free)
    time.sleep(0.01)
"""


@pytest.fixture(params=["sqlite", "postgres"])
def racing_run(request, tmp_path):
    """A run with planned cells on each backend, opened from several processes at once."""
    from registry import Registry

    if request.param == "sqlite":
        location, store = str(tmp_path / "registry"), ""
    else:
        location, store = request.getfixturevalue("postgres_url"), str(tmp_path / "blobs")
    reg = Registry.open(location, store=store or None)
    reg.runs.create("r", {"tasks": ["a"]})
    reg.runs.update("r", results={"tasks": ["a"], "strategies": {"seq": {"strategy": "seq", "cells": {}}}})
    yield reg, location, store
    reg.close()


def _race(tmp_path, location: str, store: str, jobs: list[tuple[str, str, int]]) -> list[dict]:
    """Start one process per (op, cell, epoch), release them together, return what each printed."""
    go, done = str(tmp_path / "go"), str(tmp_path / "done")
    procs = [subprocess.Popen([sys.executable, "-c", RACER, location, store, op, cell, str(epoch), go, done],
                              stdout=subprocess.PIPE, text=True) for op, cell, epoch in jobs]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.*"))) < len(jobs):  # every racer connected and waiting
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a racer failed to start"
        time.sleep(0.02)
    Path(go).touch()
    lines = [json.loads(p.stdout.readline()) for p in procs]
    Path(done).touch()
    for p in procs:
        assert p.wait(60) == 0
    return lines


def test_concurrent_claims_of_one_cell_have_one_winner(racing_run, tmp_path):
    """Six processes claim the same pending cell at the same moment: exactly one holds it (epoch 1), the
    others are told it is busy. Without the row lock (SELECT ... FOR UPDATE on PostgreSQL) every one of
    them reads "pending" and believes it holds the cell."""
    reg, location, store = racing_run
    reg.cells.plan("r", ["seq/s0"])
    results = _race(tmp_path, location, store, [("claim", "seq/s0", 0)] * 6)
    assert sorted(r.get("epoch", 0) or 0 for r in results) == [0, 0, 0, 0, 0, 1], results
    assert sorted(r.get("error", "") for r in results) == ["", *["CellBusyError"] * 5], results
    assert [(c.state, c.epoch, c.attempts) for c in reg.cells.list("r")] == [("running", 1, 1)]


def test_concurrent_finishes_keep_every_cell(racing_run, tmp_path):
    """Eight processes finish eight different cells of one run at the same moment: every cell's result
    and score cache survive. Without the run row's lock the last writer's read-modify-write wins."""
    reg, location, store = racing_run
    cells = [f"seq/s{i}" for i in range(8)]
    reg.cells.plan("r", cells)
    epochs = {c: reg.cells.claim("r", c, holder=f"worker-host:{i}") for i, c in enumerate(cells)}
    results = _race(tmp_path, location, store, [("finish", c, epochs[c]) for c in cells])
    assert sorted(r.get("finished") for r in results) == sorted(cells), results
    stored = reg.runs.get("r").results
    assert sorted(stored["strategies"]["seq"]["cells"]) == sorted(cells)
    assert sorted(stored["score_cache"]) == sorted(cells) and stored["eval_seconds"] == 8.0
    assert all(c.state == "done" for c in reg.cells.list("r"))


def test_a_failure_is_recorded_with_its_error_and_the_cell_can_be_claimed_again(run):
    epoch = run.cells.claim("r", "seq/s0", holder="w:1")
    run.cells.fail("r", "seq/s0", epoch, "ValueError: bad data")
    state = {c.cell: c for c in run.cells.list("r")}["seq/s0"]
    assert (state.state, state.error) == ("failed", "ValueError: bad data")
    assert run.cells.claim("r", "seq/s0", holder="w:2") == epoch + 1


def test_unplanned_cells_and_unknown_runs_are_refused(run):
    from registry.errors import RefError, RegistryError

    with pytest.raises(RegistryError, match="not planned"):
        run.cells.claim("r", "nope/s0", holder="w:1")
    with pytest.raises(RefError, match="no benchmark run 'nope'"):
        run.cells.claim("nope", "seq/s0", holder="w:1")
