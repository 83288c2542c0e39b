"""Benchmark cells on Ray (adapter_hub/bench/ray_executor.py): a local two-worker cluster runs a 2 strategies x 2
seeds sweep into a throwaway PostgreSQL registry and stores exactly the local executor's matrices; a
worker killed in the middle of a cell is replaced, the cell resumes from its registered steps, and
the sweep ends with the same results and a clean registry."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[dev]' or 'adapter-hub[ray]')")

from adapter_hub.bench.config import BenchConfig
from adapter_hub.bench.driver import run_bench  # noqa: E402
from registry import Registry  # noqa: E402

SWEEP = {
    "name": "sweep", "base_model": "tiny-llama", "tasks": ["builtin:topic", "builtin:sentiment"],
    "max_train": 64, "max_test": 16, "seeds": [0, 1],
    "lora": {"r": 4}, "train": {"steps": 8, "batch_size": 8, "max_length": 64}, "eval": {"batch_size": 16},
    "strategies": [{"name": "seq"}, {"name": "mtl"}],
}


@pytest.fixture(scope="module")
def cluster():
    """Two CPU worker slots: two cells at a time, each in its own worker process."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def config(**changes) -> BenchConfig:
    raw = {**SWEEP, **changes}
    return BenchConfig.from_dict(raw)


def cells_of(run) -> dict[str, dict]:
    return {key: {"matrix": cell["matrix"], "correct": cell["correct"], "tasks": cell["tasks"]}
            for entry in run.results["strategies"].values() for key, cell in entry["cells"].items()}


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    reg = Registry.open(tmp_path_factory.mktemp("local") / "registry")
    run = run_bench(config(), reg, echo=lambda m: None)
    yield cells_of(run)
    reg.close()


def test_a_ray_sweep_into_postgres_stores_the_local_executors_matrices(cluster, local_reference, postgres_url,
                                                                        tmp_path):
    reg = Registry.open(postgres_url, store=str(tmp_path / "store"))
    said = []
    run = run_bench(config(), reg, executor="ray", max_parallel=2, echo=said.append)
    assert run.status == "done"
    assert cells_of(run) == local_reference  # every cell: matrix and per-example correctness
    states = reg.cells.list("sweep")
    assert sorted(c.cell for c in states) == sorted(local_reference)
    assert all(c.state == "done" and c.attempts == 1 and c.node for c in states)
    pids = {line.split("worker pid ")[1].split(",")[0] for line in said if "worker pid" in line}
    assert 1 <= len(pids) <= 2  # two worker slots ...
    assert all("base model loaded 1x" in line for line in said if "worker pid" in line)  # ... each loads it once
    report = reg.fsck()
    assert report.ok and not report.orphans, report.to_dict()
    # a resumed (finished) run does nothing; a run of it again on the local executor sees it done
    assert run_bench(config(), reg, echo=lambda m: None).status == "done"
    reg.close()


