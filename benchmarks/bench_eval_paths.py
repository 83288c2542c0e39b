"""A/B of the evaluator's two speed-ups, each switched off in turn, in one process (alternating runs).

  all on          the default scorer
  no packing      label candidates scored with one cache copy per candidate (what attention without
                  custom-mask support gets) instead of one packed pass under a 4D mask
  no prefix       every prompt encoded whole instead of reusing the shared instruction's cache

Every variant must give the same predictions as "all on" (checked). Run:
  python benchmarks/bench_eval_paths.py                           # tiny-llama, 4 adapters + base, built-in tasks
  python benchmarks/bench_eval_paths.py --model smollm2-135m --adapters 0 --max-test 24 --max-length 160 \\
      --tasks ../shared/data/cl_benchmark/dbpedia ../shared/data/cl_benchmark/agnews --batch-size 8
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

from _results import emit  # benchmarks/ is on sys.path when a script runs
from bench_eval import TASKS, make_adapters

import adapter_hub.evaluation.decoding as decoding
from adapter_hub import load_base_model, load_tokenizer
from adapter_hub.data import load_task
from adapter_hub.evaluation import EvalConfig, evaluate_states


@contextlib.contextmanager
def switched_off(variant: str):
    saved = decoding.takes_custom_masks
    if variant == "no packing":
        decoding.takes_custom_masks = lambda model: False
    try:
        yield
    finally:
        decoding.takes_custom_masks = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--tasks", nargs="+", default=[f"builtin:{t}" for t in TASKS])
    parser.add_argument("--adapters", type=int, default=4, help="random adapters scored besides the base model")
    parser.add_argument("--max-test", type=int)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--scorer", default="loglik")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()

    model = load_base_model(args.model)
    tokenizer = load_tokenizer(args.model)
    tasks = [load_task(t, max_test=args.max_test, max_train=1 if args.max_test else None) for t in args.tasks]
    states = {**make_adapters(model, args.adapters), "base": None}
    variants = ["all on", "no packing", "no prefix"]
    times: dict[str, list[float]] = {v: [] for v in variants}
    predictions = {}
    for _ in range(args.repeats):
        for variant in variants:
            config = EvalConfig(scorer=args.scorer, batch_size=args.batch_size, max_length=args.max_length,
                                  shared_prefix=variant != "no prefix")
            with switched_off(variant):
                start = time.perf_counter()
                scores = evaluate_states(model, tokenizer, tasks, states, config)
                times[variant].append(time.perf_counter() - start)
            predictions[variant] = {(s, t.name): scores[s][t.name].predictions for s in states for t in tasks}
    results = {"model": args.model, "tasks": [t.name for t in tasks], "states": len(states),
               "batch_size": args.batch_size, "scorer": args.scorer}
    for variant in variants:
        key = variant.replace(" ", "_")
        results[f"{key}_s"] = statistics.median(times[variant])
        results[f"{key}_same_predictions"] = predictions[variant] == predictions["all on"]
        if variant != "all on":
            results[f"{key}_slowdown"] = results[f"{key}_s"] / results["all_on_s"]
    emit(results, args.json, width=30)


if __name__ == "__main__":
    main()
