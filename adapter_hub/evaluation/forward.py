"""Model plumbing for scoring: the decoder and head run apart, log-probabilities chunked over the
vocabulary in fp32, left padding, autocast, and routing a batch's rows when asked."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from adapter_hub.lora import route
from adapter_hub.models.decoder import decoder_and_head, run_decoder

LOGITS_CHUNK = 2**24  # floats of logits materialised at once (64 MB in fp32), whatever the vocabulary


def run_model(model: nn.Module, ids, mask, positions, cache=None):
    """Hidden states (or logits when the model has no separable head) and the cache."""
    decoder, head = decoder_and_head(model)
    out, new_cache = run_decoder(decoder, cache, input_ids=ids, attention_mask=mask, position_ids=positions)
    return (out.last_hidden_state if head is not None else out.logits), new_cache


def logprobs(model: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
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


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, ...]:
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


@contextlib.contextmanager
def maybe_route(model: nn.Module, rows: Sequence[str | None] | None) -> Iterator[None]:
    if rows is None:
        yield
    else:
        with route(model, rows):
            yield


def autocast_for(model: nn.Module):
    device = next(model.parameters()).device
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def takes_custom_masks(model: nn.Module) -> bool:
    """Whether the model's attention accepts a ready 4D mask (sdpa and eager do; flash kernels do not)."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None) in ("sdpa", "eager")


def next_token_logprobs(model, hidden_last: torch.Tensor) -> torch.Tensor:
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
