"""A merge judged on tasks: the merged adapter and the adapters it came from, scored in one routed
pass per task, and the merge's *normalized accuracy* (merged / the task's own adapter, per task and
averaged) — the number the merging papers (TIES, KnOTS, Iso-C) report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from adapter_hub.core.adapter import LoraAdapter
from adapter_hub.data.tasks import Task
from adapter_hub.evaluation.config import EvalConfig
from adapter_hub.evaluation.states import evaluate_states
from adapter_hub.stats import example_draws, percentile_interval

MERGED = "merged"
_OWN = "__own__"  # the internal per-task state of judge_merge(cross=False)


@dataclass
class MergeJudgement:
    tasks: list[str]
    accuracy: dict[str, dict[str, float]]  # state (MERGED or a part's label) -> task -> accuracy
    own: dict[str, str]  # task -> the label of the part that is that task's own adapter
    normalized: dict[str, float | None]  # task -> merged accuracy / own part's accuracy on it (None: own scored 0)
    normalized_mean: float | None
    # state -> task -> 0/1 per test example, for the states this judgement scored (parts given as
    # `known` are not rescored): what `normalized_interval` / `normalized_difference` resample.
    correct: dict[str, dict[str, list[int]]] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("correct")
        return out


def judge_merge(model, tokenizer, tasks: Sequence[Task], merged: LoraAdapter, parts: Mapping[str, LoraAdapter],
                config: EvalConfig | None = None, own: Mapping[str, str] | None = None,
                known: Mapping[str, Mapping[str, float]] | None = None, cross: bool = True) -> MergeJudgement:
    """Score `merged` and every part on every task. `own` maps each task to its part's label; by
    default part i is task i's (parts given in the tasks' order, one each). `known`: the parts'
    accuracies from an earlier judgement on the same tasks and settings (part -> task -> accuracy),
    so judging several merges of the same parts scores the parts once. `cross=False` scores each part
    on its own task only — all the normalized accuracy needs, in 1/T of the parts' scoring (then
    `accuracy` and `known` hold each part's own task alone)."""
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
    wanted = {label: ({t.name for t in tasks} if cross else {t for t, o in own.items() if o == label})
              for label in labels}
    if known is not None and any(not wanted[label] <= set(known.get(label, {})) for label in labels):
        raise ValueError("known accuracies must give every part's accuracy on every task"
                         + ("" if cross else " it is judged on (its own)"))
    if known:
        states: dict[str, object] = {MERGED: merged}
    elif cross:
        states = {MERGED: merged, **parts}
    else:  # one per-task state: each task scored with its own part only
        states = {MERGED: merged, _OWN: {t.name: parts[own[t.name]] for t in tasks}}
    scores = evaluate_states(model, tokenizer, tasks, states, config)
    # what was scored, state -> task -> TaskScore: the parts' own-task scores sit in the per-task state
    scored = {MERGED: scores[MERGED]}
    if not known:
        scored.update({label: {t.name: (scores[label] if cross else scores[_OWN])[t.name] for t in tasks
                               if t.name in wanted[label]} for label in labels})
    accuracy = {state: {t: score.accuracy for t, score in per.items()} for state, per in scored.items()}
    correct = {state: {t: list(score.correct) for t, score in per.items()} for state, per in scored.items()}
    if known:
        accuracy.update({label: {t.name: known[label][t.name] for t in tasks if t.name in wanted[label]}
                         for label in labels})
    normalized = {}
    for t in tasks:
        base = accuracy[own[t.name]][t.name]
        normalized[t.name] = accuracy[MERGED][t.name] / base if base > 0 else None
    values = [v for v in normalized.values() if v is not None]
    return MergeJudgement([t.name for t in tasks], accuracy, dict(own), normalized,
                          sum(values) / len(values) if values else None, correct)


# ---- intervals: the test examples resampled (the same indices for every adapter scored on a task) ---

@dataclass(frozen=True)
class NormalizedInterval:
    value: float  # the mean normalized accuracy on the full test sets
    low: float  # 95% percentile bootstrap interval
    high: float


def _draws(own: Mapping[str, Sequence[int]], n_boot: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return dict(zip(own, example_draws([len(bits) for bits in own.values()], n_boot, rng)))


def _normalized(merged: Mapping[str, Sequence[int]], own: Mapping[str, Sequence[int]],
                draws: Mapping[str, np.ndarray] | None) -> np.ndarray:
    """Mean over tasks of merged accuracy / own accuracy, per draw (a 0-d array without draws). A
    draw where the own adapter scores 0 on a task leaves that task out of that draw's mean."""
    ratios = []
    for task, own_bits in own.items():
        m, o = np.asarray(merged[task], dtype=float), np.asarray(own_bits, dtype=float)
        if len(m) != len(o):
            raise ValueError(f"task {task!r}: {len(m)} merged results for {len(o)} own results")
        if draws is not None:
            m, o = m[draws[task]], o[draws[task]]
        own_acc = o.mean(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios.append(np.where(own_acc > 0, m.mean(axis=-1) / own_acc, np.nan))
    return np.nanmean(np.stack(ratios), axis=0)


def normalized_interval(merged: Mapping[str, Sequence[int]], own: Mapping[str, Sequence[int]], *,
                        n_boot: int = 2000, seed: int = 0) -> NormalizedInterval:
    """The mean normalized accuracy of one merge with a bootstrap interval over each task's test examples
    (`merged[task]`, `own[task]`: 0/1 per example, the same examples in the same order)."""
    draws = _draws(own, n_boot, seed)
    boot = _normalized(merged, own, draws)
    low, high = percentile_interval(boot)
    return NormalizedInterval(float(_normalized(merged, own, None)), float(low), float(high))


def normalized_difference(a: Mapping[str, Sequence[int]], b: Mapping[str, Sequence[int]],
                          own: Mapping[str, Sequence[int]], *, n_boot: int = 2000, seed: int = 0
                          ) -> tuple[NormalizedInterval, bool]:
    """Normalized accuracy of merge a − merge b, paired (the same resampled examples for a, b and the own
    adapters), and whether it is significant (the 95% interval excludes 0)."""
    draws = _draws(own, n_boot, seed)
    boot = _normalized(a, own, draws) - _normalized(b, own, draws)
    low, high = percentile_interval(boot)
    value = float(_normalized(a, own, None) - _normalized(b, own, None))
    return NormalizedInterval(value, float(low), float(high)), bool(low > 0 or high < 0)
