"""`adapter-hub demo`: the whole story on a laptop CPU in a few minutes, offline.

SmolLM2-135M-Instruct (from the packaged GGUF) learns three built-in tasks one after another:
  1. with `seq` (one adapter, task after task) — it forgets: answers drift to the latest task's labels;
  2. with `replay` (a small memory of past examples) — the best of the strategies on this budget;
  3. with `per_task` adapters, which are then merged with TIES and reduced to rank 8 into ONE adapter.
Every state is registered (in a registry inside the output folder unless --registry is given), every
state is scored on every task in one routed pass per task, and a comparison table plus a report
(Markdown, heatmaps, accuracy curves) are written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DEMO_TASKS = ["builtin:topic", "builtin:sentiment", "builtin:animal"]


@dataclass
class DemoConfig:
    base_model: str = "smollm2-135m"  # the packaged real model; "tiny-llama" runs the same story in ~1 minute
    steps: int = 24  # per task; ~0.6 s a step on 2 CPU cores keeps training near 2 minutes in all
    lr: float = 1e-3  # short runs want the high end of LoRA's range
    rank: int = 8
    max_train: int = 192  # 24 steps x 8 examples: each example seen once
    max_test: int = 32
    memory: int = 48  # replay memory (examples over all past tasks)
    out: str = "demo-out"
    registry: str | None = None  # default: <out>/registry, so the demo never touches your own registry
    seed: int = 0


def demo_bench_config(config: DemoConfig):
    from adapter_hub.bench import BenchConfig

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
    from adapter_hub import ops
    from adapter_hub.bench import load_tasks, run_bench
    from adapter_hub.evaluate import evaluate_states
    from adapter_hub.models import load_base_model, load_tokenizer
    from adapter_hub.report import COMPARISON_HEADER, comparison_rows, fmt, write_report
    from registry import Registry

    start = time.perf_counter()
    out = Path(config.out)
    reg = Registry.open(config.registry or out / "registry")
    bench = demo_bench_config(config)
    echo(f"registry: {reg.location}")
    echo(f"base model {config.base_model}; tasks {' -> '.join(t.split(':')[1] for t in DEMO_TASKS)}; "
         f"scorer {bench.eval.scorer}; {bench.train.steps} steps per task")
    run = run_bench(bench, reg, echo=echo)

    echo("merging the per_task adapters with TIES (density 0.5) and reducing to rank "
         f"{config.rank} ...")
    per_task = run.results["strategies"]["per_task"]["states"]
    parts = [reg.load(ref) for ref in per_task]
    merged = ops.merge(parts, "ties", density=0.5, rank=config.rank, seed=config.seed)
    version = reg.register(merged, task="demo-merged", metadata={"run": run.name},
                           note="TIES merge of the demo's per-task adapters, rank reduced")
    tasks = load_tasks(bench)
    model = load_base_model(config.base_model)
    scores = evaluate_states(model, load_tokenizer(config.base_model), tasks, {"merged": merged}, bench.eval_config())
    merged_acc = [scores["merged"][t.name].accuracy for t in tasks]
    for t, acc in zip(tasks, merged_acc):
        reg.record_evaluation(version.ref, task=t.name, metric="accuracy", value=acc, dataset=t.fingerprint(),
                              scorer=bench.eval.scorer, run=run.name)
    results = dict(run.results)
    results["merged"] = {"label": f"per_task merged (ties, rank {config.rank})", "version": version.ref,
                         "accuracy": merged_acc, "acc": sum(merged_acc) / len(merged_acc),
                         "max_relative_error": merged.provenance.get("max_relative_error")}
    reg.update_run(run.name, results=results)
    run = reg.get_run(run.name)

    echo("")
    rows = comparison_rows([run])
    width = [max(len(str(x)) for x in col) for col in zip(COMPARISON_HEADER, *rows)]
    for row in [COMPARISON_HEADER, *rows]:
        echo("  ".join(str(x).ljust(w) for x, w in zip(row, width)))
    echo(f"{results['merged']['label']}: ACC {fmt(results['merged']['acc'])} "
         f"({', '.join(f'{t.name} {fmt(a)}' for t, a in zip(tasks, merged_acc))}) -> {version.ref}")
    report = out / "report"
    write_report(run, report, force=True)  # the demo owns its output folder
    echo(f"\nreport: {report / 'report.md'} (heatmaps, accuracy curves, results.json)")
    echo(f"every state is registered: adapter-hub --registry {reg.location} list")
    echo(f"done in {time.perf_counter() - start:.0f}s")
    return {"run": run.name, "results": results, "report": str(report), "registry": reg.location}
