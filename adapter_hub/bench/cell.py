"""Running one benchmark cell: train a strategy through the task order with a seed (every state
registered, resumable), then score every state on every task in one routed pass per task, sharing
what the run has already scored. `CellRunner` holds what a run's cells share: the model, the tasks,
the base model's scores, the score cache, the routing features of the test inputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from adapter_hub.bench.cells import pack, unpack
from adapter_hub.bench.config import BenchConfig, StrategyEntry
from adapter_hub.bench.provenance import code_version, machine
from adapter_hub.bench.summary import summarise
from adapter_hub.continual import STRATEGIES, ContinualConfig
from adapter_hub.continual.per_task import restore_router
from adapter_hub.continual.runner import run_sequence
from adapter_hub.evaluation import Routed, TaskScore, evaluate_states
from adapter_hub.evaluation.router import (
    Prototype,
    features,
    nearest_prototype,
    router_accuracy,
)
from adapter_hub.evaluation.states import adapters_of


class CellRunner:
    """The pieces of one benchmark run that its cells share: model, tasks, cached test features."""

    def __init__(self, registry, name: str, config: BenchConfig, model, tokenizer, tasks, results, echo) -> None:
        self.registry, self.name, self.config = registry, name, config
        self.model, self.tokenizer, self.tasks = model, tokenizer, tasks
        self.results, self.echo = results, echo
        self.eval = config.eval_config()
        self._features: dict[str, Any] = {}
        scoring = {k: v for k, v in dataclasses.asdict(self.eval).items() if k != "progress"}  # display only
        settings = {"eval": scoring, "model": config.base_model, "dtype": config.dtype}
        self._eval_id = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    def score_base(self) -> None:
        if "base_by_task" in self.results:
            return
        start = time.perf_counter()
        scores = self._score({"base": None}, self.tasks)
        self.results["base"] = [scores["base"][t.name].accuracy for t in self.tasks]
        self.results["base_by_task"] = dict(zip(self.results["tasks"], self.results["base"]))
        # per example too: whether a task was learnt at all is the diagonal against these, resampled
        self.results["base_correct"] = {t.name: pack(scores["base"][t.name].correct) for t in self.tasks}
        for name in self.eval.all_scorers[1:]:
            also = self.results.setdefault("base_also", {})[name] = {}
            for t in self.tasks:
                other = scores["base"][t.name].also[name]
                also[t.name] = {"accuracy": other.accuracy, "correct": pack(other.correct)}
        self.results["base_seconds"] = round(time.perf_counter() - start, 2)
        self.results["eval_seconds"] += self.results["base_seconds"]

    def cell(self, entry: StrategyEntry, key: str, seed: int, order: int, tasks, hook,
             before_register: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Train one strategy through `tasks` with `seed` (resuming registered steps), then evaluate it.
        `before_register(step)` may raise to stop before a step is registered (executors' lease check)."""
        single = key == entry.label
        self.echo(f"[{key}] training on {len(tasks)} tasks ...")
        cl = ContinualConfig(self.config.lora, dataclasses.replace(self.config.train, seed=seed))
        seq = run_sequence(entry.name, self.model, self.tokenizer, tasks, cl, params=entry.params,
                           registry=self.registry, run=f"{self.name}/{entry.label}" if single else f"{self.name}/{key}",
                           on_step=hook, share_steps=self.config.share_work, before_register=before_register)
        for i, (result, ref, seconds) in enumerate(zip(seq.steps, seq.refs, seq.seconds), start=1):
            self.registry.runs.record_step(self.name, strategy=key, step=i, task=result.task, version=ref,
                                          seconds=seconds or None)
        cell = {"seed": seed, "order": order, "tasks": [t.name for t in tasks], "states": seq.refs, "code": code_version(),
                "machine": machine(next(self.model.parameters()).device),
                "train_seconds": round(sum(seq.seconds), 2), "resumed_steps": seq.resumed,
                "step_seconds": [round(s, 2) for s in seq.seconds],
                "shared_steps": sum(bool(r.train and r.train.reused) for r in seq.steps),
                "losses": [r.train.summary() if r.train and (r.train.losses or r.train.reused) else r.recorded.get("loss")
                           for r in seq.steps]}
        self.echo(f"[{key}] evaluating {len(tasks)} states on {len(tasks)} tasks ...")
        start = time.perf_counter()
        cell.update(self._evaluate(entry, STRATEGIES[entry.name].per_task_states, seq, tasks))
        cell["eval_seconds"] = round(time.perf_counter() - start, 2)
        self.results["eval_seconds"] = round(self.results["eval_seconds"] + cell["eval_seconds"], 2)
        return cell

    def _evaluate(self, entry: StrategyEntry, per_task: bool, seq, tasks) -> dict[str, Any]:
        T = len(tasks)
        router = entry.params.get("router", "oracle") if per_task else None
        states: dict[str, Any] = {}
        routes: dict[int, dict[str, list[int]]] = {}  # step -> task -> the step whose adapter each example gets
        only_next = self.config.future_tasks == "next"
        wanted: dict[str, set[str]] | None = {} if only_next else None  # state -> the tasks it is scored on
        for i in range(1, T + 1):
            oracle = {t.name: (seq.steps[j].state if j < i else None) for j, t in enumerate(tasks)}
            if router in ("prototype", "analytic"):
                routes[i] = {t.name: self._routes(t, seq, i, router) for t in tasks}
                states[f"@{i}"] = Routed({name: [seq.steps[c].state for c in chosen] for name, chosen in routes[i].items()})
                states[f"oracle@{i}"] = oracle
            else:
                states[f"@{i}"] = oracle if per_task else seq.steps[i - 1].state
            if wanted is not None:  # the i tasks learnt and the next one
                for label in (f"@{i}", f"oracle@{i}"):
                    wanted[label] = {t.name for t in tasks[:i + 1]}
        scores = self._score(states, tasks, wanted)

        def accuracy(label: str, task) -> float | None:
            found = scores[label].get(task.name)
            return None if found is None else found.accuracy

        out: dict[str, Any] = _matrices(scores, tasks, lambda s: s)
        extra = self.eval.all_scorers[1:]
        if extra:  # the same states and examples, scored the other ways
            out["also"] = {name: _matrices(scores, tasks, lambda s, name=name: s.also[name]) for name in extra}
        for i, ref in enumerate(seq.refs, start=1):
            for j, t in enumerate(tasks):
                s = scores[f"@{i}"].get(t.name)
                if s is None:  # not scored (future_tasks = "next")
                    continue
                if not per_task:  # the state alone on every task, by every scorer
                    for one in (s, *s.also.values()):
                        self.registry.record_evaluation(ref, task=t.name, metric="accuracy", value=one.accuracy,
                                                        dataset=t.fingerprint(), scorer=one.scorer, run=self.name)
                elif j == i - 1:  # per_task: step i's adapter, scored on its own task with the task id given
                    own = scores[f"oracle@{i}" if router in ("prototype", "analytic") else f"@{i}"][t.name]
                    self.registry.record_evaluation(ref, task=t.name, metric="accuracy", value=own.accuracy,
                                                    dataset=t.fingerprint(), scorer=own.scorer, run=self.name,
                                                    context=f"{entry.name}: the task's own adapter (task id given)")
        if router in ("prototype", "analytic"):
            oracle_R = [[accuracy(f"oracle@{i}", t) for t in tasks] for i in range(1, T + 1)]
            routed_right = [router_accuracy(tasks[:i], routes[i]) for i in range(1, T + 1)]
            acc, oracle_acc = sum(out["matrix"][-1]) / T, sum(oracle_R[-1]) / T
            out["router"] = {"name": router, "accuracy": routed_right, "oracle_matrix": oracle_R,
                             "oracle_acc": oracle_acc, "acc_over_oracle": acc / oracle_acc if oracle_acc else None}
        return out

    def _score(self, states: dict[str, Any], tasks, wanted: dict[str, set[str]] | None = None
               ) -> dict[str, dict[str, Any]]:
        """evaluate_states, task by task, on the (state, task) pairs `wanted` names (None: all), except
        that with share_work a pair this run has scored before — the same adapter content (registry
        digest) or the bare base model, on the same test examples with the same eval settings — is read
        from the run's score cache instead of being scored again."""
        if not self.config.share_work and wanted is None:
            return evaluate_states(self.model, self.tokenizer, tasks, states, self.eval)
        cache = self.results.setdefault("score_cache", {}) if self.config.share_work else {}
        out: dict[str, dict[str, Any]] = {label: {} for label in states}
        digests: dict[int, str] = {}  # id(adapter) -> weights digest; the states (so the ids) live till we return
        for task in tasks:
            todo = {}
            for label, state in states.items():
                if wanted is not None and task.name not in wanted.get(label, ()):
                    continue
                key = self._score_key(state, task, digests) if self.config.share_work else None
                if key is not None and key in cache:
                    out[label][task.name] = _from_cache(cache[key], task.name, label)
                else:
                    todo[label] = (state, key)
            if not todo:
                continue
            scored = evaluate_states(self.model, self.tokenizer, [task], {k: v for k, (v, _) in todo.items()},
                                     self.eval)
            for label, (_, key) in todo.items():
                s = out[label][task.name] = scored[label][task.name]
                if key is not None:
                    cache[key] = _to_cache(s)
        return out

    def _score_key(self, state, task, digests: dict[int, str]) -> str | None:  # None: routed, not cacheable
        if isinstance(state, Routed):
            return None
        adapter = adapters_of(state, task.name)[0]
        if adapter is None:
            content = "base"
        else:  # by weights: identical states of two strategies differ in their files' provenance
            content = digests.get(id(adapter)) or digests.setdefault(id(adapter), adapter.weights_digest())
        return f"{content}|{task.fingerprint()}|{self._eval_id}"

    def _test_features(self, task):
        if task.name not in self._features:
            self._features[task.name] = features(self.model, self.tokenizer, [ex.text for ex in task.test],
                                                 max_length=self.eval.length)
        return self._features[task.name]

    def _routes(self, task, seq, learnt: int, router: str) -> list[int]:
        """The step (0-based) whose adapter each of task's test examples is sent to, after `learnt` tasks."""
        if router == "analytic":
            return restore_router(seq.steps[learnt - 1]).route(self._test_features(task).double().numpy())
        prototypes = [Prototype.from_dict(seq.steps[j].info["prototype"]) for j in range(learnt)]
        return nearest_prototype(self._test_features(task), prototypes)

    def summarise(self, final: bool = False) -> None:
        summarise(self.results, final)


