"""A merge judged on tasks: the merged adapter and the adapters it came from, scored in one routed
pass per task, and the merge's *normalized accuracy* (merged / the task's own adapter, per task and
averaged) — the number the merging papers (TIES, KnOTS, Iso-C) report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from adapter_hub.adapter import LoraAdapter
from adapter_hub.data import Task
from adapter_hub.evaluate import EvalConfig, evaluate_states

MERGED = "merged"


@dataclass
class MergeJudgement:
    tasks: list[str]
    accuracy: dict[str, dict[str, float]]  # state (MERGED or a part's label) -> task -> accuracy
    own: dict[str, str]  # task -> the label of the part that is that task's own adapter
    normalized: dict[str, float | None]  # task -> merged accuracy / own part's accuracy on it (None: own scored 0)
    normalized_mean: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def judge_merge(model, tokenizer, tasks: Sequence[Task], merged: LoraAdapter, parts: Mapping[str, LoraAdapter],
                config: EvalConfig | None = None, own: Mapping[str, str] | None = None,
                known: Mapping[str, Mapping[str, float]] | None = None) -> MergeJudgement:
    """Score `merged` and every part on every task. `own` maps each task to its part's label; by
    default part i is task i's (parts given in the tasks' order, one each). `known`: the parts'
    accuracies from an earlier judgement on the same tasks and settings (part -> task -> accuracy),
    so judging several merges of the same parts scores the parts once."""
    labels = list(parts)
    if MERGED in parts:
        raise ValueError(f"a part may not be labelled {MERGED!r} (the merged adapter's label)")
    if own is None:
        if len(labels) != len(tasks):
            raise ValueError(f"{len(labels)} parts for {len(tasks)} tasks: say which part is each task's own")
        own = {t.name: label for t, label in zip(tasks, labels)}
    missing = sorted({t.name for t in tasks} - set(own))
    unknown = sorted(set(own.values()) - set(labels))
    if missing or unknown:
        raise ValueError(f"own adapters: no part for task(s) {missing}" if missing else f"unknown part(s) {unknown}")
    if known is not None and any(set(known.get(label, {})) != {t.name for t in tasks} for label in labels):
        raise ValueError("known accuracies must give every part's accuracy on every task")
    scores = evaluate_states(model, tokenizer, tasks, {MERGED: merged} if known else {MERGED: merged, **parts}, config)
    accuracy = {state: {t.name: per[t.name].accuracy for t in tasks} for state, per in scores.items()}
    if known:
        accuracy.update({label: dict(known[label]) for label in labels})
    normalized = {}
    for t in tasks:
        base = accuracy[own[t.name]][t.name]
        normalized[t.name] = accuracy[MERGED][t.name] / base if base > 0 else None
    known = [v for v in normalized.values() if v is not None]
    return MergeJudgement([t.name for t in tasks], accuracy, dict(own), normalized,
                          sum(known) / len(known) if known else None)
