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
    # How long to train. "budget": `steps` (or `epochs`), the same for every task — comparable, but a
    # hard task may end barely learnt and an easy one overtrained. "plateau": hold out a dev split of
    # the task's training examples (never a test example), score it every `eval_every` steps, stop when
    # it has not improved by more than `min_delta` for `patience` checks (or at `max_steps`), and
    # restore the best dev state: every task trained to competence, whatever its difficulty.
    until: Literal["budget", "plateau"] = "budget"  # the default keeps a run's budget what it says
    dev_fraction: float = 0.1  # 10% of the training examples: ~50 at 512, enough to see a plateau
    dev_max: int | None = 100  # at most this many dev examples: each check scores them all (~2 s on CPU)
    # at least this many dev examples (never over a quarter of the task's); 1: dev_fraction alone. A
    # floor of 50 (cb's 10% is 25, where a check swings ±0.1 by chance) moved the kept state's test
    # accuracy by +0.030, +0.001 and -0.003 on three recorded cb trajectories: no difference shown, so
    # it stays off; what kept cb short was patience on a slow start (benchmarks/RESULTS.md)
    dev_min: int = 1
    eval_every: int = 16  # steps between checks: 16 x batch 8 = 128 examples, a quarter epoch at 512
    patience: int = 3  # checks without progress before stopping: 48 steps, long enough to ride out noise
    min_delta: float = 0.01  # progress = a gain above one dev example in 100 (smaller is noise)
    max_steps: int = 1000  # the cap when no plateau comes (~2 epochs of 4000 examples at batch 8)
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
        if self.until not in ("budget", "plateau"):
            raise ValueError(f"until must be 'budget' or 'plateau', got {self.until!r}")
        if not 0 < self.dev_fraction < 1:
            raise ValueError(f"dev_fraction must be in (0, 1), got {self.dev_fraction}")
        if self.dev_max is not None and self.dev_max < 1:
            raise ValueError(f"dev_max must be >= 1 (or unset), got {self.dev_max}")
        for key in ("eval_every", "patience", "max_steps", "dev_min"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.dev_max is not None and self.dev_min > self.dev_max:
            raise ValueError(f"dev_min ({self.dev_min}) must not exceed dev_max ({self.dev_max})")
        if not 0 <= self.min_delta < 1:
            raise ValueError(f"min_delta must be in [0, 1), got {self.min_delta}")
        if self.until == "plateau" and self.schedule == "cosine":
            raise ValueError("schedule 'cosine' needs a known end; with until = 'plateau' use 'constant'")

    @property
    def plateau(self) -> bool:
        return self.until == "plateau"

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
    # until = "plateau": why training stopped ("plateau" or "max_steps"), the step whose state was
    # restored (never step 0), and the dev curve [[step, accuracy], ...] (step 0 = before training)
    stop: dict | None = None

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
        if self.stop is not None:
            out["stop"] = self.stop
        return out


def _chunks(seq: Sequence[float], size: int) -> list[Sequence[float]]:
    return [seq[i:i + size] for i in range(0, len(seq), size)]
