"""What scoring takes (EvalConfig) and returns (TaskScore). Torch-free."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

CURRENT = "current"  # the key of a result scored on the model as it is (no routing)
SCORERS = ("loglik", "generate")
DEFAULT_MAX_LENGTH = 256  # tokens per prompt when neither the eval nor a training config says


@dataclass
class EvalConfig:
    scorer: Literal["loglik", "generate"] = "loglik"  # loglik is cheaper and never fails to parse
    # Score every state several ways in the same pass (one prompt pass, then each scorer): e.g.
    # ["generate", "loglik"]. The first is the primary (what `scorer` then says, what tables lead
    # with); empty = `scorer` alone. Generation shows what a user of the adapter gets — a format that
    # collapsed to the latest task's labels — which ranking the label strings cannot see.
    scorers: list[str] = field(default_factory=list)
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
    # Show scoring as a progress phase (training's dev checks turn it off: one line per check would
    # drown the log). A display setting: it never changes a score.
    progress: bool = True

    def __post_init__(self) -> None:
        if self.scorer not in SCORERS:
            raise ValueError(f"scorer must be 'loglik' or 'generate', got {self.scorer!r}")
        unknown = [s for s in self.scorers if s not in SCORERS]
        if unknown or len(set(self.scorers)) != len(self.scorers):
            raise ValueError(f"scorers must be distinct names from {', '.join(SCORERS)}, got {self.scorers!r}")
        if self.scorers:
            self.scorer = self.scorers[0]
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.max_rows < 1:
            raise ValueError("max_rows must be >= 1")
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(f"max_length must be >= 8 (or unset), got {self.max_length}")

    @property
    def length(self) -> int:
        return self.max_length or DEFAULT_MAX_LENGTH

    @property
    def all_scorers(self) -> list[str]:
        """The scorers to run, the primary first."""
        return list(self.scorers) or [self.scorer]


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
    # The other scorers' results on the same state and examples (EvalConfig.scorers beyond the first).
    also: dict[str, "TaskScore"] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("predictions")
        out["also"] = {name: other.to_dict() for name, other in self.also.items()}
        out.pop("correct")
        return out
