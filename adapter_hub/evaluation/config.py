"""What scoring takes (EvalConfig) and returns (TaskScore). Torch-free."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

CURRENT = "current"  # the key of a result scored on the model as it is (no routing)
DEFAULT_MAX_LENGTH = 256  # tokens per prompt when neither the eval nor a training config says


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
