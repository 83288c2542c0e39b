"""What a training call takes (TrainConfig) and what it returns (TrainResult). Torch-free."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal


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
