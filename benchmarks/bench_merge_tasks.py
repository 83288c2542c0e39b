"""Merging per-task adapters into one, judged on the tasks: normalized accuracy (merged accuracy / the
task's own adapter's accuracy, per task and averaged; the number TIES, KnOTS and Iso-C report) for
every merge method at its defaults. The parts are scored once, each on its own task only (all the
normalized accuracy needs); each merge is one routed pass per task. Every mean carries a 95% bootstrap
interval over the test examples, and every method's difference from TIES a paired one (the same
resampled examples for both merges and the own adapters).

The parts are registry versions, one per task, in the tasks' order — e.g. the states of a bench
run's per_task cell (`adapter-hub bench show RUN --json` → results.strategies.per_task.cells.<cell>.states).

Run:  python benchmarks/bench_merge_tasks.py --registry REG --refs dbpedia:2 amazon:4 yelp:4 agnews:4 \
          --tasks dbpedia amazon yelp agnews --data-root ../shared/data/cl_benchmark --max-test 300 \
          [--methods linear ties ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# (label, method, merge keyword arguments): each method at its paper's setting. linear: the mean of the
# task vectors (weights 1/T), the "model soup" baseline; TIES keeps the top 20% (the paper's k); DARE-
# TIES keeps half (mergekit's examples; DARE's own 90% drop is for 7B+ models); TIES also in core space
# (Panariello et al. 2025); the spectral methods at their declared defaults.
METHODS = {
    "linear": ("linear", {"mean": True}),
    "ties": ("ties", {"density": 0.2}),
    "dare_ties": ("dare_ties", {"density": 0.5}),
    "ties_core": ("ties", {"density": 0.2, "space": "core"}),
    "iso_c": ("iso_c", {}),
    "iso_cts": ("iso_cts", {}),
    "tsv": ("tsv", {}),
    "knots_ties": ("knots_ties", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--registry", required=True)
    parser.add_argument("--refs", nargs="+", required=True, help="one version per task, in the tasks' order")
    parser.add_argument("--tasks", nargs="+", required=True, help="task specs (names under --data-root, builtin:...)")
    parser.add_argument("--data-root")
    parser.add_argument("--max-test", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0, help="the data sample's seed (as the bench run's)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--threads", type=int)
    parser.add_argument("--json")
    args = parser.parse_args()
    if len(args.refs) != len(args.tasks):
        parser.error(f"{len(args.refs)} refs for {len(args.tasks)} tasks: give one adapter per task")

    import torch

    from adapter_hub import ops
    from adapter_hub.core import progress
    from adapter_hub.data import load_task
    from adapter_hub.evaluation import EvalConfig
    from adapter_hub.evaluation.merge_judge import (
        MERGED,
        judge_merge,
        normalized_difference,
        normalized_interval,
    )
    from adapter_hub.models.loading import load_base_model, load_tokenizer
    from registry import Registry

    if args.threads:
        torch.set_num_threads(args.threads)
    progress.set_mode("lines")
    reg = Registry.open(args.registry, create=False)
    parts = {ref: reg.load(ref) for ref in args.refs}
    first = next(iter(parts.values()))
    base = first.base_model.name if first.base_model and first.base_model.name else "smollm2-135m"
    model, tokenizer = load_base_model(base), load_tokenizer(base)
    root = Path(args.data_root) if args.data_root else None
    tasks = [load_task(spec if (spec.startswith("builtin:") or root is None) else str(root / spec),
                       max_test=args.max_test, seed=args.seed) for spec in args.tasks]
    config = EvalConfig(scorer="loglik", batch_size=16, max_length=args.max_length)
    known = None
    own_correct: dict[str, list[int]] = {}
    merged_correct: dict[str, dict[str, list[int]]] = {}
    rows = {}
    for label in args.methods:
        method, kw = METHODS[label]
        kw = dict(kw)
        weights = [1 / len(parts)] * len(parts) if kw.pop("mean", False) else None
        start = time.perf_counter()
        merged = ops.merge(list(parts.values()), method, weights=weights, **kw)
        merge_s = time.perf_counter() - start
        judged = judge_merge(model, tokenizer, tasks, merged, parts, config, known=known, cross=False)
        if known is None:  # the first judgement scored the parts, each on its own task
            known = {ref: judged.accuracy[ref] for ref in parts}
            own_correct = {t.name: judged.correct[ref][t.name] for t, ref in zip(tasks, args.refs)}
        merged_correct[label] = judged.correct[MERGED]
        interval = normalized_interval(merged_correct[label], own_correct, seed=args.seed)
        rows[label] = {"normalized_mean": judged.normalized_mean, "ci95": [interval.low, interval.high],
                       "normalized": judged.normalized, "accuracy": judged.accuracy[MERGED],
                       "merge_seconds": round(merge_s, 2)}
        shown = " ".join(f"{t}={v:.3f}" if v is not None else f"{t}=—" for t, v in judged.normalized.items())
        print(f"{label:12s} normalized {judged.normalized_mean:.3f} [{interval.low:.3f}, {interval.high:.3f}]  "
              f"({shown})  merge {merge_s:.1f} s", flush=True)
    best = max(rows, key=lambda k: rows[k]["normalized_mean"] or 0)
    reference = "ties" if "ties" in rows else next(iter(rows))
    for label in rows:  # paired over the same resampled test examples
        diff, significant = normalized_difference(merged_correct[label], merged_correct[reference], own_correct,
                                                  seed=args.seed)
        rows[label][f"minus_{reference}"] = {"value": diff.value, "ci95": [diff.low, diff.high],
                                             "significant": significant}
        print(f"{label:12s} − {reference}: {diff.value:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]"
              f"{'  significant' if significant else ''}")
    out = {"refs": args.refs, "tasks": [t.name for t in tasks], "max_test": args.max_test,
           "own_accuracy": {t.name: known[ref][t.name] for t, ref in zip(tasks, args.refs)}, "methods": rows,
           "best": best}
    print(f"best: {best} ({rows[best]['normalized_mean']:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
