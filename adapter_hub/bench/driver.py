"""Continual-learning benchmark runs from a config: every strategy on the same tasks, model and budget.

A run: (1) train each strategy through the task sequence (continual.runner: every state registered,
resumable); (2) score every state of every strategy, plus the bare base model, on every task —
one routed pass per task for all of them (evaluation.evaluate_states); (3) build each strategy's
accuracy matrix R and its metrics; (4) store config, status, matrices, metrics, timings and the
version behind every cell in the registry (bench_run / bench_step / evaluation). An interrupted run
resumes where it stopped: registered steps are reloaded, evaluated cells are kept.

The flow goes one way: this driver plans the cells (bench.cells), runs each with a CellRunner
(bench.cell: training, then scoring) or hands them to Ray (bench.ray_executor), and summarises
(bench.summary).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from adapter_hub.bench import ray_executor
from adapter_hub.bench.cell import CellRunner
from adapter_hub.bench.cells import plan
from adapter_hub.bench.config import BenchConfig, config_changes
from adapter_hub.continual import STRATEGIES
from adapter_hub.data import Task
from adapter_hub.models.devices import dtype_name, resolve_device, resolve_dtype
from adapter_hub.models.loading import check_model_name, load_base_model, load_tokenizer
from registry.errors import RefError


def free_run_name(registry, name: str) -> str:
    """`name` if no run has it, else name-2, name-3, ... (for `bench run --new-run`)."""
    for i in range(1, 10_000):
        candidate = name if i == 1 else f"{name}-{i}"
        try:
            registry.runs.get(candidate)
        except RefError:
            return candidate
    raise ValueError(f"no free run name like {name!r}")


EXECUTORS = ("local", "ray")


def run_bench(config: BenchConfig, registry, *, name: str | None = None, resume: bool = True,
              echo: Callable[[str], None] = print, on_step: Callable | None = None,
              on_cell: Callable[[], None] | None = None, executor: str = "local",
              address: str | None = None, max_parallel: int | None = None):
    """Run (or resume) a benchmark; returns the registry's RunInfo with results filled in.

    Cells run one after the other (executor "local", in this process) or as Ray tasks in parallel
    (executor "ray", adapter_hub.executors: `address` names the cluster, `max_parallel` caps the cells
    in flight): train (every state registered), evaluate on every task, store the cell's matrix,
    metrics and per-example correctness with the run, so `bench show` sees results as they come. A
    resumed run keeps the cells already evaluated and resumes the one it stopped in. `on_cell()` is
    called each time a finished cell is stored (e.g. to rewrite an export of the run), and once more
    when the run is done."""
    for entry in config.strategies:  # a BenchConfig built in Python is checked here, before the run row
        if entry.name not in STRATEGIES:
            raise ValueError(f"unknown strategy {entry.name!r}; available: {', '.join(STRATEGIES)}")
        STRATEGIES[entry.name].check_params(entry.params, where=f"strategy {entry.label}")
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor == "local" and (address is not None or max_parallel is not None):
        raise ValueError("--address and --max-parallel are for --executor ray")
    if max_parallel is not None and max_parallel < 1:
        raise ValueError(f"max_parallel must be at least 1, got {max_parallel}")
    if executor == "ray":
        ray_executor.require_ray()  # before anything is written
    name = name or config.name or f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    tasks = config.load_tasks()  # data errors before anything is written
    check_model_name(config.base_model)  # so is a model name that names nothing
    task_of = dict(zip(config.tasks, tasks))
    try:
        existing = registry.runs.get(name)
    except RefError:
        existing = None
    results: dict[str, Any] | None = None
    if existing is not None:
        if not resume:
            raise ValueError(f"benchmark run {name!r} exists; resume it or pick another --name")
        changed = config_changes(existing.config, config.to_dict())
        if changed:
            shown = "; ".join(changed[:6]) + (f"; and {len(changed) - 6} more" if len(changed) > 6 else "")
            raise ValueError(f"benchmark run {name!r} was started with another config ({shown}); resuming would mix "
                             f"the two: pass --new-run (or --name NEW) to start a new run with this config")
        if existing.status == "done":
            echo(f"run {name} is already done")
            return existing
        echo(f"resuming run {name} ({existing.status})")
        results = existing.results if "base_by_task" in (existing.results or {}) else None
    else:
        registry.runs.create(name, config.to_dict())
    orders = config.cell_orders()
    registry.runs.update(name, status="running")  # a resumed run is running again, not "failed"
    if executor == "ray":
        results = _results_skeleton(config, tasks, results)
        return ray_executor.run_on_ray(config, registry, name, results, address=address, max_parallel=max_parallel,
                                       echo=echo, on_cell=on_cell)
    run = None
    try:
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        model = load_base_model(config.base_model, device=device, dtype=dtype)  # a failure here marks the run failed
        tokenizer = load_tokenizer(config.base_model)
        results = _results_skeleton(config, tasks, results, device=str(device), dtype=dtype_name(dtype))
        run = CellRunner(registry, name, config, model, tokenizer, tasks, results, echo)
        run.score_base()
        entries = {entry.label: entry for entry in config.strategies}
        for planned in plan(config):
            entry = results["strategies"][planned.label]
            if (entry["cells"].get(planned.key) or {}).get("matrix") is not None:
                continue  # evaluated before the interruption: kept as stored
            hook = None if on_step is None else (lambda r, ref, label=planned.label: on_step(label, r, ref))
            entry["cells"][planned.key] = run.cell(entries[planned.label], planned.key, planned.seed, planned.order,
                                                   [task_of[s] for s in orders[planned.order]], hook)
            run.summarise()
            registry.runs.update(name, status="running", results=results)
            if on_cell is not None:
                on_cell()
        run.summarise(final=True)
        registry.runs.update(name, status="done", results=results)
        if on_cell is not None:
            on_cell()
    except BaseException:
        if run is not None:
            run.summarise()
        registry.runs.update(name, status="failed", results=results)
        raise
    return registry.runs.get(name)


def _results_skeleton(config: BenchConfig, tasks: list[Task], results: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """A new run's results (or a resumed run's, as stored) with an entry for every strategy of the config.
    `extra` records where the run computes (the local executor's device and dtype)."""
    seeds, orders = config.cell_seeds(), config.cell_orders()
    if results is None:
        task_of = dict(zip(config.tasks, tasks))
        results = {"tasks": [t.name for t in tasks], "scorer": config.eval.scorer,
                   "scorers": config.eval.all_scorers, **extra, "seeds": seeds,
                   "orders": [[task_of[s].name for s in o] for o in orders], "strategies": {}, "eval_seconds": 0.0}
    for strategy in config.strategies:
        entry = results["strategies"].setdefault(strategy.label, {"strategy": strategy.name, "params": strategy.params,
                                                                  "cells": {}})
        entry["cells_total"] = len(seeds) * len(orders)
    return results
