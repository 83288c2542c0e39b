"""Training one task: causal-LM loss on the answer tokens only, AdamW, warmup + constant/cosine.

Strategies (continual/) call `train_on` with the examples to learn (a task's, or a task's mixed with a
replay buffer), the parameters to update, and an optional extra loss term (O-LoRA's orthogonality,
EWC's penalty). Everything else — batching, schedule, precision, progress — lives here once.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from adapter_hub import progress
from adapter_hub.models import decoder_and_head, run_decoder
from adapter_hub.prompts import Encoded, common_prefix_length

IGNORE = -100


@dataclass
class TrainConfig:
    lr: float = 5e-4  # ~10x a full fine-tune's LR, as "LoRA Without Regret" finds optimal for LoRA
    steps: int | None = None  # optimizer steps; when set it overrides epochs
    epochs: float = 1.0  # passes over the training examples (fractions allowed)
    batch_size: int = 8  # examples per micro-batch; small batches suit LoRA (LoRA Without Regret)
    grad_accum: int = 1  # micro-batches per optimizer step
    warmup_ratio: float = 0.05  # a short warmup avoids a destructive first step from Adam's cold moments
    schedule: Literal["constant", "cosine"] = "constant"  # constant after warmup is LoRA's usual recipe
    weight_decay: float = 0.0  # B starts at zero; decay would only pull the adapter back toward it
    max_grad_norm: float = 1.0  # clipping keeps an outlier batch from wrecking earlier tasks
    max_length: int = 256  # tokens per example; inputs beyond it lose tokens from their left end
    seed: int = 0  # data order, dropout and init all follow it: same seed, same adapter (CPU)
    device: str = "auto"  # "auto" picks CUDA when present
    # Show this training as a progress phase (a bar on a terminal, a line in logs; the command's
    # --quiet silences both). A display setting: changing it never blocks resuming a run.
    progress: bool = True

    def __post_init__(self) -> None:
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be >= 1")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    steps: int
    losses: list[float] = field(default_factory=list)  # task loss per optimizer step
    extra_losses: list[float] = field(default_factory=list)  # the strategy's extra term per step
    lrs: list[float] = field(default_factory=list)  # learning rate each optimizer step used
    tokens: int = 0  # answer tokens trained on
    seconds: float = 0.0
    truncated: int = 0
    # Not trained but reused (continual.step_cache): the version it came from and what its training
    # recorded (loss summary, seconds).
    reused: dict | None = None
    cache_key: str | None = None  # the content key of this training call, when it has one
    trained: Any = field(default=None, repr=False)  # the trained adapter's factors (a LoraAdapter), keyed calls

    def summary(self) -> dict:
        """A compact loss-curve summary for the registry (first, last, min, and a 10-point curve)."""
        if not self.losses and self.reused:
            return {**(self.reused.get("loss") or {"steps": self.steps}), "reused_from": self.reused["ref"]}
        if not self.losses:
            return {"steps": 0}
        n = len(self.losses)
        tail = self.losses[-max(1, n // 10):]
        curve = [round(sum(c) / len(c), 5) for c in _chunks(self.losses, max(1, math.ceil(n / 10)))]
        out = {"steps": self.steps, "first": round(self.losses[0], 5), "last": round(sum(tail) / len(tail), 5),
               "min": round(min(self.losses), 5), "curve": curve, "tokens": self.tokens,
               "seconds": round(self.seconds, 2), "truncated": self.truncated}
        if self.extra_losses:
            out["extra_last"] = round(self.extra_losses[-1], 6)
        return out


def _chunks(seq: Sequence[float], size: int) -> list[Sequence[float]]:
    return [seq[i:i + size] for i in range(0, len(seq), size)]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available here")
    return torch.device(device)


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar-length examples: sort within windows of 50 batches, shuffle batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[Encoded], pad_id: int, device: torch.device) -> dict:
    """Right-padded input_ids/attention_mask, labels that are IGNORE outside the answer, and — built on
    the host, so no device sync is needed to find them — the flat (row, position) indices where an
    answer token is predicted, those tokens, and how many tokens all prompts start with."""
    width = max(len(e.prompt) + len(e.target) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    index, targets = [], []
    for row, e in enumerate(examples):
        seq = e.prompt + e.target
        ids[row, :len(seq)] = torch.tensor(seq)
        labels[row, len(e.prompt):len(seq)] = torch.tensor(e.target)
        mask[row, :len(seq)] = 1
        # token t+1 is predicted at position t; positions index the (B, width-1) grid of predictions
        index += [row * (width - 1) + t for t in range(len(e.prompt) - 1, len(seq) - 1)]
        targets += e.target
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device),
            "answer_index": torch.tensor(index, dtype=torch.long).to(device),
            "answer_targets": torch.tensor(targets, dtype=torch.long).to(device),
            "common_prefix": common_prefix_length([e.prompt for e in examples])}  # an int, for answer_logits


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


def train_on(
    model: nn.Module,
    examples: Sequence[Encoded],
    config: TrainConfig,
    *,
    pad_id: int,
    params: Sequence[nn.Parameter] | None = None,
    extra_loss: Callable[[], torch.Tensor] | None = None,
    description: str = "train",
) -> TrainResult:
    """Run the optimisation; `params` default to every parameter with requires_grad.

    A non-finite loss stops training BEFORE the optimizer steps, so the adapter is left as it was after
    the last good step. One host sync per optimizer step (the loss, for that check and the log)."""
    if not examples:
        raise ValueError("no training examples")
    device = next(model.parameters()).device
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no parameter requires grad (is an adapter attached and trainable?)")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    lengths = [len(e.prompt) + len(e.target) for e in examples]
    per_epoch = math.ceil(len(examples) / config.batch_size)
    total = config.steps or max(1, math.ceil(config.epochs * per_epoch / config.grad_accum))
    # PyTorch's own choice of kernels (foreach on CUDA, a per-parameter loop on CPU): forcing foreach on the
    # CPU gives the bit-identical update, 0.70x the optimizer time on the tiny model but 1.07-1.13x on
    # SmolLM2 (benchmarks/bench_optimizer.py), so the default stays
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    parameter_count = sum(p.numel() for p in model.parameters())  # the prefix's cost test: once, not per step
    warmup = warmup_steps(config, total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, warmup, total, config.schedule))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    result = TrainResult(steps=total)
    batches: list[list[int]] = []
    was_training = model.training
    model.train()
    start = time.perf_counter()
    try:
        with progress.phase(description or "training", total, "step", enabled=config.progress) as bar:
            for step in range(total):
                optimizer.zero_grad(set_to_none=True)
                micro = []
                for _ in range(config.grad_accum):
                    if not batches:
                        batches = length_bucketed_batches(lengths, config.batch_size, rng)
                    batch = collate([examples[i] for i in batches.pop()], pad_id, device)
                    batch["parameter_count"] = parameter_count
                    micro.append(batch)
                with autocast:
                    loss, extra, n_tokens = accumulate(model, micro, extra_loss)
                values = (loss if extra is None else torch.stack([loss, extra.to(loss.dtype)])).tolist()  # one sync
                step_loss, step_extra = (values, None) if extra is None else values
                if not all(math.isfinite(v) for v in (step_loss, step_extra) if v is not None):
                    raise FloatingPointError(f"loss became non-finite at step {step + 1} (task {step_loss}, extra "
                                             f"{step_extra}); the adapter is left as after step {step}: lower the "
                                             f"learning rate")
                if config.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                result.lrs.append(optimizer.param_groups[0]["lr"])
                optimizer.step()
                scheduler.step()
                result.tokens += n_tokens
                result.losses.append(step_loss)
                if step_extra is not None:
                    result.extra_losses.append(step_extra)
                elapsed = time.perf_counter() - start
                bar.advance(1, loss=round(step_loss, 4),
                            ex_s=round((step + 1) * config.batch_size * config.grad_accum / max(elapsed, 1e-9), 1))
    finally:
        model.train(was_training)
    result.seconds = time.perf_counter() - start
    return result


def warmup_steps(config: TrainConfig, total: int) -> int:
    """Optimizer steps of linear warmup: round(warmup_ratio · total), at least 1 when the ratio is > 0."""
    return max(1, round(config.warmup_ratio * total)) if config.warmup_ratio > 0 else 0


def _lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Step `step` (0-based) uses lr · factor: warmup (step+1)/warmup, then 1 (constant) or a cosine from
    1 at the first step after warmup to 0 at step `total`."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def train_task(model: nn.Module, tokenizer, task, config: TrainConfig, **kwargs) -> TrainResult:
    """Encode a Task's training examples and train on them (the simple, one-task path)."""
    from adapter_hub.prompts import encode_examples

    encoded, truncated = encode_examples(tokenizer, task, task.train, config.max_length)
    result = train_on(model, encoded, config, pad_id=tokenizer.pad_token_id, description=task.name, **kwargs)
    result.truncated = truncated
    return result
