"""Benchmark cells as Ray tasks on a cluster, with the registry as the one shared truth (the local
executor is bench.driver.run_bench's own loop).

With Ray, every (strategy, seed, order) cell is one task. A task opens the registry by its location
(a PostgreSQL URL for several hosts; a SQLite folder only on a single node), claims the cell's lease
(registry/leases.py), loads the base model once per worker process (kept for the next cell that
process runs), trains the cell's sequence — resuming the steps already registered, so a retried cell
does not retrain them — scores it, and stores its results with `finish_cell`, which only the current
lease holder may do; before registering each step it checks that it still holds the lease, so a worker
whose cell was taken over stops before writing a version (the window left is that one check-then-
register, against a lease that lapses only after 120 s of silence). A worker that dies is replaced
and the task retried by Ray (`max_retries`); a cell that raises is marked failed with its error and
the run ends failed, naming it.

The base model's scores are one task of their own, run before the cells. The driver only plans,
submits, waits, and summarises what the cells stored; it loads no model.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from typing import Any, Callable

import torch

from adapter_hub.bench.cell import CellRunner
from adapter_hub.bench.cells import CellPlan, plan
from adapter_hub.bench.summary import summarise
from adapter_hub.models.devices import dtype_name, resolve_device, resolve_dtype
from adapter_hub.models.loading import load_base_model, load_tokenizer
from registry.api import Registry
from registry.leases import DEFAULT_LEASE_SECONDS, LeaseLostError

RAY_EXTRA = "pip install 'adapter-hub[ray]'"
CELL_RETRIES = 3  # Ray retries a task whose worker process died this many times


def require_ray():
    try:
        import ray
    except ImportError:
        raise ValueError(f"--executor ray needs Ray: {RAY_EXTRA}") from None
    return ray


# ---- the worker side -------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}  # per worker process: the base model and tokenizer of the last config seen


def _model_for(config) -> dict[str, Any]:
    """The base model, loaded once per process and reused by every cell the process runs."""
    key = (config.base_model, config.device, config.dtype)
    if _WORKER.get("key") != key:
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        loads = _WORKER.get("loads", 0) + 1
        _WORKER.clear()
        _WORKER.update(key=key, device=device, dtype=dtype, tokenizer=load_tokenizer(config.base_model),
                       model=load_base_model(config.base_model, device=device, dtype=dtype), loads=loads)
    return _WORKER


def _node() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()[:12]
    except Exception:  # noqa: BLE001 - outside Ray: the host is the node
        return socket.gethostname()


def score_base(location: str, name: str, config, threads: int | None) -> float:
    """Score the bare base model on every task and store it with the run (its own task, run first)."""
    if threads:
        torch.set_num_threads(threads)
    registry = Registry.open(location, create=False)
    try:
        results = registry.runs.get(name).results
        if "base_by_task" in results:
            return results["base_seconds"]
        worker = _model_for(config)
        run = CellRunner(registry, name, config, worker["model"], worker["tokenizer"], config.load_tasks(), results,
                         print)
        run.score_base()
        registry.runs.merge_results(name, {k: results[k] for k in ("base", "base_by_task", "base_seconds",
                                                                  "eval_seconds")} |
                                   {"device": str(worker["device"]), "dtype": dtype_name(worker["dtype"]),
                                    "score_cache": results.get("score_cache", {})})
        return results["base_seconds"]
    finally:
        registry.close()


def run_cell(location: str, name: str, config, cell: CellPlan, threads: int | None,
             lease_seconds: float = DEFAULT_LEASE_SECONDS) -> dict[str, Any]:
    """Claim, run and store one cell; returns {"cell", "state", "node", "pid", "model_loads", "seconds"}
    (model_loads: how many times this worker process has loaded a base model so far)."""
    if threads:
        torch.set_num_threads(threads)
    registry = Registry.open(location, create=False)
    start = time.perf_counter()
    node = _node()
    try:
        epoch = registry.cells.claim(name, cell.key, node=node, lease_seconds=lease_seconds)
        if epoch is None:
            return {"cell": cell.key, "state": "done", "node": node, "pid": os.getpid(),
                    "model_loads": _WORKER.get("loads", 0), "seconds": 0.0}
        lost = threading.Event()
        stop = _keep_alive(registry, name, cell.key, epoch, lease_seconds, lost)
        try:
            results = registry.runs.get(name).results
            known_cache = set(results.get("score_cache") or {})
            worker = _model_for(config)
            tasks = config.load_tasks()
            task_of = dict(zip(config.tasks, tasks))
            entry = next(s for s in config.strategies if s.label == cell.label)
            order = [task_of[s] for s in config.cell_orders()[cell.order]]
            run = CellRunner(registry, name, config, worker["model"], worker["tokenizer"], tasks, results, print)

            def guard(*_args) -> None:  # after every step: stop as soon as the heartbeat saw the lease go
                if lost.is_set():
                    raise LeaseLostError(f"cell {cell.key!r}: lease lost while running; stopping")

            def still_mine(step: int) -> None:  # just before a step is registered: ask the registry itself
                guard()
                registry.cells.check(name, cell.key, epoch)

            result = run.cell(entry, cell.key, cell.seed, cell.order, order, guard, before_register=still_mine)
            cache = results.get("score_cache") or {}
            registry.cells.finish(name, cell.key, epoch, strategy=cell.label, result=result,
                                 score_cache={k: v for k, v in cache.items() if k not in known_cache})
        except LeaseLostError:
            raise
        except BaseException as exc:
            registry.cells.fail(name, cell.key, epoch, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            stop()
        return {"cell": cell.key, "state": "done", "node": node, "pid": os.getpid(), "model_loads": _WORKER["loads"],
                "seconds": round(time.perf_counter() - start, 2)}
    finally:
        registry.close()


def _keep_alive(registry, name: str, cell: str, epoch: int, lease_seconds: float,
                lost: threading.Event) -> Callable[[], None]:
    """A daemon thread renewing the lease every lease/6 s; sets `lost` when it was taken over."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(lease_seconds / 6):
            try:
                if not registry.cells.heartbeat(name, cell, epoch):
                    lost.set()
                    return
            except Exception:  # noqa: BLE001 - a missed beat is retried; the lease tolerates several
                continue

    thread = threading.Thread(target=beat, name=f"lease:{cell}", daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        thread.join(5)

    return stop


# ---- the driver side -------------------------------------------------------------------------------


def _connect(ray, address: str | None, registry) -> None:
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(include_dashboard=False, log_to_driver=True)
    alive = [n for n in ray.nodes() if n.get("Alive")]
    if len(alive) > 1 and registry.engine.dialect.name == "sqlite":
        raise ValueError(f"a SQLite registry ({registry.location}) is only for the local executor or a single-node "
                         f"Ray cluster; this cluster has {len(alive)} nodes: use a PostgreSQL registry "
                         f"(--registry postgresql+psycopg://...) with a store every node can reach (--store)")


def _resources(ray) -> dict[str, Any]:
    """One GPU per cell where the cluster has GPUs; else one CPU (torch threads follow)."""
    if ray.cluster_resources().get("GPU", 0) >= 1:
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_cpus": 1}


def run_on_ray(config, registry, name: str, results: dict[str, Any], *, address: str | None,
               max_parallel: int | None, echo: Callable[[str], None] = print,
               lease_seconds: float = DEFAULT_LEASE_SECONDS, on_cell: Callable[[], None] | None = None):
    """Run the run's remaining cells as Ray tasks; returns the finished RunInfo. `on_cell()` is called
    after each cell a worker finished (its results are in the registry by then) and once at the end."""
    ray = require_ray()
    cells = plan(config)
    if config.data_root is not None:  # workers may start elsewhere: they get absolute paths (the stored config keeps its own)
        config = dataclasses.replace(config, data_root=os.path.abspath(os.path.expanduser(config.data_root)))
    registry.runs.update(name, status="running", results=results)
    registry.cells.plan(name, [c.key for c in cells])
    try:
        _connect(ray, address, registry)
        resources = _resources(ray)
        threads = None if "num_gpus" in resources else resources["num_cpus"]
        base_task = ray.remote(max_retries=CELL_RETRIES)(score_base).options(**resources)
        cell_task = ray.remote(max_retries=CELL_RETRIES, retry_exceptions=False)(run_cell).options(**resources)
        location = str(registry.location)
        if "://" not in location:
            location = os.path.abspath(location)
        seconds = ray.get(base_task.remote(location, name, config, threads))
        echo(f"base model scored in {seconds:.0f} s")
        stored = registry.runs.get(name).results["strategies"]
        todo = [c for c in cells if (stored[c.label]["cells"].get(c.key) or {}).get("matrix") is None]
        limit = max_parallel or len(todo) or 1
        pending, failures = list(todo), []
        running: dict[Any, CellPlan] = {}
        echo(f"{len(todo)} of {len(cells)} cells to run on Ray, at most {limit} at a time")
        while pending or running:
            while pending and len(running) < limit:
                cell = pending.pop(0)
                running[cell_task.remote(location, name, config, cell, threads, lease_seconds)] = cell
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                cell = running.pop(ref)
                try:
                    done = ray.get(ref)
                    echo(f"[{cell.key}] done on node {done['node']} in {done['seconds']:.0f} s (worker pid {done['pid']}, "
                         f"base model loaded {done['model_loads']}x in that worker)")
                except Exception as exc:  # noqa: BLE001 - reported per cell; the others go on
                    failures.append((cell.key, _one_line(exc)))
                    echo(f"[{cell.key}] failed: {_one_line(exc)}")
                else:
                    if on_cell is not None:
                        on_cell()
    except BaseException:
        registry.runs.update(name, status="failed")
        raise
    final = registry.runs.get(name).results
    summarise(final, final=True)
    registry.runs.update(name, status="failed" if failures else "done", results=final)
    if on_cell is not None:
        on_cell()
    if failures:
        raise RuntimeError(f"{len(failures)} cell(s) failed: " + "; ".join(f"{k}: {e}" for k, e in failures))
    return registry.runs.get(name)


def _one_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc  # RayTaskError carries the worker's exception
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:300]
