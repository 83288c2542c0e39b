"""The two scorers' inner loops over one batch of prompts, which both start from the same prompt pass
(the shared instruction's cache, then each row's own tokens): ranking label strings by
length-normalised log-likelihood (all candidates in one packed pass over the prompt's cache), and
greedy decoding. `decode` runs the prompt pass once and then every scorer asked for."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from adapter_hub.data.prompts import encode_target
from adapter_hub.evaluation.forward import (
    logprobs,
    maybe_route,
    next_token_logprobs,
    run_model,
    takes_custom_masks,
)
from adapter_hub.evaluation.prefix import SharedPrefix, prompt_pass


@dataclass
class Prompted:
    """A batch after its prompt pass: what both scorers continue from."""

    hidden: torch.Tensor  # (N, T, H): the last position predicts the first answer token
    cache: object  # the prompt's KV cache (scorers extend it: give each its own copy)
    mask: torch.Tensor
    positions: torch.Tensor
    row_states: Sequence[str | None] | None  # the adapter each row runs under (None: as the model is)


def decode(model, tokenizer, prompts, row_states, prefix: SharedPrefix | None, scorers: Sequence[str],
           labels: list[str] | None, max_new_tokens: int) -> dict[str, list[str]]:
    """{scorer: the prediction of every row} for one batch: one prompt pass, then each scorer."""
    with maybe_route(model, row_states):
        hidden, cache, mask, positions = prompt_pass(model, tokenizer.pad_token_id, prompts, prefix, row_states)
    out = {}
    for i, scorer in enumerate(scorers):
        own = cache if i == len(scorers) - 1 else copy.deepcopy(cache)  # both scorers extend the cache
        prompted = Prompted(hidden, own, mask, positions, row_states)
        out[scorer] = (rank_labels(model, tokenizer, labels, prompted) if scorer == "loglik"
                       else greedy(model, tokenizer, prompted, max_new_tokens))
    return out


def rank_labels(model, tokenizer, labels: list[str], prompted: Prompted) -> list[str]:
    """The label each row's continuation is likeliest to be (log-likelihood / length)."""
    device = next(model.parameters()).device
    hidden, cache, mask, positions, row_states = (prompted.hidden, prompted.cache, prompted.mask,
                                                  prompted.positions, prompted.row_states)
    cands = [encode_target(tokenizer, label, eos=False) for label in labels]
    K, L = len(cands), max(map(len, cands))
    cand_ids = torch.zeros((K, L), dtype=torch.long)
    cand_mask = torch.zeros((K, L), dtype=torch.long)
    for k, c in enumerate(cands):
        cand_ids[k, :len(c)] = torch.tensor(c)
        cand_mask[k, :len(c)] = 1
    cand_ids, cand_mask = cand_ids.to(device), cand_mask.to(device)
    N = hidden.shape[0]
    total = next_token_logprobs(model, hidden[:, -1])[:, cand_ids[:, 0]]  # (N, K): log p(c_0 | prompt)
    if L > 1:
        if takes_custom_masks(model):
            with maybe_route(model, row_states):
                total = total + packed_candidates(model, cands, cache, mask, positions)
        else:  # attention that only takes padding masks: one cache copy per candidate
            cache.batch_repeat_interleave(K)
            step_ids = cand_ids[:, :-1].repeat(N, 1)  # (N*K, L-1): c_0..c_{L-2} predict c_1..c_{L-1}
            step_mask = torch.cat([mask.repeat_interleave(K, 0), cand_mask[:, :-1].repeat(N, 1)], dim=1)
            step_pos = positions[:, -1:].repeat_interleave(K, 0) + 1 + torch.arange(L - 1, device=device)
            rows = None if row_states is None else [s for s in row_states for _ in range(K)]
            with maybe_route(model, rows):
                hidden2, _ = run_model(model, step_ids, step_mask, step_pos, cache)
            rest = logprobs(model, hidden2, cand_ids[:, 1:].repeat(N, 1))  # (N*K, L-1)
            total = total + (rest * cand_mask[:, 1:].repeat(N, 1)).sum(1).reshape(N, K)
    lengths = cand_mask.sum(1).to(total.dtype)  # (K,)
    best = (total / lengths).argmax(dim=1).tolist()
    return [labels[k] for k in best]


def packed_candidates(model, cands: list[list[int]], cache, mask, positions) -> torch.Tensor:
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
    hidden, _ = run_model(model, ids, allowed, positions[:, -1:] + 1 + off, cache)
    logp = logprobs(model, hidden, targets)  # (N, Q)
    return torch.zeros((N, K), dtype=logp.dtype, device=device).index_add_(1, seg, logp)


def greedy(model, tokenizer, prompted: Prompted, max_new_tokens: int) -> list[str]:
    """Each row's greedy continuation, up to eos or max_new_tokens, as text."""
    device = next(model.parameters()).device
    hidden, cache, mask = prompted.hidden, prompted.cache, prompted.mask
    N = hidden.shape[0]
    eos = tokenizer.eos_token_id
    generated = torch.full((N, max_new_tokens), eos, dtype=torch.long, device=device)
    done = torch.zeros(N, dtype=torch.bool, device=device)
    with maybe_route(model, prompted.row_states):
        pos = prompted.positions[:, -1:]
        for t in range(max_new_tokens):
            next_ids = next_token_logprobs(model, hidden[:, -1]).argmax(dim=-1)  # (N,)
            next_ids = torch.where(done, torch.full_like(next_ids, eos), next_ids)
            generated[:, t] = next_ids
            done |= next_ids == eos
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones((N, 1), dtype=mask.dtype, device=device)], dim=1)
            pos = pos + 1
            hidden, cache = run_model(model, next_ids[:, None], mask, pos, cache)
    texts = []
    for row in generated.tolist():
        cut = row.index(eos) if eos in row else len(row)
        texts.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return texts
