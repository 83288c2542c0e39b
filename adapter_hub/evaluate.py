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

Multi-state evaluation: pass `states=[...]` (adapter names attached to the model, None = bare base)
and every test example is scored under every state in the same batches, each row routed to its own
adapter (lora.route), so one pass over the test set serves all states. A state may also pick an
adapter per example (PerExample: a router's choices). The shared instruction's cache is computed
once per adapter used and each batch row continues from its own adapter's copy.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn

from adapter_hub import progress
from adapter_hub.data import Task
from adapter_hub.lora import route
from adapter_hub.models import decoder_and_head, run_decoder
from adapter_hub.prompts import common_prefix_length, encode_prompt, encode_target, template_ids

CURRENT = "current"  # the key of a result scored on the model as it is (no routing)
DEFAULT_MAX_LENGTH = 256  # tokens per prompt when neither the eval nor a training config says
LOGITS_CHUNK = 2**24  # floats of logits materialised at once (64 MB in fp32), whatever the vocabulary


@dataclass
class EvalConfig:
    scorer: Literal["loglik", "generate"] = "loglik"  # loglik is cheaper and never fails to parse
    batch_size: int = 32  # examples per forward; with states, each example is one row per state
    # Rows per forward = examples × states: 32 examples × 121 states would be ~3,900 rows of KV cache.
    # Fewer examples go in each forward when there are many states, so memory stays bounded.
    max_rows: int = 1024
    # Must match training's so the model sees the format it learnt: None = the training max_length
    # where one is known (bench runs), else 256.
    max_length: int | None = None
    max_new_tokens: int | None = None  # generate: default = longest label + 2 (or 32 for free text)
    # Encode the tokens all prompts of a task start with (the instruction) once per state and reuse
    # their KV cache: same scores up to float rounding, ~half the prompt compute on short inputs.
    shared_prefix: bool = True

    def __post_init__(self) -> None:
        if self.scorer not in ("loglik", "generate"):
            raise ValueError(f"scorer must be 'loglik' or 'generate', got {self.scorer!r}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.max_rows < 1:
            raise ValueError("max_rows must be >= 1")
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(f"max_length must be >= 8 (or unset), got {self.max_length}")

    @property
    def length(self) -> int:
        return self.max_length or DEFAULT_MAX_LENGTH


@dataclass
class TaskScore:
    task: str
    state: str | None
    scorer: str
    accuracy: float  # exact match for "generate"
    n: int
    f1: float | None = None  # token F1 ("generate" only)
    truncated: int = 0
    predictions: list[str] = field(default_factory=list, repr=False)
    # 0/1 per test example, in the task's test order: what intervals and paired tests resample.
    correct: list[int] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("predictions")
        out.pop("correct")
        return out


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
    examples = list(task.test if examples is None else examples)
    if not examples:
        raise ValueError(f"task {task.name} has no test examples")
    if config.scorer == "loglik" and not task.is_classification:
        raise ValueError(f"task {task.name} has free-text targets; use scorer='generate'")
    keys: list = [CURRENT] if states is None else list(states)
    routed = states is not None
    for key in keys:
        if isinstance(key, PerExample) and len(key.names) != len(examples):
            raise ValueError(f"{key.label}: {len(key.names)} adapter choices for {len(examples)} test examples")
    reserve = _answer_budget(tokenizer, task, config)
    prompts, truncated = [], 0
    template = template_ids(tokenizer, task)
    for ex in examples:
        ids, cut = encode_prompt(tokenizer, task, ex.text, config.length, reserve=reserve, template=template)
        prompts.append(ids)
        truncated += cut
    order = scoring_order(prompts)
    head_len = _shared_prefix_length(prompts) if config.shared_prefix else 0
    # Every adapter any row uses: the shared instruction's cache is computed once under each.
    used = list(dict.fromkeys(n for key in keys for n in (key.names if isinstance(key, PerExample) else [key])))
    predictions: dict[tuple[int, int], str] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _autocast(model), \
                progress.phase(f"eval {task.name}", len(order) * len(keys), "row") as shown:
            prefix = _encode_prefix(model, prompts[0][:head_len], used if routed else None) if head_len else None
            per_forward = max(1, min(config.batch_size, config.max_rows // len(keys)))  # examples per forward
            for start in range(0, len(order), per_forward):
                chunk = [(e, s) for s in range(len(keys)) for e in order[start:start + per_forward]]
                batch_prompts = [prompts[e][head_len:] for e, _ in chunk]
                row_states = [_row_adapter(keys[s], e) for e, s in chunk] if routed else None
                if config.scorer == "loglik":
                    preds = _rank_labels(model, tokenizer, task.labels, batch_prompts, row_states, prefix)
                else:
                    preds = _greedy(model, tokenizer, batch_prompts, row_states,
                                    config.max_new_tokens or reserve, prefix)
                predictions.update(zip(chunk, preds))
                shown.advance(len(chunk))
    finally:
        model.train(was_training)
    results: dict = {}
    for s, key in enumerate(keys):
        preds = [predictions[(e, s)] for e in range(len(examples))]
        targets = [ex.target for ex in examples]
        correct = [int(_normalise(p) == _normalise(t)) for p, t in zip(preds, targets)]
        f1 = None if config.scorer == "loglik" else sum(map(token_f1, preds, targets)) / len(examples)
        results[key] = TaskScore(task.name, key, config.scorer, sum(correct) / len(examples), len(examples), f1,
                                 truncated, preds, correct)
    return results


def scoring_order(prompts: Sequence[Sequence[int]]) -> list[int]:
    """The order rows are batched in: by length, so a batch's rows need little padding. Results do not
    depend on it (each row is scored alone under its mask); benchmarks swap it to time the saving."""
    return sorted(range(len(prompts)), key=lambda e: len(prompts[e]))


MIN_SHARED_PREFIX = 4  # below this, copying the prefix cache costs about what it saves


def _shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each prompt at least one token of its own; 0 when
    too few to be worth caching."""
    n = common_prefix_length(prompts)
    return n if n >= MIN_SHARED_PREFIX else 0


@dataclass
class _Prefix:
    """The shared instruction, encoded once: one cache row per adapter used (None = no adapter)."""

    cache: object
    length: int
    names: list[str | None]
    device: torch.device

    def rows_for(self, row_states: Sequence[str | None] | None) -> list[int]:
        """Which cache row each batch row continues from."""
        if row_states is None:
            return [0]
        index = {name: i for i, name in enumerate(self.names)}
        return [index[name] for name in row_states]

    def expand(self, rows: list[int], batch_rows: int) -> object:
        """A fresh cache with one row per batch row, each a copy of the prefix under its adapter."""
        cache = copy.deepcopy(self.cache)  # the forward extends it in place: never touch the original
        if rows == [0]:
            cache.batch_repeat_interleave(batch_rows)
        else:
            cache.batch_select_indices(torch.tensor(rows, device=self.device))
        return cache


def _encode_prefix(model: nn.Module, head: list[int], states: Sequence[str | None] | None) -> _Prefix:
    device = next(model.parameters()).device
    names = [None] if states is None else list(states)
    ids = torch.tensor([head] * len(names), device=device)
    mask = torch.ones_like(ids)
    positions = torch.arange(len(head), device=device).expand(len(names), -1)
    with _maybe_route(model, states):
        _, cache = _run(model, ids, mask, positions)
    return _Prefix(cache, len(head), names, device)


def _answer_budget(tokenizer, task: Task, config: EvalConfig) -> int:
    if config.scorer == "generate":
        if config.max_new_tokens:
            return config.max_new_tokens
        if task.labels:
            return max(len(encode_target(tokenizer, label)) for label in task.labels) + 2
        return 32
    return max(len(encode_target(tokenizer, label, eos=False)) for label in task.labels or [])


# --------------------------------------------------------------------------------------------------
# Model plumbing: decoder stack + head, left padding, cache naming across transformers versions
# --------------------------------------------------------------------------------------------------


def _run(model: nn.Module, ids, mask, positions, cache=None):
    """Hidden states (or logits when the model has no separable head) and the cache."""
    decoder, head = decoder_and_head(model)
    out, new_cache = run_decoder(decoder, cache, input_ids=ids, attention_mask=mask, position_ids=positions)
    return (out.last_hidden_state if head is not None else out.logits), new_cache


def _logprobs(model: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(targets) at each position; hidden (..., H) or logits, targets (...,). Chunked over the vocab."""
    _, head = decoder_and_head(model)
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    flat_t = targets.reshape(-1)
    vocab = head.out_features if head is not None and hasattr(head, "out_features") else hidden.shape[-1]
    step = max(1, LOGITS_CHUNK // max(vocab, 1))
    out = []
    for i in range(0, flat_h.shape[0], step):
        logits = head_fp32(head, flat_h[i:i + step])
        out.append(logits.gather(1, flat_t[i:i + step, None]).squeeze(1) - torch.logsumexp(logits, dim=1))
    return torch.cat(out).reshape(targets.shape)


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, ...]:
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


@contextlib.contextmanager
def _maybe_route(model: nn.Module, rows: Sequence[str | None] | None) -> Iterator[None]:
    if rows is None:
        yield
    else:
        with route(model, rows):
            yield


def _autocast(model: nn.Module):
    device = next(model.parameters()).device
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------------------------------
# Scorers
# --------------------------------------------------------------------------------------------------


def _prompt_pass(model, pad_id: int, prompts, prefix: _Prefix | None,
                 row_states: Sequence[str | None] | None = None):
    """Run the (left-padded) prompts after the shared prefix; hidden states, cache, mask, positions.

    With a prefix, a row reads [prefix][padding][own tokens]: the mask hides the padding in the
    middle and positions continue from the prefix, so each row sees exactly its own whole prompt.
    Call inside the routing block of the batch's rows.
    """
    device = next(model.parameters()).device
    ids, mask, positions = _left_pad(prompts, pad_id, device)
    cache = None
    if prefix is not None:
        cache = prefix.expand(prefix.rows_for(row_states), ids.shape[0])
        mask = torch.cat([torch.ones((ids.shape[0], prefix.length), dtype=mask.dtype, device=device), mask], 1)
        positions = positions + prefix.length
    hidden, cache = _run(model, ids, mask, positions, cache)
    return hidden, cache, mask, positions


def _rank_labels(model, tokenizer, labels: list[str], prompts, row_states, prefix: _Prefix | None = None) -> list[str]:
    device = next(model.parameters()).device
    cands = [encode_target(tokenizer, label, eos=False) for label in labels]
    K, L = len(cands), max(map(len, cands))
    cand_ids = torch.zeros((K, L), dtype=torch.long)
    cand_mask = torch.zeros((K, L), dtype=torch.long)
    for k, c in enumerate(cands):
        cand_ids[k, :len(c)] = torch.tensor(c)
        cand_mask[k, :len(c)] = 1
    cand_ids, cand_mask = cand_ids.to(device), cand_mask.to(device)
    with _maybe_route(model, row_states):
        hidden, cache, mask, positions = _prompt_pass(model, tokenizer.pad_token_id, prompts, prefix, row_states)
    N = hidden.shape[0]
    total = _next_token_logprobs(model, hidden[:, -1])[:, cand_ids[:, 0]]  # (N, K): log p(c_0 | prompt)
    if L > 1:
        if _takes_custom_masks(model):
            with _maybe_route(model, row_states):
                total = total + _packed_candidates(model, cands, cache, mask, positions)
        else:  # attention that only takes padding masks: one cache copy per candidate
            cache.batch_repeat_interleave(K)
            step_ids = cand_ids[:, :-1].repeat(N, 1)  # (N*K, L-1): c_0..c_{L-2} predict c_1..c_{L-1}
            step_mask = torch.cat([mask.repeat_interleave(K, 0), cand_mask[:, :-1].repeat(N, 1)], dim=1)
            step_pos = positions[:, -1:].repeat_interleave(K, 0) + 1 + torch.arange(L - 1, device=device)
            rows = None if row_states is None else [s for s in row_states for _ in range(K)]
            with _maybe_route(model, rows):
                hidden2, _ = _run(model, step_ids, step_mask, step_pos, cache)
            rest = _logprobs(model, hidden2, cand_ids[:, 1:].repeat(N, 1))  # (N*K, L-1)
            total = total + (rest * cand_mask[:, 1:].repeat(N, 1)).sum(1).reshape(N, K)
    lengths = cand_mask.sum(1).to(total.dtype)  # (K,)
    best = (total / lengths).argmax(dim=1).tolist()
    return [labels[k] for k in best]


def _takes_custom_masks(model: nn.Module) -> bool:
    """Whether the model's attention accepts a ready 4D mask (sdpa and eager do; flash kernels do not)."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None) in ("sdpa", "eager")


def _packed_candidates(model, cands: list[list[int]], cache, mask, positions) -> torch.Tensor:
    """(N, K) summed log p(c_k[1:] | prompt, c_k[:-1]) for every candidate k, in ONE short pass.

    All candidates ride in the same row after the prompt, c_1[:-1] c_2[:-1] ..., and a 4D mask lets
    each token see the prompt and the earlier tokens of its own candidate only (positions restart
    after the prompt for each). So the prompt's cache is used once, not copied per candidate, and
    no candidate is padded to the longest.
    """
    device = positions.device
    N, K = mask.shape[0], len(cands)
    seg = torch.tensor([k for k, c in enumerate(cands) for _ in c[:-1]], device=device)  # (Q,)
    off = torch.tensor([j for c in cands for j in range(len(c) - 1)], device=device)
    ids = torch.tensor([t for c in cands for t in c[:-1]], device=device).expand(N, -1)
    targets = torch.tensor([t for c in cands for t in c[1:]], device=device).expand(N, -1)
    Q = ids.shape[1]
    own = (seg[:, None] == seg[None, :]) & (off[None, :] <= off[:, None])  # (Q, Q): causal per candidate
    allowed = torch.cat([mask.bool()[:, None, None, :].expand(N, 1, Q, mask.shape[1]),
                         own[None, None].expand(N, 1, Q, Q)], dim=-1)  # (N, 1, Q, prompt + Q)
    if model.config._attn_implementation == "eager":  # eager adds the mask to the scores
        dtype = next(model.parameters()).dtype
        allowed = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
    hidden, _ = _run(model, ids, allowed, positions[:, -1:] + 1 + off, cache)
    logp = _logprobs(model, hidden, targets)  # (N, Q)
    return torch.zeros((N, K), dtype=logp.dtype, device=device).index_add_(1, seg, logp)


def _greedy(model, tokenizer, prompts, row_states, max_new_tokens: int, prefix: _Prefix | None = None) -> list[str]:
    device = next(model.parameters()).device
    N = len(prompts)
    eos = tokenizer.eos_token_id
    generated = torch.full((N, max_new_tokens), eos, dtype=torch.long, device=device)
    done = torch.zeros(N, dtype=torch.bool, device=device)
    with _maybe_route(model, row_states):
        hidden, cache, mask, positions = _prompt_pass(model, tokenizer.pad_token_id, prompts, prefix, row_states)
        pos = positions[:, -1:]
        for t in range(max_new_tokens):
            next_ids = _next_token_logprobs(model, hidden[:, -1]).argmax(dim=-1)  # (N,)
            next_ids = torch.where(done, torch.full_like(next_ids, eos), next_ids)
            generated[:, t] = next_ids
            done |= next_ids == eos
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones((N, 1), dtype=mask.dtype, device=device)], dim=1)
            pos = pos + 1
            hidden, cache = _run(model, next_ids[:, None], mask, pos, cache)
    texts = []
    for row in generated.tolist():
        cut = row.index(eos) if eos in row else len(row)
        texts.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return texts


def _next_token_logprobs(model, hidden_last: torch.Tensor) -> torch.Tensor:
    """(N, V) log-probabilities of the next token from the last position's hidden state (or logits)."""
    _, head = decoder_and_head(model)
    return torch.log_softmax(head_fp32(head, hidden_last), dim=-1)


def head_fp32(head: nn.Module | None, hidden: torch.Tensor) -> torch.Tensor:
    """Logits of the few scored positions computed in fp32, outside autocast: in bf16 two labels whose
    log-likelihoods are close could swap order. (hidden is already logits when there is no head.)"""
    if head is None:
        return hidden.float()
    if isinstance(head, nn.Linear):
        with torch.autocast(hidden.device.type, enabled=False):
            bias = None if head.bias is None else head.bias.float()
            return torch.nn.functional.linear(hidden.float(), head.weight.float(), bias)
    return head(hidden).float()


# --------------------------------------------------------------------------------------------------
# Text metrics
# --------------------------------------------------------------------------------------------------


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def token_f1(prediction: str, target: str) -> float:
    """SQuAD-style token F1 between normalised strings."""
    p, t = _normalise(prediction).split(), _normalise(target).split()
    if not p or not t:
        return float(p == t)
    common = sum((Counter(p) & Counter(t)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(t)
    return 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------------------------------
# Many states on many tasks
# --------------------------------------------------------------------------------------------------

@dataclass
class Routed:
    """A state that sends each test example to an adapter of its own (a router's choice, no task id):
    choices[task][e] is the adapter (None = the bare base model) that scores task's example e."""

    choices: dict[str, Sequence[object | None]]


def adapters_of(spec, task_name: str) -> list:
    """The adapters a state uses on a task, in example order for a Routed state."""
    if isinstance(spec, Routed):
        return list(spec.choices[task_name])
    return [spec.get(task_name) if isinstance(spec, dict) else spec]


def evaluate_states(model: nn.Module, tokenizer, tasks: Sequence[Task], states: dict[str, object],
                    config: EvalConfig | None = None) -> dict[str, dict[str, TaskScore]]:
    """Score every state on every task: {label: {task: TaskScore}}.

    A state is a LoraAdapter (used for every task), None (the bare base model), {task: adapter}
    (per_task: each task with its own) or Routed (an adapter per test example). Each distinct adapter
    is attached once; each task is then scored in ONE routed pass whose rows cover all the states.
    """
    from adapter_hub.lora import attach, detach

    names: dict[int, str] = {}
    try:
        for spec in states.values():
            for task in tasks:
                for adapter in adapters_of(spec, task.name):
                    if adapter is not None and id(adapter) not in names:
                        name = f"__eval{len(names)}"
                        attach(model, adapter, name=name, activate="none", trainable=False)
                        names[id(adapter)] = name  # only once attached: cleanup detaches what is really there
        results: dict[str, dict[str, TaskScore]] = {label: {} for label in states}
        for task in tasks:
            keys = {}
            for label, spec in states.items():
                chosen = [None if a is None else names[id(a)] for a in adapters_of(spec, task.name)]
                keys[label] = PerExample(label, tuple(chosen)) if isinstance(spec, Routed) else chosen[0]
            unique = list(dict.fromkeys(keys.values()))
            scored = score(model, tokenizer, task, states=unique, config=config)
            for label, key in keys.items():
                results[label][task.name] = dataclasses.replace(scored[key], state=label)
        return results
    finally:
        for name in names.values():
            detach(model, name)


def evaluate_states_loop(model: nn.Module, tokenizer, tasks: Sequence[Task], states: dict[str, object],
                         config: EvalConfig | None = None) -> dict[str, dict[str, TaskScore]]:
    """The same results the slow way — attach, score, detach, one (state, task) at a time (a Routed
    state: one adapter's examples at a time). The reference the routed evaluation is tested against."""
    results: dict[str, dict[str, TaskScore]] = {label: {} for label in states}
    for label, spec in states.items():
        for task in tasks:
            adapters = adapters_of(spec, task.name)
            if not isinstance(spec, Routed):
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
    from adapter_hub.lora import adapters_disabled, attach, detach

    if adapter is None:
        with adapters_disabled(model):
            return score(model, tokenizer, task, config=config, examples=examples)[CURRENT]
    attach(model, adapter, name="__loop")
    try:
        return score(model, tokenizer, task, config=config, examples=examples)[CURRENT]
    finally:
        detach(model, "__loop")
