"""A 4-cell benchmark sweep (2 strategies × 2 seeds; by default the tiny model on built-in tasks) on the
local executor vs on Ray with --max-parallel 2, each into a fresh registry, interleaved, medians; the
stored matrices are checked identical. The Ray time includes starting the local cluster and its two workers (what a
user of `bench run --executor ray` on one machine pays); the time with an already-started cluster is
printed too.

`--local-threads 1` gives the local executor the resources of one Ray cell (one core), to see how
the executor itself scales; the default (torch's choice: one thread per core) is what a user gets.

Whether cells side by side pay on a small CPU depends on the cell: a tiny model's step is a few
matmuls that torch already spreads over every core, SmolLM2's is many small operations that it does
not (benchmarks/bench_cpu_cells.py). `--model smollm2-135m --data-root DIR --tasks agnews imdb` runs
the sweep on real cells.

Run:  python benchmarks/bench_ray_sweep.py [--repeats 2] [--steps 300] [--local-threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import emit  # noqa: E402


def config(steps: int, model: str = "tiny-llama", tasks: tuple[str, ...] = ("builtin:topic", "builtin:sentiment"),
           data_root: str | None = None, dtype: str = "auto", batch: int = 16, max_test: int = 64):
    from adapter_hub.bench.config import BenchConfig

    return BenchConfig.from_dict({
        "name": "sweep", "base_model": model, "tasks": list(tasks), "data_root": data_root, "dtype": dtype,
        "max_train": 256, "max_test": max_test, "seeds": [0, 1], "lora": {"r": 8},
        "train": {"steps": steps, "batch_size": batch, "max_length": 96}, "eval": {"batch_size": 32},
        "strategies": [{"name": "seq"}, {"name": "mtl"}]})


def matrices(run) -> dict:
    return {k: c["matrix"] for e in run.results["strategies"].values() for k, c in e["cells"].items()}


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300, help="training steps per task (cell length)")
    parser.add_argument("--local-threads", type=int, help="torch threads of the local executor (default: torch's)")
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--tasks", nargs="+", default=["builtin:topic", "builtin:sentiment"])
    parser.add_argument("--data-root", help="folder the task names are looked up in (the real tasks)")
    parser.add_argument("--dtype", default="auto", help="the base model's dtype")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-test", type=int, default=64, help="test examples scored per task")
    parser.add_argument("--json")
    args = parser.parse_args()

    import ray
    import torch

    if args.local_threads:
        torch.set_num_threads(args.local_threads)
    from adapter_hub.bench.driver import run_bench
    from registry import Registry

    cfg = config(args.steps, args.model, tuple(args.tasks), args.data_root, args.dtype, args.batch, args.max_test)
    local, on_ray, warm, reference = [], [], [], None
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            seconds, run = timed(lambda: run_bench(cfg, Registry.open(Path(tmp) / "local"), echo=lambda m: None))
            local.append(seconds)
            reference = reference or matrices(run)
            assert matrices(run) == reference

            def sweep(where: str):
                return run_bench(cfg, Registry.open(Path(tmp) / where), executor="ray", max_parallel=2,
                                 echo=lambda m: None)

            start = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            run = sweep("ray")
            on_ray.append(time.perf_counter() - start)
            assert matrices(run) == reference, "Ray's matrices differ from the local executor's"
            seconds, run = timed(lambda: sweep("ray-warm"))  # workers already up, model already loaded
            warm.append(seconds)
            assert matrices(run) == reference
            ray.shutdown()
    results = {"model": args.model, "tasks": " ".join(args.tasks), "dtype": args.dtype, "cells": 4,
               "steps_per_task": args.steps, "torch_threads_local": torch.get_num_threads(),
               "local_s": statistics.median(local), "ray_s_with_cluster_start": statistics.median(on_ray),
               "ray_s_warm_cluster": statistics.median(warm)}
    results["ratio_ray_over_local"] = results["ray_s_with_cluster_start"] / results["local_s"]
    results["ratio_warm_over_local"] = results["ray_s_warm_cluster"] / results["local_s"]
    results["matrices_identical"] = True
    emit(results, args.json)


if __name__ == "__main__":
    main()
