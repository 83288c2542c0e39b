"""`adapter-hub demo`: the whole story on a laptop CPU in a few minutes, offline.

SmolLM2-135M-Instruct (from the packaged GGUF) learns three built-in tasks one after another:
  1. with `seq` (one adapter, task after task) — it forgets: answers drift to the latest task's labels;
  2. with `replay` (a small memory of past examples) — the best of the strategies on this budget;
  3. with `per_task` adapters, which are then merged into ONE adapter (the method that did best on the
     four real tasks, MERGE_METHOD) and reduced to rank 8.
Every state is registered (in a registry inside the output folder unless --registry is given), every
state is scored on every task in one routed pass per task, and a comparison table plus a report
(Markdown, heatmaps, accuracy curves) are written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from adapter_hub import ops
from adapter_hub.bench.config import BenchConfig
from adapter_hub.bench.driver import run_bench
from adapter_hub.bench.report import (
    COMPARISON_HEADER,
    comparison_rows,
    fmt,
    write_report,
)
from adapter_hub.evaluation.merge_judge import MERGED, judge_merge
from adapter_hub.models.loading import load_base_model, load_tokenizer
from adapter_hub.models.names import SMOLLM2
from registry.api import Registry

DEMO_TASKS = ["builtin:topic", "builtin:sentiment", "builtin:animal"]
MERGE_METHOD, MERGE_OPTIONS = "iso_c", {}  # at its paper's default scale


@dataclass
class DemoConfig:
    base_model: str = SMOLLM2  # the packaged real model; "tiny-llama" runs the same story in ~1 minute
    steps: int = 24  # per task; ~0.6 s a step on 2 CPU cores keeps training near 2 minutes in all
    lr: float = 1e-3  # short runs want the high end of LoRA's range
    rank: int = 8
    max_train: int = 192  # 24 steps x 8 examples: each example seen once
    max_test: int = 32
    memory: int = 48  # replay memory (examples over all past tasks)
    # The merge with the best normalized accuracy on the four real tasks (benchmarks/RESULTS.md,
    # "Merging the four real tasks' adapters"), at its measured setting.
    merge_method: str = MERGE_METHOD
    merge_options: dict = field(default_factory=lambda: dict(MERGE_OPTIONS))
    out: str = "demo-out"
    registry: str | None = None  # default: <out>/registry, so the demo never touches your own registry
    seed: int = 0


def demo_bench_config(config: DemoConfig) -> BenchConfig:
    tiny = config.base_model.startswith("tiny-")
    return BenchConfig.from_dict({
        "name": f"demo-{time.strftime('%Y%m%d-%H%M%S')}", "base_model": config.base_model, "tasks": DEMO_TASKS,
        "max_train": None if tiny else config.max_train, "max_test": config.max_test * (3 if tiny else 1),
        "seed": config.seed,
        "lora": {"r": config.rank, "alpha": 32.0},
        # the random tiny model needs ~10x the steps and a higher learning rate than the real one
        "train": {"steps": config.steps * 10 if tiny else config.steps, "lr": 3e-3 if tiny else config.lr,
                  "batch_size": 16 if tiny else 8, "max_length": 96},
        "eval": {"scorer": "loglik" if tiny else "generate", "batch_size": 16},
        "strategies": [{"name": "seq"}, {"name": "replay", "memory": config.memory}, {"name": "per_task"}],
    })


def run_demo(config: DemoConfig, echo: Callable[[str], None] = print) -> dict:
    start = time.perf_counter()
    out = Path(config.out)
    reg = Registry.open(config.registry or out / "registry")
    bench = demo_bench_config(config)
    echo(f"registry: {reg.location}")
    echo(f"base model {config.base_model}; tasks {' -> '.join(t.split(':')[1] for t in DEMO_TASKS)}; "
         f"scorer {bench.eval.scorer}; {bench.train.steps} steps per task")
    run = run_bench(bench, reg, echo=echo)

    label = f"per_task merged ({config.merge_method}, rank {config.rank})"
    echo(f"merging the per_task adapters with {config.merge_method} and reducing to rank {config.rank} ...")
    per_task = run.results["strategies"]["per_task"]["states"]
    parts = {ref: reg.load(ref) for ref in per_task}
    merged = ops.merge(list(parts.values()), config.merge_method, rank=config.rank, seed=config.seed,
                       options=config.merge_options)
    version = reg.register(merged, task="demo-merged", metadata={"run": run.name},
                           note=f"{config.merge_method} merge of the demo's per-task adapters, rank reduced")
    tasks = bench.load_tasks()
    model = load_base_model(config.base_model)
    # each part's accuracy on its own task is the per_task matrix's diagonal: only the merge is scored
    diagonal = run.results["strategies"]["per_task"]["matrix"]
    known = {ref: {t.name: diagonal[j][j]} for j, (ref, t) in enumerate(zip(per_task, tasks))}
    judged = judge_merge(model, load_tokenizer(config.base_model), tasks, merged, parts, bench.eval_config(),
                         known=known, cross=False)
    merged_acc = [judged.accuracy[MERGED][t.name] for t in tasks]
    for t, acc in zip(tasks, merged_acc):
        reg.record_evaluation(version.ref, task=t.name, metric="accuracy", value=acc, dataset=t.fingerprint(),
                              scorer=bench.eval.scorer, run=run.name)
    results = dict(run.results)
    results["merged"] = {"label": label, "version": version.ref, "method": config.merge_method,
                         "accuracy": merged_acc, "acc": sum(merged_acc) / len(merged_acc),
                         "normalized": judged.normalized_mean,
                         "max_relative_error": merged.provenance.get("max_relative_error")}
    reg.runs.update(run.name, results=results)
    run = reg.runs.get(run.name)

    echo("")
    rows = comparison_rows([run])
    width = [max(len(str(x)) for x in col) for col in zip(COMPARISON_HEADER, *rows)]
    for row in [COMPARISON_HEADER, *rows]:
        echo("  ".join(str(x).ljust(w) for x, w in zip(row, width)))
    echo(f"{label}: ACC {fmt(results['merged']['acc'])} "
         f"({', '.join(f'{t.name} {fmt(a)}' for t, a in zip(tasks, merged_acc))}); normalized accuracy "
         f"(merged / own adapter) {fmt(judged.normalized_mean)} -> {version.ref}")
    report = out / "report"
    write_report(run, report, force=True)  # the demo owns its output folder
    echo(f"\nreport: {report / 'report.md'} (heatmaps, accuracy curves, results.json)")
    echo(f"every state is registered: adapter-hub --registry {reg.location} list")
    echo(f"done in {time.perf_counter() - start:.0f}s")
    return {"run": run.name, "results": results, "report": str(report), "registry": reg.location}
