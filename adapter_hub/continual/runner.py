"""Running a task sequence with one strategy: train each task, register every state, resume from the registry.

Each state is registered as a version of the task just learned, with lineage `trained_from` the previous
state (merge states: `merged_from` their components), the strategy, its hyper-parameters, the base model
and a loss-curve summary in metadata, and tags run / strategy / step / role, which is how an interrupted
run finds what it already did. Resuming reloads those states, lets the strategy rebuild itself
(`Strategy.restore`), and carries on; with the same seed on CPU the final adapter is bit-identical.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapter_hub.continual import ContinualConfig, StepResult, make_strategy
from adapter_hub.continual.step_cache import TAG, RegistryStepCache, same_factors
from adapter_hub.data import Task, load_task
from adapter_hub.lora import detach, list_adapters
from adapter_hub.training import TrainResult


@dataclass
class SequenceResult:
    strategy: str
    steps: list[StepResult] = field(default_factory=list)
    refs: list[str | None] = field(default_factory=list)  # registered state per step (None without a registry)
    resumed: int = 0  # steps taken from the registry instead of trained
    seconds: list[float] = field(default_factory=list)


def run_sequence(
    strategy: str,
    model,
    tokenizer,
    tasks: Sequence[Task],
    config: ContinualConfig,
    *,
    params: dict[str, Any] | None = None,
    registry=None,
    run: str | None = None,
    resume: bool = True,
    done: list[tuple[StepResult, str]] | None = None,
    on_step: Callable[[StepResult, str | None], None] | None = None,
    share_steps: bool = True,
    before_register: Callable[[int], None] | None = None,
) -> SequenceResult:
    """Learn `tasks` in order with `strategy`. With a registry, every state is registered (tags
    run/strategy/step) and, when `resume`, steps already registered for this run are reloaded.
    `done` gives the already-learnt prefix explicitly instead (see load_chain: continuing from a ref).
    `share_steps`: a training call that some registered state already is (the same content key,
    continual.step_cache) reuses it instead of training again — bit-identical, only faster.
    `before_register(step)` runs just before a step is registered and may raise to stop the sequence
    without registering it (a distributed cell whose lease was taken over, adapter_hub.executors)."""
    if registry is not None and not run:
        raise ValueError("registering a sequence needs a run name (run=...) to find it again on resume")
    strat = make_strategy(strategy, model, tokenizer, config, **(params or {}))
    if registry is not None and share_steps:
        strat.step_cache = RegistryStepCache(registry)
    out = SequenceResult(strategy)
    if done is None:
        done = _registered_steps(registry, run, strategy, tasks) if registry is not None and resume else []
    if done:
        strat.restore([s for s, _ in done], tasks[:len(done)])
        out.steps = [s for s, _ in done]
        out.refs = [r for _, r in done]
        out.seconds = [s.recorded.get("seconds") or 0.0 for s, _ in done]  # as timed when they were trained
        out.resumed = len(done)
    for step, task in enumerate(tasks[len(done):], start=len(done) + 1):
        start = time.perf_counter()
        result = strat.learn(task, step, tasks[:step - 1])
        seconds = time.perf_counter() - start
        ref = None
        if registry is not None:
            if before_register is not None:
                before_register(step)
            ref = _register(registry, run, strat, result, out.refs, config, tasks, seconds)
        out.steps.append(result)
        out.refs.append(ref)
        out.seconds.append(seconds)
        if on_step is not None:
            on_step(result, ref)
    for name in list_adapters(model):  # leave the model as we found it
        detach(model, name)
    return out


def _tags(run: str, strategy: str, step: int, role: str) -> dict[str, str]:
    return {"run": run, "strategy": strategy, "step": str(step), "role": role}


def _register(registry, run: str, strat, result: StepResult, refs: list[str | None], config: ContinualConfig,
              tasks: Sequence[Task], seconds: float | None = None) -> str:
    task = tasks[result.step - 1]
    previous = refs[-1] if refs else None
    history = [{"task": t.name, "spec": t.load_args(), "ref": r} for t, r in zip(tasks[:result.step], [*refs, None])]
    metadata = {
        "strategy": strat.name, "params": strat.hyperparameters(), "step": result.step, "run": run,
        "sequence": [t.name for t in tasks], "history": history, "data": task.source, "dataset": task.fingerprint(),
        "lora": config.lora.to_dict(), "train": config.train.to_dict(), "seed": config.seed,
        "loss": result.train.summary() if result.train else None, "info": result.info,
        "base_dtype": str(next(strat.model.parameters()).dtype).removeprefix("torch."),
        "seconds": None if seconds is None else round(seconds, 3),  # the step's training time
    }
    for component in result.components:  # registered first, so the merged state's lineage names them
        version = registry.register(component, task=task.name, metadata={**metadata, "role": "component"},
                                    tags=_tags(run, strat.name, result.step, "component"), on_duplicate="new")
        component.ref, component.digest = version.ref, version.digest
    if result.state_inputs:  # lineage: merged_from the registered inputs
        result.state.provenance["inputs"] = [a.label() for a in result.state_inputs]
        parents = None
    else:  # lineage: trained_from the previous state (fresh per_task states stand alone)
        parents = [previous] if previous and strat.warm_start else None
    tags = _tags(run, strat.name, result.step, "state")
    trained = result.train
    if trained is not None and trained.cache_key and trained.trained is not None \
            and same_factors(result.state, trained.trained):  # the state IS the trained adapter: reusable
        tags[TAG] = trained.cache_key
    version = registry.register(result.state, task=task.name, metadata=metadata, parents=parents,
                                tags=tags, on_duplicate="new")
    result.state.ref, result.state.digest = version.ref, version.digest
    return version.ref


def _registered_steps(registry, run: str, strategy: str, tasks: Sequence[Task]) -> list[tuple[StepResult, str]]:
    """The consecutive steps 1..k this run already registered, reloaded as StepResults."""
    found = []
    for step, task in enumerate(tasks, start=1):
        states = registry.search(task=task.name, tag=_tags(run, strategy, step, "state"))
        if not states:
            break
        found.append(_reload(registry, states[-1], run, strategy, step))
    return found


def _reload(registry, info, run: str, strategy: str, step: int) -> tuple[StepResult, str]:
    state = registry.load(info.ref)
    components = [registry.load(c.ref) for c in
                  registry.search(task=info.task, tag=_tags(run, strategy, step, "component"))]
    train = TrainResult(steps=(info.metadata.get("loss") or {}).get("steps", 0))
    recorded = {"loss": info.metadata.get("loss"), "seconds": info.metadata.get("seconds")}
    return StepResult(info.task, step, state, train, components, info.metadata.get("info", {}),
                      recorded=recorded), info.ref


def load_chain(registry, ref: str) -> tuple[str, dict[str, Any], list[Task], list[tuple[StepResult, str]]]:
    """Everything needed to continue a sequence from the registered state `ref`: its strategy and
    hyper-parameters, the tasks learnt so far (rebuilt from their recorded specs) and every step's state."""
    head = registry.get(ref)
    meta = head.metadata
    if "history" not in meta or "strategy" not in meta:
        raise ValueError(f"{head.ref} was not made by a continual-learning run (no strategy/history in its "
                         f"metadata); start a new sequence without --from")
    tasks = [load_task(**h["spec"]) for h in meta["history"]]  # Task.load_args() recorded exactly these
    refs = [h["ref"] for h in meta["history"][:-1]] + [head.ref]
    done = [_reload(registry, registry.get(r), meta["run"], meta["strategy"], step)
            for step, r in enumerate(refs, start=1)]
    return meta["strategy"], meta.get("params", {}), tasks, done


__all__ = ["run_sequence", "SequenceResult"]
