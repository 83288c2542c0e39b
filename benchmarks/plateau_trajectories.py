"""How much does a plateau rule's choice depend on the dev split's noise? Record a task's whole training
trajectory once, then replay stopping rules on it many times.

`record` trains one task with a real strategy (continual/, the code a bench run uses; `--after` learns
earlier tasks first, each stopped by the regime's rule) for `max_steps`, never stopping, and at every
check keeps the per-example correctness of a large dev pool (scored as plateau training scores dev:
labels ranked by likelihood) and of the test split (generate scorer: the one the issue's "learnt" bar
reads). The test scores are for this analysis only; no rule below sees them.

`rules` replays stopping rules on the recorded checks: each replay draws a dev split of the size a run
would hold out, feeds its accuracy curve to the rule (training.plateau.PlateauStop, the code a run
uses) and reads off the test accuracy of the state the rule would restore. The split is a bootstrap
sample of the pool (with replacement): an example keeps its whole trajectory, so the checks stay as
correlated as on one real split, and a split of n has the noise of n examples (subsets of one 64-example
pool would share most examples and understate it). Over many draws that gives, per rule, how often the
restored state is under the bar, its mean test accuracy and the steps it keeps. The pool is larger than
a run's split, so the recorded tasks train on slightly fewer examples than a run's (250 - 64 for cb).

    python benchmarks/plateau_trajectories.py record ../shared/data/cl_benchmark/cb --after imdb \
        --strategy inflora --seed 0 --out benchmarks/results/plateau_trajectories/cb_after_imdb_inflora_s0.json
    python benchmarks/plateau_trajectories.py rules benchmarks/results/plateau_trajectories/*.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def record(args: argparse.Namespace) -> None:
    from adapter_hub import LoraConfig, load_base_model, load_tokenizer
    from adapter_hub.continual import ContinualConfig
    from adapter_hub.continual.base import Strategy
    from adapter_hub.continual.runner import run_sequence
    from adapter_hub.data import load_task
    from adapter_hub.evaluation import CURRENT, EvalConfig, score
    from adapter_hub.training import TrainConfig

    task = load_task(args.task, max_train=args.max_train, max_test=args.max_test)
    earlier = [load_task(Path(args.task).parent / name, max_train=args.max_train, max_test=args.max_test)
               for name in args.after]
    tokenizer = load_tokenizer(args.model)
    model = load_base_model(args.model, dtype=args.dtype)
    checks: list[dict] = []
    start = time.perf_counter()

    def recording_check(self, tasks):
        (only,) = tasks
        if only.name != task.name:  # an earlier task: the run's own check (its stop is the regime's rule)
            return real_check(self, tasks)
        dev_config = EvalConfig(scorer="loglik", max_length=args.max_length, progress=False)
        test_config = EvalConfig(scorer="generate", max_length=args.max_length, batch_size=32, progress=False)

        def check() -> float:
            dev = score(self.model, self.tokenizer, only, config=dev_config, examples=self.dev_examples(only))
            test = score(self.model, self.tokenizer, only, config=test_config)
            dev_correct = [bool(c) for c in dev[CURRENT].correct]
            checks.append({"check": len(checks), "dev": dev_correct, "test": [bool(c) for c in test[CURRENT].correct],
                           "seconds": round(time.perf_counter() - start, 1)})
            print(f"check {len(checks) - 1}: dev {sum(dev_correct) / len(dev_correct):.3f} "
                  f"test {sum(checks[-1]['test']) / len(checks[-1]['test']):.3f}", flush=True)
            return sum(dev_correct) / len(dev_correct)
        return check

    real_check = Strategy.dev_check
    Strategy.dev_check = recording_check  # this process only: the recorded checks are the point of it
    n = len(task.train)
    train = TrainConfig(until="plateau", lr=args.lr, batch_size=8, max_length=args.max_length,
                        eval_every=args.eval_every, patience=args.max_steps, min_delta=0.0, max_steps=args.max_steps, seed=args.seed,
                        dev_fraction=min(0.5, (args.pool + 0.5) / n), dev_max=args.pool, progress=False)
    recorded_step = len(earlier) + 1

    class EarlierTasksStop(ContinualConfig):
        """Earlier tasks stop under the regime's rule (patience, min_delta); the recorded one never stops."""

        def train_for(self, step: int, **changes):
            if step < recorded_step:
                changes = {"patience": args.patience, "min_delta": args.min_delta, **changes}
            return super().train_for(step, **changes)

    config = EarlierTasksStop(lora=LoraConfig(r=8, alpha=32), train=train)
    run_sequence(args.strategy, model, tokenizer, [*earlier, task], config)
    out = {"task": task.name, "after": args.after, "strategy": args.strategy, "seed": args.seed, "model": args.model,
           "dtype": args.dtype, "train_examples": n, "dev_pool": len(checks[0]["dev"]), "test_examples": len(checks[0]["test"]),
           "eval_every": args.eval_every, "max_steps": args.max_steps, "lr": args.lr, "checks": checks}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out))
    print(f"wrote {args.out} ({time.perf_counter() - start:.0f} s)")