def test_a_worker_killed_mid_cell_is_replaced_and_the_sweep_ends_the_same(cluster, local_reference, tmp_path):
    slow = config(train={"steps": 80, "batch_size": 8, "max_length": 64})
    reference_reg = Registry.open(tmp_path / "reference")
    reference = cells_of(run_bench(slow, reference_reg, echo=lambda m: None))
    reference_versions = {t["task"]: t["versions"] for t in reference_reg.tasks()}
    reg = Registry.open(tmp_path / "registry")  # SQLite: allowed on a single-node cluster
    killed: list[tuple[str, int]] = []
    seen: list[str] = []
    stop = threading.Event()

    def assassin() -> None:  # kill the first worker seen half-way through a cell: its first step registered
        watcher = Registry.open(tmp_path / "registry", create=False, check=False)
        while not stop.is_set() and not killed:
            try:
                states = watcher.cells.list("sweep")
                seen.append(str([(c.cell, c.state, c.attempts) for c in states]))
                for c in states:
                    if c.state == "running" and c.attempts == 1 and watcher.search(tag={"run": f"sweep/{c.cell}"}):
                        os.kill(int(c.holder.rsplit(":", 1)[1]), signal.SIGKILL)
                        killed.append((c.cell, int(c.holder.rsplit(":", 1)[1])))
                        break
            except Exception as exc:  # noqa: BLE001 - the run row may not exist yet
                seen.append(repr(exc))
            time.sleep(0.02)
        watcher.close()

    thread = threading.Thread(target=assassin, daemon=True)
    thread.start()
    try:
        run = run_bench(slow, reg, executor="ray", max_parallel=2, echo=lambda m: None)
    finally:
        stop.set()
        thread.join(10)
    assert killed, f"no worker was caught in the middle of a cell ({sorted(set(seen))[-8:]})"
    cell, _ = killed[0]
    assert run.status == "done"
    assert cells_of(run) == reference
    state = {c.cell: c for c in reg.cells.list("sweep")}[cell]
    assert state.state == "done" and state.attempts == 2 and state.epoch == 2
    # no duplicate versions (the retry resumed the registered step instead of training it again) ...
    assert {t["task"]: t["versions"] for t in reg.tasks()} == reference_versions
    # ... no duplicate evaluations, no orphan or damaged content
    for task in ("topic", "sentiment"):
        for v in reg.versions(task):
            rows = [(e["task"], e["metric"], e["dataset"], e["scorer"], e["context"]) for e in reg.evaluations(v.ref)]
            assert len(rows) == len(set(rows)), v.ref
    report = reg.fsck()
    assert report.ok and not report.orphans, report.to_dict()
    import sqlite3  # a second registry handle in the Ray driver's process once corrupted the file (registry/db.py)

    with sqlite3.connect(tmp_path / "registry" / "registry.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    reg.close()
    reference_reg.close()


def test_a_sqlite_registry_is_refused_on_a_cluster_of_several_nodes(monkeypatch, tmp_path):
    from adapter_hub.bench import ray_executor as executors

    reg = Registry.open(tmp_path / "registry")
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": True}])
    with pytest.raises(ValueError, match="SQLite registry .* only for the local executor or a single-node Ray"):
        executors._connect(ray, None, reg)
    reg.close()


def test_bad_executor_options_are_refused_before_anything_is_written(tmp_path):
    reg = Registry.open(tmp_path / "registry")
    with pytest.raises(ValueError, match="executor must be one of local, ray"):
        run_bench(config(), reg, executor="slurm")
    with pytest.raises(ValueError, match="--address and --max-parallel are for --executor ray"):
        run_bench(config(), reg, max_parallel=2)
    assert reg.runs.list() == []
    reg.close()


def test_a_worker_whose_lease_was_taken_over_stops_before_registering(tmp_path, monkeypatch):
    """No Ray needed: run_cell in this process; after its first step another holder takes the lease
    over (as after 120 s of silence). The worker stops before registering step 2 and stores nothing."""
    from adapter_hub.bench import ray_executor as executors
    from adapter_hub.continual import runner
    from registry.leases import LeaseLostError

    cfg = config(seeds=[0, 1], train={"steps": 4, "batch_size": 8, "max_length": 64})
    location = tmp_path / "registry"
    reg = Registry.open(location)
    reg.runs.create("sweep", cfg.to_dict())
    reg.runs.update("sweep", results={"tasks": ["topic", "sentiment"], "strategies": {
        "seq": {"strategy": "seq", "params": {}, "cells": {}}}, "eval_seconds": 0.0})
    reg.cells.plan("sweep", ["seq/s0"])
    real = runner.make_strategy

    def make(*args, **kwargs):
        strat = real(*args, **kwargs)
        learn = strat.learn

        def learn_then_lose(task, step, seen):  # step 1 registered; the lease goes while step 2 trains
            result = learn(task, step, seen)
            if step == 2:
                reg.cells.claim("sweep", "seq/s0", holder="other-host:1", lease_seconds=0.0)
            return result

        strat.learn = learn_then_lose
        return strat

    monkeypatch.setattr(runner, "make_strategy", make)
    with pytest.raises(LeaseLostError, match="taken over"):
        executors.run_cell(str(location), "sweep", cfg, executors.CellPlan("seq", "seq/s0", 0, 0), threads=None)
    assert [v.ref for v in reg.search(tag={"run": "sweep/seq/s0"})] == ["topic:1"]  # step 2 never registered
    assert reg.runs.get("sweep").results["strategies"]["seq"]["cells"] == {}
    state = reg.cells.list("sweep")[0]
    assert (state.state, state.epoch, state.holder) == ("running", 2, "other-host:1")
    reg.close()
