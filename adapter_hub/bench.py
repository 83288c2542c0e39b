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
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

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
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"  # the base model's: bf16 on a CUDA device that supports it, else fp32 (models.resolve_dtype)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"dtype must be auto, fp32, bf16 or fp16, got {self.dtype!r}")
        for key in ("max_train", "max_test"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} must be >= 1 (or left out for all examples), got {value}")

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
    """'key: old -> new' for every setting that differs (nested keys dotted; the run's name excluded)."""
    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(d, dict):
            return {k: v for key, value in d.items() if not (prefix == "" and key == "name")
                    for k, v in flat(value, f"{prefix}{key}.").items()}
        return {prefix[:-1]: d}

    import json

    old, new = flat(json.loads(json.dumps(stored))), flat(json.loads(json.dumps(current)))
    return [f"{k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


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


def _state_key(label: str, step: int) -> str:
    return f"{label}@{step}"


def run_bench(config: BenchConfig, registry, *, name: str | None = None, resume: bool = True,
              echo: Callable[[str], None] = print, on_step: Callable | None = None):
    """Run (or resume) a benchmark; returns the registry's RunInfo with results filled in."""
    from adapter_hub.continual import STRATEGIES, ContinualConfig
    from adapter_hub.continual.runner import run_sequence
    from adapter_hub.evaluate import evaluate_states
    from adapter_hub.metrics import summarize
    from adapter_hub.models import dtype_name, load_base_model, load_tokenizer, resolve_dtype
    from adapter_hub.train import resolve_device
    from registry.errors import RefError

    for spec in config.strategies:  # a BenchConfig built in Python is checked here, before the run row
        if spec.name not in STRATEGIES:
            raise ValueError(f"unknown strategy {spec.name!r}; available: {', '.join(STRATEGIES)}")
        STRATEGIES[spec.name].check_params(spec.params, where=f"strategy {spec.label}")
    name = name or config.name or f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    tasks = load_tasks(config)  # data errors before anything is written
    try:
        existing = registry.get_run(name)
    except RefError:
        existing = None
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
    else:
        registry.create_run(name, config.to_dict())
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    model = load_base_model(config.base_model, device=device, dtype=dtype)
    tokenizer = load_tokenizer(config.base_model)
    cl = ContinualConfig(config.lora, config.train, config.seed)
    results: dict[str, Any] = {"tasks": [t.name for t in tasks], "scorer": config.eval.scorer, "strategies": {},
                               "device": str(device), "dtype": dtype_name(dtype)}
    states: dict[str, Any] = {"base": None}
    try:
        for spec in config.strategies:
            echo(f"[{spec.label}] training on {len(tasks)} tasks ...")
            hook = None if on_step is None else (lambda result, ref, label=spec.label: on_step(label, result, ref))
            seq = run_sequence(spec.name, model, tokenizer, tasks, cl, params=spec.params, registry=registry,
                               run=f"{name}/{spec.label}", on_step=hook)
            for i, (result, ref, seconds) in enumerate(zip(seq.steps, seq.refs, seq.seconds), start=1):
                registry.record_run_step(name, strategy=spec.label, step=i, task=result.task, version=ref,
                                         seconds=seconds if i > seq.resumed else None)
                if STRATEGIES[spec.name].per_task_states:  # task j with its own adapter; base before it is learnt
                    states[_state_key(spec.label, i)] = {t.name: (seq.steps[j].state if j < i else None)
                                                         for j, t in enumerate(tasks)}
                else:
                    states[_state_key(spec.label, i)] = result.state
            results["strategies"][spec.label] = {
                "strategy": spec.name, "params": spec.params, "states": seq.refs,
                "train_seconds": round(sum(seq.seconds), 2), "resumed_steps": seq.resumed,
                "losses": [r.train.summary() if r.train and r.train.losses else None for r in seq.steps],
            }
        echo(f"evaluating {len(states)} states on {len(tasks)} tasks (one routed pass per task) ...")
        start = time.perf_counter()
        scores = evaluate_states(model, tokenizer, tasks, states, config.eval)
        results["eval_seconds"] = round(time.perf_counter() - start, 2)
        base = [scores["base"][t.name].accuracy for t in tasks]
        results["base"] = base
        for spec in config.strategies:
            entry = results["strategies"][spec.label]
            R = [[scores[_state_key(spec.label, i)][t.name].accuracy for t in tasks] for i in range(1, len(tasks) + 1)]
            entry["matrix"] = R
            for i, ref in enumerate(entry["states"], start=1):
                for j, t in enumerate(tasks):
                    s = scores[_state_key(spec.label, i)][t.name]
                    if not STRATEGIES[spec.name].per_task_states:  # the state alone on every task
                        registry.record_evaluation(ref, task=t.name, metric="accuracy", value=s.accuracy,
                                                   dataset=t.fingerprint(), scorer=s.scorer, run=name)
                    elif j == i - 1:  # per_task: step i's adapter is only ever used on its own task
                        registry.record_evaluation(ref, task=t.name, metric="accuracy", value=s.accuracy,
                                                   dataset=t.fingerprint(), scorer=s.scorer, run=name,
                                                   context=f"{spec.name}: the task's own adapter (task id given)")
        reference = next((results["strategies"][s.label]["matrix"] for s in config.strategies if s.name == "mtl"), None)
        for spec in config.strategies:
            entry = results["strategies"][spec.label]
            entry["metrics"] = _clean(summarize(entry["matrix"], base=base, reference=reference))
        registry.update_run(name, status="done", results=results)
    except BaseException:
        registry.update_run(name, status="failed", results=results)
        raise
    return registry.get_run(name)


def _clean(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe metrics (no NaN)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
