"""LoraConfig: what an adapter is, independent of any model instance."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from registry.adapter_format import pattern_value


@dataclass
class LoraConfig:
    """Hyper-parameters of a LoRA adapter (PEFT's names in `to_peft_dict`).

    Defaults follow "LoRA Without Regret" (Thinking Machines, 2025) unless noted.
    """

    r: int = 16  # rank matters little at fine-tuning data scales; 16 keeps adapters ~1 MB on 135M
    alpha: float = 32.0  # fixed alpha=32 with 1/r scaling keeps the best learning rate ~rank-independent
    target_modules: str | list[str] = "all-linear"  # attention-only LoRA underperforms; MLPs matter most
    dropout: float = 0.0  # dropout barely helps short LoRA runs and makes steps non-deterministic
    use_rslora: bool = False  # alpha/sqrt(r) scaling (Kalajdzievski 2023); off to match PEFT's default
    rank_pattern: dict[str, int] = field(default_factory=dict)  # per-module rank overrides (PEFT's)
    alpha_pattern: dict[str, float] = field(default_factory=dict)  # per-module alpha overrides (PEFT's)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"LoraConfig.r must be a positive integer, got {self.r!r}")
        if not _finite_number(self.alpha) or self.alpha == 0:
            raise ValueError(f"LoraConfig.alpha must be a finite non-zero number, got {self.alpha!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"LoraConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.target_modules, str):
            try:
                re.compile(self.target_modules)
            except re.error as exc:
                raise ValueError(f"target_modules {self.target_modules!r} is not a valid regex: {exc}")
        elif not self.target_modules or not all(isinstance(t, str) and t for t in self.target_modules):
            raise ValueError(
                f"target_modules must be 'all-linear', a regex, or a non-empty list of module names; "
                f"got {self.target_modules!r}"
            )
        for key, rank in self.rank_pattern.items():
            if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
                raise ValueError(f"rank_pattern[{key!r}] must be a positive integer, got {rank!r}")
        for key, alpha in self.alpha_pattern.items():
            if not _finite_number(alpha) or alpha == 0:
                raise ValueError(f"alpha_pattern[{key!r}] must be a finite non-zero number, got {alpha!r}")

    def rank_for(self, module: str) -> int:
        return _pattern_lookup(self.rank_pattern, module, self.r)

    def alpha_for(self, module: str) -> float:
        return float(_pattern_lookup(self.alpha_pattern, module, self.alpha))

    def scaling_for(self, module: str) -> float:
        return lora_scaling(self.alpha_for(module), self.rank_for(module), self.use_rslora)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lora_scaling(alpha: float, r: int, use_rslora: bool) -> float:
    """The factor s in ΔW = s·B·A: alpha/r, or alpha/sqrt(r) with rsLoRA."""
    return float(alpha) / (math.sqrt(r) if use_rslora else r)


def _pattern_lookup(pattern: dict[str, Any], module: str, default: Any) -> Any:
    return pattern_value(pattern, module, default)  # the one implementation of PEFT's precedence


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