# The rules replayed by default: today's (cb's real 25-example split), then each change alone and together.
# `n_dev` is the dev split a run would hold out; the other keys are TrainConfig's.
RULES = {
    "today (25 dev)": {"n_dev": 25},
    "dev floor 50": {"n_dev": 50},
    "patience 4 (25 dev)": {"n_dev": 25, "patience": 4},
}


def replay_rule(checks: list[dict], dev_ids: list[int], train) -> int:
    """The check index the rule restores, given which pool examples form the dev split (a recorded
    trajectory runs to max_steps, so replay_plateau.replay always reaches a verdict)."""
    from replay_plateau import replay

    curve = [[index * train.eval_every, sum(c["dev"][i] for i in dev_ids) / len(dev_ids)]
             for index, c in enumerate(checks)]
    return replay(curve, train)[2] // train.eval_every


def rules(args: argparse.Namespace) -> None:
    import random
    import statistics
    from collections import Counter

    from adapter_hub.data import load_task
    from adapter_hub.training import TrainConfig

    for path in args.trajectories:
        data = json.loads(Path(path).read_text())
        checks = data["checks"]
        test = [sum(c["test"]) / len(c["test"]) for c in checks]
        task = load_task(Path(args.data_root) / data["task"], max_train=512, max_test=data["test_examples"])
        majority = Counter(e.target for e in task.test).most_common(1)[0][1] / len(task.test)
        bar = max(test[0] + 0.25, majority + 0.15)
        after = f" after {', '.join(data.get('after') or [])}" if data.get("after") else ""
        print(f"\n{path}: {data['task']}{after} / {data['strategy']} / seed {data['seed']}; {data['train_examples']} "
              f"training examples ({data['dev_pool']} of them the dev pool); bar {bar:.3f} (base {test[0]:.3f}, "
              f"majority {majority:.3f})")
        print("test accuracy by check: " + " ".join(f"{t:.2f}" for t in test))
        print(f"{'rule':28s} {'P(under bar)':>13s} {'mean test':>10s} {'steps kept':>11s}")
        for name, spec in RULES.items():
            spec = dict(spec)
            n_dev = spec.pop("n_dev")
            train = TrainConfig(until="plateau", eval_every=data["eval_every"], max_steps=data["max_steps"],
                                min_delta=args.min_delta, patience=spec.pop("patience", args.patience), **spec)
            rng = random.Random(0)
            kept = [replay_rule(checks, rng.choices(range(data["dev_pool"]), k=n_dev), train)
                    for _ in range(args.draws)]
            accuracies = [test[k] for k in kept]
            under = sum(a < bar for a in accuracies) / len(accuracies)
            print(f"{name:28s} {under:13.3f} {statistics.mean(accuracies):10.3f} "
                  f"{statistics.mean(k * data['eval_every'] for k in kept):11.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="train one task to max_steps, keeping every check's dev and test results")
    rec.add_argument("task")
    rec.add_argument("--strategy", default="seq")
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--model", default="smollm2-135m")
    rec.add_argument("--dtype", default="bf16")
    rec.add_argument("--max-train", type=int, default=512)
    rec.add_argument("--max-test", type=int, default=100)
    rec.add_argument("--max-length", type=int, default=96)
    rec.add_argument("--lr", type=float, default=1e-3)
    rec.add_argument("--eval-every", type=int, default=16)
    rec.add_argument("--max-steps", type=int, default=240)
    rec.add_argument("--pool", type=int, default=64,
                     help="dev examples kept per check (rules draw their dev from them)")
    rec.add_argument("--after", nargs="*", default=[], metavar="TASK",
                     help="tasks (beside TASK's folder) learnt first, each stopped by the regime's rule")
    rec.add_argument("--patience", type=int, default=3, help="the regime's, for the earlier tasks")
    rec.add_argument("--min-delta", type=float, default=0.02, help="the regime's, for the earlier tasks")
    rec.add_argument("--out", required=True)
    rec.set_defaults(func=record)
    rep = sub.add_parser("rules", help="replay stopping rules on recorded trajectories")
    rep.add_argument("trajectories", nargs="+")
    rep.add_argument("--data-root", default="../shared/data/cl_benchmark")
    rep.add_argument("--draws", type=int, default=2000, help="dev splits drawn per rule")
    rep.add_argument("--min-delta", type=float, default=0.02, help="the regime config's")
    rep.add_argument("--patience", type=int, default=3, help="the regime config's")
    rep.set_defaults(func=rules)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
