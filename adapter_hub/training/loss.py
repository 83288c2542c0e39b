"""The training loss: causal-LM cross-entropy on the answer tokens only, with the vocabulary head run
only at those positions and the instruction a batch's rows share run once."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from adapter_hub.models.decoder import decoder_and_head, run_decoder

# Sharing the instruction costs an extra decoder call and a cache copy (~ a millisecond); it pays when
# the decoder work it saves is larger: 6 FLOPs per parameter per token (forward + backward) over the
# (rows − 1) × prefix tokens it no longer runs. Tiny test models save less than they pay.
MIN_SAVED_FLOPS = 1e9


def shared_prefix_length(model: nn.Module, batch: dict) -> int:
    """Tokens every row of the batch starts with (a task's instruction, counted on the host by
    `collate`) when running them once pays; 0 when it does not, or when it would change the
    computation: one row, or dropout active in training (the rows would share one dropout mask)."""
    n, rows = batch.get("common_prefix", 0), batch["input_ids"].shape[0]
    if n < 1 or rows < 2:
        return 0
    parameters = batch.get("parameter_count") or sum(p.numel() for p in model.parameters())
    saved = 6 * parameters * (rows - 1) * n
    # the FLOP test first: it is cheap, the dropout scan walks every module at every step
    return n if saved >= MIN_SAVED_FLOPS and not _dropout_active(model) else 0


def _dropout_active(model: nn.Module) -> bool:
    if not model.training:
        return False
    if getattr(getattr(model, "config", None), "attention_dropout", 0.0):
        return True
    for module in model.modules():
        if isinstance(module, nn.Dropout) and module.p > 0:
            return True
        rates = getattr(module, "dropout", None)  # a LoRA layer's rate per adapter
        if isinstance(rates, dict) and any(rate > 0 for rate in rates.values()):
            return True
    return False


def answer_logits(model: nn.Module, batch: dict) -> torch.Tensor:
    """(N, vocab) logits at the N answer positions only: the decoder runs on every token, the head
    (vocab × hidden) only where the loss is. The instruction all rows start with runs once, as a
    one-row cache every row continues from: the same values and gradients (the prefix's gradient is
    the sum over rows), (rows − 1) × prefix fewer tokens through the decoder."""
    decoder, head = decoder_and_head(model)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if head is None:  # no separable head (e.g. logit soft-capping): full logits, then pick
        out = model(input_ids=ids, attention_mask=mask).logits[:, :-1]  # (B, T-1, V)
        return out.reshape(-1, out.shape[-1]).index_select(0, batch["answer_index"])
    n = shared_prefix_length(model, batch)
    if not n:
        hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state[:, :-1]  # (B, T-1, H)
        return head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch["answer_index"]))  # (N, V)
    rows, width = ids.shape
    _, cache = run_decoder(decoder, input_ids=ids[:1, :n], attention_mask=mask[:1, :n])
    cache.batch_repeat_interleave(rows)
    positions = torch.arange(n, width, device=ids.device).expand(rows, -1)
    out, _ = run_decoder(decoder, cache, input_ids=ids[:, n:], attention_mask=mask, position_ids=positions)
    hidden = out.last_hidden_state[:, :-1]  # (B, T-1-n, H): the predictions at positions n .. T-2
    flat = batch["answer_index"]  # row * (T-1) + t, and every answer position t >= n
    index = flat // (width - 1) * (width - 1 - n) + flat % (width - 1) - n
    return head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, index))


def answer_loss(model: nn.Module, batch: dict, divide_by: int | None = None) -> tuple[torch.Tensor, int]:
    """Cross-entropy summed over answer tokens / `divide_by` (default: their count, i.e. the mean),
    and the count (known on the host: no sync). The head runs in fp32 terms: logits are upcast first."""
    n = int(batch["answer_targets"].numel())
    loss = F.cross_entropy(answer_logits(model, batch).float(), batch["answer_targets"], reduction="sum")
    return loss / (divide_by or max(n, 1)), n


def accumulate(model: nn.Module, micro_batches: Sequence[dict],
               extra_loss: Callable[[], torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Backward over one optimizer step's micro-batches. Every answer token of the step weighs the same
    (each micro-batch's summed loss is divided by the step's total token count), so the gradient is the
    full batch's whatever the split; the strategy's extra term is added once. Returns the step's mean
    task loss and extra term as tensors (no host sync) and the token count."""
    total = sum(int(b["answer_targets"].numel()) for b in micro_batches)
    step_loss = None
    for b in micro_batches:
        loss, _ = answer_loss(model, b, divide_by=max(total, 1))
        loss.backward()
        step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
    extra = None
    if extra_loss is not None:
        extra = extra_loss()
        extra.backward()
        extra = extra.detach()
    return step_loss, extra, total
