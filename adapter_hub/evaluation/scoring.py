"""Scoring a model (or many adapter states at once) on a task.

Scorers (recorded with every result):
  "loglik"    classification: rank the label strings by length-normalised log-likelihood. The prompt
              runs once; then all K candidates ride in one short pass over its cache, side by side
              under a 4D mask, so an example costs one prompt pass plus one candidate pass, not K
              full forwards (attention that takes no custom mask gets one cache copy per candidate).
  "generate"  greedy decoding, then exact match (the O-LoRA paper's metric for classification: this is
              where a model drifting to the latest task's labels shows) and token F1 for free text.

The instruction that every prompt of a task starts with is encoded once per state and its KV cache
reused by every batch (shared_prefix), so an example pays only for its own input and the answer.

Several states at once: pass `states=[...]` (adapter names attached to the model, None = bare base)
and every test example is scored under every state in the same batches, each row routed to its own
adapter (lora.route), so one pass over the test set serves all states. A state may also pick an
adapter per example (PerExample: a router's choices). The shared instruction's cache is computed
once per adapter used and each batch row continues from its own adapter's copy (prefix.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from adapter_hub.core import progress
from adapter_hub.data.prompts import encode_prompt, encode_target, template_ids
from adapter_hub.data.tasks import Task
from adapter_hub.evaluation.config import CURRENT, EvalConfig, TaskScore
from adapter_hub.evaluation.decoding import decode
from adapter_hub.evaluation.forward import autocast_for
from adapter_hub.evaluation.prefix import encode_prefix, prefix_to_share
from adapter_hub.evaluation.text import normalise, token_f1


@dataclass(frozen=True)
class PerExample:
    """A state that picks an adapter per test example (a router's choices): names[e] is the adapter
    name (None = the bare base model) that scores example e. Usable as a key of `score(states=...)`."""

    label: str
    names: tuple[str | None, ...]


def _row_adapter(key, example: int) -> str | None:
    return key.names[example] if isinstance(key, PerExample) else key


def score(
    model: nn.Module,
    tokenizer,
    task: Task,
    *,
    states: Sequence[str | None] | None = None,
    config: EvalConfig | None = None,
    examples: Sequence | None = None,
) -> dict[str | None, TaskScore]:
    """Score the task's test set; keyed by state (or CURRENT when states is None). A state is an
    attached adapter's name, None (the base model) or a PerExample choice of adapter per example."""
    config = config or EvalConfig()
    scorers = config.all_scorers
    examples = list(task.test if examples is None else examples)
    if not examples:
        raise ValueError(f"task {task.name} has no test examples")
    if "loglik" in scorers and not task.is_classification:
        raise ValueError(f"task {task.name} has free-text targets; use scorer='generate'")
    keys: list = [CURRENT] if states is None else list(states)
    routed = states is not None
    for key in keys:
        if isinstance(key, PerExample) and len(key.names) != len(examples):
            raise ValueError(f"{key.label}: {len(key.names)} adapter choices for {len(examples)} test examples")
    reserve = answer_budget(tokenizer, task, config)
    prompts, truncated = [], 0
    template = template_ids(tokenizer, task)
    for ex in examples:
        ids, cut = encode_prompt(tokenizer, task, ex.text, config.length, reserve=reserve, template=template)
        prompts.append(ids)
        truncated += cut
    order = scoring_order(prompts)
    head_len = prefix_to_share(prompts) if config.shared_prefix else 0
    # Every adapter any row uses: the shared instruction's cache is computed once under each.
    used = list(dict.fromkeys(n for key in keys for n in (key.names if isinstance(key, PerExample) else [key])))
    predictions: dict[str, dict[tuple[int, int], str]] = {name: {} for name in scorers}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast_for(model), \
                progress.phase(f"eval {task.name}", len(order) * len(keys), "row", enabled=config.progress) as shown:
            prefix = encode_prefix(model, prompts[0][:head_len], used if routed else None) if head_len else None
            per_forward = max(1, min(config.batch_size, config.max_rows // len(keys)))  # examples per forward
            for start in range(0, len(order), per_forward):
                chunk = [(e, s) for s in range(len(keys)) for e in order[start:start + per_forward]]
                batch_prompts = [prompts[e][head_len:] for e, _ in chunk]
                row_states = [_row_adapter(keys[s], e) for e, s in chunk] if routed else None
                decoded = decode(model, tokenizer, batch_prompts, row_states, prefix, scorers, task.labels,
                                 config.max_new_tokens or reserve)
                for name, preds in decoded.items():
                    predictions[name].update(zip(chunk, preds))
                shown.advance(len(chunk))
    finally:
        model.train(was_training)
    targets = [ex.target for ex in examples]
    results: dict = {}
    for s, key in enumerate(keys):
        by_scorer = {}
        for name in scorers:
            preds = [predictions[name][(e, s)] for e in range(len(examples))]
            correct = [int(normalise(p) == normalise(t)) for p, t in zip(preds, targets)]
            f1 = None if name == "loglik" else sum(map(token_f1, preds, targets)) / len(examples)
            by_scorer[name] = TaskScore(task.name, key, name, sum(correct) / len(examples), len(examples), f1,
                                        truncated, preds, correct)
        primary = by_scorer[scorers[0]]
        primary.also = {name: found for name, found in by_scorer.items() if name != scorers[0]}
        results[key] = primary
    return results


def scoring_order(prompts: Sequence[Sequence[int]]) -> list[int]:
    """The order rows are batched in: by length, so a batch's rows need little padding. Results do not
    depend on it (each row is scored alone under its mask); benchmarks swap it to time the saving."""
    return sorted(range(len(prompts)), key=lambda e: len(prompts[e]))


def answer_budget(tokenizer, task: Task, config: EvalConfig) -> int:
    """Tokens kept free for the answer when a long input is cut: the longest label (+ eos and a
    margin when generating). Several scorers share one prompt, so the largest budget of theirs."""
    if "generate" in config.all_scorers:
        if config.max_new_tokens:
            return config.max_new_tokens
        if task.labels:
            return max(len(encode_target(tokenizer, label)) for label in task.labels) + 2
        return 32
    return max(len(encode_target(tokenizer, label, eos=False)) for label in task.labels or [])