def _matrices(scores: dict[str, dict[str, TaskScore]], tasks, pick: Callable[[TaskScore], TaskScore]) -> dict[str, Any]:
    """A cell's accuracy matrix ("@i" = the state after task i) and its packed per-example correctness
    (rows up to the diagonal: what intervals resample), for the scorer `pick` chooses."""
    T = len(tasks)
    found = [[scores[f"@{i}"].get(t.name) for t in tasks] for i in range(1, T + 1)]
    return {"matrix": [[None if s is None else pick(s).accuracy for s in row] for row in found],
            "correct": [[pack(pick(s).correct) if j < i else None for j, s in enumerate(row)]
                        for i, row in enumerate(found, start=1)]}


def _to_cache(s: TaskScore) -> dict[str, Any]:
    return {"accuracy": s.accuracy, "scorer": s.scorer, "truncated": s.truncated, "correct": pack(s.correct),
            "also": {name: _to_cache(other) for name, other in s.also.items()}}


def _from_cache(hit: dict[str, Any], task: str, label: str) -> TaskScore:
    bits = unpack(hit["correct"])
    return TaskScore(task, label, hit["scorer"], hit["accuracy"], len(bits), None, hit["truncated"], [], bits,
                     {name: _from_cache(other, task, label) for name, other in (hit.get("also") or {}).items()})
