"""Cell leases (registry/leases.py): one holder at a time, takeover of dead or silent holders, fencing
of stale epochs, and finishes of different cells that never lose each other's results."""

from __future__ import annotations

import subprocess
import sys
import threading

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


def test_concurrent_finishes_keep_every_cell(run):
    cells = [f"seq/s{i}" for i in range(12)]
    run.cells.plan("r", cells)
    epochs = {c: run.cells.claim("r", c, holder=f"w:{i}") for i, c in enumerate(cells)}

    def finish(cell):
        run.cells.finish("r", cell, epochs[cell], strategy="seq", result={"matrix": [[0.5]], "eval_seconds": 1.0},
                        score_cache={cell: 1})

    threads = [threading.Thread(target=finish, args=(c,)) for c in cells]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = run.runs.get("r").results
    assert sorted(results["strategies"]["seq"]["cells"]) == sorted(cells)
    assert sorted(results["score_cache"]) == sorted(cells) and results["eval_seconds"] == 12.0
    assert all(c.state == "done" for c in run.cells.list("r") if c.cell in cells)


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
