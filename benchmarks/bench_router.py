"""Task-free routing accuracy of the two routers on real tasks: the prototype router (one mean feature
per task, nearest by centred cosine) against the analytic router (Any-SSR's ridge classifier over
random Fourier features, updated task by task), each at its defaults, after every task of a sequence.

Both read the same features — the frozen base model's mean-pooled states of each example's text —
from the first `--max-train` training inputs of each task (per_task's router sees those at learn
time) and route the first `--max-test` test inputs of every task learnt so far. Accuracy is the
fraction sent to their own task (what `per_task` with that router would need to match the oracle).

Run:  python benchmarks/bench_router.py --data-root ../shared/data/cl_benchmark \
          --tasks imdb cb dbpedia agnews [--model smollm2-135m] [--json out.json]
      python benchmarks/bench_router.py --tasks topic sentiment sentiment_flip animal   (built-in tasks)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import emit  # noqa: E402

from adapter_hub import load_base_model, load_tokenizer  # noqa: E402
from adapter_hub.data import load_task  # noqa: E402
from adapter_hub.evaluation.analytic_router import AnalyticRouter  # noqa: E402
from adapter_hub.evaluation.router import Prototype, features, nearest_prototype  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", help="folder of the named tasks; without it they are built-in tasks")
    parser.add_argument("--tasks", nargs="+", required=True)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--max-train", type=int, default=512)
    parser.add_argument("--max-test", type=int, default=150)
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()

    model, tokenizer = load_base_model(args.model), load_tokenizer(args.model)
    specs = [Path(args.data_root) / name if args.data_root else f"builtin:{name}" for name in args.tasks]
    tasks = [load_task(spec, max_train=args.max_train, max_test=args.max_test, seed=args.seed) for spec in specs]
    started = time.perf_counter()
    train = [features(model, tokenizer, [e.text for e in t.train], max_length=args.max_length) for t in tasks]
    test = [features(model, tokenizer, [e.text for e in t.test], max_length=args.max_length) for t in tasks]
    results: dict = {"model": args.model, "tasks": " ".join(args.tasks), "feature_seconds":
                     round(time.perf_counter() - started, 1)}
    analytic = AnalyticRouter(seed=args.seed)
    prototypes = []
    for k, (task, feats) in enumerate(zip(tasks, train), start=1):
        analytic.add_task(task.name, feats.double().numpy())
        prototypes.append(Prototype(task.name, feats.mean(0).tolist(), len(feats)))
        if k == 1:
            continue  # one task: every input goes to its adapter, for both
        hits = {"prototype": 0, "analytic": 0}
        total = 0
        for j in range(k):
            routes = {"prototype": nearest_prototype(test[j], prototypes),
                      "analytic": analytic.route(test[j].double().numpy())}
            for name, chosen in routes.items():
                hits[name] += sum(c == j for c in chosen)
            total += len(test[j])
        for name in hits:
            results[f"{name}_after_{k}"] = hits[name] / total
    results["analytic_stored_numbers"] = analytic.stored_numbers()
    emit(results, args.json)


if __name__ == "__main__":
    main()
