"""Scoring many adapter states on many tasks: each distinct adapter attached once, each task scored in
ONE routed pass whose rows cover every state; and the slow reference loop it is tested against."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from adapter_hub.data.tasks import Task
from adapter_hub.evaluation.config import CURRENT, EvalConfig, TaskScore
from adapter_hub.evaluation.scoring import PerExample, score
from adapter_hub.lora import adapters_disabled, attach, detach


@dataclass
class Routed:
    """A state that sends each test example to an adapter of its own (a router's choice, no task id):
    choices[task][e] is the adapter (None = the bare base model) that scores task's example e."""

    choices: dict[str, Sequence[object | None]]


def adapters_of(state, task_name: str) -> list:
    """The adapters a state uses on a task, in example order for a Routed state."""
    if isinstance(state, Routed):
        return list(state.choices[task_name])
    return [state.get(task_name) if isinstance(state, dict) else state]


def evaluate_states(model: nn.Module, tokenizer, tasks: Sequence[Task], states: dict[str, object],
                    config: EvalConfig | None = None) -> dict[str, dict[str, TaskScore]]:
    """Score every state on every task: {label: {task: TaskScore}}.

    A state is a LoraAdapter (used for every task), None (the bare base model), {task: adapter}
    (per_task: each task with its own) or Routed (an adapter per test example). Each distinct adapter
    is attached once; each task is then scored in ONE routed pass whose rows cover all the states.
    """
    names: dict[int, str] = {}
    try:
        for state in states.values():
            for task in tasks:
                for adapter in adapters_of(state, task.name):
                    if adapter is not None and id(adapter) not in names:
                        name = f"__eval{len(names)}"
                        attach(model, adapter, name=name, activate="none", trainable=False)
                        names[id(adapter)] = name  # only once attached: cleanup detaches what is really there
        results: dict[str, dict[str, TaskScore]] = {label: {} for label in states}
        for task in tasks:
            keys = {}
            for label, state in states.items():
                chosen = [None if a is None else names[id(a)] for a in adapters_of(state, task.name)]
                keys[label] = PerExample(label, tuple(chosen)) if isinstance(state, Routed) else chosen[0]
            unique = list(dict.fromkeys(keys.values()))
            scored = score(model, tokenizer, task, states=unique, config=config)
            for label, key in keys.items():
                found = scored[key]
                results[label][task.name] = dataclasses.replace(
                    found, state=label, also={n: dataclasses.replace(o, state=label) for n, o in found.also.items()})
        return results
    finally:
        for name in names.values():
            detach(model, name)


def evaluate_states_loop(model: nn.Module, tokenizer, tasks: Sequence[Task], states: dict[str, object],
                         config: EvalConfig | None = None) -> dict[str, dict[str, TaskScore]]:
    """The same results the slow way — attach, score, detach, one (state, task) at a time (a Routed
    state: one adapter's examples at a time). The reference the routed evaluation is tested against."""
    results: dict[str, dict[str, TaskScore]] = {label: {} for label in states}
    for label, state in states.items():
        for task in tasks:
            adapters = adapters_of(state, task.name)
            if not isinstance(state, Routed):
                scored = _score_alone(model, tokenizer, task, adapters[0], config, list(task.test))
            else:  # each adapter on the examples sent to it, then put back in example order
                test = list(task.test)
                preds: list[str] = [""] * len(test)
                correct = [0] * len(test)
                for adapter in {id(a): a for a in adapters}.values():
                    picked = [e for e, a in enumerate(adapters) if a is adapter]
                    part = _score_alone(model, tokenizer, task, adapter, config, [test[e] for e in picked])
                    for k, e in enumerate(picked):
                        preds[e], correct[e] = part.predictions[k], part.correct[k]
                scored = TaskScore(task.name, label, part.scorer, sum(correct) / len(test), len(test), None,
                                   0, preds, correct)
            results[label][task.name] = dataclasses.replace(scored, state=label)
    return results


def _score_alone(model, tokenizer, task: Task, adapter, config: EvalConfig | None, examples) -> TaskScore:
    if adapter is None:
        with adapters_disabled(model):
            return score(model, tokenizer, task, config=config, examples=examples)[CURRENT]
    attach(model, adapter, name="__loop")
    try:
        return score(model, tokenizer, task, config=config, examples=examples)[CURRENT]
    finally:
        detach(model, "__loop")
