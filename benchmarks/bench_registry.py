"""Registry latency: register 1,000 small adapters (timed), fill to 10,000 versions through the same API,
then time `versions`, `search` and `show` through the Python API and the CLI (p50/p95).

Targets (issue: registry): API p95 < 50 ms; CLI `list`/`show` < 0.5 s wall including start-up.
Every registration is real: distinct content, blobs written and fsynced, one SQLite transaction.
Run:  python benchmarks/bench_registry.py [--total 10000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from registry import Registry
from registry.testing import write_adapter


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def summary(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": round(1000 * statistics.median(samples), 2), "p95_ms": round(1000 * pct(samples, 0.95), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--first", type=int, default=1000, help="registrations timed one by one")
    parser.add_argument("--total", type=int, default=10_000, help="versions in the registry when queries are timed")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--cli-repeats", type=int, default=10)
    parser.add_argument("--json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    reg = Registry.open(work / "registry")
    results: dict[str, object] = {}

    # 1,000 registrations into one task ("big": versions() then returns 1,000 rows), timed one by one
    reg_times = []
    for i in range(args.first):
        folder = write_adapter(work / "src" / f"a{i}", seed=i)
        start = time.perf_counter()
        reg.register(folder, task="big", tags={"parity": str(i % 2)}, metadata={"i": i})
        reg_times.append(time.perf_counter() - start)
    results["register"] = {**summary(reg_times), "count": args.first, "per_second": round(args.first / sum(reg_times), 1)}
    print(f"register x{args.first}: {results['register']}", flush=True)

    # fill to --total across 90 more tasks, with some evaluations to search on
    start, i = time.perf_counter(), args.first
    while i < args.total:
        folder = write_adapter(work / "src" / f"a{i}", seed=i)
        v = reg.register(folder, task=f"task{i % 90:02d}", tags={"parity": str(i % 2)})
        if i % 10 == 0:
            reg.record_evaluation(v.ref, task=v.task, metric="accuracy", value=(i % 100) / 100)
        i += 1
    results["fill_seconds"] = round(time.perf_counter() - start, 1)
    n_versions = sum(t["versions"] for t in reg.tasks())
    results["versions_in_registry"] = n_versions
    print(f"filled to {n_versions} versions in {results['fill_seconds']} s", flush=True)

    api = {
        "versions(big) [1000 rows]": lambda: reg.versions("big"),
        "versions(task42) [100 rows]": lambda: reg.versions("task42"),
        "search(tag parity=1, task=task07)": lambda: reg.search(task="task07", tag={"parity": "1"}),
        "search(metric accuracy>=0.9) [100 rows]": lambda: reg.search(metrics=["accuracy>=0.9"]),
        "search(alias best)": lambda: reg.search(alias="best"),
        "get(task42:50)": lambda: reg.get("task42:50"),
        "get(big) [latest]": lambda: reg.get("big"),
        "get(big@best)": lambda: reg.get("big@best"),
        "tasks() [list]": lambda: reg.tasks(),
    }
    reg.alias("big:500", "best")
    results["api"] = {}
    for name, fn in api.items():
        fn()  # warm
        results["api"][name] = summary(timed(fn, args.repeats))
        print(f"API {name:38s} {results['api'][name]}", flush=True)

    exe = str(Path(sys.executable).with_name("adapter-hub"))
    cli = {"list": ["list"], "show task42:50": ["show", "task42:50"], "versions task42": ["versions", "task42"],
           "list --json": ["list", "--json"]}
    results["cli"] = {}
    for name, extra in cli.items():
        cmd = [exe, "--registry", str(work / "registry"), *extra]
        subprocess.run(cmd, capture_output=True, check=True)  # warm the OS file cache
        results["cli"][name] = summary(timed(lambda: subprocess.run(cmd, capture_output=True, check=True),
                                             args.cli_repeats))
        print(f"CLI {name:38s} {results['cli'][name]}", flush=True)
    worst_api = max(v["p95_ms"] for v in results["api"].values())
    worst_cli = max(results["cli"][k]["p95_ms"] for k in ("list", "show task42:50"))
    results["verdict"] = {"api_p95_max_ms": worst_api, "api_target_ms": 50, "cli_list_show_p95_max_ms": worst_cli,
                          "cli_target_ms": 500}
    print(json.dumps(results["verdict"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
