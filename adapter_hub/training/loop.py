"""Training one task: AdamW, warmup then constant or cosine, gradient accumulation, bf16 autocast on
CUDA, bit-for-bit deterministic on CPU for a seed.

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

import torch
from torch import nn

from adapter_hub.core import progress
from adapter_hub.data.prompts import Encoded, encode_examples
from adapter_hub.training.batches import collate, length_bucketed_batches
from adapter_hub.training.config import TrainConfig, TrainResult
from adapter_hub.training.loss import accumulate
from adapter_hub.training.plateau import PlateauStop, schedule_steps


def train_on(
    model: nn.Module,
    examples: Sequence[Encoded],
    config: TrainConfig,
    *,
    pad_id: int,
    params: Sequence[nn.Parameter] | None = None,
    extra_loss: Callable[[], torch.Tensor] | None = None,
    description: str = "train",
    dev_check: Callable[[], float] | None = None,
) -> TrainResult:
    """Run the optimisation; `params` default to every parameter with requires_grad.

    With config.until = "plateau", `dev_check()` (the dev split's accuracy under the model as it is)
    is called before training and every eval_every steps; training stops at the plateau and the best
    dev state is restored (training/plateau.py).
    A non-finite loss stops training BEFORE the optimizer steps, so the adapter is left as it was after
    the last good step. One host sync per optimizer step (the loss, for that check and the log)."""
    if not examples:
        raise ValueError("no training examples")
    if config.plateau and dev_check is None:
        raise ValueError("until = 'plateau' needs a dev check (the accuracy on a held-out dev split)")
    device = next(model.parameters()).device
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no parameter requires grad (is an adapter attached and trainable?)")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    lengths = [len(e.prompt) + len(e.target) for e in examples]
    per_epoch = math.ceil(len(examples) / config.batch_size)
    total, warmup_of = schedule_steps(config, config.steps or max(1, math.ceil(config.epochs * per_epoch / config.grad_accum)))
    # PyTorch's own choice of kernels (foreach on CUDA, a per-parameter loop on CPU): forcing foreach on the
    # CPU gives the bit-identical update, 0.70x the optimizer time on the tiny model but 1.07-1.13x on
    # SmolLM2 (benchmarks/bench_optimizer.py), so the default stays
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    parameter_count = sum(p.numel() for p in model.parameters())  # the prefix's cost test: once, not per step
    warmup = warmup_steps(config, warmup_of)
    plateau = PlateauStop(config, params, dev_check) if config.plateau else None
    stopped_by = "max_steps"
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, warmup, total, config.schedule))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    result = TrainResult(steps=total)
    batches: list[list[int]] = []
    was_training = model.training
    model.train()
    start = time.perf_counter()
    try:
        with progress.phase(description or "training", total, "step", enabled=config.progress) as bar:
            if plateau is not None:
                plateau.record(0)  # where the task starts, for the curve (never restored)
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
                if plateau is not None and (plateau.due(step + 1) or step + 1 == total):
                    if plateau.record(step + 1):
                        stopped_by = "plateau"
                        break
    finally:
        model.train(was_training)
    if plateau is not None:
        plateau.restore()
        result.steps = len(result.losses)
        result.stop = plateau.summary(stopped_by, result.steps)
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
    encoded, truncated = encode_examples(tokenizer, task, task.train, config.max_length)
    result = train_on(model, encoded, config, pad_id=tokenizer.pad_token_id, description=task.name, **kwargs)
    result.truncated = truncated
    return result
