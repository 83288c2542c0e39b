"""Continual-learning benchmark runs from a config: every strategy on the same tasks, model and budget.

A run: (1) train each strategy through the task sequence (continual.runner: every state registered,
resumable); (2) score every state of every strategy, plus the bare base model, on every task —
one routed pass per task for all of them (evaluate.evaluate_states); (3) build each strategy's accuracy
matrix R and its metrics; (4) store config, status, matrices, metrics, timings and the version behind
every cell in the registry (bench_run / bench_step / evaluation). An interrupted run resumes where it
stopped: registered steps are reloaded, the evaluation is redone (it is deterministic).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from adapter_hub.cells import pack, plan
from adapter_hub.config import LoraConfig
from adapter_hub.evaluate import EvalConfig
from adapter_hub.train import TrainConfig
from adapter_hub.typed import build, check_value


@dataclass
class StrategySpec:
    name: str  # a continual.STRATEGIES name
    label: str = ""  # unique within the run (default: the name); lets one strategy appear twice
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.label = self.label or self.name


@dataclass
class BenchConfig:
    tasks: list[str]  # task specs in order: builtin:NAME, a folder, or a name under data_root
    strategies: list[StrategySpec]
    name: str | None = None  # run name (default: from the config file name and the time)
    base_model: str = "smollm2-135m"
    data_root: str | None = None  # where named tasks live (e.g. the CL_Benchmark folder); CLI --data-root
    max_train: int | None = None  # per task, seeded sample: keeps CPU runs to minutes
    max_test: int | None = None
    seed: int = 0  # samples max_train/max_test (the same test examples in every cell) and is the default seed
    # Training seeds: one run cell per (strategy, seed, order); two or more give intervals over seeds.
    seeds: list[int] = field(default_factory=list)  # empty: [seed]
    # Task orders, each a permutation of `tasks` (as written there); empty: the order of `tasks`.
    orders: list[list[str]] = field(default_factory=list)
    device: str = "auto"
    dtype: str = "auto"  # the base model's: bf16 on a CUDA device that supports it, else fp32 (models.resolve_dtype)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # A step some cell already trained (same content key: seq's, replay's, mtl's, per_task's first
    # steps...) is reused, and a state already scored on a task is not scored again; both are
    # bit-identical to doing the work again (continual.step_cache), so off only to measure the saving.
    share_work: bool = True
    # Tasks not yet learnt that each state is scored on: None (= "all") scores every one, the full
    # matrix (a task's accuracy before it is learnt, in the plots); "next" only the next task, which is
    # all the metrics need (FWT reads the superdiagonal): (T−1)(T−2)/2 of T² scorings fewer (3 of 16
    # at T = 4, 91 of 225 at T = 15). None rather than "all" so that runs started before it resume.
    future_tasks: str | None = None

    def __post_init__(self) -> None:
        if self.future_tasks not in (None, "all", "next"):
            raise ValueError(f"future_tasks must be 'all' or 'next', got {self.future_tasks!r}")
        if self.dtype not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"dtype must be auto, fp32, bf16 or fp16, got {self.dtype!r}")
        for key in ("max_train", "max_test"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} must be >= 1 (or left out for all examples), got {value}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        for order in self.orders:
            if sorted(order) != sorted(self.tasks):
                raise ValueError(f"every entry of orders must list the same tasks as tasks = {self.tasks} in some "
                                 f"order, got {order}")
        if len({tuple(o) for o in self.orders}) != len(self.orders):
            raise ValueError("orders must be distinct")

    def eval_config(self) -> EvalConfig:
        """[eval] with max_length resolved: prompts are cut as training cut them unless it says otherwise."""
        return dataclasses.replace(self.eval, max_length=self.eval.max_length or self.train.max_length)

    def cell_seeds(self) -> list[int]:
        return list(self.seeds) or [self.seed]

    def cell_orders(self) -> list[list[str]]:
        return [list(o) for o in self.orders] or [list(self.tasks)]
    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "BenchConfig":
        """Check every key, type and range (naming the key) before anything is built or written."""
        from adapter_hub.continual import STRATEGIES

        raw = dict(raw)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown bench config key(s) {unknown}; known: {sorted(known)}")
        if not raw.get("tasks"):
            raise ValueError("a bench config needs tasks = [...] (at least one)")
        check_value(raw["tasks"], list[str], "bench config key tasks")
        if not raw.get("strategies"):
            raise ValueError("a bench config needs at least one [[strategies]] entry")
        check_value(raw["strategies"], list[Union[dict, str]], "bench config key strategies")
        strategies = []
        for entry in raw.pop("strategies"):
            entry = dict(entry) if isinstance(entry, dict) else {"name": entry}
            name, label = entry.pop("name", None), entry.pop("label", "")
            if not name:
                raise ValueError(f"a [[strategies]] entry needs a name: {entry}")
            check_value(label, str, f"[[strategies]] {name} label")
            if name not in STRATEGIES:
                raise ValueError(f"[[strategies]] unknown strategy {name!r}; available: {', '.join(STRATEGIES)}")
            STRATEGIES[name].check_params(entry, where=f"[[strategies]] {label or name}")
            strategies.append(StrategySpec(name, label, entry))
        labels = [s.label for s in strategies]
        if len(set(labels)) != len(labels):
            raise ValueError(f"strategy labels must be unique (add label = ...): {labels}")
        sections = {"lora": LoraConfig, "train": TrainConfig, "eval": EvalConfig}
        built = {key: build(kind, raw.pop(key, {}), f"[{key}]") for key, kind in sections.items()}
        return build(cls, {"strategies": strategies, **built, **raw}, "bench config")

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> "BenchConfig":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_tasks(config: BenchConfig):
    from adapter_hub.data import load_tasks as load

    specs = []
    for spec in config.tasks:
        if spec.startswith(("builtin:", "hf:")) or Path(spec).expanduser().is_absolute() or config.data_root is None:
            specs.append(spec)
        else:
            specs.append(str(Path(config.data_root).expanduser() / spec))
    return load(specs, max_train=config.max_train, max_test=config.max_test, seed=config.seed)


def config_changes(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'key: old -> new' for every setting that differs (nested keys dotted; the run's name excluded).
    A setting the stored config does not have at all (added to adapter-hub after the run started)
    counts as unchanged when it is unset or empty now: a newer version can resume an older run.
    Settings that never change the stored numbers (NOT_RESULTS) never count."""
    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(d, dict):
            return {k: v for key, value in d.items() if not (prefix == "" and key == "name")
                    for k, v in flat(value, f"{prefix}{key}.").items()}
        return {prefix[:-1]: d}

    import json

    old, new = flat(json.loads(json.dumps(stored))), flat(json.loads(json.dumps(current)))
    added_and_empty = {k for k, v in new.items() if k not in old and v in (None, [], {}, "")}
    return [f"{k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k not in added_and_empty and k not in NOT_RESULTS]


# Settings that change what a run shows or how fast it gets there, never the numbers it stores.
NOT_RESULTS = {"train.progress", "share_work"}


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """adapter-hub's version, with the git commit (and "-dirty") when it runs from a checkout. Stored
    with every cell: a run resumed over several sessions shows which code produced which cells."""
    import subprocess

    import adapter_hub

    here = Path(adapter_hub.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return adapter_hub.__version__
    return f"{adapter_hub.__version__}+g{commit}{'-dirty' if dirty else ''}"


def free_run_name(registry, name: str) -> str:
    """`name` if no run has it, else name-2, name-3, ... (for `bench run --new-run`)."""
    from registry.errors import RefError

    for i in range(1, 10_000):
        candidate = name if i == 1 else f"{name}-{i}"
        try:
            registry.get_run(candidate)
        except RefError:
            return candidate
    raise ValueError(f"no free run name like {name!r}")


EXECUTORS = ("local", "ray")


def run_bench(config: BenchConfig, registry, *, name: str | None = None, resume: bool = True,
              echo: Callable[[str], None] = print, on_step: Callable | None = None, executor: str = "local",
              address: str | None = None, max_parallel: int | None = None):
    """Run (or resume) a benchmark; returns the registry's RunInfo with results filled in.

    Cells run one after the other (executor "local", in this process) or as Ray tasks in parallel
    (executor "ray", adapter_hub.executors: `address` names the cluster, `max_parallel` caps the cells
    in flight): train (every state registered), evaluate on every task, store the cell's matrix,
    metrics and per-example correctness with the run, so `bench show` sees results as they come. A
    resumed run keeps the cells already evaluated and resumes the one it stopped in."""
    from adapter_hub.continual import STRATEGIES
    from adapter_hub.models import dtype_name, load_base_model, load_tokenizer, resolve_dtype
    from adapter_hub.train import resolve_device
    from registry.errors import RefError

    for spec in config.strategies:  # a BenchConfig built in Python is checked here, before the run row
        if spec.name not in STRATEGIES:
            raise ValueError(f"unknown strategy {spec.name!r}; available: {', '.join(STRATEGIES)}")
        STRATEGIES[spec.name].check_params(spec.params, where=f"strategy {spec.label}")
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor == "local" and (address is not None or max_parallel is not None):
        raise ValueError("--address and --max-parallel are for --executor ray")
    if max_parallel is not None and max_parallel < 1:
        raise ValueError(f"max_parallel must be at least 1, got {max_parallel}")
    if executor == "ray":
        from adapter_hub.executors import require_ray

        require_ray()  # before anything is written
    name = name or config.name or f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    tasks = load_tasks(config)  # data errors before anything is written
    by_spec = dict(zip(config.tasks, tasks))
    try:
        existing = registry.get_run(name)
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
        registry.create_run(name, config.to_dict())
    orders = config.cell_orders()
    registry.update_run(name, status="running")  # a resumed run is running again, not "failed"
    if executor == "ray":
        from adapter_hub.executors import run_on_ray

        results = _results_skeleton(config, tasks, results)
        return run_on_ray(config, registry, name, results, address=address, max_parallel=max_parallel, echo=echo)
    run = None
    try:
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        model = load_base_model(config.base_model, device=device, dtype=dtype)  # a failure here marks the run failed
        tokenizer = load_tokenizer(config.base_model)
        results = _results_skeleton(config, tasks, results, device=str(device), dtype=dtype_name(dtype))
        run = _Run(registry, name, config, model, tokenizer, tasks, results, echo)
        run.score_base()
        specs = {spec.label: spec for spec in config.strategies}
        for planned in plan(config):
            entry = results["strategies"][planned.label]
            if (entry["cells"].get(planned.key) or {}).get("matrix") is not None:
                continue  # evaluated before the interruption: kept as stored
            hook = None if on_step is None else (lambda r, ref, label=planned.label: on_step(label, r, ref))
            entry["cells"][planned.key] = run.cell(specs[planned.label], planned.key, planned.seed, planned.order,
                                                   [by_spec[s] for s in orders[planned.order]], hook)
            run.summarise()
            registry.update_run(name, status="running", results=results)
        run.summarise(final=True)
        registry.update_run(name, status="done", results=results)
    except BaseException:
        if run is not None:
            run.summarise()
        registry.update_run(name, status="failed", results=results)
        raise
    return registry.get_run(name)


def _results_skeleton(config: BenchConfig, tasks, results: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """A new run's results (or a resumed run's, as stored) with an entry for every strategy of the config.
    `extra` records where the run computes (the local executor's device and dtype)."""
    seeds, orders = config.cell_seeds(), config.cell_orders()
    if results is None:
        by_spec = dict(zip(config.tasks, tasks))
        results = {"tasks": [t.name for t in tasks], "scorer": config.eval.scorer, **extra, "seeds": seeds,
                   "orders": [[by_spec[s].name for s in o] for o in orders], "strategies": {}, "eval_seconds": 0.0}
    for spec in config.strategies:
        entry = results["strategies"].setdefault(spec.label, {"strategy": spec.name, "params": spec.params,
                                                              "cells": {}})
        entry["cells_total"] = len(seeds) * len(orders)
    return results


def _router_accuracy(learnt, routes: dict[str, list[int]]) -> float:
    """Fraction of the learnt tasks' test examples sent to their own task's adapter."""
    hits = sum(sum(c == j for c in routes[task.name]) for j, task in enumerate(learnt))
    return hits / sum(len(routes[task.name]) for task in learnt)


class _Run:
    """The pieces of one benchmark run that its cells share: model, tasks, cached test features."""

    def __init__(self, registry, name: str, config: BenchConfig, model, tokenizer, tasks, results, echo) -> None:
        self.registry, self.name, self.config = registry, name, config
        self.model, self.tokenizer, self.tasks = model, tokenizer, tasks
        self.results, self.echo = results, echo
        self.eval = config.eval_config()
        self._features: dict[str, Any] = {}
        import hashlib
        import json

        settings = {"eval": dataclasses.asdict(self.eval), "model": config.base_model, "dtype": config.dtype}
        self._eval_id = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    def score_base(self) -> None:
        if "base_by_task" in self.results:
            return
        start = time.perf_counter()
        scores = self._score({"base": None}, self.tasks)
        self.results["base"] = [scores["base"][t.name].accuracy for t in self.tasks]
        self.results["base_by_task"] = dict(zip(self.results["tasks"], self.results["base"]))
        self.results["base_seconds"] = round(time.perf_counter() - start, 2)
        self.results["eval_seconds"] += self.results["base_seconds"]

    def cell(self, spec: StrategySpec, key: str, seed: int, order: int, tasks, hook,
             before_register: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Train one strategy through `tasks` with `seed` (resuming registered steps), then evaluate it.
        `before_register(step)` may raise to stop before a step is registered (executors' lease check)."""
        from adapter_hub.continual import STRATEGIES, ContinualConfig
        from adapter_hub.continual.runner import run_sequence

        single = key == spec.label
        self.echo(f"[{key}] training on {len(tasks)} tasks ...")
        cl = ContinualConfig(self.config.lora, self.config.train, seed)
        seq = run_sequence(spec.name, self.model, self.tokenizer, tasks, cl, params=spec.params,
                           registry=self.registry, run=f"{self.name}/{spec.label}" if single else f"{self.name}/{key}",
                           on_step=hook, share_steps=self.config.share_work, before_register=before_register)
        for i, (result, ref, seconds) in enumerate(zip(seq.steps, seq.refs, seq.seconds), start=1):
            self.registry.record_run_step(self.name, strategy=key, step=i, task=result.task, version=ref,
                                          seconds=seconds or None)
        cell = {"seed": seed, "order": order, "tasks": [t.name for t in tasks], "states": seq.refs, "code": code_version(),
                "train_seconds": round(sum(seq.seconds), 2), "resumed_steps": seq.resumed,
                "step_seconds": [round(s, 2) for s in seq.seconds],
                "shared_steps": sum(bool(r.train and r.train.reused) for r in seq.steps),
                "losses": [r.train.summary() if r.train and (r.train.losses or r.train.reused) else r.recorded.get("loss")
                           for r in seq.steps]}
        self.echo(f"[{key}] evaluating {len(tasks)} states on {len(tasks)} tasks ...")
        start = time.perf_counter()
        cell.update(self._evaluate(spec, STRATEGIES[spec.name].per_task_states, seq, tasks))
        cell["eval_seconds"] = round(time.perf_counter() - start, 2)
        self.results["eval_seconds"] = round(self.results["eval_seconds"] + cell["eval_seconds"], 2)
        return cell

    def _evaluate(self, spec: StrategySpec, per_task: bool, seq, tasks) -> dict[str, Any]:
        from adapter_hub.evaluate import Routed

        T = len(tasks)
        router = spec.params.get("router", "oracle") if per_task else None
        states: dict[str, Any] = {}
        routes: dict[int, dict[str, list[int]]] = {}  # step -> task -> the step whose adapter each example gets
        only_next = self.config.future_tasks == "next"
        wanted: dict[str, set[str]] | None = {} if only_next else None  # state -> the tasks it is scored on
        for i in range(1, T + 1):
            oracle = {t.name: (seq.steps[j].state if j < i else None) for j, t in enumerate(tasks)}
            if router == "prototype":
                routes[i] = {t.name: self._routes(t, seq, i) for t in tasks}
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

        out: dict[str, Any] = {
            "matrix": [[accuracy(f"@{i}", t) for t in tasks] for i in range(1, T + 1)],
            "correct": [[pack(scores[f"@{i}"][t.name].correct) if j < i else None for j, t in enumerate(tasks)]
                        for i in range(1, T + 1)],
        }
        for i, ref in enumerate(seq.refs, start=1):
            for j, t in enumerate(tasks):
                s = scores[f"@{i}"].get(t.name)
                if s is None:  # not scored (future_tasks = "next")
                    continue
                if not per_task:  # the state alone on every task
                    self.registry.record_evaluation(ref, task=t.name, metric="accuracy", value=s.accuracy,
                                                    dataset=t.fingerprint(), scorer=s.scorer, run=self.name)
                elif j == i - 1:  # per_task: step i's adapter, scored on its own task with the task id given
                    own = scores[f"oracle@{i}" if router == "prototype" else f"@{i}"][t.name]
                    self.registry.record_evaluation(ref, task=t.name, metric="accuracy", value=own.accuracy,
                                                    dataset=t.fingerprint(), scorer=own.scorer, run=self.name,
                                                    context=f"{spec.name}: the task's own adapter (task id given)")
        if router == "prototype":
            oracle_R = [[accuracy(f"oracle@{i}", t) for t in tasks] for i in range(1, T + 1)]
            routed_right = [_router_accuracy(tasks[:i], routes[i]) for i in range(1, T + 1)]
            acc, oracle_acc = sum(out["matrix"][-1]) / T, sum(oracle_R[-1]) / T
            out["router"] = {"name": "prototype", "accuracy": routed_right, "oracle_matrix": oracle_R,
                             "oracle_acc": oracle_acc, "acc_over_oracle": acc / oracle_acc if oracle_acc else None}
        return out

    def _score(self, states: dict[str, Any], tasks, wanted: dict[str, set[str]] | None = None
               ) -> dict[str, dict[str, Any]]:
        """evaluate_states, task by task, on the (state, task) pairs `wanted` names (None: all), except
        that with share_work a pair this run has scored before — the same adapter content (registry
        digest) or the bare base model, on the same test examples with the same eval settings — is read
        from the run's score cache instead of being scored again."""
        from adapter_hub.cells import unpack
        from adapter_hub.evaluate import TaskScore, evaluate_states

        if not self.config.share_work and wanted is None:
            return evaluate_states(self.model, self.tokenizer, tasks, states, self.eval)
        cache = self.results.setdefault("score_cache", {}) if self.config.share_work else {}
        out: dict[str, dict[str, Any]] = {label: {} for label in states}
        digests: dict[int, str] = {}  # id(adapter) -> weights digest; the states (so the ids) live till we return
        for task in tasks:
            todo = {}
            for label, spec in states.items():
                if wanted is not None and task.name not in wanted.get(label, ()):
                    continue
                key = self._score_key(spec, task, digests) if self.config.share_work else None
                if key is not None and key in cache:
                    hit = cache[key]
                    bits = unpack(hit["correct"])
                    out[label][task.name] = TaskScore(task.name, label, hit["scorer"], hit["accuracy"], len(bits),
                                                      None, hit["truncated"], [], bits)
                else:
                    todo[label] = (spec, key)
            if not todo:
                continue
            scored = evaluate_states(self.model, self.tokenizer, [task], {k: v for k, (v, _) in todo.items()},
                                     self.eval)
            for label, (_, key) in todo.items():
                s = out[label][task.name] = scored[label][task.name]
                if key is not None:
                    cache[key] = {"accuracy": s.accuracy, "scorer": s.scorer, "truncated": s.truncated,
                                  "correct": pack(s.correct)}
        return out

    def _score_key(self, spec, task, digests: dict[int, str]) -> str | None:  # None: routed, not cacheable
        from adapter_hub.evaluate import Routed, adapters_of

        if isinstance(spec, Routed):
            return None
        adapter = adapters_of(spec, task.name)[0]
        if adapter is None:
            content = "base"
        else:  # by weights: identical states of two strategies differ in their files' provenance
            content = digests.get(id(adapter)) or digests.setdefault(id(adapter), adapter.weights_digest())
        return f"{content}|{task.fingerprint()}|{self._eval_id}"

    def _test_features(self, task):
        from adapter_hub.routing import features

        if task.name not in self._features:
            self._features[task.name] = features(self.model, self.tokenizer, [ex.text for ex in task.test],
                                                 max_length=self.eval.length)
        return self._features[task.name]

    def _routes(self, task, seq, learnt: int) -> list[int]:
        """The step (0-based) whose adapter each of task's test examples is sent to, after `learnt` tasks."""
        from adapter_hub.routing import Prototype, route

        prototypes = [Prototype.from_dict(seq.steps[j].info["prototype"]) for j in range(learnt)]
        return route(self._test_features(task), prototypes)

    def summarise(self, final: bool = False) -> None:
        summarise(self.results, final)


def summarise(results: dict[str, Any], final: bool = False) -> None:
    """Recompute every strategy's summary, intervals and the differences against the baseline, in place."""
    from adapter_hub import cells

    strategies = results["strategies"]
    names = {label: entry["strategy"] for label, entry in strategies.items()}
    references = cells.references_of(strategies, names)
    n_boot = 2000 if final else 400  # intermediate summaries only need to be indicative
    for entry in strategies.values():
        cells.aggregate(entry, results["tasks"], results.get("base_by_task", {}), references, n_boot)
    baseline = cells.default_baseline(strategies, names)
    if baseline is not None:
        results["baseline"] = baseline
        results["differences"] = cells.differences(strategies, results["tasks"], baseline, n_boot)
